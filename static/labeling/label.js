// Keyboard shortcuts and timing for the labeling page. No inline handlers:
// the page works without this file (plain form posts), this only adds speed.
(function () {
  "use strict";

  var shownAt = performance.now();

  function card() {
    return document.getElementById("comparison-card");
  }

  function typing(target) {
    var tag = target && target.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || (target && target.isContentEditable);
  }

  function stampTimer() {
    var timer = document.querySelector("[data-timer]");
    if (timer) {
      timer.value = String(Math.round(performance.now() - shownAt));
    }
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    if (typing(event.target)) {
      if (event.key === "Escape") {
        event.target.blur();
      }
      return;
    }
    var root = card();
    if (!root) {
      return;
    }
    var key = event.key.toLowerCase();
    if (key === "r") {
      var rationale = root.querySelector("[data-rationale]");
      if (rationale) {
        event.preventDefault();
        rationale.focus();
      }
      return;
    }
    var button = root.querySelector('button[data-key="' + key + '"]');
    if (button && !button.disabled) {
      event.preventDefault();
      stampTimer();
      button.click();
    }
  });

  document.addEventListener("submit", stampTimer, true);

  document.addEventListener("htmx:afterSwap", function () {
    shownAt = performance.now();
    window.scrollTo({ top: 0 });
  });
})();
