"use strict";
// A form with data-confirm="question" is sent only once the user confirms the question.
// (Instead of an inline onsubmit handler, which the Content-Security-Policy refuses.)
document.addEventListener("submit", (event) => {
  const question = event.target.dataset && event.target.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
