"""Property tests of :func:`lossforge.text.inert`: any text, in any place, means itself and runs nothing.

Text is arbitrary Unicode (every category, surrogates, controls, separators),
mixed with the fragments that break naive quoting (quotes, backslashes,
escapes, line breaks, Jinja syntax) and the hostile corpus's payloads, which
try to create the corpus's sentinel file. Nothing here uses ``eval``: the
source is read back with ``ast.parse`` and ``ast.literal_eval``.
"""

from __future__ import annotations

import ast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lossforge as lf
from lossforge.text import inert

from . import hostile_corpus as hc
from .test_hostile import LINE_BREAKS, source_problems

#: Every code point, surrogates included.
ANY_CHAR = st.characters(codec=None, exclude_categories=())
NO_SURROGATE = st.characters(codec=None, exclude_categories=("Cs",))
FRAGMENTS = (
    '"', '""', '"""', "'", "'''", "\\", "\\\\", '\\"', "\\N{BULLET}", "\\N{", "\\x4", "\\u12", "\\U0011ffff", "\\0",
    "\n", "\r", "\r\n", "\x00", "\x0b", "\x0c", "\x1c", "\x1b[2J", "\x85", "\u2028", "\u2029", "\u202e", "\ufeff",
    "\ud800", "\udfff", "#", "{{ 7*7 }}", "{% raw %}", "{#", "    ", "\t", "f'", "r'''",
)
#: The corpus's payloads short enough to mix (the corpus itself runs the long ones).
PAYLOADS = tuple(text for _, text in hc.text_payloads() if len(text) < 1000)


def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def _texts(chars: st.SearchStrategy[str], surrogates: bool) -> st.SearchStrategy[str]:
    keep = [f for f in FRAGMENTS + PAYLOADS if surrogates or not _has_surrogate(f)]
    piece = st.one_of(st.text(chars, max_size=12), st.sampled_from(keep))
    return st.one_of(st.text(chars), st.lists(piece, max_size=8).map("".join))


ANY_TEXT = _texts(ANY_CHAR, surrogates=True)
TEXT_WITHOUT_SURROGATES = _texts(NO_SURROGATE, surrogates=False)
TEXT_WITH_A_SURROGATE = st.tuples(ANY_TEXT, st.characters(categories=("Cs",)), ANY_TEXT).map("".join)


@given(ANY_TEXT)
def test_docstring_reads_back_as_the_text(text):
    body = inert(text, "docstring")
    source = '"""' + body + '\n"""'
    tree = ast.parse(source)
    assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr)
    assert ast.literal_eval(source) == text + "\n"
    assert not set(body) & LINE_BREAKS
    assert not hc.SENTINEL.exists()


@given(ANY_TEXT)
def test_comment_lines_all_start_with_hash_and_hold_no_statement(text):
    comment = inert(text, "comment")
    lines = comment.split("\n")
    assert all(line.startswith("#") for line in lines)
    assert len(lines) == text.count("\n") + 1
    assert not set(comment) & LINE_BREAKS
    tree = ast.parse(comment + "\nx = 1\n")
    assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Assign)


@given(ANY_TEXT)
def test_string_literal_reads_back_as_the_text(text):
    literal = inert(text, "string")
    assert ast.literal_eval(literal) == text
    assert "\n" not in literal and not set(literal) & LINE_BREAKS
    tree = ast.parse(literal)
    assert len(tree.body) == 1 and isinstance(tree.body[0].value, ast.Constant)


def _check_field(field: str, text: str) -> None:
    spec = lf.LossSpec(name="inert", expr="(x - y)**2", symbols={"x": lf.Var("input"), "y": lf.Var("target")},
                       **{field: text})
    for target in ("numpy", "torch", "jax"):
        source = lf.generate(spec, target)
        ast.parse(source)
        assert source_problems(spec, target, source) == []
    module, loss_class = lf.compile(spec, "numpy"), lf.compile(spec, "torch")
    assert not hc.SENTINEL.exists(), "CODE RAN"
    assert hc.docstring_form(text, field, "numpy") in module.__doc__
    assert hc.docstring_form(text, field, "torch") in loss_class.__doc__


@pytest.mark.parametrize("field", hc.TEXT_FIELDS)
@settings(max_examples=40)
@given(text=TEXT_WITHOUT_SURROGATES)
def test_text_field_is_verbatim_in_both_docstrings(field, text):
    _check_field(field, text)


@settings(max_examples=20)
@given(field=st.sampled_from(hc.TEXT_FIELDS), text=TEXT_WITH_A_SURROGATE)
def test_text_field_with_a_lone_surrogate_is_refused_by_name(field, text):
    # No UTF-8 file or TOML spec can hold a lone surrogate: the spec refuses it, naming the field.
    with pytest.raises(lf.SpecError, match=f"{field} holds a lone surrogate"):
        lf.LossSpec(name="inert", expr="(x - y)**2", symbols={"x": lf.Var("input"), "y": lf.Var("target")},
                    **{field: text})
