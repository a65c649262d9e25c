"""Generated code laid out as ``ruff format`` lays it out (line length 88), and no line longer.

Three pure functions on generated text, the last step of rendering:

* :func:`expression` spaces one printed expression as ruff does (``a * b``,
  ``x**2`` but ``f(x) ** 2``, ``-(x**2)``, ``x[a + 1 :]``), from Python's own
  parse of it, with the fewest parentheses that keep its tree: the printers
  write SymPy's compact spelling, and ruff's spacing is a property of Python
  source, not of the mathematics.
* :func:`fit` keeps an assignment within its width by giving its largest
  subexpressions names of their own, each computed on the line before (never
  out of a ``lambda``, a conditional's branch or the right of ``and``/``or``,
  which may not run). A left-nested chain such as a long sum is cut into
  prefixes, so that the order of evaluation, and every rounding, is unchanged.
* :func:`module` splits each remaining line over 88 characters at its brackets,
  one item per line with a trailing comma (ruff keeps such a split: the "magic"
  trailing comma), or, where the brackets end the line and their items fit on
  one line, those items on one indented line (ruff's own choice there); splits
  a docstring's long doctest line as code, continued with ``...``, and wraps
  long comments at spaces. Docstring prose it leaves: lossforge's own is wrapped
  where it is written, and a spec's own text is kept as its author wrote it.
  What it cannot split (a long string or name) it leaves, and the tests that
  run ruff on the generated code say where.

Nothing here reads user text: the input is source the renderer made, whose user
strings already went through :func:`lossforge.text.inert`.
"""

from __future__ import annotations

import ast
import heapq
import io
import itertools
import keyword
import re
import textwrap
import tokenize
from collections.abc import Callable, Iterator

LINE = 88  #: ruff's default line length
INDENT = "    "

# Python's binding strengths, loosest first (the grammar's order; ``await`` and atoms above ``**``).
_LAMBDA, _IFEXP, _OR, _AND, _NOT, _COMPARE, _BOR, _BXOR, _BAND, _SHIFT, _ARITH, _TERM, _UNARY, _POWER, _ATOM = (
    range(15))
_BINARY = {
    ast.BitOr: ("|", _BOR), ast.BitXor: ("^", _BXOR), ast.BitAnd: ("&", _BAND),
    ast.LShift: ("<<", _SHIFT), ast.RShift: (">>", _SHIFT), ast.Add: ("+", _ARITH), ast.Sub: ("-", _ARITH),
    ast.Mult: ("*", _TERM), ast.Div: ("/", _TERM), ast.FloorDiv: ("//", _TERM), ast.Mod: ("%", _TERM),
    ast.MatMult: ("@", _TERM), ast.Pow: ("**", _POWER),
}
_UNARY_OPS = {ast.USub: "-", ast.UAdd: "+", ast.Invert: "~", ast.Not: "not "}
_COMPARE_OPS = {
    ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
    ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in",
}


def expression(text: str) -> str:
    """``text``, one Python expression, spelled as ruff formats it on one line."""
    return _Spelling(text).of(ast.parse(text.strip(), mode="eval").body)


