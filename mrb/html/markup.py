"""HTML building blocks: escaping, tables of report cells (`mrb.report.Cell`), and the page shell shared by every page."""

from __future__ import annotations

from html import escape

from mrb.report import Cell


def esc(text: object) -> str:
    """`text` safe inside an element or a quoted attribute: every ``<``, ``>``, ``&`` and quote escaped."""
    return escape(str(text), quote=True)


def td(cell: Cell) -> str:
    """A report cell as a table cell: escaped, linked, bold, with its sort value or why it is empty."""
    body = esc(cell.text)
    if cell.href is not None:
        body = f'<a href="{esc(cell.href)}">{body}</a>'
    if cell.strong:
        body = f"<strong>{body}</strong>"
    if cell.why:
        return f'<td class="empty" title="{esc(cell.why)}">{body}</td>'
    if cell.value is not None:
        return f'<td class="num" data-value="{cell.value!r}">{body}</td>'
    return f"<td>{body}</td>"


def table(header: list[str], rows: list[list[Cell]], *, sortable: bool = True) -> str:
    """A table with a header row; sortable by clicking a header (numbers by value, empty cells last)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(td(c) for c in row) + "</tr>" for row in rows)
    kind = ' class="sortable"' if sortable else ""
    return f"<table{kind}><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


def paragraphs(texts: list[str]) -> str:
    return '<div class="notes">' + "".join(f"<p>{esc(t)}</p>" for t in texts) + "</div>"


def page(title: str, body: str, *, root: str, crumbs: list[tuple[str, str]], script: bool = False) -> str:
    """A whole page: `root` leads from it to the site's folder (``""``, ``"../"``, …); `crumbs` are
    (label, path from the site's folder) links above the title."""
    nav = "".join(f'<a href="{esc(root + href)}">{esc(label)}</a>' for label, href in crumbs)
    tail = f'<script src="{root}assets/sort.js"></script>' if script else ""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{esc(title)}</title><link rel="icon" href="data:,">'
        f'<link rel="stylesheet" href="{root}assets/style.css"></head>\n'
        f"<body><header><nav>{nav}</nav><h1>{esc(title)}</h1></header>\n<main>\n{body}\n</main>{tail}</body></html>\n"
    )
