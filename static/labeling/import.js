// Upload progress for the campaign import form. The form works without this
// file (a plain multipart POST); with htmx it posts in the background and this
// shows how much of the file has been sent, then "Processing…" while the
// server checks and writes every line.
(function () {
  "use strict";

  function importForm(element) {
    return element && element.closest ? element.closest("[data-import-form]") : null;
  }

  function parts(form) {
    var box = form.querySelector("[data-import-progress]");
    return {
      box: box,
      bar: box && box.querySelector("progress"),
      status: box && box.querySelector("[data-import-status]"),
    };
  }

  function show(form, text, fraction) {
    var p = parts(form);
    if (!p.box) {
      return;
    }
    p.box.hidden = false;
    if (fraction === null) {
      // No value: the bar shows an indeterminate state.
      p.bar.removeAttribute("value");
    } else {
      p.bar.value = Math.round(fraction * 100);
    }
    p.status.textContent = text;
  }

  function mebibytes(bytes) {
    return (bytes / 1048576).toFixed(1) + " MB";
  }

  // Refuse a file over the server's limit before sending it.
  document.addEventListener("htmx:confirm", function (event) {
    var form = importForm(event.target);
    if (!form) {
      return;
    }
    var input = form.querySelector("input[type=file]");
    var file = input && input.files && input.files[0];
    var limit = Number(form.getAttribute("data-max-bytes"));
    if (file && limit && file.size > limit) {
      event.preventDefault();
      show(form, "The file is " + mebibytes(file.size) + "; the limit is " +
        form.getAttribute("data-max-label") + ". Split it into smaller files.", 0);
    }
  });

  document.addEventListener("htmx:beforeRequest", function (event) {
    var form = importForm(event.target);
    if (form) {
      form.removeAttribute("data-processing");
      show(form, "Uploading…", 0);
    }
  });

  // htmx reports the upload's and then the response's progress under one
  // name; once the upload is complete the rest is the server's work.
  document.addEventListener("htmx:xhr:progress", function (event) {
    var form = importForm(event.target);
    var detail = event.detail;
    if (!form || form.hasAttribute("data-processing") || !detail.lengthComputable) {
      return;
    }
    if (detail.loaded >= detail.total) {
      form.setAttribute("data-processing", "");
      show(form, "Upload complete. Processing… (every line is checked before anything is written)", null);
    } else {
      show(form, "Uploading… " + mebibytes(detail.loaded) + " of " + mebibytes(detail.total),
        detail.loaded / detail.total);
    }
  });

  // The server answers 400 with the card that names the bad line; swap it in
  // like a success (htmx does not swap 4xx responses by default).
  document.addEventListener("htmx:beforeSwap", function (event) {
    if (event.target.id === "campaign-import" && event.detail.xhr.status === 400) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  function failed(event, text) {
    var form = importForm(event.target);
    if (form) {
      show(form, text, 0);
    }
  }

  document.addEventListener("htmx:responseError", function (event) {
    failed(event, "The upload failed (HTTP " + event.detail.xhr.status + "). Reload the page and try again.");
  });

  document.addEventListener("htmx:sendError", function (event) {
    failed(event, "The upload did not reach the server. Check the connection and try again.");
  });
})();