class _Spelling:
    """The ruff spelling of the nodes of one parsed expression (its literals keep their source text)."""

    def __init__(self, source: str):
        self.source = source.strip()
        self.ascii = self.source.isascii()  # then a node's column offsets (in UTF-8 bytes) index the text
        self.known: dict[int, tuple[ast.expr, str, int]] = {}  # id(node) -> (node, text, strength)

    def of(self, node: ast.expr, least: int = _LAMBDA, operand: bool = False) -> str:
        """``node``'s text, parenthesized if it binds more loosely than ``least``, or if it is an ``operand`` (of an
        operator, not of a call) that its source parenthesized: ``(1/2)*x`` keeps its grouping, as ruff keeps it."""
        entry = self.known.get(id(node))
        if entry is None or entry[0] is not node:
            entry = self.known[id(node)] = (node, *self._spell(node))
        _, text, strength = entry
        return f"({text})" if strength < least or (operand and self._parenthesized(node)) else text

    def forget(self, nodes: list[ast.AST]) -> None:
        """Spell ``nodes`` afresh next time (a part of them was replaced)."""
        for node in nodes:
            self.known.pop(id(node), None)

    def _segment(self, node: ast.expr) -> str | None:
        if self.ascii and node.lineno == node.end_lineno == 1:
            return self.source[node.col_offset:node.end_col_offset]
        return ast.get_source_segment(self.source, node)

    def _parenthesized(self, node: ast.expr) -> bool:
        if getattr(node, "end_col_offset", None) is None or node.lineno != node.end_lineno:
            return False
        return (self.source[: node.col_offset].rstrip().endswith("(")
                and self.source[node.end_col_offset:].lstrip().startswith(")"))

    def _spell(self, node: ast.expr) -> tuple[str, int]:
        match node:
            case ast.Name(id=name):
                return name, _ATOM
            case ast.Constant(value=value):
                return self._constant(node, value), _ATOM
            case ast.Attribute(value=base, attr=attr):
                inner = self.of(base, _ATOM)
                if isinstance(base, ast.Constant) and isinstance(base.value, int):
                    inner = f"({inner})"  # 1 .real
                return f"{inner}.{attr}", _ATOM
            case ast.Call(func=func, args=args, keywords=keywords):
                items = [self.of(a) for a in args] + [self._keyword(k) for k in keywords]
                return f"{self.of(func, _ATOM)}({', '.join(items)})", _ATOM
            case ast.Subscript(value=base, slice=index):
                return f"{self.of(base, _ATOM)}[{self._index(index)}]", _ATOM
            case ast.Starred(value=value):
                return f"*{self.of(value, _BOR)}", _ATOM
            case ast.Tuple(elts=elts):
                inner = ", ".join(self.of(e) for e in elts)
                return f"({inner},)" if len(elts) == 1 else f"({inner})", _ATOM
            case ast.List(elts=elts):
                return f"[{', '.join(self.of(e) for e in elts)}]", _ATOM
            case ast.Dict(keys=keys, values=values):
                pairs = (f"{self.of(k)}: {self.of(v)}" if k is not None else f"**{self.of(v, _BOR)}"
                         for k, v in zip(keys, values, strict=True))
                return f"{{{', '.join(pairs)}}}", _ATOM
            case ast.BinOp(left=left, op=op, right=right):
                return self._binary(left, op, right)
            case ast.UnaryOp(op=op, operand=operand):
                if isinstance(op, ast.Not):
                    least = _NOT
                elif _is_power(operand) or isinstance(operand, ast.UnaryOp):
                    least = _ATOM  # -(x**2) as ruff writes it; -(-x) rather than --x
                else:
                    least = _UNARY
                if isinstance(op, ast.Not) and _is_power(operand):
                    least = _ATOM
                spelled = self.of(operand, least, operand=True)
                return f"{_UNARY_OPS[type(op)]}{spelled}", _NOT if isinstance(op, ast.Not) else _UNARY
            case ast.BoolOp(op=op, values=values):
                strength = _AND if isinstance(op, ast.And) else _OR
                word = " and " if strength == _AND else " or "
                return word.join(self.of(v, strength + 1, operand=True) for v in values), strength
            case ast.Compare(left=left, ops=ops, comparators=comparators):
                parts = [self.of(left, _COMPARE + 1, operand=True)]
                for op, right in zip(ops, comparators, strict=True):
                    parts += [_COMPARE_OPS[type(op)], self.of(right, _COMPARE + 1, operand=True)]
                return " ".join(parts), _COMPARE
            case ast.IfExp(test=test, body=body, orelse=orelse):
                return (f"{self.of(body, _IFEXP + 1)} if {self.of(test, _IFEXP + 1)} else {self.of(orelse, _IFEXP)}",
                        _IFEXP)
            case ast.Lambda(args=arguments, body=body):
                head = "lambda" + (f" {ast.unparse(arguments)}" if ast.unparse(arguments) else "")
                return f"{head}: {self.of(body)}", _LAMBDA
        return self._segment(node) or ast.unparse(node), _LAMBDA  # kept as written

    def _constant(self, node: ast.Constant, value: object) -> str:
        if value is Ellipsis:
            return "..."
        written = self._segment(node) or repr(value)
        if isinstance(value, str) and written[:1] == "'" and '"' not in value:
            return '"' + written[1:-1] + '"'  # ruff's double quotes
        return written

    def _keyword(self, k: ast.keyword) -> str:
        return f"**{self.of(k.value, _BOR)}" if k.arg is None else f"{k.arg}={self.of(k.value)}"

    def _index(self, index: ast.expr) -> str:
        if isinstance(index, ast.Tuple) and index.elts:
            inner = ", ".join(self._slice(e) for e in index.elts)
            return inner + "," if len(index.elts) == 1 else inner
        return self._slice(index)

    def _slice(self, node: ast.expr) -> str:
        if not isinstance(node, ast.Slice):
            return self.of(node)
        bounds = [node.lower, node.upper] + ([node.step] if node.step else [])
        parts = ["" if b is None else self.of(b) for b in bounds]
        if all(b is None or _is_simple(b, attributes=False) for b in bounds):
            return ":".join(parts)
        # ruff's spaced colon for a complex bound, with no space beside an omitted one
        text = parts[0]
        for part in parts[1:]:
            text = (text + " :" if text else ":") + (f" {part}" if part else "")
        return text

    def _binary(self, left: ast.expr, op: ast.operator, right: ast.expr) -> tuple[str, int]:
        symbol, strength = _BINARY[type(op)]
        if strength == _POWER:  # right-associative; a unary operand binds on its right
            a, b = self.of(left, _POWER + 1, operand=True), self.of(right, _UNARY, operand=True)
            hug = _is_simple(left) and _is_simple(right) and a[0] != "(" and b[0] != "("
            if isinstance(right, ast.UnaryOp) and _is_power(right.operand):
                hug = False  # x ** -(y**z)
            return (f"{a}**{b}" if hug else f"{a} ** {b}"), _POWER
        return f"{self.of(left, strength, operand=True)} {symbol} {self.of(right, strength + 1, operand=True)}", strength


