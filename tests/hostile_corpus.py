"""The hostile corpus: expressions, text fields, names and files that try to break lossforge.

Like ruff's fixtures, every entry states exactly what it must get:

* ``accept=True``: the spec builds, generates for both targets, the modules
  import, values and gradients are finite (and equal ``reference`` where one
  is given), and a text field appears in the generated docstrings as itself;
* ``error="SpecError"`` (the exact class name) and ``names="..."``: it is
  refused with that :class:`lossforge.LossforgeError` subclass, and the
  message contains ``names`` (the offending construct, token or limit).

Each entry tests one thing: a payload that fails for another reason than the
one it is about is a bug in this corpus. The harness is ``tests/test_hostile.py``.

Payloads that try to run code try to create :data:`SENTINEL`, a path in a
fresh temporary directory (passed to worker processes through the environment
variable :data:`SENTINEL_ENV`); the harness asserts it never exists.
"""

from __future__ import annotations

import atexit
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: The environment variable naming the sentinel's directory (set by the harness for its workers).
SENTINEL_ENV = "LOSSFORGE_HOSTILE_SENTINEL_DIR"


def _sentinel_dir() -> Path:
    given = os.environ.get(SENTINEL_ENV)
    if given:
        return Path(given)
    made = Path(tempfile.mkdtemp(prefix="lossforge-hostile-"))
    atexit.register(shutil.rmtree, made, True)
    os.environ[SENTINEL_ENV] = str(made)  # child processes of this one share it
    return made


SENTINEL_DIR = _sentinel_dir()
#: The file every code-running payload tries to create. It must never exist.
SENTINEL = SENTINEL_DIR / "SENTINEL"

KINDS = ("expr", "text", "name", "toml", "terms", "combine", "default")
TEXT_FIELDS = ("description", "summary", "formula", "reference", "stable_form")

#: A symbol declaration: (name, role, default, domain, axis).
Sym = tuple[str, str, Any, str, Any]


def sym(name: str, role: str, default: Any = None, domain: str = "real", axis: str | None = None) -> Sym:
    return (name, role, default, domain, axis)


XY: tuple[Sym, ...] = (sym("x", "input"), sym("y", "target"))
X_ONLY: tuple[Sym, ...] = (sym("x", "input"),)

#: The point every accepted entry is evaluated at, unless it gives its own. Array symbols
#: without a value here get the j-th shifted copy of ``x``'s (j = their position).
DEFAULT_POINT = {"x": (0.5, -1.25, 2.0, -1.0), "y": (1.0, 0.25, -0.5, -2.0)}


@dataclass(frozen=True)
class Term:
    """One term of a ``combine`` entry: ``lf.combine({name: (LossSpec(expr, symbols, reduction), weight)})``.

    ``pair=False`` passes ``(weight,)`` instead of ``(spec, weight)``.
    """

    name: Any
    weight: Any
    expr: str
    symbols: tuple[Sym, ...] = XY
    reduction: str = "mean"
    pair: bool = True


@dataclass(frozen=True)
class Entry:
    """One hostile input and the exact outcome it must get.

    ``hostile`` by ``kind``:

    * ``expr``: the expression text (spec name ``hostile``, ``symbols``);
    * ``text``: the text of the field ``field`` of a spec ``expr`` over ``symbols``;
    * ``name``: a symbol's name already placed in ``expr``/``symbols``; with
      ``field="spec"`` it is the spec's name instead;
    * ``toml``: a whole spec file, read with ``lf.loads``; ``field``/``text`` name a
      text field and the text it must hold in the docstring;
    * ``terms``: ``((term, weight, expr), ...)``, the ``terms`` of a spec ``expr``;
    * ``combine``: a tuple of :class:`Term`, combined with ``lf.combine``;
    * ``default``: the default of a param ``w`` (domain ``field`` or real) in ``expr``.

    ``reference(xp, v)`` gives the per-sample loss from ``v`` (arrays by spec name,
    params by spec name) with ``xp`` numpy or torch; the harness takes the mean.
    ``grad_reference``: compare the gradients with torch autograd of it too.
    ``params``: values passed to the generated code for params, by spec name
    (the harness finds each keyword in the generated signature, in declaration
    order; ``spec_keywords=True`` passes the spec's own name instead).
    """

    id: str
    kind: str
    hostile: Any
    field: str = ""
    expr: str = "(x - y)**2"
    symbols: tuple[Sym, ...] = XY
    accept: bool = False
    error: str = ""
    names: str = ""
    reference: Callable | float | None = None
    grad_reference: bool = False
    point: tuple[tuple[str, Any], ...] = ()
    params: tuple[tuple[str, float], ...] = ()
    spec_keywords: bool = False
    stabilize: bool = False
    text: str | None = None
    #: The wall-clock bound of the whole pipeline, on the reference machine of ``tests/speed.py``.
    seconds: float = 2.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.id}: unknown kind {self.kind!r}")
        if self.accept == bool(self.error):
            raise ValueError(f"{self.id}: give either accept=True or error=...")
        if self.error and not self.names:
            raise ValueError(f"{self.id}: a refusal must say what its message names")


def accept(id: str, kind: str, hostile: Any, **kw: Any) -> Entry:
    return Entry(id=id, kind=kind, hostile=hostile, accept=True, **kw)


def refuse(id: str, kind: str, hostile: Any, error: str, names: str, **kw: Any) -> Entry:
    return Entry(id=id, kind=kind, hostile=hostile, error=error, names=names, **kw)


def sigmoid(xp, z):
    return 1 / (1 + xp.exp(-z))


def docstring_form(text: str, field: str, target: str) -> str:
    """``text`` as the generated docstring holds it, once Python has parsed the source.

    The docstring keeps the text itself; a block field (formula, reference,
    stable form) indents its continuation lines by 4, and the Torch class
    docstring indents every non-empty line after the first by 4 more.
    """
    pad = "    " if field in ("formula", "reference", "stable_form") else ""
    first, *rest = text.split("\n")
    rest = [pad + line for line in rest]
    if target == "torch" and sys.version_info < (3, 13):  # 3.13 strips a docstring's common indentation
        rest = ["    " + line if line else line for line in rest]
    return "\n".join([first, *rest])


