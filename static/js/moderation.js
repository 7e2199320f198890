/* Moderation pages: the refuse and spelling panels, and "select all" in the list.
 *
 * The shortcuts themselves (A, R, P, N, E and the reasons' keys) are handled by concorde.js
 * from the aria-keyshortcuts attributes: R and E open a <details> panel, whose reason buttons
 * become visible (and so reachable by their keys) only while it is open. Without this file
 * every panel still opens with a click and every button is a real form button.
 */
(function () {
  "use strict";

  // Opening the spelling panel puts the cursor in the text; the refuse panel focuses the reason
  // the classifier suggests (else the first), so Enter works as well as the reason keys.
  document.addEventListener(
    "toggle",
    function (event) {
      var panel = event.target;
      if (!panel.matches || !panel.matches("details[data-moderation-panel]") || !panel.open) return;
      document.querySelectorAll("details[data-moderation-panel][open]").forEach(function (other) {
        if (other !== panel) other.open = false;
      });
      var field = panel.querySelector("input[type=text], button.reason.suggested") || panel.querySelector("button.reason");
      if (field) {
        field.focus();
        if (field.select) field.select();
      }
    },
    true
  );

  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    var open = document.querySelectorAll("details[data-moderation-panel][open]");
    if (!open.length) return;
    event.preventDefault();
    open.forEach(function (panel) {
      panel.open = false;
    });
    var heading = document.querySelector("[data-swap-focus]");
    if (heading) heading.focus();
  });

  document.addEventListener("change", function (event) {
    if (!event.target.matches || !event.target.matches("[data-select-all]")) return;
    var form = event.target.form;
    form.querySelectorAll("input[name=ids]").forEach(function (box) {
      box.checked = event.target.checked;
    });
  });
})();
