"""A report is a list of blocks, rendered to Markdown or to a standalone HTML page.

Blocks: ``("h", level, text)``, ``("p", text)``, ``("table", headers, rows)``,
``("img", path, alt)``, ``("code", text)``. Text is plain (``**bold**`` in Markdown only).
"""
from __future__ import annotations

import html
import math

from .paper import Cell


def fmt_cell(cell: Cell | None) -> str:
    """``47.21 ± 1.30 (n=3)``, in percent; an empty cell is an en dash."""
    if cell is None or math.isnan(cell.mean):
        return "–"
    if cell.n == 1:
        return f"{cell.mean:.2f} (n=1)"
    return f"{cell.mean:.2f} ± {cell.std:.2f} (n={cell.n})"


def fmt_paper(value) -> str:
    return "n/a" if value is None else f"{float(value):.2f}"


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def to_markdown(blocks: list[tuple]) -> str:
    out = []
    for b in blocks:
        kind = b[0]
        if kind == "h":
            out.append(f"{'#' * b[1]} {b[2]}\n")
        elif kind == "p":
            out.append(f"{b[1]}\n")
        elif kind == "code":
            out.append(f"```\n{b[1]}\n```\n")
        elif kind == "img":
            out.append(f"![{b[2]}]({b[1]})\n")
        elif kind == "table":
            headers, rows = b[1], b[2]
            lines = ["| " + " | ".join(map(_md_escape, headers)) + " |",
                     "|" + "|".join(" --- " for _ in headers) + "|"]
            lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines) + "\n")
    return "\n".join(out)


STYLE = ("body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;"
         "line-height:1.45}table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}"
         "th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}th{background:#f3f3f3}"
         "code,pre{background:#f6f6f6}pre{padding:.5rem;overflow:auto}img{max-width:100%}")


def _inline(text: str) -> str:
    """Plain text to HTML, with Markdown's ``**bold**`` and `code` spans."""
    parts = html.escape(str(text)).split("**")
    text = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def to_html(blocks: list[tuple], title: str) -> str:
    body = []
    for b in blocks:
        kind = b[0]
        if kind == "h":
            body.append(f"<h{b[1]}>{_inline(b[2])}</h{b[1]}>")
        elif kind == "p":
            body.append(f"<p>{_inline(b[1])}</p>")
        elif kind == "code":
            body.append(f"<pre>{html.escape(b[1])}</pre>")
        elif kind == "img":
            body.append(f'<p><img src="{html.escape(b[1])}" alt="{html.escape(b[2])}"></p>')
        elif kind == "table":
            head = "".join(f"<th>{_inline(h)}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>"
                           for row in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
