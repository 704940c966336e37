// Closed-loop order load for bench/orders.py: VUS virtual users, each posting one order
// (quantity 1) after the other for DURATION, against TARGET_URL, each as a new customer.
// The summary goes to SUMMARY_PATH as JSON; bench/orders.py reads it.
import http from "k6/http";
import { Counter } from "k6/metrics";

const created = new Counter("orders_created");
const refused = new Counter("orders_refused");
const failed = new Counter("orders_failed");

const url = __ENV.TARGET_URL;
const body = JSON.stringify({ sku: __ENV.SKU || "CP-502102", quantity: 1 });
const json = { "Content-Type": "application/json" };

export const options = {
  vus: Number(__ENV.VUS || 32),
  duration: __ENV.DURATION || "20s",
  summaryTrendStats: ["p(50)", "p(90)", "p(99)"],
  discardResponseBodies: true,
};

// Every order from a customer of its own, as many clients behind one proxy: the address in
// X-Forwarded-For is new for each order (the shop trusts 127.0.0.1 as its proxy).
// RUN (each k6 run of a benchmark its own) keeps customers of earlier rounds apart.
const run = Number(__ENV.RUN || 0);
function client() {
  const n = __ITER;
  return `${10 + (run % 200)}.${__VU % 256}.${(n >> 8) % 256}.${n % 256}`;
}

export default function () {
  const headers = { ...json, "X-Forwarded-For": client() };
  const res = http.post(url, body, { headers, timeout: "30s" });
  if (res.status === 201) {
    created.add(1);
  } else if (res.status === 409) {
    refused.add(1);
  } else {
    failed.add(1);
  }
}

export function handleSummary(data) {
  return { [__ENV.SUMMARY_PATH]: JSON.stringify(data) };
}