def _is_power(node: ast.expr) -> bool:
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow)


def _is_simple(node: ast.expr, attributes: bool = True) -> bool:
    """A name, number or constant (an attribute chain of names too, for ``**``), with any unary sign: what ruff
    writes ``**`` beside with no spaces, and a slice's colon beside with none."""
    match node:
        case ast.Name() | ast.Constant(value=int() | float() | complex() | bool() | None):
            return not isinstance(getattr(node, "value", 0), str)
        case ast.Attribute(value=base):
            return attributes and _is_simple(base)
        case ast.UnaryOp(op=ast.USub() | ast.UAdd() | ast.Invert(), operand=operand):
            return _is_simple(operand, attributes) and not _is_power(operand)
        case ast.BinOp(op=ast.Pow(), left=left, right=right):
            return attributes and _is_simple(left) and _is_simple(right)  # x**2**y: one hugged chain
    return False


# -- fit: an assignment within its width -------------------------------------------------------------------------


def fit(text: str, width: int, room: int, fresh: Callable[[], str]) -> tuple[list[tuple[str, str]], str]:
    """``text`` (a spelled expression) within ``width`` characters: the assignments it needs first, in the order
    they run, each ``name = value`` within ``room`` characters (names from ``fresh``), and what is left of it.

    Only what always runs is given a name: nothing from a ``lambda`` (the branches of the generated select on
    params, ``_choose(cond, lambda: a, lambda: b)``, run only when picked), a conditional's branches or the right
    of ``and``/``or``. What is left over the width there, :func:`module` splits over lines."""
    if len(text) <= width:
        return [], text
    tree = ast.parse(text, mode="eval").body
    spelling = _Spelling(text)  # the nodes keep their places in it: literals keep their text
    parts = _Parts(tree, spelling, room - 10)
    lines: list[tuple[str, str]] = []
    while len(text) > width:
        node = parts.best()  # the largest part that fits a line of its own (a long sum: its longest prefix)
        if node is None:
            break
        name = fresh()
        inner, part = fit(spelling.of(node), room - len(name) - 3, room, fresh)
        lines += [*inner, (name, part)]
        tree = parts.replace(node, name)
        text = spelling.of(tree)
    return lines, text


#: The shortest part worth a line of its own (``p == 2`` is not: what is too long around it is split over lines).
_WORTH = 16


