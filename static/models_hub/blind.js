// Keyboard shortcuts for blind review, the same keys as the labeling page:
// 1 left, 2 right, 3 tie, 4 both bad. No inline handlers (CSP): the page
// works without this file (plain form posts), this only adds speed.
(function () {
  "use strict";

  function typing(target) {
    var tag = target && target.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || (target && target.isContentEditable);
  }

  var sent = false;

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat || sent) {
      return;
    }
    if (typing(event.target)) {
      if (event.key === "Escape") {
        event.target.blur();
      }
      return;
    }
    var form = document.querySelector("form[data-blind-vote]");
    if (!form) {
      return;
    }
    var button = form.querySelector('button[data-key="' + event.key + '"]');
    if (button && !button.disabled) {
      event.preventDefault();
      // One press is one vote: a second key before the next page loads is ignored.
      sent = true;
      button.click();
    }
  });
})();
