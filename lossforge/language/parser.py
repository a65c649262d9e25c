"""The spec language's vocabulary and its safe parser.

:func:`parse` turns spec-language text into a SymPy expression by walking
Python's ``ast`` under a whitelist. User text is never given to ``eval``,
``exec``, ``sympify`` or ``parse_expr``.
"""

from __future__ import annotations

import ast
import keyword
import math
import sys
from collections.abc import Mapping
from fractions import Fraction

import sympy
from sympy import S
from sympy.codegen.cfunctions import expm1, log1p
from sympy.logic.boolalg import BooleanAtom, BooleanFunction

from .. import walk
from ..errors import ParseError, SpecError, UnsafeExpressionError, did_you_mean
from .axes import AXIS_OPERATIONS, AxisFunction, axis_sort, norm
from .functions import (
    acos,
    clamp,
    erfc,
    heaviside,
    lgamma,
    maximum,
    minimum,
    sigmoid,
    sign,
    softplus,
    where,
    xlogy,
)

__all__ = ["parse", "check_symbol_name", "not_real", "finite_float", "FUNCTIONS", "CONSTANTS"]


#: Every function the spec language offers: name -> (SymPy callable, arity: a count or the counts it accepts).
FUNCTIONS: dict[str, tuple[object, int]] = {
    "exp": (sympy.exp, 1),
    "log": (sympy.log, 1),
    "log1p": (log1p, 1),
    "expm1": (expm1, 1),
    "xlogy": (xlogy, 2),
    "sqrt": (sympy.sqrt, 1),
    "abs": (sympy.Abs, 1),
    "sign": (sign, 1),
    "max": (maximum, 2),
    "min": (minimum, 2),
    "clamp": (clamp, 3),
    "sigmoid": (sigmoid, 1),
    "softplus": (softplus, 1),
    "tanh": (sympy.tanh, 1),
    "cosh": (sympy.cosh, 1),
    "cos": (sympy.cos, 1),
    "sin": (sympy.sin, 1),
    "acos": (acos, 1),
    "atan": (sympy.atan, 1),
    "erf": (sympy.erf, 1),
    "erfc": (erfc, 1),
    "lgamma": (lgamma, 1),
    "digamma": (sympy.digamma, 1),
    "heaviside": (heaviside, 1),
    "where": (where, 3),
    **{op.spec_name: (op, 1) for op in AXIS_OPERATIONS},
    "norm": (norm, (1, 2)),
    "sort_by": (axis_sort, 2),
}

#: The keyword arguments a function takes (each a literal True or False), by function name.
KEYWORDS: dict[str, tuple[str, ...]] = {"sort": ("descending",), "sort_by": ("descending",)}

#: Named constants of the spec language.
CONSTANTS: dict[str, sympy.Expr] = {"pi": sympy.pi, "e": sympy.E}

#: Bounds that keep pathological text from exhausting time or the stack.
MAX_CHARS = 20_000
MAX_NODES = 6_000
MAX_DEPTH = 80
#: The deepest a where() may sit inside the branches or conditions of others. Each level's
#: derivative and NaN guards hold every level inside it (16 levels: 1,600 nodes whose SymPy
#: facts and rebuilds cost a second; 12: half of that); a piecewise loss of many
#: pieces reads as well as a sum of where(cond_k, piece_k, 0).
MAX_WHERE_DEPTH = 12

_COMPARE = {
    ast.Lt: sympy.Lt,
    ast.LtE: sympy.Le,
    ast.Gt: sympy.Gt,
    ast.GtE: sympy.Ge,
    ast.Eq: sympy.Eq,
    ast.NotEq: sympy.Ne,
}

_BINOP_TOKENS = {
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.MatMult: "@",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.LShift: "<<",
    ast.RShift: ">>",
}

_NODE_WORDS = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscript",
    ast.Lambda: "lambda",
    ast.ListComp: "comprehension",
    ast.SetComp: "comprehension",
    ast.DictComp: "comprehension",
    ast.GeneratorExp: "comprehension",
    ast.IfExp: "conditional expression (use where(cond, a, b))",
    ast.Dict: "dict literal",
    ast.List: "list literal",
    ast.Set: "set literal",
    ast.Tuple: "tuple",
    ast.Starred: "starred argument",
    ast.JoinedStr: "f-string",
    ast.NamedExpr: "assignment expression",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Slice: "slice",
}


