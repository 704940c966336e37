// Storefront pages left open during the rush, each polling the product list every 5 s as
// shop/static/shop/live.js does. A k6 process of its own: the customers' browsers are not the
// load generator that times the orders. Driven by bench/rush.py --open-pages N.
import http from "k6/http";
import { sleep } from "k6";
import { Trend } from "k6/metrics";

const BASE_URL = __ENV.BASE_URL;
const PAGES = parseInt(__ENV.OPEN_PAGES || "100", 10);
const SECONDS = parseInt(__ENV.DURATION_SECONDS || "60", 10);
const POLL_SECONDS = 5;

const polls = new Trend("poll_ms", true);

export const options = {
  scenarios: {
    pages: { executor: "constant-vus", vus: PAGES, duration: `${SECONDS}s`, gracefulStop: "5s" },
  },
  summaryTrendStats: ["avg", "min", "med", "max", "p(90)", "p(99)"],
};

export default function () {
  // Pages were opened over the last interval, not all in the same instant.
  if (__ITER === 0) sleep(Math.random() * POLL_SECONDS);
  const response = http.get(`${BASE_URL}/api/products/`, { timeout: "30s" });
  polls.add(response.timings.duration, { status: String(response.status) });
  sleep(POLL_SECONDS);
}

export function handleSummary(data) {
  return { [__ENV.SUMMARY_PATH]: JSON.stringify(data) };
}