# --------------------------------------------------------------------------------------
# Text fields: every payload in every field, accepted, verbatim in the docstring
# --------------------------------------------------------------------------------------


def text_payloads(sentinel: Path | str = SENTINEL) -> list[tuple[str, str]]:
    """(id, text) of each payload; the code-running ones try to create ``sentinel``."""
    path = str(sentinel)
    lit = repr(path)
    opens = f'open({lit}, "w")'
    return [
        ("triple-dq", '"""'),
        ("triple-sq", "'''"),
        ("close-import-open", f'"""; import os; {opens}#'),
        ("close-newline-code", f'"""\nimport os; {opens}\n"""'),
        ("close-sq-code", f"'''; {opens}; '''"),
        ("four-dq", '""""'),
        ("eight-dq", '""""""""'),
        ("backslash-close", '\\"""; ' + opens + "#"),
        ("trailing-dq", 'ends with a quote"'),
        ("leading-dq", '"starts with a quote'),
        ("lone-dq", '"'),
        ("trailing-backslash", "ends with a backslash \\"),
        ("lone-backslash", "\\"),
        ("double-backslash", "\\\\"),
        ("backslash-n-letters", "a\\nb"),
        ("named-escape", "\\N{BULLET} point"),
        ("bad-named-escape", "\\N{NO SUCH NAME}"),
        ("short-hex-escape", "\\x4"),
        ("short-u-escape", "\\u12"),
        ("bad-U-escape", "\\U00110000"),
        ("octal-escape", "\\0\\777"),
        ("nul", "before\x00after"),
        ("lone-surrogate", "\ud800"),
        ("low-surrogate", "\udc80 byte"),
        ("surrogate-halves", "\ud83d\ude00"),
        ("cr-code", f"line\r{opens}"),
        ("crlf", "one\r\ntwo"),
        ("line-separator-code", f"a\u2028{opens}"),
        ("paragraph-separator", "a\u2029b"),
        ("nel", "a\u0085b"),
        ("form-feed", "a\x0cb"),
        ("vertical-tab", "a\x0bb"),
        ("file-separators", "a\x1c\x1d\x1eb"),
        ("ansi-clear", "\x1b[2J\x1b[31mred\x1b[0m"),
        ("bidi-override", "access \u202e\u2066 nimda\u2069\u2066"),
        ("bom-zero-width", "\ufeff\u200b\u200d"),
        ("del-c1", "\x7f\x80\x9f"),
        ("tab", "a\tb"),
        ("astral", "loss \U0001f600 \U000f0000"),
        ("long-line", "A" * 50_000),
        ("many-lines", "\n".join(f"line {i}" for i in range(2000))),
        ("blank-lines", "\n\n\n  \n"),
        ("jinja-expr", "{{ 7*7 }}"),
        ("jinja-raw", "{% raw %}{{ x }}{% endraw %}"),
        ("jinja-block", "{% if true %}yes{% endif %}{# open comment"),
        ("jinja-ssti", "{{ cycler.__init__.__globals__.os.system('touch " + path + "') }}"),
        ("f-string", 'f"""{__import__("os").system("touch ' + path + '")}"""'),
        ("coding-cookie", "\n# -*- coding: rot13 -*-\n"),
        ("indented-code", f"\n    {opens}\n"),
        ("fullwidth-quotes", "\u201c\u201d\uff02\uff02\uff02"),
    ]


def _text_entries() -> list[Entry]:
    # A lone surrogate cannot be stored in any UTF-8 file or TOML spec: refused, naming the field.
    return [
        refuse(f"text-{field}-{pid}", "text", text, "SpecError", f"{field} holds a lone surrogate", field=field)
        if any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)
        else accept(f"text-{field}-{pid}", "text", text, field=field)
        for field in TEXT_FIELDS
        for pid, text in text_payloads()
    ]


# --------------------------------------------------------------------------------------
# Expression text
# --------------------------------------------------------------------------------------


def _nested_where(depth: int) -> str:
    out = "y"
    for i in range(depth, 0, -1):
        out = f"where(x > {i}, log(x - {i}) * {out}, y)"
    return out


def _nested_where_ref(depth: int):
    def ref(xp, v):
        x, y = v["x"], v["y"]
        out = y
        for i in range(depth, 0, -1):
            out = xp.where(x > i, xp.log(xp.where(x > i, x - i, 1.0 + 0 * x)) * out, y)
        return out

    return ref


_XS10 = " + ".join(f"x{i}" for i in range(10))
_XS10_FLIPPED = " + ".join(f"x{i}" for i in range(9)) + " - x9"
_INPUTS10 = tuple(sym(f"x{i}", "input") for i in range(10))
_POINT10 = tuple((f"x{i}", (0.01 * i, -0.02 * i)) for i in range(10))


def _inputs(n: int) -> tuple[Sym, ...]:
    return tuple(sym(f"x{i}", "input") for i in range(n))


def _point(n: int) -> tuple[tuple[str, tuple[float, float]], ...]:
    return tuple((f"x{i}", (3.0 + i / 100, 5.0 - i / 100)) for i in range(n))


def _sigmoid_product(n: int) -> str:
    return " * ".join(f"sigmoid(x{i})" for i in range(n))


def _prod_sigmoids(n: int):
    def ref(xp, v):
        out = 1.0
        for i in range(n):
            out = out * sigmoid(xp, v[f"x{i}"])
        return out

    return ref


