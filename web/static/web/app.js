// Small progressive enhancements; every page works without this file.
// Copy buttons: <button type="button" class="copy-button" data-copy="ELEMENT_ID" hidden>.
(function () {
  "use strict";

  function reveal(root) {
    root.querySelectorAll("button[data-copy]").forEach(function (button) {
      button.hidden = false;
    });
  }

  function fallbackCopy(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    return ok ? Promise.resolve() : Promise.reject(new Error("copy failed"));
  }

  function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () { return fallbackCopy(text); });
    }
    return fallbackCopy(text);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button[data-copy]") : null;
    if (!button) { return; }
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) { return; }
    var label = button.getAttribute("data-label") || button.textContent;
    button.setAttribute("data-label", label);
    copy(source.textContent).then(function () {
      button.textContent = "Copied";
      button.setAttribute("data-copied", "true");
    }, function () {
      button.textContent = "Select and copy";
    });
    window.setTimeout(function () { button.textContent = label; }, 2000);
  });

  // Plan forms (<form data-plan-form>): show only the inputs of the chosen kind
  // (data-plan-kinds="one_time subscription"); overage only when calls can go past the included
  // ones. Hidden inputs are still sent, and the server ignores them, as it does without this file.
  function planForm(form) {
    var kind = form.querySelector("select[name=kind]");
    if (!kind) { return; }
    var cap = form.querySelector("input[name=hard_cap]");
    function update() {
      form.querySelectorAll("[data-plan-kinds]").forEach(function (row) {
        var kinds = row.getAttribute("data-plan-kinds").split(" ");
        row.hidden = kinds.indexOf(kind.value) === -1;
      });
      var overage = form.querySelector(".plan-field--overage_amount");
      if (overage && cap && kind.value === "subscription") { overage.hidden = cap.checked; }
    }
    kind.addEventListener("change", update);
    if (cap) { cap.addEventListener("change", update); }
    update();
  }

  document.addEventListener("DOMContentLoaded", function () {
    reveal(document);
    document.querySelectorAll("form[data-plan-form]").forEach(planForm);
  });
  document.addEventListener("htmx:afterSwap", function (event) { reveal(event.target); });
})();
