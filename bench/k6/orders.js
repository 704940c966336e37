// Closed-loop order load for bench/orders.py: VUS virtual users, each posting one order
// (quantity 1) after the other for DURATION, against TARGET_URL.
// The summary goes to SUMMARY_PATH as JSON; bench/orders.py reads it.
import http from "k6/http";
import { Counter } from "k6/metrics";

const created = new Counter("orders_created");
const refused = new Counter("orders_refused");
const failed = new Counter("orders_failed");

const url = __ENV.TARGET_URL;
const body = JSON.stringify({ sku: __ENV.SKU || "CP-502102", quantity: 1 });
const params = { headers: { "Content-Type": "application/json" }, timeout: "30s" };

export const options = {
  vus: Number(__ENV.VUS || 32),
  duration: __ENV.DURATION || "20s",
  summaryTrendStats: ["p(50)", "p(90)", "p(99)"],
  discardResponseBodies: true,
};

export default function () {
  const res = http.post(url, body, params);
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
