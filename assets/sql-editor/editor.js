// The admin's SQL editor: each <textarea data-sql-editor> gets CodeMirror 6 with line
// numbers and SQL highlighting. The textarea stays in the form and is what is sent: the
// editor writes every change into it. Without this script (or JavaScript) it is the
// textarea. Built into static/reportsvc/sql-editor.js (README.md here); no CDN.
import { defaultKeymap, history, historyKeymap, indentWithTab } from "@codemirror/commands";
import { StandardSQL, sql } from "@codemirror/lang-sql";
import { bracketMatching, syntaxHighlighting } from "@codemirror/language";
import { EditorState } from "@codemirror/state";
import { classHighlighter } from "@lezer/highlight";
import {
  EditorView,
  drawSelection,
  highlightActiveLine,
  highlightActiveLineGutter,
  keymap,
  lineNumbers,
} from "@codemirror/view";

function attach(textarea) {
  // Styles go in through constructed style sheets, or a <style> with the page's nonce
  // (the Content-Security-Policy refuses others): the nonce of the page's own <style>.
  const styled = document.querySelector("style[nonce]");
  const view = new EditorView({
    state: EditorState.create({
      doc: textarea.value,
      extensions: [
        lineNumbers(),
        highlightActiveLineGutter(),
        history(),
        drawSelection(),
        bracketMatching(),
        highlightActiveLine(),
        // Tokens get classes (tok-keyword, ...), coloured by static/reportsvc/admin.css
        // for the light and the dark theme.
        syntaxHighlighting(classHighlighter),
        sql({ dialect: StandardSQL }), // the keywords every source reads
        EditorView.lineWrapping,
        keymap.of([...defaultKeymap, ...historyKeymap, indentWithTab]),
        EditorView.cspNonce.of(styled ? styled.nonce : ""),
        EditorView.contentAttributes.of({
          "aria-label": textarea.getAttribute("aria-label") || "SQL",
          spellcheck: "false",
        }),
        EditorView.updateListener.of((update) => {
          if (update.docChanged) {
            textarea.value = update.state.doc.toString();
          }
        }),
      ],
    }),
  });
  const frame = document.createElement("div");
  frame.className = "rs-sql-editor";
  frame.appendChild(view.dom);
  textarea.after(frame);
  textarea.classList.add("rs-enhanced");
  // The label still leads to the editor.
  if (textarea.id) {
    const label = document.querySelector(`label[for="${textarea.id}"]`);
    if (label) {
      label.addEventListener("click", () => view.focus());
    }
  }
  return view;
}

function attachAll() {
  for (const textarea of document.querySelectorAll("textarea[data-sql-editor]")) {
    attach(textarea);
  }
}

if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", attachAll);
} else {
  attachAll();
}