def _expr_entries() -> list[Entry]:
    S = str(SENTINEL)
    U = "UnsafeExpressionError"
    P = "ParseError"
    E: list[Entry] = [
        # -- characters refused before parsing
        refuse("expr-hash-comment", "expr", 'x # """; import os', P, "'#'"),
        refuse("expr-hash-comment-code", "expr", f'x # \n"""; open({S!r}, "w")', P, "'#'"),
        refuse("expr-backslash-continuation", "expr", "x + \\\n y", P, "backslash"),
        refuse("expr-backslash-escape", "expr", "x + y\\x00", P, "backslash"),
        refuse("expr-nul", "expr", "x\x00 + y", P, "NUL"),
        refuse("expr-non-ascii", "expr", "x + \u00e9", P, "non-ASCII"),
        refuse("expr-fullwidth-x", "expr", "\uff58 + y", P, "non-ASCII"),
        refuse("expr-bidi", "expr", "x + \u202ey", P, "non-ASCII"),
        refuse("expr-line-separator", "expr", "x\u2028+ y", P, "non-ASCII"),
        refuse("expr-nel", "expr", "x\u0085+ y", P, "non-ASCII"),
        refuse("expr-file-separator", "expr", "x\x1c+ y", P, "non-printable"),
        refuse("expr-empty", "expr", "", P, "empty"),
        refuse("expr-blank", "expr", "  \n\t ", P, "empty"),
        # -- line breaks are spaces (a TOML multi-line string), never line breaks in code
        accept("expr-newline-in-parens", "expr", "(x +\n y)", reference=lambda xp, v: v["x"] + v["y"],
               grad_reference=True),
        accept("expr-crlf-in-parens", "expr", "(x\r\n- y) * (x\n+ y)",
               reference=lambda xp, v: (v["x"] - v["y"]) * (v["x"] + v["y"]), grad_reference=True),
        accept("expr-form-feed", "expr", "x\x0c+ y", reference=lambda xp, v: v["x"] + v["y"]),
        accept("expr-vertical-tab", "expr", "x\x0b+ y", reference=lambda xp, v: v["x"] + v["y"]),
        accept("expr-lone-cr", "expr", "x\r+ y", reference=lambda xp, v: v["x"] + v["y"]),
        refuse("expr-newline-statement", "expr", "x\nimport os", P, "syntax error"),
        refuse("expr-semicolon-statement", "expr", "x; import os", P, "syntax error"),
        refuse("expr-import", "expr", "import os", P, "syntax error"),
        refuse("expr-unbalanced", "expr", "(x + y", P, "syntax error"),
        # -- constructs outside the language
        refuse("expr-dunder-name", "expr", "__class__ + x", U, "__class__"),
        refuse("expr-dunder-builtins", "expr", "__builtins__ * x + y", U, "__builtins__"),
        refuse("expr-attribute", "expr", "x.real + y", U, "attribute"),
        refuse("expr-attribute-chain", "expr", "x.__class__.__mro__ + y", U, "attribute"),
        refuse("expr-subscript", "expr", "x[0] + y", U, "subscript"),
        refuse("expr-lambda", "expr", "(lambda: x)() + y", U, "lambda"),
        refuse("expr-bare-lambda", "expr", "lambda: x", U, "lambda"),
        refuse("expr-list-comprehension", "expr", "[x for x in y]", U, "comprehension"),
        refuse("expr-generator", "expr", "sum(x for x in y)", U, "comprehension"),
        refuse("expr-dunder-import", "expr", "__import__('os')", U, "__import__"),
        refuse("expr-dunder-import-system", "expr", f"__import__('os').system('touch {S}')", U,
               "only the spec language's functions"),
        refuse("expr-eval-call", "expr", "eval('x') + y", U, "'eval'"),
        refuse("expr-exec-call", "expr", "exec('x') + y", U, "'exec'"),
        refuse("expr-open-call", "expr", f"open({S!r}, 'w') + x + y", U, "'open'"),
        refuse("expr-getattr-call", "expr", "getattr(x, 'real') + y", U, "'getattr'"),
        refuse("expr-keyword-argument", "expr", "exp(x=y)", U, "keyword argument"),
        refuse("expr-fstring", "expr", "f'{x}' + y", U, "f-string"),
        refuse("expr-fstring-import", "expr", "f'{__import__(\"os\")}' + x + y", U, "f-string"),
        refuse("expr-string-constant", "expr", "'abc' + x + y", U, "'abc'"),
        refuse("expr-bytes-constant", "expr", "b'x' + x + y", U, "b'x'"),
        refuse("expr-true-constant", "expr", "True * x + y", U, "True"),
        refuse("expr-none-constant", "expr", "None * x + y", U, "None"),
        refuse("expr-ellipsis", "expr", "... * x + y", U, "..."),
        refuse("expr-complex-literal", "expr", "1j * x + y", U, "1j"),
        refuse("expr-if-expression", "expr", "x if y else y", U, "where(cond, a, b)"),
        refuse("expr-walrus", "expr", "(z := x) + y", U, "assignment expression"),
        refuse("expr-tuple", "expr", "x, y", U, "tuple"),
        refuse("expr-set", "expr", "{x, y}", U, "set literal"),
        refuse("expr-dict", "expr", "{x: y}", U, "dict literal"),
        refuse("expr-starred", "expr", "max(*x, y)", U, "starred"),
        refuse("expr-await", "expr", "await x + y", U, "await"),
        refuse("expr-yield", "expr", "(yield x) + y", U, "yield"),
        refuse("expr-matmul", "expr", "x @ y", P, "'@'"),
        refuse("expr-floordiv", "expr", "x // y", P, "'//'"),
        refuse("expr-xor", "expr", "x ^ y", P, "'^'"),
        refuse("expr-invert", "expr", "~x + y", P, "'~'"),
        refuse("expr-undeclared", "expr", "x + y + z", P, "'z'"),
        refuse("expr-nan-name", "expr", "nan * x + y", P, "'nan'"),
        refuse("expr-inf-name", "expr", "inf * x + y", P, "'inf'"),
        refuse("expr-symbol-called", "expr", "x(y)", P, "'x'"),
        refuse("expr-function-uncalled", "expr", "exp + x + y", P, "'exp'"),
        refuse("expr-wrong-arity", "expr", "exp(x, y)", P, "'exp'"),
        # -- constants beyond float64, computed from their size, never their digits
        refuse("expr-power-9-9-9", "expr", "9**9**9*x + y", P, "9**9**9"),
        refuse("expr-power-10-10-10", "expr", "10**10**10*x + y", P, "10**10**10"),
        refuse("expr-power-2-10-10", "expr", "2**(10**10)*x + y", P, "2**(10**10)"),
        refuse("expr-exponent-9-9-9", "expr", "x**(9**9**9) + y", P, "9**9**9"),
        refuse("expr-exp-of-tower", "expr", "exp(10**10**10)*x + y", P, "10**10**10"),
        refuse("expr-exp-exp-10", "expr", "exp(exp(10))*x + y", P, "exp(exp(10))"),
        refuse("expr-exp-1000", "expr", "exp(1000)*x + y", P, "exp(1000)"),
        refuse("expr-cosh-1000", "expr", "cosh(1000)*x + y", P, "cosh(1000)"),
        refuse("expr-pi-tower", "expr", "pi**pi**pi**pi*x + y", P, "pi**pi**pi**pi"),
        refuse("expr-sigmoid-of-tower", "expr", "sigmoid(10**10**10)*x + y", P, "10**10**10"),
        refuse("expr-underflow-power", "expr", "2**-1075*x + y", P, "rounds to 0"),
        refuse("expr-1e308-squared", "expr", "1e308*1e308*x + y", P, "beyond float64"),
        refuse("expr-1e309-literal", "expr", "1e309*x + y", P, "beyond float64"),
        refuse("expr-cube-root-negative", "expr", "(-8)**(1/3)*x + y", P, "complex"),
        refuse("expr-sqrt-negative", "expr", "sqrt(-1)*x + y", P, "complex"),
        refuse("expr-log-negative", "expr", "log(-1)*x + y", P, "complex"),
        refuse("expr-log-zero", "expr", "log(0)*x + y", P, "log(0)"),
        refuse("expr-one-over-zero", "expr", "1/0*x + y", P, "not a finite number"),
        refuse("expr-zero-over-zero", "expr", "0/0*x + y", P, "not a finite number"),
        refuse("expr-xlogy-2-0", "expr", "xlogy(2, 0)*x + y", P, "xlogy(2, 0)"),
        refuse("expr-5000-digit-literal", "expr", "1" + "0" * 4999 + "*x + y", P, "4300 digits"),
        refuse("expr-400-digit-literal", "expr", "1" + "0" * 399 + "*x + y", P, "400 digits"),
        refuse("expr-400-digit-exponent", "expr", "x**1" + "0" * 399 + " + y", P, "400 digits"),
        accept("expr-x-times-1.9e19", "expr", "x*1.9e19", symbols=X_ONLY,
               reference=lambda xp, v: v["x"] * 1.9e19, grad_reference=True),
        accept("expr-x-times-10-22", "expr", "x*10**22", symbols=X_ONLY,
               reference=lambda xp, v: v["x"] * 1e22, grad_reference=True),
        accept("expr-x-times-2-63", "expr", "x*9223372036854775808", symbols=X_ONLY,
               reference=lambda xp, v: v["x"] * 9223372036854775808.0, grad_reference=True),
        accept("expr-x-times-2-64-plus-1", "expr", "x*18446744073709551617", symbols=X_ONLY,
               reference=lambda xp, v: v["x"] * 18446744073709551616.0, grad_reference=True),
        accept("expr-sum-power-1000", "expr", "(x+y)**1000",
               point=(("x", (0.5, -1.25, 0.25, 0.1)), ("y", (0.5, 2.0, 0.5, 0.8))),
               reference=lambda xp, v: (v["x"] + v["y"]) ** 1000, grad_reference=True),
        # -- and / or / not only inside where, only of comparisons
        refuse("expr-where-or-of-names", "expr", "where(x or y, x, y)", P, "'or'"),
        refuse("expr-where-not-of-name", "expr", "where(not x, x, y)", P, "'not'"),
        refuse("expr-and-outside-where", "expr", "x and y", P, "'and'/'or'"),
        refuse("expr-comparison-outside-where", "expr", "where(x > 0, x, y) > 0", P, "comparisons"),
        refuse("expr-where-is", "expr", "where(x is y, x, y)", P, "'is'"),
        refuse("expr-where-in", "expr", "where(x in y, x, y)", P, "'in'"),
        accept("expr-where-and", "expr", "where(x > 0 and y > 0, x, y)", grad_reference=True,
               reference=lambda xp, v: xp.where((v["x"] > 0) & (v["y"] > 0), v["x"], v["y"])),
        accept("expr-where-or", "expr", "where(x > 0 or y > 0, x, y)", grad_reference=True,
               reference=lambda xp, v: xp.where((v["x"] > 0) | (v["y"] > 0), v["x"], v["y"])),
        accept("expr-where-not", "expr", "where(not (x > 0), x, y)", grad_reference=True,
               reference=lambda xp, v: xp.where(~(v["x"] > 0), v["x"], v["y"])),
        accept("expr-where-chained", "expr", "where(0 < x < 1, x, y)", grad_reference=True,
               reference=lambda xp, v: xp.where((v["x"] > 0) & (v["x"] < 1), v["x"], v["y"])),
        accept("expr-where-not-and-or", "expr", "where(not (x > 0) and (y < 0 or x < -1), x*y, x)",
               grad_reference=True,
               reference=lambda xp, v: xp.where(~(v["x"] > 0) & ((v["y"] < 0) | (v["x"] < -1)),
                                                v["x"] * v["y"], v["x"])),
        # -- size: nesting, length, nodes
        refuse("expr-parens-10000", "expr", "(" * 10_000 + "x + y" + ")" * 10_000, P, "limit is 20000"),
        refuse("expr-parens-9997", "expr", "(" * 9_997 + "x + y" + ")" * 9_997, P, "deeper than 80"),
        refuse("expr-parens-81", "expr", "(" * 81 + "x + y" + ")" * 81, P, "deeper than 80"),
        accept("expr-parens-80", "expr", "(" * 80 + "x + y" + ")" * 80, reference=lambda xp, v: v["x"] + v["y"]),
        refuse("expr-sum-300000-terms", "expr", " + ".join(["x", "y"] * 150_000), P, "limit is 20000"),
        refuse("expr-sum-9999-terms", "expr", "+".join(["x", "y"] * 5_000)[:19_999].rstrip("+"), P,
               "too deeply"),
        refuse("expr-sum-2000-terms", "expr", "+".join(["x", "y"] * 1_000), P, "6000 nodes"),
        accept("expr-sum-1000-terms", "expr", " + ".join(f"{i % 7}*x + y" for i in range(500)),
               reference=lambda xp, v: sum(i % 7 for i in range(500)) * v["x"] + 500 * v["y"]),
        refuse("expr-unary-minus-10000", "expr", "-" * 10_000 + "x + y", P, "too deeply"),
        refuse("expr-unary-minus-100", "expr", "-" * 100 + "x + y", P, "deeper than 80"),
        refuse("expr-power-chain-200", "expr", "x**" * 200 + "y", P, "deeper than 80"),
        refuse("expr-not-chain-200", "expr", "where(" + "not " * 200 + "(x > 0), x, y)", P, "deeper than 80"),
        refuse("expr-nested-sigmoid-200", "expr", "sigmoid(" * 200 + "x" + ")" * 200 + " + y", P, "80 brackets"),
        refuse("expr-nested-tanh-79", "expr", "tanh(" * 79 + "x" + ")" * 79 + " + y", P, "deeper than 80"),
        accept("expr-nested-tanh-60", "expr", "tanh(" * 60 + "x" + ")" * 60 + " + y"),
        accept("expr-nested-exp-log-20", "expr", "log(1 + exp(" * 20 + "x" + "))" * 20 + " + y"),
        # -- size: the largest accepted, and just past it (where's nesting limit, derive's node budget)
        refuse("expr-nested-where-16", "expr", _nested_where(16), P, "where() is nested 16 deep"),
        refuse("expr-nested-where-13", "expr", _nested_where(13), P, "the limit is 12"),
        accept("expr-nested-where-12", "expr", _nested_where(12), stabilize=True,
               point=(("x", (0.5, 2.5, 20.0, 1.5)), ("y", (1.0, 0.25, -0.5, 2.0))),
               reference=_nested_where_ref(12)),
        refuse("expr-sigmoid-product-200", "expr", _sigmoid_product(200), "DeriveError",
               "derive exceeded its budget: its expressions have more than 40,000 nodes", symbols=_inputs(200)),
        accept("expr-sigmoid-product-100", "expr", _sigmoid_product(100), symbols=_inputs(100), point=_point(100),
               reference=_prod_sigmoids(100), grad_reference=True),
    ]
    return E


