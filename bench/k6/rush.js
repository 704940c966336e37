// The rush's customers: ramping virtual users ordering a few products through the Sales API.
// Driven by bench/rush.py, which passes everything through the environment and reads the
// per-request CSV (--out csv) and the summary written by handleSummary.
import http from "k6/http";
import { sleep } from "k6";
import { Counter } from "k6/metrics";

const BASE_URL = __ENV.BASE_URL;
const SKUS = (__ENV.SKUS || "CP-502101").split(",");
const VUS = parseInt(__ENV.VUS || "200", 10);
const RAMP = parseInt(__ENV.RAMP_SECONDS || "30", 10);
const HOLD = parseInt(__ENV.HOLD_SECONDS || "120", 10);
const DOWN = parseInt(__ENV.DOWN_SECONDS || "10", 10);
const THINK = parseFloat(__ENV.THINK_SECONDS || "5");
const MAX_QUANTITY = parseInt(__ENV.MAX_QUANTITY || "2", 10);

const accepted = new Counter("orders_accepted");
const refused = new Counter("orders_refused");
const serverErrors = new Counter("status_5xx");
const noAnswer = new Counter("no_answer");
const unexpected = new Counter("status_unexpected");

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

http.setResponseCallback(http.expectedStatuses(201, 409));

let logged = 0;

export default function () {
  const sku = SKUS[Math.floor(Math.random() * SKUS.length)];
  const quantity = 1 + Math.floor(Math.random() * MAX_QUANTITY);
  const response = http.post(`${BASE_URL}/api/orders/`, JSON.stringify({ sku, quantity }), {
    headers: { "Content-Type": "application/json" },
    timeout: "30s",
  });
  if (response.status === 201) {
    accepted.add(1);
  } else if (response.status === 409) {
    refused.add(1);
  } else {
    if (response.status >= 500) {
      serverErrors.add(1);
    } else if (response.status === 0) {
      noAnswer.add(1);
    } else {
      unexpected.add(1);
    }
    // A few samples per customer are enough to tell what went wrong; the CSV has them all.
    if (logged < 3) {
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
  }
  // Customers press "order" again after a short look at the page.
  sleep(THINK * (0.5 + Math.random()));
}

export function handleSummary(data) {
  return { [__ENV.SUMMARY_PATH]: JSON.stringify(data) };
}
