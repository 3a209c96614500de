// Live updates of the ops dashboard: every few seconds fetch this page's live
// parts as JSON (/api/live?page=<path>) and swap them in. No framework, no
// build step. If ops stops answering, the header says since when.
(function () {
  "use strict";
  var body = document.body;
  var every = Math.max(1, parseFloat(body.getAttribute("data-refresh")) || 5) * 1000;
  var conn = document.getElementById("conn");
  var lastOk = Date.now();
  function mark(ok, text) {
    conn.textContent = text;
    conn.className = ok ? "conn" : "conn down";
  }
  function apply(parts) {
    var nodes = document.querySelectorAll("[data-live]");
    for (var i = 0; i < nodes.length; i++) {
      var key = nodes[i].getAttribute("data-live");
      if (Object.prototype.hasOwnProperty.call(parts, key)) {
        nodes[i].innerHTML = parts[key];  // escaped by the server
      }
    }
  }
  function tick() {
    var url = "/api/live?page=" + encodeURIComponent(location.pathname + location.search);
    var ctl = new AbortController();
    var timer = setTimeout(function () { ctl.abort(); }, every);
    fetch(url, { cache: "no-store", signal: ctl.signal, credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      })
      .then(function (parts) {
        apply(parts);
        lastOk = Date.now();
        mark(true, "live");
        body.setAttribute("data-updated", String(lastOk));
      })
      .catch(function (err) {
        var ago = Math.round((Date.now() - lastOk) / 1000);
        mark(false, "not updating for " + ago + " s (" + err.message + ")");
      })
      .finally(function () { clearTimeout(timer); setTimeout(tick, every); });
  }
  setTimeout(tick, every);
})();
