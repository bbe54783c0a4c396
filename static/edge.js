/* shop-edge browser snippet, served at /_edge/static/edge.js (load with
   <script src="/_edge/static/edge.js" defer>; no inline script needed).

   Countdowns: every [data-edge-countdown] element with data-deadline="<unix seconds>"
   shows the time left, updated every second. The server renders the deadline as text
   first, so the page is right without JavaScript. When the deadline passes, the
   enclosing [data-edge-offer] block is hidden. */
(function () {
  "use strict";
  // The sidecar adds this script after a timed offer; a theme may load it as well.
  if (window.__shopEdge) return;
  window.__shopEdge = true;

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function left(seconds) {
    var d = Math.floor(seconds / 86400);
    var h = Math.floor(seconds % 86400 / 3600);
    var m = Math.floor(seconds % 3600 / 60);
    var s = seconds % 60;
    return (d > 0 ? d + "d " : "") + pad(h) + ":" + pad(m) + ":" + pad(s);
  }

  function tick() {
    var now = Math.floor(Date.now() / 1000);
    var nodes = document.querySelectorAll("[data-edge-countdown]");
    for (var i = 0; i < nodes.length; i++) {
      var node = nodes[i];
      var deadline = parseInt(node.getAttribute("data-deadline"), 10);
      if (isNaN(deadline)) continue;
      var seconds = deadline - now;
      if (seconds <= 0) {
        var offer = node.closest ? node.closest("[data-edge-offer]") : null;
        if (offer) offer.hidden = true;
        node.textContent = "";
        node.removeAttribute("data-edge-countdown");
        continue;
      }
      node.textContent = "(" + left(seconds) + ")";
    }
  }

  function start() {
    if (!document.querySelector("[data-edge-countdown]")) return;
    tick();
    setInterval(tick, 1000);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