def check_symbol_name(name: object) -> str:
    """Return ``name`` if it can name a symbol, else raise naming it.

    A symbol name is a plain ASCII identifier that is not a Python keyword,
    does not start with ``__`` and does not shadow a constant of the spec
    language. It may share a function's name (``mean`` is ``gaussian_nll``'s
    argument, as in PyTorch): a name followed by ``(`` is always the function.
    """
    if not isinstance(name, str):
        raise SpecError(f"symbol name {name!r} is not a string", token=repr(name))
    if not name.isascii() or not name.isidentifier():
        raise SpecError(f"symbol name {name!r} is not a plain ASCII identifier", token=name)
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise SpecError(f"symbol name {name!r} is a Python keyword", token=name)
    if name.startswith("__"):
        raise SpecError(f"symbol name {name!r} starts with '__', which lossforge reserves", token=name)
    if name in CONSTANTS:
        raise SpecError(f"symbol name {name!r} shadows the spec language's constant {name!r}", token=name)
    return name


# --------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------


#: The largest finite float64, and the natural logs of the float64 range (overflow, underflow to 0).
FLOAT_MAX = sys.float_info.max
_LOG_MAX = math.log(FLOAT_MAX)
_LOG_MIN = math.log(5e-324)
#: Integers beyond this are not exact in float64: they are kept as floats, as the generated code computes them.
_EXACT_INT = 2**53


