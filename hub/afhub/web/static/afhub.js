// afhub's pages: the "Copy link" buttons (no inline handlers, so the pages' CSP holds)
document.addEventListener("click", function (event) {
  var button = event.target.closest ? event.target.closest(".afhub-copy") : null;
  if (!button) {
    return;
  }
  var field = document.getElementById(button.getAttribute("data-copy"));
  if (!field) {
    return;
  }
  field.select();
  var done = function () { button.textContent = "Copied"; };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(field.value).then(done, function () { document.execCommand("copy"); done(); });
  } else {
    document.execCommand("copy");
    done();
  }
});
