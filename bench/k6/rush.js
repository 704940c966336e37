// The rush's customers, driven by bench/rush.py through the environment: ramping virtual
// users ordering a few products through the Sales API, each from an address of its own.
import http from "k6/http";
import { sleep } from "k6";
import { Trend } from "k6/metrics";

const env = (name, fallback) => __ENV[name] || fallback;
const SKUS = env("SKUS", "CP-502101").split(",");
const [RAMP, HOLD, DOWN] = ["RAMP_SECONDS", "HOLD_SECONDS", "DOWN_SECONDS"].map((n) => env(n, 10));
const THINK = parseFloat(env("THINK_SECONDS", "5"));
const MAX_QUANTITY = parseInt(env("MAX_QUANTITY", "2"), 10);
// Shares of the customers who take one from the next batch when a donut is sold out (with
// EMAILS=1 leaving an address for the notices), and who order baskets of 1 to 3 kinds.
const BACKORDER_SHARE = parseFloat(env("BACKORDER_SHARE", "0"));
const BASKET_SHARE = parseFloat(env("BASKET_SHARE", "0"));

// One sample per order request, tagged with what the shop answered (bench/rush.py reads it).
const orders = new Trend("order_ms", true);

export const options = {
  scenarios: {
    rush: {
      executor: "ramping-vus",
      stages: [
        { duration: `${RAMP}s`, target: parseInt(env("VUS", "200"), 10) },
        { duration: `${HOLD}s`, target: parseInt(env("VUS", "200"), 10) },
        { duration: `${DOWN}s`, target: 0 },
      ],
      gracefulRampDown: "5s",
      gracefulStop: "10s",
    },
  },
  summaryTrendStats: ["avg", "min", "med", "max", "p(90)", "p(99)"],
};

// Refusals (out of stock, purchase limit) and throttling are answers the shop means to give.
http.setResponseCallback(http.expectedStatuses(201, 409, 429));

function field(response, name) {
  try {
    return response.json(name) || "";
  } catch (e) {
    return ""; // not JSON: unexpected below
  }
}

function outcome(response) {
  const [status, code] = [response.status, field(response, "code")];
  if (status === 201) {
    const kind = field(response, "status");
    return { completed: "served", backordered: "backordered" }[kind] || "unexpected";
  }
  if (status === 0) return "no_answer";
  if (status >= 500) return "server_errors";
  if (code === "purchase_limit") return "purchase_limit";
  if (status === 429) return "throttled";
  return status === 409 && code === "out_of_stock" ? "out_of_stock" : "unexpected";
}

// The same answer for all of a customer's orders, spread evenly over the customers (golden
// ratio and √2 steps) so that a share holds at every size of the crowd, the ramp included.
const takesNextBatch = (vu) => (vu * 0.6180339887498949) % 1 < BACKORDER_SHARE;
const buysBaskets = (vu) => (vu * 0.41421356237309503) % 1 < BASKET_SHARE;
const units = () => 1 + Math.floor(Math.random() * MAX_QUANTITY);
const pick = (n) => SKUS.slice().sort(() => Math.random() - 0.5).slice(0, n);
let logged = 0;

export default function () {
  const kinds = 1 + Math.floor(Math.random() * Math.min(3, SKUS.length));
  const order = buysBaskets(__VU)
    ? { items: pick(kinds).map((sku) => ({ sku, quantity: units() })) }
    : { sku: pick(1)[0], quantity: units() };
  if (takesNextBatch(__VU)) {
    order.backorder = true;
    if (__ENV.EMAILS === "1") order.email = `customer-${__VU}@rush.example`;
  }
  // TRUSTED_PROXIES=127.0.0.1/32: k6 on this machine stands for the load balancer.
  const address = `10.77.${Math.floor(__VU / 256) % 256}.${__VU % 256}`;
  const response = http.post(`${__ENV.BASE_URL}/api/orders/`, JSON.stringify(order), {
    headers: { "Content-Type": "application/json", "X-Forwarded-For": address },
    timeout: "30s",
  });
  const kind = outcome(response);
  // Every order taken must have its row afterwards; a pre-order is held to the time it was
  // told, even once moved to a later batch.
  const tags = { outcome: kind, basket: order.items ? String(order.items.length) : "" };
  if (response.status === 201) tags.reference = field(response, "reference");
  if (kind === "backordered") tags.ready_by = field(response, "ready_by");
  orders.add(response.timings.duration, tags);
  if (["server_errors", "no_answer", "unexpected"].includes(kind) && logged++ < 3) {
    const body = String(response.body || "").slice(0, 300);
    console.warn(JSON.stringify({ at: Date.now(), status: response.status, error: response.error, body }));
  }
  sleep(THINK * (0.5 + Math.random())); // a short look at the page before ordering again
}

export function handleSummary(data) {
  return { [__ENV.SUMMARY_PATH]: JSON.stringify(data) };
}
