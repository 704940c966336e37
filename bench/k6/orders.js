// Closed-loop order load for bench/orders.py: VUS users, each posting one order (quantity 1)
// after the other for DURATION against TARGET_URL; the summary goes to SUMMARY_PATH as JSON.
import http from "k6/http";
import { Counter } from "k6/metrics";

const counters = { 201: new Counter("orders_created"), 409: new Counter("orders_refused") };
const failed = new Counter("orders_failed");
const body = JSON.stringify({ sku: __ENV.SKU || "CP-502102", quantity: 1 });
const run = Number(__ENV.RUN || 0);

export const options = {
  vus: Number(__ENV.VUS || 32),
  duration: __ENV.DURATION || "20s",
  summaryTrendStats: ["p(50)", "p(90)", "p(99)"],
  discardResponseBodies: true,
};

// Every order from a customer of its own, as from many clients behind one proxy (the shop
// trusts 127.0.0.1 as its proxy); RUN keeps the customers of a benchmark's runs apart.
export default function () {
  const client = `${10 + (run % 200)}.${__VU % 256}.${(__ITER >> 8) % 256}.${__ITER % 256}`;
  const headers = { "Content-Type": "application/json", "X-Forwarded-For": client };
  const res = http.post(__ENV.TARGET_URL, body, { headers, timeout: "30s" });
  (counters[res.status] || failed).add(1);
}

export const handleSummary = (data) => ({ [__ENV.SUMMARY_PATH]: JSON.stringify(data) });
