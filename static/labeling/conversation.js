// Live conversations: keyboard shortcuts, timing and announcements. No inline
// handlers: the page works without this file (plain form posts and reloads),
// this only adds speed. The polling itself is htmx (hx-trigger on the turn).
(function () {
  "use strict";

  var readyAt = performance.now();
  var lastStatus = null;
  var MAX_MS = 86400000;

  function body() {
    return document.getElementById("conversation-body");
  }

  function typing(target) {
    var tag = target && target.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || (target && target.isContentEditable);
  }

  function stampTimer() {
    var timer = document.querySelector("[data-timer]");
    if (timer) {
      timer.value = String(Math.min(MAX_MS, Math.round(performance.now() - readyAt)));
    }
  }

  function say(text) {
    var region = document.getElementById("conversation-announcer");
    if (region && text) {
      region.textContent = text;
    }
  }

  // What changed since the last swap, said once (the turn is re-rendered
  // every half second while its answers are written).
  function announce() {
    var turn = document.getElementById("conversation-turn");
    var status = turn ? turn.getAttribute("data-turn-status") : "none";
    if (status === lastStatus) {
      return;
    }
    lastStatus = status;
    if (status === "ready") {
      readyAt = performance.now();
      say("Both answers are written. Press 1, 2, 3 or 4 to pick.");
      var card = body();
      if (card) {
        card.focus({ preventScroll: true });
      }
    } else if (status === "generating") {
      say("The answers are being written.");
    } else if (status === "queued") {
      say("Waiting for a worker to write the answers.");
    } else if (status === "failed") {
      var error = document.querySelector("[data-turn-error]");
      say(error ? error.textContent.trim() : "The answers could not be written.");
    } else {
      var errors = document.querySelectorAll("[data-card-messages] li");
      if (errors.length) {
        say(errors[0].textContent.trim());
      } else if (document.querySelector("[data-finished]")) {
        say("Conversation finished.");
      } else {
        say("Your pick is recorded. Write the next message.");
      }
      var message = document.querySelector("[data-message]");
      if (message) {
        message.focus({ preventScroll: true });
      }
    }
  }

  document.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && event.target.hasAttribute && event.target.hasAttribute("data-message")) {
      event.preventDefault();
      var form = event.target.form;
      if (form) {
        form.requestSubmit();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) {
      return;
    }
    if (typing(event.target)) {
      if (event.key === "Escape") {
        event.target.blur();
      } else if (event.key === "Enter" && event.target.hasAttribute("data-rationale")) {
        // Enter in the reason never picks: only an explicit choice does.
        event.preventDefault();
      }
      return;
    }
    var form = document.getElementById("conversation-choose");
    var button = form && form.querySelector('button[data-key="' + event.key + '"]');
    if (button && !button.disabled) {
      event.preventDefault();
      stampTimer();
      button.click();
    }
  });

  document.addEventListener("submit", stampTimer, true);

  // A refused step answers 400 with the conversation explaining why; let
  // htmx swap it in like a success.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    if (event.detail.xhr.status === 400 && target && target.id === "conversation-body") {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  // A poll that fails (server restarting, network gone) must not leave the
  // page silently frozen: say so and poll again a little later.
  document.addEventListener("htmx:afterRequest", function (event) {
    var elt = event.detail.elt;
    if (!event.detail.successful && elt && elt.id === "conversation-turn") {
      say("Lost contact with the server; trying again.");
      window.setTimeout(function () {
        if (document.body.contains(elt) && window.htmx) {
          window.htmx.ajax("GET", elt.getAttribute("hx-get"), { target: elt, swap: "outerHTML" });
        }
      }, 2000);
    }
  });

  document.addEventListener("htmx:afterSwap", announce);

  // On page load only remember where the turn stands (nothing changed yet).
  function init() {
    var turn = document.getElementById("conversation-turn");
    lastStatus = turn ? turn.getAttribute("data-turn-status") : "none";
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
