/* Review desk: keyboard navigation, row forms, bulk selection and plotly charts.
   Loaded as a file (the CSP forbids inline scripts); works on the queue and detail pages. */
(function () {
  "use strict";

  var selectedId = null;

  function rows() {
    return Array.prototype.slice.call(document.querySelectorAll("#queue tr.qrow"));
  }

  function current() {
    return selectedId ? document.getElementById("rec-" + selectedId) : null;
  }

  function select(row) {
    rows().forEach(function (r) { r.classList.remove("selected"); r.removeAttribute("aria-selected"); });
    if (!row) { selectedId = null; claimSoon(null); return; }
    selectedId = row.dataset.id;
    row.classList.add("selected");
    row.setAttribute("aria-selected", "true");
    row.scrollIntoView({ block: "nearest" });
    claimSoon(row);
  }

  // Review claims (recommendations/claims.py): the selected row, or the open detail page, is
  // shown to the other managers as yours while you look at it; moving on lets it go. Advice
  // only: the server never refuses a decision because of a claim.
  var claimedUrl = null, claimTimer = null, claimRefresh = null;

  function csrfToken() {
    try { return JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRFToken"] || ""; } catch (e) { return ""; }
  }

  function claimCall(url, method) {
    return window.fetch(url, { method: method, credentials: "same-origin",
                               headers: { "X-CSRFToken": csrfToken(), "Accept": "application/json" } });
  }

  function markClaimed(row, name) {
    if (!row) { return; }
    row.classList.add("claimed");
    var badge = row.querySelector(".badge.claim") || document.createElement("span");
    badge.className = "badge claim";
    badge.textContent = name + " is reviewing";
    badge.title = name + " has this item open; you can still decide it";
    var cell = row.querySelector("td.actions");
    if (cell && !badge.parentNode) { cell.insertBefore(badge, cell.firstChild); }
  }

  function unmarkClaimed(row) {
    row.classList.remove("claimed");
    var badge = row.querySelector(".badge.claim");
    if (badge) { badge.remove(); }
  }

  // Presence: an open queue page asks every few seconds what changed on its rows since it was
  // served (GET /api/recommendations/presence/): who else has an item open, and items decided
  // elsewhere, which lose their buttons so nobody works an item that is gone.
  function markChanged(row, item) {
    if (row.dataset.status === item.status) { return; }
    row.dataset.status = item.status;
    row.classList.add("changed");
    var cell = row.querySelector("td.actions");
    if (!cell) { return; }
    var note = cell.querySelector(".badge.changed") || document.createElement("span");
    note.className = "badge changed";
    note.textContent = "Now " + item.status.replace(/_/g, " ") + " (decided elsewhere)";
    if (!note.parentNode) { cell.insertBefore(note, cell.firstChild); }
    if (!item.can_decide) {
      cell.querySelectorAll(".btns, form.rowform").forEach(function (el) { el.remove(); });
      var box = row.querySelector("input.bulk-box");
      if (box) { box.checked = false; box.disabled = true; }
    }
  }

  function refreshPresence(url) {
    var asked = {};
    rows().forEach(function (r) { asked[r.dataset.id] = r; });
    var ids = Object.keys(asked);
    if (!ids.length || document.hidden) { return; }
    window.fetch(url + "?ids=" + ids.join(","), { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) {
        if (!body) { return; }
        body.items.forEach(function (item) {
          var row = document.getElementById("rec-" + item.id);
          // A row swapped in while the answer travelled (your own decision) is newer than it.
          if (!row || row !== asked[String(item.id)]) { return; }
          if (item.claimed_by) { markClaimed(row, item.claimed_by); } else { unmarkClaimed(row); }
          markChanged(row, item);
        });
        updateBulkCount();
      })
      .catch(function () { /* the next round will try again */ });
  }

  function claim(url, row) {
    claimCall(url, "POST").then(function (r) { return r.ok ? r.json() : null; }).then(function (body) {
      if (body && body.claimed_by) { markClaimed(row, body.claimed_by); }
    }).catch(function () { /* advice only: a lost claim changes nothing */ });
  }

  function claimSoon(row) {
    // Debounced: holding j down claims only the row you stop on.
    window.clearTimeout(claimTimer);
    claimTimer = window.setTimeout(function () {
      var url = (row && row.dataset.claimUrl) || null;  // only open items the user may decide have one
      if (url === claimedUrl) { return; }
      if (claimedUrl) { claimCall(claimedUrl, "DELETE").catch(function () {}); }
      claimedUrl = url;
      if (url) { claim(url, row); }
    }, 300);
  }

  function keepClaim(seconds) {
    // Refreshed at half its life while the page stays open on the same item.
    window.clearInterval(claimRefresh);
    claimRefresh = window.setInterval(function () {
      if (claimedUrl && !document.hidden) { claim(claimedUrl, selectedId ? current() : null); }
    }, Math.max(10, seconds / 2) * 1000);
  }

  function move(delta) {
    var all = rows();
    if (!all.length) { return; }
    var row = current();
    var i = row ? all.indexOf(row) : -1;
    var next = i < 0 ? 0 : Math.min(all.length - 1, Math.max(0, i + delta));
    select(all[next]);
  }

  function isTyping(target) {
    var tag = target && target.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || (target && target.isContentEditable);
  }

  function closeForms(row) {
    (row || document).querySelectorAll("form.rowform").forEach(function (f) { f.hidden = true; });
  }

  function openForm(row, kind) {
    if (!row) { return; }
    var form = row.querySelector("form.act-" + kind);
    if (!form) { return; }
    closeForms(row);
    form.hidden = false;
    var first = form.querySelector("select[name=reason_code], textarea, input:not([type=hidden]), select");
    if (kind === "override") { first = form.querySelector("select[name=chosen_offer_code]") || first; }
    if (first) { first.focus(); }
  }

  function submit(form) {
    if (!form) { return; }
    if (form.requestSubmit) { form.requestSubmit(); } else { form.submit(); }
  }

  function updateBulkCount() {
    var n = document.querySelectorAll("input.bulk-box:checked").length;
    var out = document.getElementById("bulk-count");
    if (out) { out.textContent = String(n); }
  }

  function toggleHelp(force) {
    var help = document.getElementById("help");
    if (!help) { return; }
    help.hidden = typeof force === "boolean" ? !force : !help.hidden;
    if (!help.hidden) { var b = help.querySelector(".help-close"); if (b) { b.focus(); } }
  }

  function nextOpenRow(from) {
    // The next item nobody else has open; failing that, the next open one.
    var all = rows(), fallback = null;
    for (var i = all.indexOf(from) + 1; i < all.length; i++) {
      if (!all[i].querySelector("form.act-approve")) { continue; }
      if (!all[i].classList.contains("claimed")) { return all[i]; }
      fallback = fallback || all[i];
    }
    return fallback || from;
  }

  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    if (ev.key === "Escape") {
      toggleHelp(false);
      closeForms(null);
      if (document.activeElement && isTyping(document.activeElement)) { document.activeElement.blur(); }
      var back = document.getElementById("back-link");
      if (back && !document.getElementById("queue")) { window.location.href = back.href; }
      return;
    }
    if (isTyping(ev.target)) { return; }
    if (ev.key === "?") { toggleHelp(); ev.preventDefault(); return; }
    if (!document.getElementById("queue")) { return; }
    var row = current();
    switch (ev.key) {
      case "j": move(1); break;
      case "k": move(-1); break;
      case "a": if (row) { submit(row.querySelector("form.act-approve")); } break;
      case "o": openForm(row, "override"); break;
      case "e": openForm(row, "escalate"); break;
      case "u": if (row) { submit(row.querySelector("form.act-undo")); } break;
      case "x":
        if (row) {
          var box = row.querySelector("input.bulk-box");
          if (box && !box.disabled) { box.checked = !box.checked; updateBulkCount(); }
        }
        break;
      case "Enter": if (row) { window.location.href = row.dataset.detailUrl; } break;
      case "/": var m = document.querySelector("#filters input[name=member]"); if (m) { m.focus(); } break;
      default: return;
    }
    ev.preventDefault();
  });

  document.addEventListener("click", function (ev) {
    var t = ev.target;
    if (!(t instanceof Element)) { return; }
    var toggle = t.closest("button.toggle-form");
    if (toggle) {
      var form = document.getElementById(toggle.dataset.form);
      var row = toggle.closest("tr.qrow");
      if (row) { select(row); }
      if (form && form.hidden) { openForm(row, form.classList.contains("act-override") ? "override" : "escalate"); }
      else if (form) { form.hidden = true; }
      return;
    }
    if (t.closest("#help-button")) { toggleHelp(); return; }
    if (t.closest(".help-close") || t.id === "help") { toggleHelp(false); return; }
    var clicked = t.closest("tr.qrow");
    if (clicked && clicked.dataset.id !== selectedId) { select(clicked); }
  });

  document.addEventListener("change", function (ev) {
    if (ev.target instanceof Element && ev.target.matches("input.bulk-box")) { updateBulkCount(); }
  });

  // After htmx replaces a decided row, keep the place and move on to the next open item.
  document.body.addEventListener("htmx:afterSwap", function (ev) {
    var row = ev.detail && ev.detail.target;
    var swapped = selectedId ? document.getElementById("rec-" + selectedId) : null;
    if (swapped && swapped.querySelector(".rowmsg.error")) { select(swapped); return; }
    if (swapped && !swapped.querySelector("form.act-approve")) { select(nextOpenRow(swapped)); }
    else if (swapped) { select(swapped); }
    else if (row && row.classList && row.classList.contains("qrow")) { select(row); }
    updateBulkCount();
  });

  // Bulk approval needs a selection; the server shows the confirmation with the count.
  var bulk = document.getElementById("bulk-form");
  if (bulk) {
    bulk.addEventListener("submit", function (ev) {
      if (!document.querySelectorAll("input.bulk-box:checked").length) {
        ev.preventDefault();
        var out = document.getElementById("bulk-count");
        if (out) { out.parentElement.classList.add("shake"); }
      }
    });
  }

  // Plotly charts: figures come from <script type="application/json"> blocks.
  function drawCharts() {
    if (!window.Plotly) { return; }
    document.querySelectorAll("[data-chart]").forEach(function (el) {
      var src = document.getElementById(el.dataset.chart);
      if (!src) { return; }
      var fig = JSON.parse(src.textContent);
      window.Plotly.newPlot(el, fig.data, fig.layout, { displayModeBar: false, responsive: true });
      el.classList.add("drawn");
    });
  }

  var queueTable = document.getElementById("queue");
  var detailClaim = document.getElementById("claim");
  if (queueTable && queueTable.dataset.claimSeconds) { keepClaim(Number(queueTable.dataset.claimSeconds)); }
  if (queueTable && queueTable.dataset.presenceUrl) {
    window.setInterval(function () { refreshPresence(queueTable.dataset.presenceUrl); },
                       Math.max(1, Number(queueTable.dataset.presenceSeconds) || 15) * 1000);
  }
  if (detailClaim) {
    // The detail page's claim was taken when it was served; keep it while the page is open.
    claimedUrl = detailClaim.dataset.claimUrl;
    keepClaim(Number(detailClaim.dataset.claimSeconds));
  }

  // Lets tests (and anyone) know the shortcuts are live.
  document.body.dataset.deskReady = "1";

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { drawCharts(); updateBulkCount(); });
  } else {
    drawCharts();
    updateBulkCount();
  }
})();
