// Progressive enhancement only: every page works without this file.
// 1. A page with form errors moves focus to the error summary, so it is read out first.
// 2. Before the browser session ends, a warning offers more time (WCAG 2.2.1); the request
//    runs in the background so nothing typed on the page is lost.
"use strict";

(function () {
  function focusErrors() {
    var summary = document.getElementById("error-summary");
    if (summary) {
      summary.focus();
    }
  }

  function sessionWarning() {
    var main = document.getElementById("main");
    var dialog = document.getElementById("session-warning");
    if (!main || !dialog || !main.dataset.sessionExpires) {
      return;
    }
    var warnMs = Number(main.dataset.sessionWarn || "120") * 1000;
    var timer = null;

    function schedule(expiresIso) {
      var expires = Date.parse(expiresIso);
      if (isNaN(expires)) {
        return;
      }
      if (timer) {
        clearTimeout(timer);
      }
      var wait = Math.max(0, expires - warnMs - Date.now());
      timer = setTimeout(show, wait);
    }

    function show() {
      dialog.hidden = false;
      var button = dialog.querySelector("button");
      if (button) {
        button.focus();
      }
    }

    var form = dialog.querySelector("form");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      })
        .then(function (response) {
          if (!response.ok) {
            throw new Error("extend failed");
          }
          return response.json();
        })
        .then(function (answer) {
          dialog.hidden = true;
          main.dataset.sessionExpires = answer.expires_at;
          schedule(answer.expires_at);
          main.focus();
        })
        .catch(function () {
          form.submit();
        });
    });
    schedule(main.dataset.sessionExpires);
  }

  document.addEventListener("DOMContentLoaded", function () {
    focusErrors();
    sessionWarning();
  });
})();
