// Storefront pages left open during the rush (bench/rush.py --open-pages N): each polls the
// product list every 5 s, as shop/static/shop/live.js does, from a k6 process of its own.
import http from "k6/http";
import { sleep } from "k6";
import { Trend } from "k6/metrics";

const polls = new Trend("poll_ms", true);
const vus = Number(__ENV.OPEN_PAGES || 100);
const duration = `${__ENV.DURATION_SECONDS || 60}s`;
const pages = { executor: "constant-vus", vus, duration, gracefulStop: "5s" };
export const options = { scenarios: { pages }, summaryTrendStats: ["med", "p(99)"] };

export default function () {
  if (__ITER === 0) sleep(Math.random() * 5); // the pages were opened over the last interval
  const res = http.get(`${__ENV.BASE_URL}/api/products/`, { timeout: "30s" });
  polls.add(res.timings.duration, { status: String(res.status) });
  sleep(5);
}

export const handleSummary = (data) => ({ [__ENV.SUMMARY_PATH]: JSON.stringify(data) });