# --------------------------------------------------------------------------------------
# Names: symbols, params and specs named like the generated code's own names
# --------------------------------------------------------------------------------------

#: Names a symbol or param may take, each one a name the generated code (or torch) uses.
ACCEPTED_NAMES = (
    "part", "training", "forward", "to", "state_dict", "train", "extra_repr", "out", "self", "torch", "np",
    "grad_x", "_t0", "reduction", "Loss", "HostileLoss", "_HostileLossFunction", "F", "math", "ctx", "PARAMS",
    "grads", "upstream", "grad_output", "_where", "_reduce", "_fill", "print", "exec", "open", "super",
    "dtype", "device", "weight", "value", "sum", "exp", "where", "cuda", "apply", "backward", "eval",
)
#: Names no symbol may take: (name, words its refusal must contain).
REFUSED_NAMES = (
    ("lambda", "'lambda'"), ("class", "'class'"), ("None", "'None'"), ("True", "'True'"), ("import", "'import'"),
    ("match", "'match'"), ("_", "'_'"), ("__class__", "'__class__'"), ("__init__", "'__init__'"),
    ("__builtins__", "'__builtins__'"), ("e", "constant"), ("pi", "constant"), ("", "''"), ("1x", "'1x'"),
    ("x y", "'x y'"), ("x-y", "'x-y'"), ("\u00e9", "ASCII"), ("\uff58", "ASCII"), ("x\n", "'x\\n'"),
    ("x;import os", "'x;import os'"),
)
#: Spec names that must work (their class names meet the generated code's names).
ACCEPTED_SPEC_NAMES = ("loss", "Loss", "torch", "np", "F", "Function", "module", "self", "forward", "class",
                       "lambda", "None", "x", "hostile_function", "a" * 5000)
