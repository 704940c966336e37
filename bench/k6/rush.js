// The rush's customers: ramping virtual users ordering a few products through the Sales API.
// Driven by bench/rush.py, which passes everything through the environment and reads the
// per-request CSV (--out csv) and the summary written by handleSummary.
import http from "k6/http";
import { sleep } from "k6";
import { Trend } from "k6/metrics";

const BASE_URL = __ENV.BASE_URL;
const SKUS = (__ENV.SKUS || "CP-502101").split(",");
const VUS = parseInt(__ENV.VUS || "200", 10);
const RAMP = parseInt(__ENV.RAMP_SECONDS || "30", 10);
const HOLD = parseInt(__ENV.HOLD_SECONDS || "120", 10);
const DOWN = parseInt(__ENV.DOWN_SECONDS || "10", 10);
const THINK = parseFloat(__ENV.THINK_SECONDS || "5");
const MAX_QUANTITY = parseInt(__ENV.MAX_QUANTITY || "2", 10);
// The share of customers who, finding a donut sold out, take one from the next batch; with
// EMAILS=1 they leave an address for the ready and cancelled notices.
const BACKORDER_SHARE = parseFloat(__ENV.BACKORDER_SHARE || "0");
const EMAILS = __ENV.EMAILS === "1";
// The share of customers who order a basket of 1 to 3 kinds (each 1..MAX_QUANTITY) at once.
const BASKET_SHARE = parseFloat(__ENV.BASKET_SHARE || "0");

// One sample per order request, tagged with what the shop answered (bench/rush.py reads it).
const orders = new Trend("order_ms", true);

export const options = {
  scenarios: {
    rush: {
      executor: "ramping-vus",
      startVUs: 0,
      stages: [
        { duration: `${RAMP}s`, target: VUS },
        { duration: `${HOLD}s`, target: VUS },
        { duration: `${DOWN}s`, target: 0 },
      ],
      gracefulRampDown: "5s",
      gracefulStop: "10s",
    },
  },
  summaryTrendStats: ["avg", "min", "med", "max", "p(90)", "p(99)"],
  discardResponseBodies: false,
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
  const status = response.status;
  if (status === 201) {
    const kind = field(response, "status");
    if (kind === "completed") return "served";
    return kind === "backordered" ? "backordered" : "unexpected";
  }
  if (status === 0) return "no_answer";
  if (status >= 500) return "server_errors";
  const code = field(response, "code");
  if (code === "purchase_limit") return "purchase_limit";
  if (status === 429) return "throttled";
  return status === 409 && code === "out_of_stock" ? "out_of_stock" : "unexpected";
}

let logged = 0;

// Whether this customer accepts the next batch: the same answer for all its orders, and
// spread evenly over the customers (golden-ratio steps) so that a share holds at every size
// of the crowd, the ramp included.
function accepts(vu) {
  return ((vu * 0.6180339887498949) % 1) < BACKORDER_SHARE;
}

// Whether this customer buys baskets: as `accepts`, on a spread of its own (√2 steps).
function baskets(vu) {
  return ((vu * 0.41421356237309503) % 1) < BASKET_SHARE;
}

function units() {
  return 1 + Math.floor(Math.random() * MAX_QUANTITY);
}

// One to three kinds, each once.
function basket() {
  const kinds = SKUS.slice().sort(() => Math.random() - 0.5);
  const size = 1 + Math.floor(Math.random() * Math.min(3, kinds.length));
  return kinds.slice(0, size).map((sku) => ({ sku, quantity: units() }));
}

export default function () {
  // Every customer is its own client address, behind one trusted proxy
  // (TRUSTED_PROXIES=127.0.0.1/32: k6 on this machine stands for the load balancer).
  const address = `10.77.${Math.floor(__VU / 256) % 256}.${__VU % 256}`;
  const order = baskets(__VU)
    ? { items: basket() }
    : { sku: SKUS[Math.floor(Math.random() * SKUS.length)], quantity: units() };
  if (accepts(__VU)) {
    order.backorder = true;
    if (EMAILS) order.email = `customer-${__VU}@rush.example`;
  }
  const response = http.post(`${BASE_URL}/api/orders/`, JSON.stringify(order), {
    headers: { "Content-Type": "application/json", "X-Forwarded-For": address },
    timeout: "30s",
  });
  const kind = outcome(response);
  // An order taken carries its reference: afterwards every one must have its row.
  const tags = { outcome: kind, basket: order.items ? String(order.items.length) : "" };
  if (response.status === 201) tags.reference = response.json("reference") || "";
  // The time promised, as the customer was told: a promise moved later is still held to it.
  if (kind === "backordered") tags.ready_by = response.json("ready_by") || "";
  orders.add(response.timings.duration, tags);
  // A few samples per customer are enough to tell what went wrong; the CSV has them all.
  if (["server_errors", "no_answer", "unexpected"].includes(kind) && logged < 3) {
    logged += 1;
    console.warn(
      JSON.stringify({
        at: Date.now(),
        status: response.status,
        error: response.error,
        body: String(response.body || "").slice(0, 300),
      }),
    );
  }
  // Customers press "order" again after a short look at the page.
  sleep(THINK * (0.5 + Math.random()));
}

export function handleSummary(data) {
  return { [__ENV.SUMMARY_PATH]: JSON.stringify(data) };
}