class _Parts:
    """The parts of an expression that :func:`fit` may give names, kept as the parts are replaced one by one: a
    replacement changes only the sizes of the parts above it and removes those within it, so each step costs the
    depth of the tree, not its size."""

    def __init__(self, tree: ast.expr, spelling: _Spelling, fits: int):
        self.tree, self.spelling, self.fits = tree, spelling, fits
        self.parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        self.found = list(_candidates(tree))  # in the order of the walk (of equals, the first is taken)
        self.place = {id(node): i for i, node in enumerate(self.found)}
        self.size = [len(spelling.of(node)) for node in self.found]
        self.alive = [size >= _WORTH for size in self.size]
        self.heap = [(-size, i) for i, size in enumerate(self.size) if _WORTH <= size <= fits]
        heapq.heapify(self.heap)

    def best(self) -> ast.expr | None:
        """The largest part that fits (the first of equals), else the largest of all; None when none is left."""
        while self.heap:
            size, i = self.heap[0]
            if self.alive[i] and -size == self.size[i]:
                return self.found[i]
            heapq.heappop(self.heap)  # removed, or smaller now (pushed again at its new size)
        left = [(self.size[i], -i) for i in range(len(self.found)) if self.alive[i]]
        return self.found[-max(left)[1]] if left else None

    def replace(self, node: ast.expr, name: str) -> ast.expr:
        """The tree with ``node`` replaced by the name ``name``."""
        for inner in ast.walk(node):
            if id(inner) in self.place:
                self.alive[self.place[id(inner)]] = False
        named = ast.Name(id=name, ctx=ast.Load())
        parent = self.parents.get(id(node))
        if parent is None:
            self.tree = named
            return named
        _swap(parent, node, named)
        self.parents[id(named)] = parent
        above = []
        while parent is not None:
            above.append(parent)
            parent = self.parents.get(id(parent))
        self.spelling.forget(above)
        for outer in above:
            i = self.place.get(id(outer))
            if i is None or not self.alive[i]:
                continue
            if _is_simple(outer):  # x ** _t0: no longer a part of its own
                self.alive[i] = False
                continue
            self.size[i] = len(self.spelling.of(outer))
            self.alive[i] = self.size[i] >= _WORTH
            if self.alive[i] and self.size[i] <= self.fits:
                heapq.heappush(self.heap, (-self.size[i], i))
        return self.tree


def _swap(parent: ast.AST, old: ast.AST, new: ast.AST) -> None:
    """``old``, a child of ``parent``, replaced by ``new`` in place."""
    for field, value in ast.iter_fields(parent):
        if value is old:
            setattr(parent, field, new)
            return
        if isinstance(value, list):
            for i, item in enumerate(value):
                if item is old:
                    value[i] = new
                    return
    raise AssertionError("not a child")


def _candidates(node: ast.AST, root: bool = True) -> Iterator[ast.expr]:
    """The subexpressions of ``node`` that always run, and so may be computed first: not bare names or numbers,
    nor anything within a ``lambda``, a comprehension, a conditional's branches or the right of ``and``/``or``."""
    if not root and isinstance(node, ast.expr) and not isinstance(
            node, (ast.Name, ast.Constant, ast.Starred, ast.Slice, ast.Lambda)) and not _is_simple(node):
        yield node
    match node:
        case ast.Lambda() | ast.ListComp() | ast.GeneratorExp() | ast.SetComp() | ast.DictComp():
            return  # may not run (or runs with names of its own)
        case ast.IfExp(test=test):
            yield from _candidates(test, False)
            return
        case ast.BoolOp(values=[first, *_]):
            yield from _candidates(first, False)
            return
        case ast.Subscript(value=base, slice=index):
            yield from _candidates(base, False)
            for part in index.elts if isinstance(index, ast.Tuple) else [index]:
                yield from _candidates(part, isinstance(part, ast.Slice))
            return
        case ast.Call(func=func):
            children = [*node.args, *(k.value for k in node.keywords)]
            if not isinstance(func, (ast.Name, ast.Attribute)):
                children.insert(0, func)
            for child in children:
                yield from _candidates(child, False)
            return
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.expr):
            yield from _candidates(child, False)


def counter(names: Iterator[str] | list[str], prefix: str = "_t") -> Callable[[], str]:
    """Fresh names ``_t<n>`` after the largest ``n`` among ``names``."""
    taken = [int(m.group(1)) for n in names if (m := re.fullmatch(re.escape(prefix) + r"(\d+)", n))]
    numbers = itertools.count(max(taken, default=-1) + 1)
    return lambda: f"{prefix}{next(numbers)}"


# -- module: split what is still too long ------------------------------------------------------------------------


