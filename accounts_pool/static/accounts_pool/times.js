// Every <time> shows a relative time and carries the UTC time as its title; add the viewer's
// own time zone to the hover when it is not UTC.
(function () {
  function local(root) {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (!zone || zone === "UTC" || zone === "Etc/UTC") return;
    var fmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", day: "2-digit", month: "short", timeZoneName: "short" });
    root.querySelectorAll("time[datetime][title]").forEach(function (el) {
      if (el.dataset.local) return;
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when)) return;
      el.title = el.title + " · " + fmt.format(when);
      el.dataset.local = "1";
    });
  }
  window.accountsPoolTimes = local;
  local(document);
})();
