"""A loss's documentation card, in the formats people read it in.

:func:`lossforge.codegen.render.card` makes the sections (the text of the
generated docstrings); here they are written as plain docstring text, Markdown,
reStructuredText or LaTeX, and :func:`doc` adds what a reader of the
documentation wants beyond a docstring: each input's gradient, the hazards with
their fixes, and the properties with their evidence. Inline ````code```` in a
section is written the way each format marks code.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

from ..language import latex_text

#: The formats :func:`doc` writes.
FORMATS = ("md", "rst", "latex")


@dataclass(frozen=True)
class Section:
    """One section: its title (None: a paragraph of its own), how its lines read, and the lines.

    ``kind`` is ``text`` (paragraphs), ``code`` (lines of code), ``items`` (definitions, one per line:
    ``name (type): ...``), ``bullets`` (a list) or ``block`` (text under a heading). A ``verbatim`` section
    holds a spec's own text (its summary, description, formula, stable form or reference): written as given,
    never rewrapped, so that the docstring holds exactly what its author wrote.
    """

    title: str | None
    kind: str
    lines: tuple[str, ...]
    verbatim: bool = False


def as_text(sections: list[Section], width: int | None = None) -> str:
    """The sections as a docstring in the shape of PyTorch's (Google style, ``::`` before code); with ``width``,
    each line that lossforge wrote (not a verbatim one, nor a doctest) wrapped at spaces within it, a
    continuation indented under its item."""
    parts: list[str] = []
    for section in sections:
        if parts:
            parts.append("")
        if section.kind == "code":
            parts += [f"{section.title}::", ""]
        elif section.kind != "text":
            parts.append(f"{section.title}:")
        indent = "" if section.kind == "text" else "    "
        mark = "- " if section.kind == "bullets" else ""
        # a continuation: under an item's name, a bullet's text, or a line of code
        more = indent + ("  " if mark else "    " if section.kind != "text" else "")
        for text in section.lines:
            first, *rest = text.split("\n")
            for head, line in [(indent + mark, first), *((indent, line) for line in rest)]:
                parts += _wrapped(head, line, more, width, section.verbatim)
    return "\n".join(parts)


def refilled(text: str, indent: int, width: int, lead: int = 3) -> str:
    """lossforge's own prose from a template (paragraphs apart by a blank line, names filled in), each paragraph
    refilled at spaces within ``width``, its lines after the first at ``indent`` spaces; the first line starts
    ``lead`` characters in (after a docstring's opening quotes)."""
    margin = " " * indent
    paragraphs = [" ".join(line.strip() for line in p.split("\n")) for p in text.strip().split("\n\n")]
    lines = textwrap.wrap(paragraphs[0], width, initial_indent=" " * (indent + lead), subsequent_indent=margin,
                          break_long_words=False, break_on_hyphens=False)
    lines[0] = lines[0].lstrip()
    for paragraph in paragraphs[1:]:
        lines += ["", *textwrap.wrap(paragraph, width, initial_indent=margin, subsequent_indent=margin,
                                     break_long_words=False, break_on_hyphens=False)]
    return "\n".join(lines)


def _wrapped(head: str, line: str, more: str, width: int | None, verbatim: bool) -> list[str]:
    """``line`` after ``head``, wrapped at spaces within ``width`` and continued at ``more``; as it is if verbatim
    (a spec's own text), a doctest, or within the width."""
    if verbatim or width is None or len(head + line) <= width or line.startswith((">>> ", "... ")):
        return [head + line]
    return textwrap.wrap(line, width, initial_indent=head, subsequent_indent=more, break_long_words=False,
                         break_on_hyphens=False)


_INLINE = re.compile(r"``(.+?)``")


def _markdown_inline(text: str) -> str:
    return _INLINE.sub(lambda m: f"`{m.group(1)}`", text)


def as_markdown(title: str, sections: list[Section]) -> str:
    out = [f"# {title}"]
    for section in sections:
        out.append("")
        if section.title and section.kind != "code":
            out += [f"## {section.title}", ""]
        if section.kind == "text" or section.kind == "block":
            out += [_markdown_inline(line) for line in section.lines]
        elif section.kind == "code":
            if section.title:
                out += [f"{section.title}:", ""]
            out += ["```python" if section.title == "Example" else "```", *section.lines, "```"]
        else:
            out += [f"- {_markdown_inline(line)}" for line in section.lines]
    return "\n".join(out) + "\n"


def as_rst(title: str, sections: list[Section]) -> str:
    out = [title, "=" * len(title)]
    for section in sections:
        out.append("")
        if section.title and section.kind != "code":
            out += [section.title, "-" * len(section.title), ""]
        if section.kind in ("text", "block"):
            out += list(section.lines)
        elif section.kind == "code":
            out += [f"{section.title}::" if section.title else "::", ""]
            out += ["    " + line.replace("\n", "\n    ") for line in section.lines]
        else:
            out += [f"- {line}" for line in section.lines]
    return "\n".join(out) + "\n"


def _latex_text(text: str) -> str:
    """Text as LaTeX that means itself (:func:`lossforge.language.latex_text`); ````code```` as ``\\texttt``."""
    pieces = _INLINE.split(text)
    return "".join(rf"\texttt{{{latex_text(piece)}}}" if i % 2 else latex_text(piece) for i, piece in enumerate(pieces))


def as_latex(title: str, sections: list[Section]) -> str:
    out = [rf"\section*{{{_latex_text(title)}}}"]
    for section in sections:
        out.append("")
        if section.title and section.kind != "code":
            out.append(rf"\subsection*{{{_latex_text(section.title)}}}")
        if section.kind in ("text", "block"):
            out += [_latex_text(line) for line in section.lines]
        elif section.kind == "code":
            if section.title:
                out.append(_latex_text(section.title) + ":")
            out += [r"\begin{verbatim}", *section.lines, r"\end{verbatim}"]
        else:
            out += [r"\begin{itemize}", *(rf"  \item {_latex_text(line)}" for line in section.lines), r"\end{itemize}"]
    return "\n".join(out) + "\n"


def doc(spec, fmt: str = "md") -> str:
    """The documentation card of ``spec`` in ``fmt`` (``md``, ``rst`` or ``latex``): the generated torch module's
    docstring, with each input's gradient, the hazards and their fixes, and the properties and their evidence."""
    from ..analysis.hazards import check
    from ..analysis.properties import properties
    from ..errors import UnknownNameError, did_you_mean
    from ..language import to_text
    from ..spec import LossSpec
    from .render import card, class_name, locals_of, target_named

    if fmt not in FORMATS:
        raise UnknownNameError(f"unknown documentation format {fmt!r}{did_you_mean(fmt, FORMATS)} "
                               f"(known: {', '.join(FORMATS)})", token=str(fmt))
    if not isinstance(spec, LossSpec):
        raise UnknownNameError(f"doc() needs a LossSpec, got {type(spec).__name__}", token=type(spec).__name__)
    sections = card(spec, target_named("torch"), locals_of(spec))
    example = sections.pop()  # the example stays last
    sections.append(Section("Gradient", "code", tuple(f"d loss / d {name} = {to_text(grad)}"
                                                      for name, grad in spec.gradient().items())))
    report = check(spec)
    findings = tuple(
        f"{h.where}: ``{h.kind}`` ({h.severity}{', accepted: ' + h.reason if h.accepted else ''}): {h.message}: "
        f"``{to_text(h.expr)}``" + (f"; fix ({'safe' if h.fix.safe else 'unsafe'}, {h.fix.description}): "
                                    f"``{to_text(h.fix.replacement)}``" if h.fix is not None else "")
        for h in report.hazards)
    sections.append(Section("Hazards", "bullets", findings or ("none: finite everywhere in the declared domains",)))
    props = properties(spec)
    sections.append(Section("Properties", "bullets", tuple(f"{key}: ``{getattr(props, key)}`` ({props.evidence[key]})"
                                                           for key in props.SHOWN)))
    sections.append(example)
    title = f"{spec.name} ({class_name(spec)})"
    return {"md": as_markdown, "rst": as_rst, "latex": as_latex}[fmt](title, sections)
