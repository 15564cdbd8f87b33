/* What-if pages: sliders that re-score the member without a reload, and segment charts.
   Loaded as a file (the CSP forbids inline scripts). Figures come from the server as JSON. */
(function () {
  "use strict";

  var PLOT_CONFIG = { displayModeBar: false, responsive: true };

  function draw(el, fig) {
    if (!el || !fig || !window.Plotly) { return; }
    window.Plotly.react(el, fig.data, fig.layout, PLOT_CONFIG);
    el.classList.add("drawn");
  }

  // Charts embedded as <script type="application/json"> blocks (segment page, htmx swaps).
  function drawEmbedded(root) {
    (root || document).querySelectorAll("[data-chart]").forEach(function (el) {
      var src = document.getElementById(el.dataset.chart);
      if (src) { draw(el, JSON.parse(src.textContent)); }
    });
  }

  function pct(v) { return (100 * v).toFixed(1) + "%"; }
  function money(v) { return v.toFixed(2); }
  function signed(v) { return (v >= 0 ? "+" : "−") + Math.abs(v).toFixed(2); }
  function text(id, value) { var el = document.getElementById(id); if (el) { el.textContent = value; } }
  function fmt(v) { return Math.abs(v - Math.round(v)) < 1e-9 ? String(Math.round(v)) : String(+v.toFixed(2)); }

  function csrfToken() {
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function memberPage(init) {
    var changes = Object.assign({}, init.changes || {});
    var seq = 0;
    var applied = 0;
    var timer = null;
    var lastResult = init.result;

    function controlsFor(name) {
      return document.querySelectorAll(".wi-range[data-feature='" + name + "'], .wi-num[data-feature='" + name + "']");
    }

    function setControl(name, value) {
      controlsFor(name).forEach(function (el) {
        if (document.activeElement !== el) { el.value = el.tagName === "SELECT" ? String(Math.round(value)) : fmt(value); }
      });
    }

    function render(r) {
      var b = r.base, s = r.scenario;
      text("wi-prob-base", pct(b.probability));
      text("wi-prob-base-int", "90%: " + pct(b.p_low) + "–" + pct(b.p_high));
      text("wi-prob", pct(s.probability));
      text("wi-prob-int", "90%: " + pct(s.p_low) + "–" + pct(s.p_high));
      var dp = r.delta.probability * 100;
      text("wi-prob-delta", (dp >= 0 ? "+" : "−") + Math.abs(dp).toFixed(1) + " points");
      text("wi-offer-base", b.offer || "no action");
      text("wi-offer", s.offer || "no action");
      text("wi-offer-changed", r.recommendation_changed ? "changed" : "same");
      document.getElementById("wi-offer").classList.toggle("changed", r.recommendation_changed);
      text("wi-ev-base", signed(b.expected_value));
      text("wi-ev-base-int", "members like this: " + money(b.ev_low) + " to " + money(b.ev_high));
      text("wi-ev", signed(s.expected_value));
      text("wi-ev-int", "members like this: " + money(s.ev_low) + " to " + money(s.ev_high));
      text("wi-ev-delta", signed(r.delta.expected_value) + " " + init.currency);
      text("wi-status", "server " + r.server_ms + " ms");

      var warnings = document.getElementById("wi-warnings");
      warnings.textContent = "";
      r.warnings.forEach(function (w) {
        var li = document.createElement("li"); li.textContent = w.text; warnings.appendChild(li);
      });
      var recourse = r.recourse || { found: false, text: "" };
      text("wi-recourse", recourse.text);
      document.getElementById("wi-recourse-apply").hidden = !recourse.found;

      var drivers = document.getElementById("wi-drivers");
      drivers.textContent = "";
      s.drivers.forEach(function (d) {
        var li = document.createElement("li");
        li.className = "drv " + d.effect;
        li.textContent = d.text + " (" + d.effect + ")";
        drivers.appendChild(li);
      });

      r.features.forEach(function (f) {
        var row = document.getElementById("row-" + f.name);
        if (!row) { return; }
        row.classList.toggle("changed", f.changed);
        row.classList.toggle("adjusted", f.adjusted);
        row.classList.toggle("outside", f.outside_training_range);
        var flag = row.querySelector(".wi-flag");
        if (flag) { flag.textContent = f.adjusted ? "adjusted" : (f.outside_training_range ? "outside training range" : ""); }
        setControl(f.name, f.value);
      });

      var tbody = document.querySelector("#wi-offers-table tbody");
      tbody.textContent = "";
      b.alternatives.forEach(function (a, j) {
        var x = s.alternatives[j];
        var tr = document.createElement("tr");
        if (x.code === s.offer) { tr.className = "recommended"; }
        [a.code, pct(a.p_response), pct(x.p_response),
         signed(a.ev) + " (" + money(a.ev_low) + " to " + money(a.ev_high) + ")",
         signed(x.ev) + " (" + money(x.ev_low) + " to " + money(x.ev_high) + ")", x.source
        ].forEach(function (v) { var td = document.createElement("td"); td.textContent = v; tr.appendChild(td); });
        tbody.appendChild(tr);
      });

      draw(document.getElementById("wi-shap-after"), r.figures.shap_after);
      draw(document.getElementById("wi-offers"), r.figures.offers);
      document.getElementById("wi-save-changes").value = JSON.stringify(r.changes);
      lastResult = r;
      document.body.dataset.whatifApplied = String(applied);
    }

    function showError(body) {
      var field = body.field || Object.keys(body.fields || {})[0] || "";
      text("wi-status", "not scored: " + (field ? field + ": " : "") + (body.error || "invalid input"));
      var row = field && document.getElementById("row-" + field);
      if (row) { row.classList.add("invalid"); }
    }

    function recompute() {
      var mine = ++seq;
      document.querySelectorAll("tr.wi-feature.invalid").forEach(function (r) { r.classList.remove("invalid"); });
      fetch(init.evaluate_url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
        body: JSON.stringify({ changes: changes, model_version: init.model_version, as_of: init.as_of,
                               base_order: init.base_order })
      }).then(function (resp) {
        return resp.json().then(function (body) { return { ok: resp.ok, body: body }; });
      }).then(function (res) {
        if (mine !== seq) { return; } // a newer edit is on its way: only the latest answer counts
        applied = mine;
        if (res.ok) { render(res.body); } else { showError(res.body); document.body.dataset.whatifApplied = String(applied); }
      }).catch(function () { text("wi-status", "the server did not answer; try again"); });
    }

    function schedule() {
      if (timer) { clearTimeout(timer); }
      timer = setTimeout(recompute, 60);
    }

    function onEdit(ev) {
      var el = ev.target;
      if (!(el instanceof Element) || !el.dataset.feature || el.disabled) { return; }
      var name = el.dataset.feature;
      if (el.value === "") { return; }
      var value = Number(el.value);
      controlsFor(name).forEach(function (other) { if (other !== el) { other.value = el.value; } });
      var base = null;
      lastResult.features.forEach(function (f) { if (f.name === name) { base = f.base; } });
      if (base !== null && value === base) { delete changes[name]; } else { changes[name] = value; }
      schedule();
    }

    var form = document.getElementById("wi-form");
    form.addEventListener("input", onEdit);
    form.addEventListener("change", onEdit);
    form.addEventListener("submit", function (ev) { ev.preventDefault(); });

    document.getElementById("wi-reset").addEventListener("click", function () {
      changes = {};
      lastResult.features.forEach(function (f) { setControl(f.name, f.base); });
      recompute();
    });
    document.getElementById("wi-recourse-apply").addEventListener("click", function () {
      var r = lastResult.recourse;
      if (!r || !r.found) { return; }
      changes[r.feature] = r.to;
      setControl(r.feature, r.to);
      recompute();
    });

    drawEmbedded(document);
    render(init.result && Object.assign({}, init.result, { figures: init.figures }));
  }

  function start() {
    var initEl = document.getElementById("whatif-init");
    if (initEl) { memberPage(JSON.parse(initEl.textContent)); } else { drawEmbedded(document); }
    // A finished segment run arrives by an htmx swap with its charts as JSON blocks.
    document.body.addEventListener("htmx:afterSwap", function () { drawEmbedded(document); });
    document.body.dataset.whatifReady = "1";
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
