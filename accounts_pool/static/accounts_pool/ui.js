// Small page behaviours without inline handlers: copy buttons, confirmations, selects that
// navigate or submit on change.
(function () {
  document.addEventListener("click", function (event) {
    var copy = event.target.closest("[data-copy]");
    if (copy) {
      var field = document.getElementById(copy.dataset.copy);
      if (!field) return;
      field.select();
      var done = function () { copy.textContent = "Copied"; copy.dataset.copied = "1"; };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(field.value).then(done, function () { document.execCommand("copy"); done(); });
      } else {
        document.execCommand("copy");
        done();
      }
      return;
    }
    var select = event.target.closest("input[data-select-on-click]");
    if (select) select.select();
  });
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) event.preventDefault();
  });
  document.addEventListener("change", function (event) {
    var el = event.target;
    if (el.matches("select[data-navigate]") && el.value) window.location.href = el.value;
    if (el.matches("select[data-autosubmit]")) el.form.submit();
  });
})();
