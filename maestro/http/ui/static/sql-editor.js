// A SQL editor without a library: the user types in a plain <textarea> (so the browser's own
// editing, undo, selection, accessibility and form handling all work), and a highlighted copy of
// the text is drawn in a <pre> exactly behind it. The textarea's text is transparent, its caret
// is not. Highlighting is a small GoogleSQL tokenizer: comments, strings, `quoted names`,
// numbers, keywords and function names. A line with an error is marked, and the caret put there.

const KEYWORDS = new Set(`all and any array as asc at between by case cast collate contains create cross cube current
  date datetime default define delete desc distinct else end enum escape except exclude exists extract false fetch
  following for from full group grouping groups hash having if ignore in inner insert intersect interval into is join
  lateral left like limit lookup merge natural new no not null nulls of offset on or order outer over partition
  preceding proto qualify range recursive replace respect right rollup rows safe_cast select set some struct
  tablesample then timestamp to treat true unbounded union unnest update using values when where window with within
  int64 float64 numeric bignumeric bool string bytes time geography json`.split(/\s+/).filter(Boolean));

const TOKEN = /(--[^\n]*|#[^\n]*|\/\*[\s\S]*?(?:\*\/|$))|('(?:\\.|[^'\\\n])*'?|"(?:\\.|[^"\\\n])*"?)|(`[^`\n]*`?)|(\b\d+(?:\.\d+)?(?:[eE][+-]?\d+)?\b)|([A-Za-z_][A-Za-z0-9_]*)(?=(\s*\()?)/g;

function escape(text) {
  return text.replace(/[&<>]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;" })[c]);
}

export function highlight(text) {
  let out = "", last = 0;
  for (const m of text.matchAll(TOKEN)) {
    out += escape(text.slice(last, m.index));
    const [token, comment, string, quoted, number, word, call] = m;
    let kind = "";
    if (comment) kind = "comment";
    else if (string) kind = "string";
    else if (quoted) kind = "name";
    else if (number) kind = "number";
    else if (word && KEYWORDS.has(word.toLowerCase())) kind = "keyword";
    else if (word && call) kind = "function";
    out += kind ? `<span class="sql-${kind}">${escape(token)}</span>` : escape(token);
    last = m.index + token.length;
  }
  return out + escape(text.slice(last));
}

function render(area) {
  const code = area.previousElementSibling.firstElementChild;
  const bad = Number(area.dataset.errorLine || 0);
  // One element per line, so the line of an error can be marked without re-tokenizing around it.
  const lines = highlight(area.value).split("\n");
  code.innerHTML = lines.map((l, i) => `<span class="line${i + 1 === bad ? " bad" : ""}">${l}\n</span>`).join("");
  sync(area);
}

function sync(area) {
  const pre = area.previousElementSibling;
  pre.scrollTop = area.scrollTop;
  pre.scrollLeft = area.scrollLeft;
}

export function attachEditors(root) {
  for (const area of root.querySelectorAll("textarea[data-sql]")) {
    const pre = document.createElement("pre");
    pre.className = "sql-highlight";
    pre.setAttribute("aria-hidden", "true");
    pre.appendChild(document.createElement("code"));
    area.before(pre);
    area.parentElement.classList.add("sql-editor");
    area.spellcheck = false;
    area.addEventListener("input", () => { delete area.dataset.errorLine; render(area); });
    area.addEventListener("scroll", () => sync(area));
    // Ctrl+Enter (Cmd+Enter) saves, as in most SQL consoles; Tab keeps moving focus (keyboard users).
    area.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && area.form) {
        event.preventDefault();
        area.form.requestSubmit();
      }
    });
    render(area);
  }
}

// Put the caret at (line, column), both from 1, and mark that line.
export function showSqlError(area, line, column) {
  const lines = area.value.split("\n");
  let offset = 0;
  for (let i = 0; i < Math.min(line - 1, lines.length); i++) offset += lines[i].length + 1;
  offset += Math.max(0, Math.min(column - 1, (lines[line - 1] || "").length));
  area.dataset.errorLine = String(line);
  render(area);
  area.focus();
  area.setSelectionRange(offset, offset);
  const height = area.scrollHeight / Math.max(1, lines.length);
  area.scrollTop = Math.max(0, (line - 3) * height);
  sync(area);
}