REFUSED_SPEC_NAMES = ("hostile\n", "", "_hostile", "__init__", "1abc", "a-b", "a b", "\u00e9t\u00e9",
                      "x;import os", 123)


def _safe_id(name: str) -> str:
    out = "".join(c if c.isascii() and (c.isalnum() or c in "_") else f"u{ord(c):04x}" for c in str(name))
    return out if len(out) <= 30 else f"{out[:12]}-{len(out)}-chars"


def _name_entries() -> list[Entry]:
    out: list[Entry] = []
    for n in ACCEPTED_NAMES:
        out.append(accept(
            f"name-input-{_safe_id(n)}", "name", n, field="input", expr=f"({n} - y)**2 + abs({n})",
            symbols=(sym(n, "input"), sym("y", "target")), grad_reference=True,
            reference=lambda xp, v, n=n: (v[n] - v["y"]) ** 2 + xp.abs(v[n])))
        out.append(accept(
            f"name-param-{_safe_id(n)}", "name", n, field="param", expr=f"(x - y)**2 * {n}",
            symbols=(sym("x", "input"), sym("y", "target"), sym(n, "param", 2.0)), params=((n, 3.0),),
            grad_reference=True, reference=lambda xp, v, n=n: (v["x"] - v["y"]) ** 2 * v[n]))
    for n in ("part", "out", "self", "torch", "grads", "Loss"):
        out.append(accept(
            f"name-target-{_safe_id(n)}", "name", n, field="target", expr=f"(x - {n})**2",
            symbols=(sym("x", "input"), sym(n, "target")), grad_reference=True,
            reference=lambda xp, v, n=n: (v["x"] - v[n]) ** 2))
    # The finding of the issue, as written there: the param keeps its value through eval()/train().
    out.append(accept(
        "name-part-and-training", "name", "part", field="input", expr="(part - y)**2 * training",
        symbols=(sym("part", "input"), sym("y", "target"), sym("training", "param", 2.0)),
        params=(("training", 3.0),), grad_reference=True,
        reference=lambda xp, v: (v["part"] - v["y"]) ** 2 * v["training"]))
    # Names that meet only after mangling (a trailing _ or a u/v_ prefix).
    for a, b in (("_t0", "u_t0"), ("u_t0", "_t0"), ("training", "training_"), ("training_", "training"),
                 ("grad_x", "v_grad_x"), ("x", "grad_x")):
        out.append(accept(
            f"name-mangled-{_safe_id(a)}-then-{_safe_id(b)}", "name", b, field="input",
            expr=f"({a} - y)**2 + 3*abs({b}) + {a}*{b}",
            symbols=(sym(a, "input"), sym(b, "input"), sym("y", "target")), grad_reference=True,
            reference=lambda xp, v, a=a, b=b: (v[a] - v["y"]) ** 2 + 3 * xp.abs(v[b]) + v[a] * v[b]))
    for n, words in REFUSED_NAMES:
        out.append(refuse(
            f"name-refused-{_safe_id(n) or 'empty'}", "name", n, "SpecError", words, field="param",
            symbols=(sym("x", "input"), sym("y", "target"), sym(n, "param", 2.0))))
    out.append(refuse("name-refused-non-string", "name", 7, "SpecError", "not a string", field="param",
                      symbols=(sym("x", "input"), sym("y", "target"), sym(7, "param", 2.0))))
    for n in ACCEPTED_SPEC_NAMES:
        symbols = XY
        if n == "x":  # the class is XLoss: a symbol of that name meets it
            symbols = (sym("XLoss", "input"), sym("y", "target"))
        expr = "(XLoss - y)**2" if n == "x" else "(x - y)**2"
        ref = ((lambda xp, v: (v["XLoss"] - v["y"]) ** 2) if n == "x"
               else (lambda xp, v: (v["x"] - v["y"]) ** 2))
        out.append(accept(f"name-spec-{_safe_id(n)}", "name", n, field="spec", expr=expr, symbols=symbols,
                          reference=ref, grad_reference=True))
    for n in REFUSED_SPEC_NAMES:
        out.append(refuse(f"name-spec-refused-{_safe_id(n) or 'empty'}", "name", n, "SpecError", "spec name",
                          field="spec"))
    return out