def finite_float(value: object) -> float | None:
    """``value`` as a finite float if it is a real number (not a bool) that fits float64, else None.

    Unlike ``float()`` it never raises: a 400-digit integer is simply not a float64.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int) and abs(value) > FLOAT_MAX:
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def _number(value: object, token: str) -> sympy.Expr:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UnsafeExpressionError(f"constant {token} is not a number", token=token)
    if finite_float(value) is None:
        digits = f" ({len(str(abs(value)))} digits)" if isinstance(value, int) else ""
        raise ParseError(f"constant {token[:40]}{digits} is beyond float64's range (about 1.8e308)", token=token[:40])
    if isinstance(value, int):
        return sympy.Integer(value) if abs(value) <= _EXACT_INT else sympy.Float(float(value))
    exact = Fraction(value)
    if exact.denominator <= 1024 and abs(value) <= _EXACT_INT:  # integers and short dyadic fractions stay exact
        return sympy.Rational(exact.numerator, exact.denominator)
    return sympy.Float(value)


class _Converter:
    """Turns a whitelisted ``ast`` into SymPy, tracking each node's axis."""

    def __init__(self, text: str, symbols: Mapping[str, sympy.Symbol], axes: Mapping[str, str | None]):
        self.text = text
        self.symbols = symbols
        self.axes = axes

    def token(self, node: ast.AST) -> str:
        segment = ast.get_source_segment(self.text, node)
        return segment if segment else type(node).__name__

    def fail(self, node: ast.AST, what: str, cls: type[ParseError] = ParseError) -> ParseError:
        tok = self.token(node)
        return cls(f"{what}: {tok!r} (column {getattr(node, 'col_offset', 0) + 1})", token=tok)

    def merge(self, node: ast.AST, *axes: str | None) -> str | None:
        named = {a for a in axes if a is not None}
        if len(named) > 1:
            a, b = sorted(named)
            raise self.fail(node, f"mixes vectors over axes {a!r} and {b!r}")
        return named.pop() if named else None

    def convert(self, node: ast.AST, in_cond: bool = False) -> tuple[sympy.Basic, str | None]:
        value, axis = self._convert(node, in_cond)
        return self.bounded(node, value), axis

    def bounded(self, node: ast.AST, value: sympy.Basic) -> sympy.Basic:
        """``value`` once its constants are known to be real float64 numbers.

        Nodes are checked as they are built, innermost first, so every constant
        reaching SymPy's evaluation has arguments in float64's range and costs
        microseconds (``exp(exp(10))`` is refused, never ``exp`` of it). Only the
        node itself and its direct arguments can be new constants: everything
        below was checked when it was built. Exact integers past 2**53 become
        floats, as the generated code holds them.
        """
        if _is_condition(value):
            return value
        parts = (value, *value.args) if not value.is_Atom else (value,)
        for part in parts:
            if part.is_number:
                self.constant(node, part)
        huge = {p: sympy.Float(float(p)) for p in parts if p.is_Integer and abs(p) > _EXACT_INT}
        return value.xreplace(huge) if huge else value

    def constant(self, node: ast.AST, value: sympy.Expr) -> None:
        """Refuse a constant that is not a finite real float64 number, naming it."""
        if value.is_Rational:
            if value.is_Integer and abs(value) <= _EXACT_INT:
                return
            size = abs(value.p).bit_length() - value.q.bit_length()
            if size > 1024:
                raise self.fail(node, "this constant is beyond float64's range (about 1.8e308)")
            return
        approx = value.evalf(17)
        if not approx.is_number or approx.free_symbols or approx.has(sympy.Function):
            return  # lossforge's own functions of constants (softplus(pi)) stay symbolic, bounded by their arguments
        if approx.has(S.NaN, S.ComplexInfinity, S.Infinity, S.NegativeInfinity):
            raise self.fail(node, "this constant is not a finite number (e.g. a division by zero or log(0))")
        re_part, im_part = approx.as_real_imag()
        if im_part != 0:
            raise self.fail(node, f"this constant is complex ({approx}): use a real expression, "
                                  "e.g. -(8**(1/3)) instead of (-8)**(1/3)")
        if abs(re_part) > FLOAT_MAX:
            raise self.fail(node, f"this constant is about {sympy.Float(re_part, 3)}, beyond float64's range (1.8e308)")

    def _convert(self, node: ast.AST, in_cond: bool = False) -> tuple[sympy.Basic, str | None]:
        if isinstance(node, ast.Expression):
            return self.convert(node.body, in_cond)
        if isinstance(node, ast.Constant):
            return _number(node.value, self.token(node)), None
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.BinOp):
            return self.binop(node, in_cond)
        if isinstance(node, ast.UnaryOp):
            return self.unary(node, in_cond)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Compare):
            return self.compare(node, in_cond)
        if isinstance(node, ast.BoolOp):
            if not in_cond:
                raise self.fail(node, "'and'/'or' are only allowed inside where(...)")
            parts = [self.convert(v, True) for v in node.values]
            for (value, _), sub in zip(parts, node.values):
                if not _is_condition(value):
                    word = "and" if isinstance(node.op, ast.And) else "or"
                    raise self.fail(sub, f"each side of {word!r} must be a comparison (x > 0 {word} y < 1)")
            op = sympy.And if isinstance(node.op, ast.And) else sympy.Or
            return op(*(p for p, _ in parts)), self.merge(node, *(a for _, a in parts))
        word = _NODE_WORDS.get(type(node))
        if word is None:
            word = f"{type(node).__name__} is not part of the spec language"
        else:
            word = f"{word} is not allowed"
        raise self.fail(node, word, UnsafeExpressionError)

    def name(self, node: ast.Name) -> tuple[sympy.Basic, str | None]:
        ident = node.id
        if ident in self.symbols:
            return self.symbols[ident], self.axes.get(ident)
        if ident in CONSTANTS:
            return CONSTANTS[ident], None
        if ident in FUNCTIONS:
            raise self.fail(node, f"function {ident!r} used without a call")
        if ident.startswith("__"):
            raise self.fail(node, f"name {ident!r} is not allowed", UnsafeExpressionError)
        hint = did_you_mean(ident, [*self.symbols, *CONSTANTS])
        raise ParseError(f"undeclared name {ident!r}{hint}: declare it in [symbols]", token=ident)

    def binop(self, node: ast.BinOp, in_cond: bool) -> tuple[sympy.Basic, str | None]:
        op = type(node.op)
        if op in _BINOP_TOKENS:
            tok = _BINOP_TOKENS[op]
            raise ParseError(f"operator {tok!r} is not part of the spec language", token=tok)
        # Walk a left-leaning chain of + - (or * /) iteratively: a long sum
        # must not cost one Python frame per term.
        group = (ast.Add, ast.Sub) if op in (ast.Add, ast.Sub) else (ast.Mult, ast.Div)
        chain: list[tuple[type, ast.AST]] = []
        cur: ast.AST = node
        while isinstance(cur, ast.BinOp) and isinstance(cur.op, group):
            chain.append((type(cur.op), cur.right))
            cur = cur.left
        if op is ast.Pow:
            base, a1 = self.convert(node.left, in_cond)
            expo, a2 = self.convert(node.right, in_cond)
            self.power_fits(node, base, expo)
            return sympy.Pow(base, expo), self.merge(node, a1, a2)
        acc, axis = self.convert(cur, in_cond)
        terms = [acc]
        axes = [axis]
        for kind, right in reversed(chain):
            value, a = self.convert(right, in_cond)
            axes.append(a)
            if kind is ast.Sub:
                value = -value
            elif kind is ast.Div:
                value = 1 / value
            terms.append(value)
        combine = sympy.Add if group[0] is ast.Add else sympy.Mul
        return combine(*terms), self.merge(node, *axes)

    def power_fits(self, node: ast.AST, base: sympy.Basic, expo: sympy.Basic) -> None:
        """Refuse a constant power whose value is beyond float64, before SymPy computes it.

        ``9**9**9`` is an integer of 370 million digits: SymPy would compute it
        exactly. Its size is known from logarithms in microseconds.
        """
        if not (base.is_number and expo.is_number) or _is_condition(base) or _is_condition(expo):
            return
        b, e = abs(float(base.evalf(17))), float(expo.evalf(17))
        if b in (0.0, 1.0):
            return
        size = e * math.log(b)
        if size > _LOG_MAX:
            raise self.fail(node, f"this power is about 10**{size / math.log(10):.4g}, beyond float64's range "
                                  "(1.8e308)")
        if size < _LOG_MIN:
            raise self.fail(node, f"this power is about 10**{size / math.log(10):.4g}, which float64 rounds to 0: "
                                  "write 0")

    def unary(self, node: ast.UnaryOp, in_cond: bool) -> tuple[sympy.Basic, str | None]:
        value, axis = self.convert(node.operand, in_cond)
        if isinstance(node.op, ast.USub):
            return -value, axis
        if isinstance(node.op, ast.UAdd):
            return value, axis
        if isinstance(node.op, ast.Not) and in_cond:
            if not _is_condition(value):
                raise self.fail(node.operand, "'not' needs a comparison (not (x > 0))")
            return sympy.Not(value), axis
        tok = {ast.Not: "not", ast.Invert: "~"}[type(node.op)]
        raise ParseError(f"operator {tok!r} is not allowed here", token=tok)

    def compare(self, node: ast.Compare, in_cond: bool) -> tuple[sympy.Basic, str | None]:
        if not in_cond:
            raise self.fail(node, "comparisons are only allowed inside where(...)")
        left, axis = self.convert(node.left, True)
        axes = [axis]
        parts = []
        for op, comp in zip(node.ops, node.comparators):
            if type(op) not in _COMPARE:
                tok = {ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}[type(op)]
                raise ParseError(f"comparison {tok!r} is not part of the spec language", token=tok)
            right, a = self.convert(comp, True)
            axes.append(a)
            for side in (left, right):
                if (what := not_real(side)) is not None:
                    raise self.fail(node, f"a side of this comparison evaluates to {what}")
            parts.append(_COMPARE[type(op)](left, right))
            left = right
        return sympy.And(*parts), self.merge(node, *axes)

    def keywords(self, node: ast.Call, fname: str) -> dict[str, bool]:
        """The keyword arguments of a call, each one :data:`KEYWORDS` allows with a literal True or False."""
        flags = {}
        for kw in node.keywords:
            word = kw.arg or "**"
            allowed = KEYWORDS.get(fname, ())
            if word not in allowed:
                hint = f"; {fname}() takes {', '.join(w + '=True' for w in allowed)}" if allowed else ""
                raise UnsafeExpressionError(f"keyword argument {word!r} in call to {fname!r} is not allowed{hint}",
                                            token=word)
            if word in flags:
                raise ParseError(f"keyword argument {word!r} is given twice in call to {fname!r}", token=word)
            if not (isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, bool)):
                raise self.fail(kw.value, f"{word}= of {fname}() must be True or False")
            flags[word] = kw.value.value
        return flags

    def call(self, node: ast.Call) -> tuple[sympy.Basic, str | None]:
        if not isinstance(node.func, ast.Name):
            raise self.fail(node.func, "only the spec language's functions can be called", UnsafeExpressionError)
        fname = node.func.id
        if fname not in FUNCTIONS:
            if fname in self.symbols:
                raise ParseError(f"symbol {fname!r} is not a function", token=fname)
            hint = did_you_mean(fname, FUNCTIONS) or f" (the spec language's functions: {', '.join(sorted(FUNCTIONS))})"
            raise UnsafeExpressionError(f"unknown function {fname!r}{hint}", token=fname)
        flags = self.keywords(node, fname)
        func, arity = FUNCTIONS[fname]
        counts = arity if isinstance(arity, tuple) else (arity,)
        if len(node.args) not in counts:
            said = " or ".join(map(str, counts))
            raise ParseError(
                f"function {fname!r} takes {said} argument{'s' if counts != (1,) else ''}, got {len(node.args)}",
                token=fname,
            )
        if fname == "where":
            cond, ca = self.convert(node.args[0], True)
            a, aa = self.convert(node.args[1])
            b, ab = self.convert(node.args[2])
            if not _is_condition(cond):
                raise self.fail(node.args[0], "the first argument of where(...) must be a comparison")
            return where(cond, a, b), self.merge(node, ca, aa, ab)
        args = [self.convert(a) for a in node.args]
        for arg, sub in zip(args, node.args):
            if _is_condition(arg[0]):
                raise self.fail(sub, f"a comparison cannot be an argument of {fname!r}")
        if func is axis_sort:
            (value, axis), *by = args
            key, on = by[0] if by else (value, axis)
            if axis is None:
                raise self.fail(node, f"{fname}() needs a vector (axis) argument")
            if on is not None and on != axis:
                raise self.fail(node.args[1], f"the key of sort_by() must lie on the axis of its values, {axis!r}, "
                                              f"not on {on!r}")
            return axis_sort(value, key, int(flags.get("descending", False))), axis
        if isinstance(func, type) and issubclass(func, AxisFunction):
            (value, axis), *options = args
            for (_, on), sub in zip(options, node.args[1:]):
                if on is not None:
                    raise self.fail(sub, f"the order of {fname}() must be a number or a param, not a vector")
            if axis is None:
                raise self.fail(node, f"{fname}() needs a vector (axis) argument")
            if not any(self.axes.get(s.name) == axis for s in value.free_symbols):
                raise self.fail(node, f"{fname}() needs an argument that varies along its axis; this one is {value}")
            return func(value, *(o for o, _ in options)), (axis if not func.reduces else None)
        values = [v for v, _ in args]
        return func(*values), self.merge(node, *(a for _, a in args))


