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

  // A tab left open for a day is not a day of work: cap what we report.
  var MAX_MS = 86400000;

  function stampTimer() {
    var timer = document.querySelector("[data-timer]");
    if (timer) {
      timer.value = String(Math.min(MAX_MS, Math.round(performance.now() - shownAt)));
    }
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    if (typing(event.target)) {
      if (event.key === "Escape") {
        event.target.blur();
      } else if (event.key === "Enter" && event.target.hasAttribute("data-rationale")) {
        // Enter in the reason never labels: only an explicit choice does.
        event.preventDefault();
        var hint = document.querySelector("[data-rationale-hint]");
        if (hint) {
          hint.textContent = "Reason kept. Press Esc, then 1, 2, 3 or 4 to choose.";
        }
      }
      return;
    }
    // A held key repeats: one press is one label, never the next card's too.
    if (event.repeat) {
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

  // The server answers an invalid label with 400 and the card explaining why;
  // htmx does not swap error responses by default, so let this one through.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    if (event.detail.xhr.status === 400 && target && target.id === "comparison-card") {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  // A long prompt scrolls inside its box (CSS); offer to show all of it.
  function setUpPrompt() {
    var root = card();
    var body = root && root.querySelector("[data-prompt-body]");
    var toggle = root && root.querySelector("[data-prompt-toggle]");
    if (!body || !toggle) {
      return;
    }
    toggle.hidden = body.scrollHeight <= body.clientHeight + 4;
  }

  document.addEventListener("click", function (event) {
    var toggle = event.target.closest && event.target.closest("[data-prompt-toggle]");
    if (!toggle) {
      return;
    }
    var body = document.getElementById(toggle.getAttribute("aria-controls"));
    var open = body.classList.toggle("expanded");
    toggle.setAttribute("aria-expanded", open ? "true" : "false");
    toggle.textContent = open ? "Show less of the prompt" : "Show all of the prompt";
  });

  // Say what the swap brought (the live region sits outside the card, so it
  // survives the swap) and put focus on the new card, not on a removed button.
  function announce() {
    var root = card();
    var region = document.getElementById("label-announcer");
    if (!root || !region) {
      return;
    }
    var parts = [];
    root.querySelectorAll("[data-card-messages] li").forEach(function (item) {
      parts.push(item.textContent.trim());
    });
    var answered = root.querySelector("[data-answered]");
    if (answered) {
      parts.push(answered.textContent.replace(/\s+/g, " ").trim());
    } else if (root.querySelector("#label-form")) {
      var left = root.querySelector("#progress");
      parts.push("New pair to label." + (left ? " " + left.textContent.replace(/\s+/g, " ").trim() + "." : ""));
    } else {
      parts.push("Nothing left to label here.");
    }
    region.textContent = parts.join(" ");
    root.focus({ preventScroll: true });
  }

  document.addEventListener("htmx:afterSwap", function () {
    shownAt = performance.now();
    window.scrollTo({ top: 0 });
    setUpPrompt();
    announce();
  });

  // Back (or Forward) to an earlier card: htmx restores a copy of the page as
  // it was, with a form for an answer already given. Ask the server instead,
  // which says the pair is answered and offers the change while allowed.
  document.addEventListener("htmx:historyRestore", function () {
    if (card()) {
      window.location.reload();
    }
  });

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setUpPrompt);
  } else {
    setUpPrompt();
  }
})();