def module(source: str) -> str:
    """``source`` (a whole generated module) with each line over :data:`LINE` split or wrapped (see the module
    docstring); every other line as it was."""
    prose = _docstring_lines(source)
    out: list[str] = []
    for number, line in enumerate(source.split("\n"), 1):
        if len(line) <= LINE:
            out.append(line)
        elif number in prose:
            out.extend(_doctest(line))
        elif line.lstrip().startswith("#"):
            out.extend(_wrap_comment(line))
        else:
            out.extend(_split(line))
    return "\n".join(out)


def _docstring_lines(source: str) -> set[int]:
    """The lines (1-based) that lie within a triple-quoted string, its first line included."""
    inside: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.STRING and token.string.startswith('"""'):
            inside.update(range(token.start[0], token.end[0] + 1))
    return inside


def _doctest(line: str) -> list[str]:
    """A docstring's doctest line (``>>>``) split as code, continued with ``...``; any other docstring line as it
    is: the prose lossforge writes is wrapped where it is written (:func:`lossforge.codegen.docs.as_text`), and a
    spec's own text is never rewrapped."""
    stripped = line.lstrip()
    indent = line[: len(line) - len(stripped)]
    if not stripped.startswith(">>> ") or stripped.endswith('"""'):
        return [line]
    code = _split(indent + INDENT + stripped[4:])
    return [indent + (">>> " if i == 0 else "... ") + piece[len(indent) + 4 :] for i, piece in enumerate(code)]


def _wrap_comment(line: str) -> list[str]:
    """A comment line within the line length, each piece with the same marker (``#`` or ``#:``)."""
    stripped = line.lstrip()
    indent = line[: len(line) - len(stripped)]
    marker = "#: " if stripped.startswith("#:") else "# "
    body = stripped[len(marker.rstrip()):].strip()
    pieces = textwrap.wrap(body, LINE - len(indent) - len(marker), break_long_words=False, break_on_hyphens=False)
    return [indent + marker + p for p in pieces] or [line]


_FSTRING_START = getattr(tokenize, "FSTRING_START", None)  # Python 3.12 splits f-strings into tokens
_FSTRING_END = getattr(tokenize, "FSTRING_END", None)


def _tokens(code: str) -> list[tokenize.TokenInfo]:
    """The tokens of one line of code, an f-string's inner tokens left out (its braces are not brackets)."""
    kept, depth = [], 0
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        if token.type == _FSTRING_START:
            depth += 1
        elif token.type == _FSTRING_END:
            depth -= 1
        elif not depth and token.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER):
            kept.append(token)
    return kept


def _split(line: str) -> list[str]:
    """One physical line of code, its brackets balanced on it, within the line length as far as ruff would split
    it: its trailing comment moved above it; then, as ruff chooses, at the loosest operator of its expression in
    parentheses (``and``, ``if``/``else``, a bare tuple's commas), or at a bracket pair."""
    if len(line) <= LINE:
        return [line]
    stripped = line.lstrip()
    indent = line[: len(line) - len(stripped)]
    closers = len(stripped) - len(stripped.lstrip(")]}"))
    if closers:  # the end of a statement its template split (``) and f(x):``): at a bracket after the closers
        return _after_closers(indent, stripped, closers) or [line]
    try:
        tokens = _tokens(stripped)
    except (tokenize.TokenError, SyntaxError):
        return [line]  # not balanced on its own line: laid out by its template
    before: list[str] = []
    if tokens and tokens[-1].type == tokenize.COMMENT:
        before = _wrap_comment(indent + tokens[-1].string)
        tokens = tokens[:-1]
        stripped = stripped[: tokens[-1].end[1]] if tokens else ""
        if len(indent) + len(stripped) <= LINE:
            return [*before, indent + stripped]
    if not tokens:
        return [*before, indent + stripped]
    if stripped.startswith(("def ", "class ")):
        groups = _groups(stripped, tokens)
        return [*before, *(_at_bracket(indent, stripped, groups, True) if groups else [indent + stripped])]
    head, expr, tail = _statement(stripped, tokens)
    return [*before, *_expression_lines(indent, head, expr, tail)]


_KEYWORD_HEADS = ("if ", "elif ", "while ", "return ", "raise ", "assert ", "del ", "yield ")
_ASSIGN = frozenset({"=", "+=", "-=", "*=", "/=", "//=", "%=", "|=", "&=", "^=", "**=", "@=", ">>=", "<<="})


