/* Models page: retrain / promote / roll back buttons post to the retraining API with the
   session's CSRF token (read from the body's hx-headers, as htmx sends it). Charts are drawn
   by desk.js. Loaded as a file: the CSP forbids inline scripts. */
(function () {
  "use strict";

  function csrfToken() {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
    } catch (e) {
      return "";
    }
  }

  function say(text, isError) {
    var out = document.getElementById("loop-status");
    if (!out) { return; }
    out.textContent = text;
    out.classList.toggle("error", !!isError);
  }

  var QUESTIONS = {
    retrain: "Train a new challenger on the latest data?",
    promote: "Make model v{id} the champion? The current champion is retired.",
    rollback: "Roll back from champion v{id} to the previous champion?"
  };

  document.addEventListener("click", function (ev) {
    var t = ev.target;
    if (!(t instanceof Element)) { return; }
    var button = t.closest("button.loop-action");
    if (!button || button.disabled) { return; }
    var id = button.dataset.model || "";
    var url = button.dataset.url.replace("{id}", id);
    var question = (QUESTIONS[button.dataset.action] || "Go ahead?").replace("{id}", id);
    var reason = "";
    if (button.dataset.action !== "retrain") {
      reason = window.prompt(question + "\nReason (kept in the audit trail):", "");
      if (reason === null || !reason.trim()) { return; }
    } else if (!window.confirm(question)) {
      return;
    }
    button.disabled = true;
    say("Sending…", false);
    fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken(), "Accept": "application/json" },
      body: JSON.stringify(reason ? { reason: reason } : {})
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        if (!response.ok) {
          say((body && (body.detail || body.error)) || ("Refused: HTTP " + response.status), true);
          button.disabled = false;
          return;
        }
        say("Done. Reloading…", false);
        window.location.reload();
      });
    }).catch(function () {
      say("Network error: nothing was changed by this page.", true);
      button.disabled = false;
    });
  });
})();
