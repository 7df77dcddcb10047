// Behaviour the pages once wrote inline (onclick, onchange, style="width: …"), here so the
// Content-Security-Policy can forbid inline scripts and styles. Markup says what it wants:
//   <select data-navigate>      goes to the chosen option's value (a URL)
//   <select data-autosubmit>    submits its form when changed
//   <input class="select-on-focus">  selects its text when clicked or focused (shown-once secrets)
//   <span data-width="42">      is drawn 42% wide (quota bars); call accountsPoolBars(root) after
//                               swapping in new markup
(function () {
  function bars(root) {
    (root || document).querySelectorAll("[data-width]").forEach(function (el) {
      var value = parseFloat(el.dataset.width);
      if (!isNaN(value)) el.style.width = Math.max(0, Math.min(100, value)) + "%";
    });
  }
  window.accountsPoolBars = bars;

  document.addEventListener("change", function (event) {
    var el = event.target;
    if (!(el instanceof HTMLSelectElement)) return;
    if (el.hasAttribute("data-navigate") && el.value) window.location.href = el.value;
    else if (el.hasAttribute("data-autosubmit") && el.form) el.form.submit();
  });
  function selectAll(event) {
    var el = event.target;
    if (el instanceof HTMLInputElement && el.classList.contains("select-on-focus")) el.select();
  }
  document.addEventListener("click", selectAll);
  document.addEventListener("focusin", selectAll);

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { bars(document); });
  } else {
    bars(document);
  }
})();
