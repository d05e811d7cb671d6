"""The site's stylesheet and its one script (sortable tables), written once as local files."""

STYLE = """
:root { --fg: #1b1f24; --muted: #5b6570; --line: #d8dde3; --bg: #ffffff; --soft: #f5f7f9;
        --up: #1a7f37; --down: #c0362c; --rel: #1a7f37; --rel0: #8c959f; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header { padding: 12px 24px; border-bottom: 1px solid var(--line); background: var(--soft); }
header nav { font-size: 13px; color: var(--muted); }
header nav a { margin-right: 12px; }
h1 { font-size: 20px; margin: 6px 0 0; overflow-wrap: anywhere; }
h2 { font-size: 16px; margin: 24px 0 8px; }
main { padding: 8px 24px 32px; }
a { color: #0a58b5; text-decoration: none; }
a:hover { text-decoration: underline; }
table { border-collapse: collapse; margin: 8px 0 16px; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: var(--soft); white-space: nowrap; }
table.sortable th { cursor: pointer; }
table.sortable th[data-order="asc"]::after { content: " ▲"; }
table.sortable th[data-order="desc"]::after { content: " ▼"; }
td.num { text-align: right; white-space: nowrap; }
td.empty { color: var(--muted); text-align: center; }
.notes p { color: var(--muted); max-width: 70em; }
.chart svg { max-width: 100%; height: auto; }
.record { display: flex; gap: 12px; align-items: flex-start; }
.record img { max-width: 256px; max-height: 256px; border: 1px solid var(--line); }
.text { white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; }
.lists { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 12px; }
.list { border: 1px solid var(--line); border-radius: 6px; padding: 8px; min-width: 0; }
.list h2 { margin: 0 0 6px; font-size: 15px; overflow-wrap: anywhere; }
.list ol { list-style: none; margin: 0; padding: 0; }
.doc { border-top: 1px solid var(--line); padding: 6px 0; display: grid; grid-template-columns: 28px 1fr; gap: 6px; }
.doc .rank { font-weight: 600; color: var(--muted); }
.doc img { max-width: 100%; max-height: 110px; display: block; border: 1px solid var(--line); }
.doc .meta { font-size: 12px; color: var(--muted); margin-top: 3px; display: flex; flex-wrap: wrap; gap: 6px; }
.doc .snippet { font-size: 13px; white-space: pre-wrap; overflow-wrap: anywhere; }
.label { padding: 0 5px; border-radius: 3px; background: var(--soft); }
.label.relevant { background: #dafbe1; color: var(--rel); font-weight: 600; }
.label.unjudged { font-style: italic; }
.move.up { color: var(--up); }
.move.down { color: var(--down); }
.pager { display: flex; gap: 16px; margin: 8px 0; }
.ids { font-family: ui-monospace, monospace; font-size: 12px; overflow-wrap: anywhere; }
"""

SORT_SCRIPT = """
(function () {
  function key(cell) {
    var value = cell.getAttribute("data-value");
    if (value !== null && value !== "") { return { number: true, value: parseFloat(value) }; }
    return { number: false, value: cell.textContent.trim().toLowerCase() };
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var headers = table.querySelectorAll("thead th");
    headers.forEach(function (th, column) {
      th.addEventListener("click", function () {
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var descending = th.getAttribute("data-order") !== "desc";
        headers.forEach(function (other) { other.removeAttribute("data-order"); });
        th.setAttribute("data-order", descending ? "desc" : "asc");
        rows.sort(function (a, b) {
          var x = key(a.cells[column]), y = key(b.cells[column]);
          if (x.number !== y.number) { return x.number ? -1 : 1; }
          var order = x.value < y.value ? -1 : x.value > y.value ? 1 : 0;
          return descending ? -order : order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
})();
"""
