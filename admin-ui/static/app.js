// Aqueduct admin UI: progressive enhancement only; every page works without this file.
// Copy buttons: <button data-copy="#element-id"> copies that element's text.
document.addEventListener("click", async (ev) => {
  const btn = ev.target.closest("button[data-copy]");
  if (!btn) return;
  const source = document.querySelector(btn.dataset.copy);
  if (!source) return;
  const text = source.textContent.trim();
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Clipboard API refused (http, permissions): select the text so Ctrl+C works.
    const range = document.createRange();
    range.selectNodeContents(source);
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }
  const status = document.getElementById(btn.dataset.status || "");
  if (status) status.textContent = "Copied.";
});
// Forms marked data-confirm ask before a destructive action.
document.addEventListener("submit", (ev) => {
  const msg = ev.target.dataset.confirm;
  if (msg && !window.confirm(msg)) ev.preventDefault();
});