#: Values a real loss (or a gradient) must never hold, with the words for them.
_NOT_REAL = {
    S.ComplexInfinity: "an infinity",
    S.Infinity: "an infinity",
    S.NegativeInfinity: "an infinity",
    S.NaN: "nan",
    S.ImaginaryUnit: "a complex number",
}


def not_real(expr: sympy.Basic) -> str | None:
    """The words for a value no real loss (or gradient) may hold, if ``expr`` holds one (zoo, oo, nan, I)."""
    present = {n for n in walk.atoms((expr,), sympy.Atom) if n in _NOT_REAL}  # one walk over distinct nodes
    return next((what for bad, what in _NOT_REAL.items() if bad in present), None)


#: Characters refused in expression text before parsing: (character, what it is, the fix).
_NOT_IN_TEXT = (
    ("#", "a '#' comment", "put comments in the TOML file, outside the expression string"),
    ("\\", "a backslash (line continuation)",
     "in a TOML multi-line string (\"\"\"...\"\"\") the expression may break lines anywhere without one"),
    ("\0", "a NUL character", "remove it"),
)


_WHITESPACE = str.maketrans("\n\r\t\f\v", "     ")


def _is_condition(value: sympy.Basic) -> bool:
    """Whether a converted node is a truth value (a comparison or a combination of them)."""
    return isinstance(value, (sympy.core.relational.Relational, BooleanFunction, BooleanAtom))


