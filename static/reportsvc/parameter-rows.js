"use strict";
// "Add a parameter": a new row from the <template> of an empty one (reports.forms).
// Without this script the page offers one blank row; save to get another.
document.addEventListener("DOMContentLoaded", () => {
  const rows = document.getElementById("parameter-rows");
  if (!rows) {
    return;
  }
  const button = document.getElementById("add-parameter-row");
  const template = document.getElementById("parameter-row-template");
  const body = document.getElementById("parameter-rows-body");
  const total = rows.querySelector('input[name$="-TOTAL_FORMS"]');
  const max = Number(button.dataset.max);
  const refresh = () => {
    button.disabled = Number(total.value) >= max;
  };
  button.hidden = false;
  refresh();
  button.addEventListener("click", () => {
    const index = Number(total.value);
    if (index >= max) {
      return;
    }
    const row = template.content.firstElementChild.cloneNode(true);
    for (const field of row.querySelectorAll("[name], [id]")) {
      for (const attribute of ["name", "id"]) {
        const value = field.getAttribute(attribute);
        if (value) {
          field.setAttribute(attribute, value.replace("__prefix__", String(index)));
        }
      }
    }
    row.dataset.row = String(index + 1);
    body.append(row);
    total.value = String(index + 1);
    refresh();
    row.querySelector("input").focus();
  });
});
