/* Concorde: keyboard shortcuts, HTMX error alerts, focus after swaps, the proposal counter.
 *
 * Shortcuts come from the aria-keyshortcuts attribute of the buttons on the page (A, D, N,
 * 1 2 3, Enter/ArrowRight in the sequence; A, R, P in moderation), so what screen readers
 * announce and what the keyboard does are the same thing. Every button is a real form
 * button: without this file, everything still works with clicks.
 */
(function () {
  "use strict";

  function isTyping(el) {
    if (!el) return false;
    var tag = el.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || el.isContentEditable;
  }

  function busy() {
    return document.querySelector(".htmx-request") !== null;
  }

  function shortcut(key) {
    var wanted = key.length === 1 ? key.toUpperCase() : key;
    var candidates = document.querySelectorAll("[aria-keyshortcuts]");
    for (var i = 0; i < candidates.length; i++) {
      var el = candidates[i];
      if (el.disabled || el.offsetParent === null) continue;
      if (el.getAttribute("aria-keyshortcuts").split(/\s+/).indexOf(wanted) !== -1) return el;
    }
    return null;
  }

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    // Moderation: R focuses the empty reason list; pick with the arrows, Enter refuses.
    if (event.key === "Enter" && event.target.matches && event.target.matches("select[data-enter-submits]")) {
      event.preventDefault();
      if (!busy()) event.target.form.requestSubmit();
      return;
    }
    if (isTyping(event.target)) return;
    // Enter on a focused button or link already activates it.
    if (event.key === "Enter" && event.target.closest && event.target.closest("button, a, summary")) return;
    var target = shortcut(event.key);
    if (!target) return;
    event.preventDefault();
    if (busy()) return; // one request at a time: a double key press moves once
    target.click();
  });

  // With DEBUG on, django-htmx's script (listening on the document) shows a 4xx response as a
  // whole page, Django's debug page style. Ours name where they go (HX-Retarget) and carry a
  // message for the user: stop the event at the body so that only htmx and this file see them.
  document.body.addEventListener("htmx:beforeOnLoad", function (event) {
    if (event.detail.xhr.getResponseHeader("HX-Retarget")) event.stopPropagation();
  });

  // A 400 from our views carries a message for the user, retargeted to #htmx-alerts.
  // Any other failure (404, 403, 500, network) shows the page's generic message there.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var xhr = event.detail.xhr;
    if (xhr.status >= 400 && xhr.status < 500 && xhr.getResponseHeader("HX-Retarget")) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });
  function genericError() {
    var alerts = document.getElementById("htmx-alerts");
    if (!alerts || !alerts.getAttribute("data-error")) return;
    var div = document.createElement("div");
    div.className = "alert";
    div.setAttribute("role", "alert");
    div.textContent = alerts.getAttribute("data-error");
    alerts.replaceChildren(div);
  }
  document.addEventListener("htmx:responseError", function (event) {
    if (!event.detail.xhr.getResponseHeader("HX-Retarget")) genericError();
  });
  document.addEventListener("htmx:sendError", genericError);

  // After a card or a box is swapped, put the focus on its heading, so that keyboard and
  // screen reader users carry on from there.
  document.addEventListener("htmx:afterSettle", function (event) {
    var target = event.detail && event.detail.target;
    if (target && target.id === "htmx-alerts") return;
    if (isTyping(document.activeElement)) return;
    var heading = document.querySelector("[data-swap-focus]");
    if (heading) heading.focus({ preventScroll: false });
  });
  document.addEventListener("htmx:beforeRequest", function () {
    var alerts = document.getElementById("htmx-alerts");
    if (alerts) alerts.innerHTML = "";
  });

  // Characters after the prefix, against the consultation's bounds.
  function count(area) {
    var out = document.getElementById(area.getAttribute("data-counter"));
    if (!out) return;
    var prefix = (area.getAttribute("data-prefix") || "").toLowerCase();
    var text = area.value.replace(/\s+/g, " ").trim();
    if (prefix && text.toLowerCase().indexOf(prefix) === 0) text = text.slice(prefix.length).trim();
    var min = parseInt(area.getAttribute("data-min"), 10);
    var max = parseInt(area.getAttribute("data-max"), 10);
    out.textContent = text.length + " / " + max;
    out.classList.toggle("bad", text.length > max || (text.length > 0 && text.length < min));
  }
  document.addEventListener("input", function (event) {
    if (event.target.hasAttribute && event.target.hasAttribute("data-counter")) count(event.target);
  });
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-counter]").forEach(count);
  });

  // Staff moving proposals: tick every box of the form the button is in.
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-tick-all]");
    if (!button || !button.form) return;
    button.form.querySelectorAll('input[type="checkbox"]').forEach(function (box) {
      box.checked = true;
    });
  });
})();