def _statement(code: str, tokens: list[tokenize.TokenInfo]) -> tuple[str, str, str]:
    """``code`` cut into what leads its expression (a keyword, assignment targets, a ``lambda:``, a dict key),
    the expression, and what ends it (a compound statement's colon, an item's comma)."""
    head, tail = "", ""
    if code.startswith(_KEYWORD_HEADS):
        head = code[: code.index(" ") + 1]
    else:
        for token in _outermost(tokens):
            if token.type == tokenize.OP and token.string in _ASSIGN:
                head = code[: token.end[1]] + " "
                break
    last = tokens[-1]
    if last.type == tokenize.OP and last.string in (":", ",") and len(tokens) > 1:
        tail = last.string
    expr = code[len(head) : len(code) - len(tail)].strip()
    while True:  # a lambda's or a dict entry's head: what follows is laid out
        if expr.startswith("lambda:"):
            lead = "lambda: "
        elif tail == "," and (key := next((t for t in _outermost(_tokens(expr)) if t.string == ":"), None)):
            lead = expr[: key.end[1]] + " "
        else:
            break
        head, expr = head + lead, expr[len(lead) :].strip()
    return head, expr, tail


def _after_closers(indent: str, code: str, closers: int) -> list[str] | None:
    """``code``, which starts with ``closers`` closing brackets, split at one of the bracket pairs after them (as
    :func:`_at_bracket` chooses), or None where it has none."""
    rest = code[closers:]
    try:
        groups = _groups(rest, _tokens(rest))
    except (tokenize.TokenError, SyntaxError):
        return None
    return _at_bracket(indent, code, _shifted(groups, closers), False) if groups else None


def _targets(head: str) -> list[str]:
    """The targets of an assignment's head (``a, b = `` or ``(a, b) = ``), each as written; one if not a tuple."""
    code = head.rstrip()
    code = code[: code.rindex(" ")].strip() if " " in code else code  # without its operator
    tokens = _tokens(code)
    groups = _groups(code, tokens)
    if len(groups) == 1 and groups[0][0] == 0 and groups[0][1] == len(code) - 1 and code[0] == "(":
        return groups[0][2]  # parenthesized: its items
    cuts = [t.start[1] for t in _outermost(tokens) if t.type == tokenize.OP and t.string == ","]
    return [i for a, b in itertools.pairwise([-1, *cuts, len(code)]) if (i := code[a + 1 : b].strip())]


def _assigned(indent: str, head: str, expr: str, tail: str) -> list[str] | None:
    """An assignment whose right-hand side cannot be split after its head, as ruff lays it out: the right-hand
    side in parentheses where ``head (`` fits, else (several targets) the targets one per line in parentheses
    and the right-hand side after them; None where neither applies."""
    inner = indent + INDENT
    if len(indent) + len(head) + 1 <= LINE:
        return [indent + head + "(", *_split(inner + expr), indent + ")" + tail]
    targets = _targets(head)
    if len(targets) < 2:
        return None
    operator = head.rstrip().rsplit(" ", 1)[1]
    return [indent + "(", *(inner + t + "," for t in targets), *_split(f"{indent}) {operator} {expr}{tail}")]


def _outermost(tokens: list[tokenize.TokenInfo]) -> Iterator[tokenize.TokenInfo]:
    """The tokens outside every bracket pair (the brackets of the outermost pairs included)."""
    depth = 0
    for token in tokens:
        depth -= token.type == tokenize.OP and token.string in ")]}"
        if depth == 0:
            yield token
        depth += token.type == tokenize.OP and token.string in "([{"


#: The delimiters an expression splits at, loosest first (ruff splits at the loosest it has).
_COMMA, _TERNARY, _OR_CUT, _AND_CUT, _COMPARE_CUT = range(5)
_COMPARISONS = frozenset({"<", ">", "==", ">=", "<=", "!=", "in", "is"})
_ARITHMETIC = {"|": 5, "^": 6, "&": 7, "<<": 8, ">>": 8, "+": 9, "-": 9, "*": 10, "/": 10, "//": 10, "%": 10, "@": 10,
               "**": 11}


