// Re-fetch the pool's rows every 30 seconds and swap them in, without reloading the page.
(function () {
  var box = document.getElementById("pool-rows");
  if (!box) return;
  var url = box.dataset.refreshUrl;
  var every = parseInt(box.dataset.refreshSeconds || "30", 10) * 1000;
  function refresh() {
    fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        box.innerHTML = html;
        if (window.accountsPoolBars) window.accountsPoolBars(box);  // app.js: quota bar widths
        box.dataset.refreshedAt = new Date().toISOString();
      })
      .catch(function () { /* keep the last rows; the next tick tries again */ });
  }
  window.accountsPoolRefresh = refresh;
  setInterval(refresh, every);
})();
