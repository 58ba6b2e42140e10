// Progressive enhancement only: every page works without this file.
// 1. A page with form errors moves focus to the error summary, so it is read out first.
// 2. Before the time of the page runs out, a dialog offers more time (WCAG 2.2.1): the
//    browser session's, or on a login's pages the login's own, whichever ends first. The
//    request runs in the background, so nothing typed on the page is lost. When the time is
//    up the dialog says so, offers to start again, and the page's forms are held back (their
//    answer could only be an error, and what was typed stays on the page).
// 3. A link marked data-follow (the way back to a service provider) is followed at once.
"use strict";

(function () {
  function focusErrors() {
    var summary = document.getElementById("error-summary");
    if (summary) {
      summary.focus();
    }
  }

  function pad(number) {
    return (number < 10 ? "0" : "") + number;
  }

  // The time of day as the pages write it: 14.05 in Danish, 14:05 in English.
  function clock(at) {
    var time = new Date(at);
    var separator = document.documentElement.lang === "da" ? "." : ":";
    return pad(time.getHours()) + separator + pad(time.getMinutes());
  }

  function timeLimits() {
    var main = document.getElementById("main");
    var dialog = document.getElementById("session-warning");
    if (!main || !dialog || !main.dataset.sessionExpires) {
      return;
    }
    var title = document.getElementById("session-warning-title");
    var text = document.getElementById("session-warning-text");
    var form = dialog.querySelector("form");
    var again = dialog.querySelector(".session-warning__again");
    var warningTitle = title.textContent;
    var timer = null;
    var over = false;

    // The deadline that comes first: the login's (on its pages) or the session's.
    function next() {
      var session = Date.parse(main.dataset.sessionExpires);
      var login = main.dataset.loginExpires ? Date.parse(main.dataset.loginExpires) : NaN;
      if (!isNaN(login) && (isNaN(session) || login <= session)) {
        return { at: login, login: true, warnMs: Number(main.dataset.loginWarn || "120") * 1000 };
      }
      return { at: session, login: false, warnMs: Number(main.dataset.sessionWarn || "120") * 1000 };
    }

    // The dialog, with focus on what it offers: always when it changes to say that the
    // time is up, otherwise only when it appears (so a warning shown again after more time
    // was refused does not take the focus twice).
    function show(focus, always) {
      var wasHidden = dialog.hidden;
      dialog.hidden = false;
      if (always || wasHidden) {
        focus.focus();
      }
    }

    function warn(deadline) {
      var extend = deadline.login ? main.dataset.loginExtend : "/session/extend";
      var template = deadline.login
        ? dialog.dataset[extend ? "loginText" : "loginLast"]
        : dialog.dataset.sessionText;
      title.textContent = warningTitle;
      text.textContent = template.replace("{time}", clock(deadline.at));
      again.hidden = true;
      form.hidden = !extend;
      if (extend) {
        form.action = extend;
      }
      show(extend ? form.querySelector("button") : dialog);
    }

    function timeUp(deadline) {
      over = true;
      title.textContent = dialog.dataset.endedTitle;
      text.textContent = deadline.login
        ? dialog.dataset.loginEnded
        : dialog.dataset.sessionEnded;
      form.hidden = true;
      again.hidden = false;
      if (main.dataset.loginExpires) {
        // The login's own "more time" form on the page can no longer help either.
        showLoginEnd(main.dataset.loginExpires, false);
      }
      show(again.querySelector("a") || dialog, true);
    }

    function schedule() {
      if (timer) {
        clearTimeout(timer);
      }
      var deadline = next();
      if (isNaN(deadline.at)) {
        return;
      }
      var now = Date.now();
      if (now >= deadline.at) {
        timeUp(deadline);
        return;
      }
      if (now >= deadline.at - deadline.warnMs) {
        warn(deadline);
        timer = setTimeout(schedule, deadline.at - now);
        return;
      }
      timer = setTimeout(schedule, deadline.at - deadline.warnMs - now);
    }

    // The login's end, as its page says it, after more time.
    function showLoginEnd(at, canExtend) {
      var line = document.getElementById("login-expiry-text");
      if (line && line.dataset.template) {
        line.textContent = line.dataset.template.replace("{time}", clock(Date.parse(at)));
      }
      var more = document.querySelector("#login-expiry form");
      if (more && !canExtend) {
        more.hidden = true;
      }
    }

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
          if (answer.session_expires_at) {
            // The login's own time (its session came along with the request).
            main.dataset.loginExpires = answer.expires_at;
            main.dataset.sessionExpires = answer.session_expires_at;
            if (!answer.can_extend) {
              delete main.dataset.loginExtend;
            }
            showLoginEnd(answer.expires_at, answer.can_extend);
          } else {
            main.dataset.sessionExpires = answer.expires_at;
          }
          dialog.hidden = true;
          main.focus();
          schedule();
        })
        .catch(function () {
          form.submit();
        });
    });

    // Once the time is up a form's answer could only be an error page: the dialog says
    // what happened instead, and what was typed stays where it is.
    document.addEventListener(
      "submit",
      function (event) {
        if (over && !dialog.contains(event.target)) {
          event.preventDefault();
          show(again.querySelector("a") || dialog, true);
        }
      },
      true
    );
    schedule();
  }

  function follow() {
    var link = document.querySelector("a[data-follow]");
    if (link) {
      window.location.replace(link.href);
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    focusErrors();
    timeLimits();
    follow();
  });
})();
