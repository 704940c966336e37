// Keeps the storefront's stock current without a reload: one GET of the product list every
// few seconds while the tab is visible. Text changes are made in place; a card whose shape
// changes (sold out, back in stock, a restock accepted) is taken from a fresh copy of the
// page instead, in place of that interval's poll, so forms keep their CSRF token.
(function () {
  "use strict";
  var INTERVAL_MS = 5000;
  var list = document.querySelector(".products[data-live]");
  if (!list || !window.fetch) return;
  var lastPoll = Date.now();
  var reshape = false;

  function eta(seconds) {
    return seconds ? "about " + seconds + " s" : "due any moment";
  }

  function shapeOf(card) {
    var soldOut = card.classList.contains("sold-out");
    return soldOut + "/" + (soldOut && card.querySelector(".restock") !== null);
  }

  function update(products) {
    products.forEach(function (product) {
      var card = document.getElementById("product-" + product.sku);
      if (!card) return;
      var shape = !product.in_stock + "/" + (!product.in_stock && product.incoming > 0);
      if (shape !== shapeOf(card)) {
        reshape = true;
        return;
      }
      if (product.in_stock) {
        var more = product.incoming ? " · " + product.incoming + " more on the way" : "";
        card.querySelector(".stock").textContent = product.stock + " in stock" + more;
        var quantity = card.querySelector("input[name=quantity]");
        if (quantity) quantity.max = product.stock;
      } else if (product.incoming) {
        card.querySelector(".restock").textContent =
          product.incoming + " more are being made — " + eta(product.ready_in_seconds);
      }
    });
  }

  function replaceCards(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html");
    fresh.querySelectorAll(".products > .card").forEach(function (card) {
      var old = document.getElementById(card.id);
      if (old && shapeOf(old) !== shapeOf(card)) old.replaceWith(document.importNode(card, true));
    });
  }

  function poll() {
    lastPoll = Date.now();
    var page = reshape;
    reshape = false;
    var url = page ? window.location.pathname : list.dataset.live;
    var accept = page ? "text/html" : "application/json";
    fetch(url, { headers: { Accept: accept }, credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error(response.status);
        return page ? response.text() : response.json();
      })
      .then(page ? replaceCards : update)
      .catch(function () {
        reshape = reshape || page; // try again at the next interval
      });
  }

  // Hidden tabs do not poll; a tab shown again polls once its interval has passed.
  setInterval(function () {
    if (!document.hidden && Date.now() - lastPoll >= INTERVAL_MS) poll();
  }, 1000);
})();
