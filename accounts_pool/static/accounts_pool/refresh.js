// Re-fetch the pool's table every 30 seconds with the page's own filters (the URL's query) and
// swap it in; the server answers 304 when nothing changed, so nothing is sent or redrawn.
(function () {
  var box = document.getElementById("pool-rows");
  if (!box) return;
  var url = box.dataset.refreshUrl;
  var every = parseInt(box.dataset.refreshSeconds || "30", 10) * 1000;
  var etag = null;
  function refresh() {
    var headers = { "X-Requested-With": "fetch" };
    if (etag) headers["If-None-Match"] = etag;
    return fetch(url + window.location.search, { credentials: "same-origin", headers: headers, cache: "no-store" })
      .then(function (r) {
        box.dataset.refreshedAt = new Date().toISOString();
        box.dataset.lastStatus = String(r.status);
        if (r.status === 304) return;
        if (!r.ok) return Promise.reject(r.status);
        etag = r.headers.get("ETag");
        return r.text().then(function (html) {
          box.innerHTML = html;
          if (window.accountsPoolTimes) window.accountsPoolTimes(box);
        });
      })
      .catch(function () { /* keep the last rows; the next tick tries again */ });
  }
  window.accountsPoolRefresh = refresh;
  setInterval(refresh, every);
})();
