"""Making text inert: the one way spec text reaches generated source or a terminal.

A spec file is shared like any document, so none of its text may ever act:

* :func:`inert` is the only function through which a name, a text field, an
  expression's text or a reason enters generated source. In a docstring no
  quote can close it and no backslash, NUL, carriage return or line separator
  can corrupt it; in a comment every line starts with ``#``; in a string
  literal it is escaped as Python reads it back. The result means, once the module
  is parsed, exactly the text that went in, and nothing else runs.
* :func:`terminal` shows text on a terminal with every control character
  (ANSI escapes, bidi overrides, lone surrogates) spelled out as ``\\x1b``
  and the like, never emitted raw.

Both escape a character the same way, with the escape Python itself would
read back (``\\x1b``, ``\\u2028``, ``\\udc80``), so what a user sees in a
docstring, a comment and a terminal is one spelling.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["inert", "terminal", "one_line"]

_NAMED = {"\t": "\\t", "\r": "\\r", "\n": "\\n"}


def _escape(ch: str) -> str:
    """The Python escape of one character that must not be written raw."""
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _safe(ch: str, keep_newline: bool) -> bool:
    if ch == "\n":
        return keep_newline
    # isprintable() is False for every control, format (bidi), separator other than
    # the space, surrogate and unassigned code point: exactly what must not be raw.
    return ch.isprintable()


def _escaped(text: str, keep_newline: bool) -> str:
    return "".join(ch if _safe(ch, keep_newline) else _escape(ch) for ch in text)


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) as one space, stripped."""
    return " ".join(text.split())


def inert(text: str, where: Literal["docstring", "comment", "string"]) -> str:
    """``text`` made inert for one place in generated Python source.

    ``"docstring"``: for the inside of a ``\"\"\"`` string that is not raw. Every
    backslash is doubled, every quote that touches another quote (or either end)
    is escaped, newlines are kept and every other non-printable character is
    written as its escape: the parsed docstring is ``text`` itself.

    ``"comment"``: the text as comment lines, each starting with ``#``;
    non-printable characters are written as their escapes (a comment has no
    meaning, so they read as text).

    ``"string"``: a double-quoted Python string literal equal to ``text``.
    """
    if not isinstance(text, str):
        raise TypeError(f"inert() takes text, got {type(text).__name__}")
    if where == "string":
        body = "".join('\\\\' if ch == "\\" else '\\"' if ch == '"' else ch if _safe(ch, False) else _escape(ch)
                       for ch in text)
        return f'"{body}"'
    if where == "comment":
        return "\n".join(f"# {_escaped(line, False)}".rstrip() for line in text.split("\n"))
    if where == "docstring":
        out = []
        for i, ch in enumerate(text):
            if ch == "\\":
                out.append("\\\\")
            elif ch == '"':
                near = (i == 0 or text[i - 1] == '"' or i + 1 == len(text) or text[i + 1] == '"')
                out.append('\\"' if near else '"')
            else:
                out.append(ch if _safe(ch, True) else _escape(ch))
        return "".join(out)
    raise ValueError(f"inert(): unknown place {where!r} (docstring, comment or string)")


def terminal(text: object) -> str:
    """``text`` for a terminal: control and format characters spelled out (``\\x1b``), newlines kept."""
    return _escaped(str(text), True)