def _delimiters(tokens: list[tokenize.TokenInfo]) -> tuple[int | None, list[int], bool]:
    """The loosest delimiter outside the brackets of an expression's tokens and the offsets to cut it at (None
    and none if it has none), and whether anything else stands outside its brackets (another operator)."""
    cuts: dict[int, list[int]] = {}
    other = False
    previous = None
    for token in _outermost(tokens):
        text, kind = token.string, None
        if token.type == tokenize.OP and text == ",":
            kind = _COMMA
        elif token.type == tokenize.NAME and text in ("if", "else"):
            kind = _TERNARY
        elif token.type == tokenize.NAME and text in ("or", "and"):
            kind = _OR_CUT if text == "or" else _AND_CUT
        elif text in _COMPARISONS and not (text == "in" and previous is not None and previous.string == "not"):
            kind = _COMPARE_CUT
        elif text == "not" and previous is not None and previous.type in (tokenize.NAME, tokenize.NUMBER) and (
                previous.string not in ("and", "or", "not", "if", "else", "is", "lambda")):
            kind = _COMPARE_CUT  # "not in"
        elif text in _ARITHMETIC and token.type == tokenize.OP and previous is not None and (
                previous.type in (tokenize.NAME, tokenize.NUMBER, tokenize.STRING) or previous.string in ")]}") and (
                not keyword.iskeyword(previous.string) or previous.string in ("None", "True", "False")):
            kind = _ARITHMETIC[text]  # a binary operator (a unary one follows an operator, or starts)
        elif (token.type == tokenize.OP and text not in "([{)]}.") or (
                token.type == tokenize.NAME and keyword.iskeyword(text) and text not in ("None", "True", "False")):
            other = True
        if kind is not None:
            cuts.setdefault(kind, []).append(token.start[1])
        previous = token
    if not cuts:
        return None, [], other
    loosest = min(cuts)
    return loosest, cuts[loosest], other


def _expression_lines(indent: str, head: str, expr: str, tail: str) -> list[str]:
    """``head + expr + tail`` split as ruff splits it, or left whole where it would not split it so."""
    whole = [indent + head + expr + tail]
    tokens = _tokens(expr)
    groups = _groups(expr, tokens)
    kind, cuts, other = _delimiters(tokens)
    assignment = head.rstrip().rsplit(" ", 1)[-1] in _ASSIGN
    if kind is None:  # names, brackets and unary operators only: split at a bracket pair
        opens = any(len(indent) + len(head) + g[0] + 1 <= LINE for g in groups)
        indexed = len(groups) == 1 and groups[0][1] == len(expr) - 1 and expr[groups[0][0]] == "["
        if assignment and (not opens or (indexed and len(indent) + len(INDENT) + len(expr) <= LINE)):
            # ruff's choice: the right-hand side in parentheses when none of its brackets opens within the line,
            # or when it is a name's subscript that fits there (``saved[:2]``, not ``f(x)[0]``)
            found = _assigned(indent, head, expr, tail)
            if found is not None:
                return found
        if not groups:
            return whole
        return _at_bracket(indent, head + expr + tail, _shifted(groups, len(head)), False)
    inner = indent + INDENT
    if not head.strip() and tail == ",":  # an item of a split bracket: broken at its operators, no parentheses
        return [*_chain(indent, kind, cuts, expr)[:-1], _chain(indent, kind, cuts, expr)[-1] + tail]
    body_of_lambda = head.endswith("lambda: ")  # ruff parenthesizes a lambda's body as it breaks it
    if not head.strip() or (head.rstrip().endswith(":") and not body_of_lambda):
        # ruff adds no parentheses here (a dict's value): at a bracket pair
        return _at_bracket(indent, head + expr + tail, _shifted(groups, len(head)), False) if groups else whole
    last = groups[-1] if groups else None
    ends = last is not None and last[1] == len(expr) - 1
    if (kind != _COMMA and len(cuts) == 1 and ends and not body_of_lambda
            and len(indent) + len(head) + last[0] + 1 <= LINE):
        return _at_bracket(indent, head + expr + tail, _shifted([last], len(head)), False)  # ruff's choice
    if assignment and len(indent) + len(head) + 1 > LINE and (found := _assigned(indent, head, expr, tail)):
        return found  # the targets split first
    if kind != _COMMA and len(inner) + len(expr) <= LINE:
        body = [inner + expr]  # in parentheses, on a line of its own
    else:
        body = _chain(inner, kind, cuts, expr)
    return [indent + head + "(", *body, indent + ")" + tail]


