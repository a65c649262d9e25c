"""Rich display in notebooks: the HTML tables Jupyter shows for reports (``_repr_html_``).

Every text a spec holds (names, expressions, reasons) is escaped here with
:func:`html.escape`, so a spec file's text never becomes markup in a notebook,
as :func:`lossforge.text.terminal` keeps it from acting on a terminal.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

_STATUS = {True: ("ok", "#1a7f37"), False: ("FAILED", "#cf222e")}


def table(title: str, ok: bool | None, headers: Sequence[str], rows: Iterable[Sequence[object]],
          note: str = "") -> str:
    """An HTML table under a title with its verdict (None: no verdict), every cell escaped."""
    verdict = ""
    if ok is not None:
        word, colour = _STATUS[bool(ok)]
        verdict = f' <span style="color:{colour};font-weight:bold">{word}</span>'
    head = "".join(f"<th style=\"text-align:left\">{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td style=\"text-align:left\">{_cell(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    extra = f"<p>{html.escape(note)}</p>" if note else ""
    return (f"<div><p><b>{html.escape(title)}</b>{verdict}</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{extra}</div>")


def _cell(value: object) -> str:
    """A cell's text escaped; an expression in a monospace font."""
    if isinstance(value, Code):
        return f"<code>{html.escape(value.text)}</code>"
    return html.escape("" if value is None else str(value))


class Code:
    """Text a cell shows as code (an expression, a fix)."""

    def __init__(self, text: str) -> None:
        self.text = text
