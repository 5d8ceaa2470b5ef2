// Ranking card: order K answers by drag or by keyboard. The form works
// without this file (a place per answer, chosen in a list); this keeps those
// places in step with the order on screen, so what is posted is what is seen.
// label.js (loaded first) stamps the timer, lets a refused submit's card
// swap in, and handles S (skip) and R (reason).
(function () {
  "use strict";

  function rankForm() {
    return document.querySelector("[data-rank-form]");
  }

  function listOf(form) {
    return form.querySelector("[data-rank-list]");
  }

  function itemsOf(list) {
    return Array.prototype.filter.call(list.children, function (el) {
      return el.hasAttribute("data-rank-item");
    });
  }

  function letterOf(item) {
    return item.getAttribute("data-letter");
  }

  function isTied(item) {
    return item.getAttribute("data-tied") === "true";
  }

  function setTied(item, tied) {
    item.setAttribute("data-tied", tied ? "true" : "false");
  }

  function say(text) {
    var region = document.getElementById("label-announcer");
    if (region) {
      region.textContent = text;
    }
  }

  // Places as shown: an answer tied with the one above shares its place, and
  // the next untied answer takes its own position (1, 2, 2, 4).
  function places(items) {
    var result = [];
    items.forEach(function (item, i) {
      result.push(i > 0 && isTied(item) ? result[i - 1] : i + 1);
    });
    return result;
  }

  function refresh(list) {
    var items = itemsOf(list);
    var k = items.length;
    if (items.length) {
      setTied(items[0], false);
    }
    var at = places(items);
    items.forEach(function (item, i) {
      var tied = isTied(item);
      var place = at[i];
      item.querySelector("[data-rank-pos]").textContent = String(place);
      item.querySelector("[data-tie-mark]").hidden = !tied;
      item.classList.toggle("tied", tied);
      var select = item.querySelector("[data-rank-select]");
      if (select) {
        select.value = String(place);
      }
      var up = item.querySelector('[data-move="up"]');
      var down = item.querySelector('[data-move="down"]');
      var tie = item.querySelector("[data-tie]");
      if (up) {
        up.disabled = i === 0;
      }
      if (down) {
        down.disabled = i === k - 1;
      }
      if (tie) {
        tie.disabled = i === 0;
        tie.setAttribute("aria-pressed", tied ? "true" : "false");
      }
      var label = "Answer " + letterOf(item) + ", place " + place + " of " + k;
      if (tied) {
        label += ", tied with answer " + letterOf(items[i - 1]);
      }
      item.setAttribute("aria-label", label);
    });
  }

  function describe(list, item) {
    var items = itemsOf(list);
    var i = items.indexOf(item);
    var text =
      "Answer " + letterOf(item) + " is at place " + places(items)[i] + " of " + items.length;
    if (isTied(item)) {
      text += ", tied with answer " + letterOf(items[i - 1]);
    }
    return text + ".";
  }

  // Take an item out of the order. An answer tied with it stays tied with
  // the answer above only if the removed one was itself tied to that answer.
  function detach(item) {
    var next = item.nextElementSibling;
    if (next && isTied(next) && !isTied(item)) {
      setTied(next, false);
    }
    setTied(item, false);
    item.parentNode.removeChild(item);
  }

  function moveTo(list, item, position) {
    var items = itemsOf(list);
    var from = items.indexOf(item);
    position = Math.max(0, Math.min(items.length - 1, position));
    if (from === position && !isTied(item)) {
      say(describe(list, item));
      return;
    }
    detach(item);
    var rest = itemsOf(list);
    list.insertBefore(item, rest[position] || null);
    refresh(list);
    item.focus({ preventScroll: false });
    say(describe(list, item));
  }

  function toggleTie(list, item) {
    var items = itemsOf(list);
    var i = items.indexOf(item);
    if (i <= 0) {
      say("Answer " + letterOf(item) + " is first: there is no answer above to tie with.");
      return;
    }
    setTied(item, !isTied(item));
    refresh(list);
    say(
      isTied(item)
        ? describe(list, item)
        : "Answer " + letterOf(item) + " is no longer tied. " + describe(list, item)
    );
  }

  // The order the server rendered (each answer's place, posted back after a
  // refused submit), best first; equal places are ties.
  function setUp(form) {
    if (!form || form.hasAttribute("data-rank-ready")) {
      return;
    }
    form.setAttribute("data-rank-ready", "");
    form.classList.add("rank-js");
    var list = listOf(form);
    var items = itemsOf(list).map(function (item, i) {
      var select = item.querySelector("[data-rank-select]");
      return { item: item, place: Number(select && select.value) || i + 1, index: i };
    });
    items.sort(function (a, b) {
      return a.place - b.place || a.index - b.index;
    });
    items.forEach(function (entry, i) {
      setTied(entry.item, i > 0 && entry.place === items[i - 1].place);
      list.appendChild(entry.item);
    });
    form.querySelectorAll("[data-rank-buttons]").forEach(function (el) {
      el.hidden = false;
    });
    refresh(list);
  }

  function focusFirst(form) {
    var first = form && itemsOf(listOf(form))[0];
    if (first) {
      first.focus({ preventScroll: true });
    }
  }

  function typing(target) {
    var tag = target && target.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || (target && target.isContentEditable);
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) {
      return;
    }
    var form = rankForm();
    if (!form) {
      return;
    }
    var list = listOf(form);
    var item = event.target.closest ? event.target.closest("[data-rank-item]") : null;
    if (item && item.parentNode !== list) {
      item = null;
    }
    var key = event.key;
    if (key === "Enter") {
      // A focused button or link does its own thing on Enter.
      if (event.repeat || (event.target.closest && event.target.closest("button, a, summary"))) {
        return;
      }
      var submit = form.querySelector("[data-rank-submit]");
      if (submit && !submit.disabled) {
        event.preventDefault();
        submit.click();
      }
      return;
    }
    var items = itemsOf(list);
    if (!item) {
      if ((key === "ArrowDown" || key === "ArrowUp") && items.length && !event.target.closest("button")) {
        event.preventDefault();
        items[0].focus();
        say(describe(list, items[0]));
      }
      return;
    }
    var i = items.indexOf(item);
    if (key === "ArrowUp" || key === "ArrowDown") {
      event.preventDefault();
      var step = key === "ArrowUp" ? -1 : 1;
      if (event.shiftKey) {
        var other = items[i + step];
        if (other) {
          other.focus();
          say(describe(list, other));
        }
        return;
      }
      if (items[i + step]) {
        moveTo(list, item, i + step);
      } else {
        say(describe(list, item));
      }
      return;
    }
    if (key === "=") {
      event.preventDefault();
      toggleTie(list, item);
      return;
    }
    if (/^[1-9]$/.test(key) && !event.repeat) {
      var place = Number(key);
      if (place <= items.length) {
        event.preventDefault();
        moveTo(list, item, place - 1);
      }
    }
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-move], [data-tie]");
    var form = rankForm();
    if (!button || !form || !form.contains(button)) {
      return;
    }
    var list = listOf(form);
    var item = button.closest("[data-rank-item]");
    if (button.hasAttribute("data-tie")) {
      toggleTie(list, item);
      return;
    }
    var i = itemsOf(list).indexOf(item);
    moveTo(list, item, i + (button.getAttribute("data-move") === "up" ? -1 : 1));
    // Keep focus on the button pressed, so it can be pressed again.
    if (!button.disabled) {
      button.focus();
    }
  });

  // Drag and drop (HTML5): the drop lands before or after the answer under
  // the pointer, by which half of it the pointer is in.
  var dragged = null;

  function clearMarks(list) {
    list.querySelectorAll(".drop-before, .drop-after").forEach(function (el) {
      el.classList.remove("drop-before", "drop-after");
    });
  }

  function dropTarget(event) {
    var form = rankForm();
    if (!dragged || !form) {
      return null;
    }
    var list = listOf(form);
    var over = event.target.closest ? event.target.closest("[data-rank-item]") : null;
    if (!over || over.parentNode !== list || over === dragged) {
      return { list: list, over: null, after: false };
    }
    var box = over.getBoundingClientRect();
    return { list: list, over: over, after: event.clientY > box.top + box.height / 2 };
  }

  // A drag starts anywhere on an answer's card but its text, which stays
  // selectable (to copy a line of code, say).
  document.addEventListener("pointerdown", function (event) {
    var item = event.target.closest && event.target.closest("[data-rank-item]");
    var form = rankForm();
    if (item && form && item.parentNode === listOf(form)) {
      item.draggable = !event.target.closest(".prose");
    }
  });

  document.addEventListener("dragstart", function (event) {
    var item = event.target.closest && event.target.closest("[data-rank-item]");
    var form = rankForm();
    if (!item || !form || item.parentNode !== listOf(form)) {
      return;
    }
    dragged = item;
    event.dataTransfer.effectAllowed = "move";
    event.dataTransfer.setData("text/plain", "Answer " + letterOf(item));
    item.classList.add("dragging");
  });

  document.addEventListener("dragover", function (event) {
    var target = dropTarget(event);
    if (!target) {
      return;
    }
    event.preventDefault();
    event.dataTransfer.dropEffect = "move";
    clearMarks(target.list);
    if (target.over) {
      target.over.classList.add(target.after ? "drop-after" : "drop-before");
    }
  });

  document.addEventListener("drop", function (event) {
    var target = dropTarget(event);
    if (!target) {
      return;
    }
    event.preventDefault();
    clearMarks(target.list);
    if (!target.over) {
      return;
    }
    var item = dragged;
    var items = itemsOf(target.list);
    var from = items.indexOf(item);
    var to = items.indexOf(target.over) + (target.after ? 1 : 0);
    // Positions count the dragged answer's own slot until it is taken out.
    moveTo(target.list, item, from < to ? to - 1 : to);
  });

  document.addEventListener("dragend", function () {
    var form = rankForm();
    if (dragged) {
      dragged.classList.remove("dragging");
    }
    dragged = null;
    if (form) {
      clearMarks(listOf(form));
    }
  });

  // After label.js (registered first) has announced the swap and focused the
  // card: a new ranking card is set up and its first answer takes focus.
  document.addEventListener("htmx:afterSwap", function () {
    var form = rankForm();
    if (!form) {
      return;
    }
    setUp(form);
    var region = document.getElementById("label-announcer");
    var count = itemsOf(listOf(form)).length;
    // label.js said what it could (messages first); its last words are for pairs.
    var before = region
      ? region.textContent.replace("Nothing left to label here.", "").trim()
      : "";
    say(
      (before ? before + " " : "") +
        "New answers to rank: " + count + " answers, best first."
    );
    focusFirst(form);
  });

  function start() {
    var form = rankForm();
    setUp(form);
    focusFirst(form);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