def _chain(indent: str, kind: int, cuts: list[int], expr: str) -> list[str]:
    """``expr`` one operand a line, each after its operator (a tuple's items each with its comma)."""
    pieces = [expr[a:b].strip() for a, b in itertools.pairwise([0, *cuts, len(expr)])]
    if kind == _COMMA:
        items = [p.removeprefix(",").strip() for p in pieces]
        return [piece for item in items if item for piece in _split(indent + item + ",")]
    return [line for piece in pieces for line in _operand(indent, piece)]


def _operand(indent: str, piece: str) -> list[str]:
    """One operand of a split operator chain (after the first, with its operator): as it is if it fits; else at
    its own operators, on the chain's indent (ruff flattens the chain so), else at a bracket pair."""
    if len(indent) + len(piece) <= LINE:
        return [indent + piece]
    operator = next((o for o in sorted(_ARITHMETIC, key=len, reverse=True) if piece.startswith(o + " ")), "")
    rest = piece[len(operator):].strip()
    kind, cuts, _ = _delimiters(_tokens(rest))
    if kind is None or kind < min(_ARITHMETIC.values()):
        return _split(indent + piece)
    pieces = [rest[a:b].strip() for a, b in itertools.pairwise([0, *cuts, len(rest)])]
    pieces[0] = f"{operator} {pieces[0]}".strip()
    return [line for part in pieces for line in _operand(indent, part)]


def _shifted(groups: list, by: int) -> list:
    return [(start + by, end + by, items, commas) for start, end, items, commas in groups]


def _at_bracket(indent: str, code: str, groups: list, first: bool) -> list[str]:
    """``code`` split at one of its bracket pairs (``groups``): the first (a ``def``'s), else the last whose
    opening line fits, as ruff looks for it from the end. Its items on one line if it is the last pair and they
    fit there, else one per line with a trailing comma (which keeps the split under ruff)."""
    fitting = [g for g in groups if len(indent) + g[0] + 1 <= LINE]
    chosen = groups[0] if first or not fitting else fitting[-1]
    start, end, items, commas = chosen
    call = start > 0 and code[start] == "(" and (code[start - 1].isalnum() or code[start - 1] in "_)]")
    head, tail = code[: start + 1], code[end:]
    inner = indent + INDENT
    if not commas and len(inner) + len(items[0]) <= LINE:
        body = [inner + items[0]]  # one item: on a line of its own
    elif call and chosen is groups[-1] and len(inner) + len(", ".join(items)) <= LINE:
        body = [inner + ", ".join(items)]  # ruff's own choice: the items on one line
    elif not commas and not call and (found := _delimiters(_tokens(items[0])))[0] is not None:
        body = _chain(inner, found[0], found[1], items[0])  # a parenthesized expression: at its operators
    elif not commas:
        body = _split(inner + items[0])  # one argument: no comma may follow a generator
    else:
        body = [piece for item in items for piece in _split(inner + item + ",")]  # kept so by the commas
    if len(indent) + len(tail) > LINE:  # what follows the pair (``][0](a, b)``) split at a pair of its own
        return [indent + head, *body, *(_after_closers(indent, tail, 1) or [indent + tail])]
    return [indent + head, *body, indent + tail]


def _groups(code: str, tokens: list[tokenize.TokenInfo]) -> list[tuple[int, int, list[str], bool]]:
    """The outermost bracket pairs of ``code``: the offsets of the opening and of the closing bracket, the items
    between them (split at their own commas, stripped) and whether there was a comma; empty pairs left out. The
    commas of a comprehension (``for a, b in``) or of a lambda's parameters separate no items."""
    groups, depth, start, commas, whole, params = [], 0, 0, [], False, False
    for token in tokens:
        if depth == 1 and token.type == tokenize.NAME and token.string in ("for", "lambda"):
            whole |= token.string == "for"
            params = token.string == "lambda"
        if token.type != tokenize.OP:
            continue
        if token.string in "([{":
            if depth == 0:
                start, commas, whole, params = token.start[1], [], False, False
            depth += 1
        elif token.string in ")]}":
            depth -= 1
            if depth == 0:
                cuts = [] if whole else commas
                bounds = zip([start, *cuts], [*cuts, token.start[1]], strict=True)
                items = [i for a, b in bounds if (i := code[a + 1 : b].strip())]
                if items:
                    groups.append((start, token.start[1], items, bool(cuts)))
        elif depth == 1 and token.string == ":" and params:
            params = False
        elif depth == 1 and token.string == "," and not params:
            commas.append(token.start[1])
    return groups


__all__ = ["LINE", "counter", "expression", "fit", "module"]