def _depth(tree: ast.AST) -> int:
    """Nesting depth, counting a left-leaning chain of + - or * / as one level."""
    deepest = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            return MAX_DEPTH + 1
        deepest = max(deepest, depth)
        for child in ast.iter_child_nodes(node):
            same_chain = (
                isinstance(node, ast.BinOp)
                and child is node.left
                and isinstance(child, ast.BinOp)
                and {type(node.op), type(child.op)} <= {ast.Add, ast.Sub}
                or isinstance(node, ast.BinOp)
                and child is node.left
                and isinstance(child, ast.BinOp)
                and {type(node.op), type(child.op)} <= {ast.Mult, ast.Div}
            )
            stack.append((child, depth if same_chain else depth + 1))
    return deepest


def _where_depth(tree: ast.AST) -> int:
    """How deep ``where()`` calls nest in ``tree``: one alone is 1, one in a branch or condition of another 2."""
    deepest = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "where":
            depth += 1
            deepest = max(deepest, depth)
        stack.extend((child, depth) for child in ast.iter_child_nodes(node))
    return deepest


def parse(
    text: str,
    symbols: Mapping[str, sympy.Symbol],
    axes: Mapping[str, str | None] | None = None,
) -> sympy.Expr:
    """Parse spec-language ``text`` into a SymPy expression over ``symbols``.

    ``axes`` maps each vector symbol's name to its axis. The result is one
    value per sample: a vector symbol must sit inside an axis reduction.
    Raises :class:`ParseError` (or :class:`UnsafeExpressionError`) naming the
    offending token. Nothing in ``text`` is ever evaluated.
    """
    axes = dict(axes or {})
    if not isinstance(text, str):
        raise ParseError(f"expression must be a string, got {type(text).__name__}", token=repr(text))
    if len(text) > MAX_CHARS:
        raise ParseError(
            f"expression is {len(text)} characters long; the limit is {MAX_CHARS}", token=text[:20] + "..."
        )
    if not text.strip():
        raise ParseError("expression is empty", token="")
    for ch in text:
        if not ch.isascii():
            raise ParseError(f"non-ASCII character {ch!r} in expression", token=ch)
    for bad, what, fix in _NOT_IN_TEXT:
        if bad in text:
            raise ParseError(f"{what} at column {text.index(bad) + 1} is not part of the spec language: {fix}",
                             token=bad)
    depth = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            if depth > MAX_DEPTH:
                raise ParseError(f"expression nests deeper than {MAX_DEPTH} brackets", token=ch)
        elif ch in ")]}":
            depth -= 1
    # A TOML multi-line expression may break lines anywhere: in the spec language a line
    # break is a space (one character for one, so columns in messages stay right).
    text = text.translate(_WHITESPACE)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        if "Exceeds the limit" in str(exc.msg):
            raise ParseError("an integer constant has more than 4300 digits, far beyond float64's range",
                             token=text[:20]) from None
        bad = ""
        if exc.text and exc.offset:
            bad = exc.text[exc.offset - 1 : exc.offset + 9].strip()
        raise ParseError(f"syntax error at column {exc.offset}: {exc.msg} near {bad!r}", token=bad) from None
    except ValueError as exc:  # Python refuses integer literals of more than 4300 digits
        raise ParseError(f"a constant in the expression is too long ({exc})", token=text[:20]) from None
    except (RecursionError, MemoryError) as exc:
        raise ParseError(
            f"expression is nested too deeply to parse ({type(exc).__name__})", token=text[:20]
        ) from None
    if _depth(tree) > MAX_DEPTH:
        raise ParseError(
            f"expression is nested deeper than {MAX_DEPTH} levels or has more than {MAX_NODES} nodes",
            token=text[:20],
        )
    nested = _where_depth(tree)
    if nested > MAX_WHERE_DEPTH:
        raise ParseError(
            f"where() is nested {nested} deep (in the branches or conditions of other where() calls); the limit is "
            f"{MAX_WHERE_DEPTH}: every level's gradient and NaN guards hold all the levels inside it. Write the "
            f"pieces as a sum of where(cond_k, piece_k, 0), or split the loss into terms with lf.combine",
            token="where",
        )
    converter = _Converter(text.strip(), symbols, axes)
    value, axis = converter.convert(tree)
    if _is_condition(value):
        raise ParseError("the loss is a comparison, not a number: use where(cond, a, b)", token=text.strip())
    if (what := not_real(value)) is not None:
        raise ParseError(f"the expression evaluates to {what} (e.g. a division by zero or log of a negative constant)",
                         token=text.strip())
    if axis is not None:
        vec = sorted(n for n, a in axes.items() if a == axis and symbols[n] in value.free_symbols)
        name = vec[0] if vec else axis
        raise ParseError(
            f"the loss is a vector over axis {axis!r} (through {name!r}): reduce it with sum(), mean(), "
            "logsumexp(), norm(), amax() or amin()",
            token=name,
        )
    return value