# --------------------------------------------------------------------------------------
# TOML files
# --------------------------------------------------------------------------------------

_SYMBOLS_TOML = '[symbols]\nx = { role = "input" }\ny = { role = "target" }\n'


def _toml(body: str, symbols: str = _SYMBOLS_TOML, name: str = '"hostile"', expr: str = '"(x - y)**2"') -> str:
    return f"name = {name}\nexpr = {expr}\n{body}{symbols}"


def _with_param(default: str) -> str:
    return _toml("", _SYMBOLS_TOML + f"w = {{ role = \"param\", default = {default} }}\n", expr='"(x - y)**2 * w"')


def _toml_entries() -> list[Entry]:
    S, SE = str(SENTINEL), "SpecError"
    return [
        accept("toml-multiline-expr", "toml", _toml("", expr='"""(x -\n    y)**2\n"""'),
               reference=lambda xp, v: (v["x"] - v["y"]) ** 2, grad_reference=True),
        accept("toml-multiline-literal-expr", "toml", _toml("", expr="'''\n(x\n - y)\n * (x + y)'''"),
               reference=lambda xp, v: (v["x"] - v["y"]) * (v["x"] + v["y"]), grad_reference=True),
        refuse("toml-multiline-expr-hash", "toml", _toml("", expr='"""(x - y)**2  # comment\n"""'), "ParseError", "'#'"),
        refuse("toml-multiline-expr-backslash", "toml", _toml("", expr="'''x + \\\ny'''"), "ParseError",
               "backslash"),
        refuse("toml-multiline-expr-statement", "toml", _toml("", expr='"""x\nimport os"""'), "ParseError",
               "syntax error"),
        refuse("toml-malformed-unterminated", "toml", 'name = "hostile\nexpr = ', SE, "malformed TOML"),
        refuse("toml-malformed-duplicate-key", "toml", 'name = "a"\nname = "b"\n', SE, "malformed TOML"),
        refuse("toml-malformed-nul", "toml", 'name = "hostile"\x00', SE, "malformed TOML"),
        refuse("toml-malformed-surrogate-escape", "toml", _toml('description = "\\ud800"\n'), SE, "malformed TOML"),
        refuse("toml-deep-arrays", "toml", "a = " + "[" * 10_000 + "]" * 10_000 + "\n", SE, "TOML"),
        refuse("toml-deep-inline-tables", "toml", "a = " + "{b = " * 5_000 + "1" + "}" * 5_000 + "\n", SE, "TOML"),
        refuse("toml-empty", "toml", "", SE, "'name'"),
        refuse("toml-unknown-top-key", "toml", _toml(f'exec = "open({S!r}, \'w\')"\n'), SE, "'exec'"),
        refuse("toml-unknown-symbol-key", "toml",
               _toml("", '[symbols]\nx = { role = "input", code = "import os" }\ny = { role = "target" }\n'),
               SE, "'code'"),
        refuse("toml-symbol-not-a-table", "toml", _toml("", '[symbols]\nx = "input"\ny = { role = "target" }\n'),
               SE, "'x'"),
        refuse("toml-symbols-not-a-table", "toml", _toml("symbols = 1\n", ""), SE, "[symbols]"),
        refuse("toml-expr-not-a-string", "toml", _toml("", expr="1"), SE, "expr must be a string"),
        refuse("toml-name-not-a-string", "toml", _toml("", name="123"), SE, "spec name"),
        refuse("toml-name-with-newline", "toml", _toml("", name='"hostile\\n"'), SE, "spec name"),
        refuse("toml-accept-empty-reason", "toml", _toml("", _SYMBOLS_TOML + '[accept]\noverflow = ""\n'), SE,
               "'overflow'"),
        refuse("toml-accept-reason-not-text", "toml", _toml("", _SYMBOLS_TOML + "[accept]\noverflow = 1\n"), SE,
               "'overflow'"),
        refuse("toml-default-400-digits", "toml", _with_param("1" + "0" * 399), SE, "not a finite float64"),
        refuse("toml-default-inf", "toml", _with_param("inf"), SE, "default inf"),
        refuse("toml-default-minus-inf", "toml", _with_param("-inf"), SE, "default -inf"),
        refuse("toml-default-nan", "toml", _with_param("nan"), SE, "default nan"),
        refuse("toml-default-1e309", "toml", _with_param("1e309"), SE, "not a finite float64"),
        refuse("toml-default-string", "toml", _with_param('"2.0"'), SE, "not a number"),
        refuse("toml-default-bool", "toml", _with_param("true"), SE, "not a number"),
        refuse("toml-default-date", "toml", _with_param("1979-05-27"), SE, "not a number"),
        refuse("toml-default-array", "toml", _with_param("[1.0]"), SE, "not a number"),
        accept("toml-default-hex-int", "toml", _with_param("0x7fffffffffffffff"),
               reference=lambda xp, v: (v["x"] - v["y"]) ** 2 * 9223372036854775807.0, grad_reference=True),
        refuse("toml-term-weight-400-digits", "toml",
               _toml("", _SYMBOLS_TOML + "[terms]\nfit = { weight = 1" + "0" * 399 + ', expr = "(x - y)**2" }\n'),
               SE, "weight"),
        refuse("toml-term-weight-nan", "toml",
               _toml("", _SYMBOLS_TOML + '[terms]\nfit = { weight = nan, expr = "(x - y)**2" }\n'), SE, "weight"),
        refuse("toml-term-extra-key", "toml",
               _toml("", _SYMBOLS_TOML + '[terms]\nfit = { weight = 1.0, expr = "(x - y)**2", run = "x" }\n'), SE,
               "'fit'"),
        accept("toml-description-escapes", "toml",
               _toml('description = "\\"\\"\\" \\\\ \\u0000 \\u202e \\r end\\""\n'),
               field="description", text='""" \\ \x00 \u202e \r end"'),
        accept("toml-reference-multiline", "toml",
               _toml(f"reference = '''\n\"\"\"\nopen({S!r}, \"w\")\n'''\n"),
               field="reference", text=f'"""\nopen({S!r}, "w")\n'),
    ]


