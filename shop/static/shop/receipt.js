// Keeps a waiting pre-order's receipt current without a reload: one GET of the receipt API
// every few seconds while the tab is visible. When the status moves on (ready, or
// cancelled), the receipt is taken from a fresh copy of the page, and polling stops.
(function () {
  "use strict";
  var INTERVAL_MS = 3000;
  var receipt = document.getElementById("receipt");
  if (!receipt || !window.fetch || receipt.dataset.status !== "backordered") return;
  var lastPoll = 0;
  var timer = null;

  function fetchOk(url, accept) {
    return fetch(url, { headers: { Accept: accept }, credentials: "same-origin" }).then(
      function (response) {
        if (!response.ok) throw new Error(response.status);
        return accept === "application/json" ? response.json() : response.text();
      }
    );
  }

  function replaceReceipt(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("receipt");
    if (!fresh) return;
    receipt.replaceWith(document.importNode(fresh, true));
    clearInterval(timer);
  }

  function poll() {
    lastPoll = Date.now();
    fetchOk(receipt.dataset.live, "application/json")
      .then(function (order) {
        if (order.status === receipt.dataset.status) return null;
        return fetchOk(window.location.pathname, "text/html").then(replaceReceipt);
      })
      .catch(function () {}); // tried again at the next interval
  }

  // Hidden tabs do not poll; a tab shown again polls once its interval has passed.
  timer = setInterval(function () {
    if (!document.hidden && Date.now() - lastPoll >= INTERVAL_MS) poll();
  }, 1000);
})();