# --------------------------------------------------------------------------------------
# [terms] of a spec, and lf.combine
# --------------------------------------------------------------------------------------


def _terms_entries() -> list[Entry]:
    SE = "SpecError"
    return [
        refuse("terms-differ-by-power-30", "terms",
               (("a", 1.0, f"({_XS10})**30"), ("b", 1.0, f"({_XS10_FLIPPED})**30")),
               SE, "terms", expr=f"({_XS10})**30", symbols=_INPUTS10),
        accept("terms-equal-power-30", "terms", (("a", 1.0, f"({_XS10})**30"), ("b", 1.0, "x0")),
               expr=f"({_XS10})**30 + x0", symbols=_INPUTS10, point=_POINT10,
               reference=lambda xp, v: sum(v[f"x{i}"] for i in range(10)) ** 30 + v["x0"]),
        accept("terms-weighted", "terms", (("fit", 1.0, "(x - y)**2"), ("reg", 0.5, "abs(x)")),
               expr="(x - y)**2 + 0.5*abs(x)", grad_reference=True,
               reference=lambda xp, v: (v["x"] - v["y"]) ** 2 + 0.5 * xp.abs(v["x"])),
        refuse("terms-differ", "terms", (("fit", 1.0, "(x - y)**2"),), SE, "terms", expr="(x - y)**2 + x"),
        refuse("terms-name-dunder", "terms", (("__class__", 1.0, "(x - y)**2"),), SE, "'__class__'"),
        refuse("terms-name-keyword", "terms", (("lambda", 1.0, "(x - y)**2"),), SE, "'lambda'"),
        refuse("terms-weight-400-digits", "terms", (("fit", 10**399, "(x - y)**2"),), SE, "weight"),
        refuse("terms-weight-inf", "terms", (("fit", math.inf, "(x - y)**2"),), SE, "weight"),
        refuse("terms-weight-bool", "terms", (("fit", True, "(x - y)**2"),), SE, "weight"),
        refuse("terms-expr-import", "terms", (("fit", 1.0, "__import__('os')"),), "UnsafeExpressionError",
               "__import__"),
        refuse("terms-expr-hash", "terms", (("fit", 1.0, "(x - y)**2 # hi"),), "ParseError", "'#'"),
        refuse("terms-expr-not-text", "terms", (("fit", 1.0, 12),), SE, "'fit'"),
    ]


def _combine_entries() -> list[Entry]:
    SE = "SpecError"
    fit = Term("fit", 1.0, "(part - y)**2", (sym("part", "input"), sym("y", "target")))
    reg = Term("reg", 0.5, "abs(part)", (sym("part", "input"),))
    return [
        accept("combine-part-shared", "combine", (fit, reg), grad_reference=True,
               reference=lambda xp, v: (v["part"] - v["y"]) ** 2 + 0.5 * xp.abs(v["part"])),
        accept("combine-terms-named-out-and-self", "combine",
               (Term("out", 1.0, "(x - y)**2"), Term("self", 2.0, "abs(x)", X_ONLY)), grad_reference=True,
               reference=lambda xp, v: (v["x"] - v["y"]) ** 2 + 2.0 * xp.abs(v["x"])),
        accept("combine-weight-2-63", "combine", (Term("fit", 2**63, "(x - y)**2"),), grad_reference=True,
               reference=lambda xp, v: (v["x"] - v["y"]) ** 2 * 9223372036854775808.0),
        accept("combine-weight-numpy-float", "combine", (Term("fit", np.float64(0.25), "(x - y)**2"),),
               grad_reference=True, reference=lambda xp, v: (v["x"] - v["y"]) ** 2 * 0.25),
        refuse("combine-empty", "combine", (), SE, "combine() needs"),
        refuse("combine-term-name-keyword", "combine", (Term("lambda", 1.0, "(x - y)**2"),), SE, "'lambda'"),
        refuse("combine-term-name-dunder", "combine", (Term("__class__", 1.0, "(x - y)**2"),), SE, "'__class__'"),
        refuse("combine-term-name-newline", "combine", (Term("fit\n", 1.0, "(x - y)**2"),), SE, "'fit\\n'"),
        refuse("combine-term-name-not-text", "combine", (Term(3, 1.0, "(x - y)**2"),), SE, "not a string"),
        refuse("combine-weight-400-digits", "combine", (Term("fit", 10**399, "(x - y)**2"),), SE, "weight"),
        refuse("combine-weight-nan", "combine", (Term("fit", math.nan, "(x - y)**2"),), SE, "weight nan"),
        refuse("combine-weight-inf", "combine", (Term("fit", -math.inf, "(x - y)**2"),), SE, "weight -inf"),
        refuse("combine-weight-bool", "combine", (Term("fit", True, "(x - y)**2"),), SE, "weight"),
        refuse("combine-weight-string", "combine", (Term("fit", "1.0", "(x - y)**2"),), SE, "weight"),
        refuse("combine-not-a-pair", "combine", (Term("fit", 1.0, "(x - y)**2", pair=False),), SE, "'fit'"),
        refuse("combine-per-sample-term-beside-a-mean", "combine",
               (Term("a", 1.0, "(x - y)**2"), Term("b", 1.0, "abs(x)", X_ONLY, reduction="none")), SE,
               "term 'b' reduces by 'none'"),
        refuse("combine-symbol-declared-twice-differently", "combine",
               (Term("a", 1.0, "(x - y)**2"), Term("b", 1.0, "abs(x)", (sym("x", "input", None, "positive"),))),
               SE, "'x'"),
    ]


# --------------------------------------------------------------------------------------
# Param defaults
# --------------------------------------------------------------------------------------


def _default_entries() -> list[Entry]:
    SE, DE = "SpecError", "DomainError"
    sq = "(x - y)**2 * w"
    return [
        refuse("default-400-digits", "default", 10**399, SE, "not a finite float64"),
        refuse("default-2-1024", "default", 2**1024, SE, "not a finite float64"),
        refuse("default-inf", "default", math.inf, SE, "default inf"),
        refuse("default-minus-inf", "default", -math.inf, SE, "default -inf"),
        refuse("default-nan", "default", math.nan, SE, "default nan"),
        refuse("default-numpy-nan", "default", np.float64("nan"), SE, "nan"),
        refuse("default-bool", "default", True, SE, "not a number"),
        refuse("default-string", "default", "2.0", SE, "not a number"),
        refuse("default-none", "default", None, SE, "needs a default"),
        refuse("default-complex", "default", 1 + 2j, SE, "not a number"),
        refuse("default-tuple", "default", (1.0,), SE, "not a number"),
        refuse("default-outside-positive", "default", 0.0, DE, "outside the domain", field="positive"),
        refuse("default-outside-interval", "default", 2.0, DE, "outside the domain", field="[0, 1]"),
        refuse("default-unknown-domain", "default", 1.0, DE, "'hostile'", field="hostile"),
        refuse("default-empty-interval", "default", 0.5, DE, "empty", field="[1, 0]"),
        refuse("default-infinite-interval", "default", 0.5, DE, "not finite", field="[0, inf]"),
        accept("default-1e300", "default", 1e300, expr="w * sigmoid(x - y)",
               reference=lambda xp, v: v["w"] * sigmoid(xp, v["x"] - v["y"]), grad_reference=True),
        accept("default-subnormal", "default", 5e-324, expr="(x - y)**2 + w",
               reference=lambda xp, v: (v["x"] - v["y"]) ** 2 + 5e-324, grad_reference=True),
        accept("default-minus-zero", "default", -0.0, expr=sq,
               reference=lambda xp, v: (v["x"] - v["y"]) ** 2 * -0.0, grad_reference=True),
        accept("default-2-53-plus-1", "default", 2**53 + 1, expr=sq,
               reference=lambda xp, v: (v["x"] - v["y"]) ** 2 * float(2**53 + 1), grad_reference=True),
        accept("default-int-10-308", "default", 10**308, expr="sigmoid(x - y) * w * 1e-300",
               reference=lambda xp, v: sigmoid(xp, v["x"] - v["y"]) * 1e8, grad_reference=True),
    ]


def build() -> list[Entry]:
    entries = (_text_entries() + _expr_entries() + _name_entries() + _toml_entries() + _terms_entries()
               + _combine_entries() + _default_entries())
    seen: set[str] = set()
    for e in entries:
        if e.id in seen:
            raise ValueError(f"duplicate corpus id {e.id!r}")
        seen.add(e.id)
    return entries


CORPUS: list[Entry] = build()
BY_ID: dict[str, Entry] = {e.id: e for e in CORPUS}
