"""From a spec to source code: prepare every string, then lay it out with Jinja.

The renderer works in *terms*: a plain spec is one term of weight 1, a
combined spec (``lf.combine``) one term per entry of its ``terms`` table. For
each term it derives the per-sample loss and its gradients, applies the
double-where rewrite, shares common subexpressions (``sympy.cse``) and prints
them with the target's printer. The templates in ``templates/`` only arrange
these strings; they compute nothing.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import keyword
import linecache
import math
import sys
import threading
import types
from collections import Counter, OrderedDict
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path

import jinja2
import sympy
from sympy.core.relational import Relational
from sympy.logic.boolalg import BooleanAtom, BooleanFunction

from .. import __name__ as _package
from .. import budget, walk
from ..derive import derive
from ..errors import LossforgeError, RenderError
from ..language import axis_ones, axis_size, where
from ..language.parser import _number
from ..spec import LossSpec, Var, dumps, loads
from ..text import inert, one_line
from . import docs, layout
from .forms import cheaper
from .indices import indexed
from .printers import JaxLossPrinter, NumpyLossPrinter, TorchLossPrinter, group_sums, guard_where, softmaxes

VERSION = "0.1.0"

#: Public attributes of ``torch.nn.Module`` (torch 2.13), which a param stored as ``self.<name>``
#: would shadow or break; a test checks this set against the installed torch.
MODULE_ATTRIBUTES = frozenset(
    {
        "T_destination", "add_module", "apply", "bfloat16", "buffers", "call_super_init", "children", "compile",
        "cpu", "cuda", "double", "dump_patches", "eval", "extra_repr", "float", "forward", "get_buffer",
        "get_extra_state", "get_parameter", "get_submodule", "half", "ipu", "load_state_dict", "modules", "mtia",
        "named_buffers", "named_children", "named_modules", "named_parameters", "parameters",
        "register_backward_hook", "register_buffer", "register_forward_hook", "register_forward_pre_hook",
        "register_full_backward_hook", "register_full_backward_pre_hook", "register_load_state_dict_post_hook",
        "register_load_state_dict_pre_hook", "register_module", "register_parameter",
        "register_state_dict_post_hook", "register_state_dict_pre_hook", "requires_grad_", "set_extra_state",
        "set_submodule", "share_memory", "state_dict", "to", "to_empty", "train", "training", "type", "xpu",
        "zero_grad", "backward", "terms", "fused",
    }
)

#: Names a symbol's local may not take: the module's globals, every name bound in a function
#: that also binds symbols (the templates' locals: ``part`` in backward, ``out`` in loss_terms),
#: Python's builtins and the module attributes. A test collects the bound names of generated
#: code and checks them against this set. ``_``-prefixed and ``grad_``-prefixed names are
#: handled by prefixing (see :func:`_mangle`); the class names are added per spec.
RESERVED = frozenset(
    {
        "np", "torch", "F", "math", "self", "ctx", "loss", "loss_and_grad", "loss_terms", "terms", "grad",
        "grads", "reduction", "value", "values", "dtype", "device", "batch", "scale", "params", "upstream",
        "grad_output", "total", "name", "length", "args", "Loss", "PARAMS", "part", "out", "v",
        "reduce", "l", "I", "O", "kernels", "saved", "recompute", "which", "fn", "term", "exc", "pair",
        "warnings", "indexed", "validate", "size_average", "function", "outputs", "transformed", "tangent", "tangents", "change", "module",
        "keep", "counts", "targeted", "carried", "handed",
        # the JAX module's: its imports and the custom_vjp's arguments
        "jax", "jnp", "functools", "static", "arrays", "tensors", "residuals", "cotangents", "shapes",
    }
    | MODULE_ATTRIBUTES
    | set(dir(builtins))
)


@dataclass(frozen=True)
class Target:
    """A code generation target: its printer and template, and what its code offers, declared here so that the
    renderer asks the target (never its name) what to build and how to document it."""

    name: str
    printer: type
    template: str
    #: What its documentation calls an array (``array``, ``Tensor``), and how the docstring example imports the
    #: framework and builds one.
    array: str = "array"
    example_import: str = "import numpy as np"
    array_call: str = "np.array"
    #: The type its arrays have, as a type hint of the generated functions spells it.
    array_type: str = "np.ndarray"
    #: Whether the module's entry point is a class (``Loss``, an ``nn.Module``: the params are its constructor's,
    #: ``compile`` returns it, it pickles by its spec); else the module's ``loss``/``loss_and_grad`` functions.
    module_class: bool = False
    #: Whether its code also differentiates the learnable params and the targets of a continuous domain.
    learns: bool = False
    #: Whether it offers ``fused=True`` (value and gradient in one compiled kernel).
    fused: bool = False


TARGETS = {
    "numpy": Target("numpy", NumpyLossPrinter, "numpy.py.j2"),
    "torch": Target("torch", TorchLossPrinter, "torch.py.j2", array="Tensor", example_import="import torch",
                    array_call="torch.tensor", array_type="torch.Tensor", module_class=True, learns=True, fused=True),
    "jax": Target("jax", JaxLossPrinter, "jax.py.j2", example_import="import jax.numpy as jnp", array_call="jnp.array",
                  array_type="jax.Array"),
}


@dataclass(frozen=True)
class Arg:
    """One symbol as the generated code sees it."""

    name: str  # as declared
    local: str  # its Python name in generated code
    var: Var
    #: A param that holds a class index (``ignore_index``): its default is written as an integer.
    index: bool = False

    @property
    def axis(self) -> str | None:
        return self.var.axis

    @property
    def onehot(self) -> bool:
        return self.var.domain.name == "onehot"

    @property
    def varies(self) -> bool:
        return self.var.per_element

    @property
    def default(self) -> str:
        """Its default as generated code writes it: a tensor param's is None (absent: its value folded in)."""
        return "None" if self.var.tensor else repr(int(self.var.default) if self.index else self.var.default)

    def hint(self, array: str) -> str:
        """Its type hint as a param (``array`` the target's array type): a tensor param's is that or None."""
        return f"{array} | None" if self.var.tensor else "int" if self.index else "float"

    @property
    def value(self) -> str:
        """The value it stands for when absent (None): its declared default."""
        return repr(self.var.default)

    @property
    def domain(self) -> str:
        """The declared domain as the generated ``_check_domain`` reads it, a Python literal:
        ``(description, lo, hi, lo_open, hi_open, members or None, sums to one along the axis)``."""
        d = self.var.domain
        members = "None" if d.values is None else _tuple([repr(v) for v in d.values])
        return (f"({inert(d.description or d.name, 'string')}, {_bound(d.lo)}, {_bound(d.hi)}, {d.lo_open}, "
                f"{d.hi_open}, {members}, {d.vector})")


def _tuple(items: list[str]) -> str:
    """Python's spelling of a tuple of source ``items``, as ruff writes it: ``(a,)`` for one, no trailing comma
    for more (which would keep the tuple split over lines)."""
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def _bound(x: float) -> str:
    """A domain bound as Python source: its repr, or ``float("inf")`` for an unbounded end."""
    return repr(x) if math.isfinite(x) else ('float("inf")' if x > 0 else '-float("inf")')


@dataclass(frozen=True)
class Term:
    """One weighted term: its arguments and its printed code."""

    name: str
    func: str
    weight: str
    args: tuple[Arg, ...]
    params: tuple[Arg, ...]
    inputs: tuple[Arg, ...]
    #: The learnable params (Torch: their gradients follow the inputs' in ``both_grads``).
    learned: tuple[Arg, ...]
    has_axes: bool
    batch: str
    #: The array whose dtype, device and batch shape the term's functions take (never class indices).
    first: str
    #: The arrays and tensor params of no axis that get a unit axis (the term has vectors); the tensor params.
    expand: tuple[str, ...]
    tensors: tuple[Arg, ...]
    #: The shape each tensor param must broadcast to: the batch shape, and the axis's length for one on an axis.
    reach: tuple[str, ...]
    #: For a tensor param on an axis, the axis's length (its entries: one per class); None for the others.
    lengths: tuple[str | None, ...]
    #: Whether the term holds the target that decides which samples count (``ignore_index``, ``mean_weight``).
    sampled: bool
    value_lines: tuple[str, ...]
    value: str
    both_lines: tuple[str, ...]
    both_value: str
    both_grads: tuple[str, ...]
    helpers: frozenset[str]
    #: The modules its printed code calls beyond the target's own (``scipy.special``): the printer's :meth:`imports`.
    imports: frozenset[str]
    #: The same term with its one-hot symbol given as class indices (no one-hot matrix), if it has that form.
    indexed: Term | None = None
    #: The same term with every tensor param absent (None): their defaults folded into the code, so that an
    #: unused ``weight`` costs no multiplication. Same signature; the absent params are not read.
    folded: Term | None = None
    #: The targets that could have a gradient (a continuous domain), in their order; Torch only.
    smooth: tuple[Arg, ...] = ()
    #: The same term whose functions also return those targets' gradients (after the inputs' and the
    #: learnable params'), run when a target requires grad; Torch only.
    targeted: Term | None = None
    #: The targets whose gradients this term's functions return: ``smooth`` in a ``targeted`` term, else none.
    target_grads: tuple[Arg, ...] = ()
    #: The name of the array given as class indices (no axis: one index per sample) in an indexed term.
    index: str | None = None
    #: The term's own reduction where the combined spec keeps one per term (``LossSpec.term_reductions``).
    own: str | None = None

    def reduction(self, given: str) -> str:
        """The reduction this term's code applies, as source, where ``given`` names the call's: the term's own
        where the spec keeps one per term and the call gives None, else the call's."""
        return given if self.own is None else f'{given} or "{self.own}"'

    @property
    def all_helpers(self) -> frozenset[str]:
        """The helpers this term's functions and every variant of them call."""
        return self._with_variants("helpers")

    @property
    def all_imports(self) -> frozenset[str]:
        """The modules this term's functions and every variant of them import."""
        return self._with_variants("imports")

    def _with_variants(self, name: str) -> frozenset[str]:
        variants = (self.indexed, self.folded, self.targeted)
        return getattr(self, name).union(*(v._with_variants(name) for v in variants if v is not None))

    @property
    def layout(self) -> str:
        """The layout of its functions' arguments as the Torch ``_EAGER`` table holds it: for each array whether
        it has an axis (class indices have none), the positions of the tensor params that broadcast to the batch,
        and the position of the array that gives the batch shape."""
        axes = [str(bool(a.axis) and a.name != self.index) for a in self.args]
        spread = [str(len(self.args) + i) for i, _ in enumerate(p for p in self.params if p.var.tensor and not p.var.axis)]
        first = next(i for i, a in enumerate(self.args) if a.local == self.first)
        return f"({_tuple(axes)}, {_tuple(spread)}, {first})"


# -- names ------------------------------------------------------------------------


def _mangle(names: list[str], also: frozenset[str] = frozenset()) -> dict[str, str]:
    """Python names for symbols that cannot clash with the generated code's own names.

    ``_``-prefixed names (the code's helpers and CSE temporaries) gain a ``u``,
    ``grad_``-prefixed ones (gradient locals) a ``v_``, and reserved or
    already-taken names a trailing ``_``.
    """
    taken: set[str] = set()
    out = {}
    for name in names:
        local = name
        if local.startswith("_"):
            local = "u" + local
        if local.startswith("grad_"):
            local = "v_" + local
        while local in RESERVED or local in also or local in taken or keyword.iskeyword(local):
            local += "_"
        taken.add(local)
        out[name] = local
    return out


def class_name(spec: LossSpec) -> str:
    """The spec's ``[torch] class``, else from its name: ``cost_sensitive_bce`` -> ``CostSensitiveBceLoss``."""
    if spec.torch_class:
        return spec.torch_class
    camel = "".join(part[:1].upper() + part[1:] for part in spec.name.split("_") if part)
    return camel if camel.endswith("Loss") else camel + "Loss"


def constructor(spec: LossSpec, local: dict[str, str]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The Torch constructor's ``(name, default)`` arguments: positional-or-keyword ones in ``[torch] args``
    order (else ``reduction`` and the params), then the keyword-only ones: the other params in declaration
    order, then ``reduction`` (torch's ``GaussianNLLLoss(*, full, eps, reduction)``)."""
    own = {"reduction": default_reduction(spec), "size_average": "None", "reduce": "None"}  # (never a param's name)
    params = {n: (local[n], Arg(n, local[n], spec.symbols[n], n in spec.class_index_params).default)
              for n in spec.params}
    if spec.torch_args is None:
        return [("reduction", own["reduction"]), *params.values()], []
    first = [(n, own[n]) if n in own else params[n] for n in spec.torch_args]
    return first, [arg for arg in (*params.values(), ("reduction", own["reduction"])) if arg not in first]


def signatures(spec: LossSpec, target: Target, local: dict[str, str]) -> dict[str, str]:
    """The public functions' parameters with type hints, as source: ``functions`` (the array modules' ``loss``,
    ``loss_and_grad`` and ``loss_terms``: arrays, ``reduction``, params, then keyword-only ``validate``),
    ``init`` (the Torch module's constructor, in :func:`constructor`'s order) and ``forward`` (its arrays)."""
    kind = target.array_type
    arrays = [f"{local[n]}: {kind}" for n in spec.arrays]
    reduction = default_reduction(spec)
    hints = {"reduction": "str | None" if reduction == "None" else "str", "size_average": "bool | None",
             "reduce": "bool | None"}
    hints |= {local[n]: Arg(n, local[n], spec.symbols[n], n in spec.class_index_params).hint(kind) for n in spec.params}
    params = [f"{local[n]}: {hints[local[n]]} = {Arg(n, local[n], spec.symbols[n], n in spec.class_index_params).default}"
              for n in spec.params]
    validate = f"validate: bool = {spec.validate}"
    positional, keyword_only = constructor(spec, local)
    init = ["self", *(f"{n}: {hints[n]} = {d}" for n, d in positional), "*",
            *(f"{n}: {hints[n]} = {d}" for n, d in keyword_only), "fused: bool = False", validate]
    return {
        "functions": ", ".join([*arrays, f"reduction: {hints['reduction']} = {reduction}", *params, "*", validate]),
        "init": ", ".join(init),
        "forward": ", ".join(["self", *arrays]),
    }


def default_reduction(spec: LossSpec) -> str:
    """The generated code's default ``reduction``, as source: None (each term its own) for a combined spec whose
    terms reduce differently, else ``"mean"``."""
    return "None" if spec.term_reductions else '"mean"'


# -- expressions --------------------------------------------------------------------


def _term_specs(spec: LossSpec) -> list[tuple[str, str, LossSpec]]:
    """``(term name, weight, spec)`` for each term; a plain spec is its own single term."""
    if not spec.terms:
        return [(spec.name, "1.0", spec)]
    out = []
    for term, (weight, text) in spec.terms.items():
        used = _used_symbols(spec, text)
        used |= {p for n in list(used) for p in spec.symbols[n].samples.values()}  # which of its samples count
        symbols = {n: v for n, v in spec.symbols.items() if n in used}
        if not any(v.role == "input" for v in symbols.values()):
            raise RenderError(f"term {term!r} has no input symbol", token=term)
        out.append((term, repr(weight), LossSpec(name=term, expr=text, symbols=symbols,
                                                 reduction=spec.term_reductions.get(term, spec.reduction))))
    return out


def _used_symbols(spec: LossSpec, text: str) -> set[str]:
    from ..language import parse

    axes = {n: v.axis for n, v in spec.symbols.items() if v.axis is not None}
    value = parse(text, spec.sympy_symbols, axes)
    return {s.name for s in value.free_symbols}


def _printer(target: Target, args: list[Arg], indices: str | None = None):
    printer = target.printer()
    printer.vector_names = frozenset(a.local for a in args if a.axis and a.local != indices)
    printer.array_names = frozenset(a.local for a in args if a.varies)
    return printer


@lru_cache(maxsize=256)
def _shared(spec: LossSpec, local: tuple[tuple[str, str], ...], index: tuple[str, str] | None = None,
            learned: bool = False, exp_log_softmax: bool = True):
    """One ``sympy.cse`` over the loss and every gradient (under the render budget), for every target.

    Returns ``(replacements, (loss, *grads))``: the temporaries in order, then
    the expressions in terms of them. Each target prints the same temporaries;
    the value-only function keeps just the ones its value needs (:func:`_needed`).
    None where ``index`` asks for a class-index form the loss does not have.
    """
    exprs = _prepared(spec, local, index, learned, exp_log_softmax)
    if exprs is None:
        return None
    budget.check("render", *exprs)  # before cse: a RenderError naming the stage and the limit
    with budget.deadline("render"):
        replacements, reduced = sympy.cse(list(exprs), symbols=sympy.numbered_symbols("_t"), optimizations=None,
                                          order="canonical")
        arrays = frozenset(dict(local)[n] for n, v in spec.symbols.items() if v.per_element)
        replacements, reduced = _in_branches(replacements, reduced, arrays)
    return tuple(replacements), tuple(reduced)


#: The most conditions on params alone that :func:`_lifted` splits an expression on (each one doubles it).
MAX_LIFTED = 2


def _lifted(exprs: tuple[sympy.Expr, ...], arrays: frozenset) -> tuple[sympy.Expr, ...]:
    """Each expression split on its conditions on params alone: ``e`` as ``where(c, e[c true], e[c false])``.

    A derivative takes such a ``where`` apart (the gradient of ``where(c, A, B)``
    through a softmax is ``where(c, a, 1)*softmax + where(c, b, 0)``), so that
    the option left at its default would still multiply by 1 and add 0, a pass
    over the data each. Split at the top, each branch simplifies on its own
    (``softmax``), and only the branch the condition picks runs. Exact: every
    ``where`` of the condition is replaced by the branch it takes on that side.
    At most :data:`MAX_LIFTED` conditions; an expression with more is left as it is.
    """
    out = []
    for e in exprs:
        conds = sorted({w.args[0] for w in e.atoms(where) if not w.args[0].free_symbols & arrays},
                       key=sympy.default_sort_key)
        if len(conds) > MAX_LIFTED:
            out.append(e)
            continue
        for cond in conds:
            sides = []
            for side in (1, 2):
                branch = e
                while found := {w: w.args[side] for w in branch.atoms(where) if w.args[0] == cond}:
                    budget.tick()
                    branch = branch.xreplace(found)
                sides.append(branch)
            e = where(cond, *sides)
        out.append(e)
    return tuple(out)


def _in_branches(replacements: list, exprs: list, arrays: frozenset[str]) -> tuple[list, list]:
    """Temporaries used only in some branches of ``where``s on params alone, computed only when those are taken.

    Such a ``where`` runs only the branch its condition picks (``_choose``); a
    temporary CSE hoisted out of it would run on every call, so that an option
    left at its default (``full = 0``, ``p == 2``, ``swap = 0``) would still pay
    for the others. Each temporary is needed under the branch choices that
    every one of its uses sits in (a use inside another temporary inherits
    that one's choices; nested ``where``s add up), found in one pass from the
    last use back. A temporary needed only under some choices becomes
    ``where(c1 & ~c2, value, 0)``, the conjunction of its choices (0, or false
    for a condition, when not taken: still computed once and shared by the
    value and the gradients when its branches are, not computed when they are
    not; what the other side holds is never read). One that is, once its
    choices are known, another symbol is that symbol. ``arrays`` are the names of
    the per-element symbols; a temporary that holds one is per-element too,
    and a condition on it picks per element, not a branch.
    """
    varying = set(arrays)
    for sym, value in replacements:
        if any(s.name in varying for s in value.free_symbols):
            varying.add(sym.name)
    temps = {sym for sym, _ in replacements}
    needed: dict = {}  # temporary -> the (condition, side) choices all its uses sit in

    def visit(expr: sympy.Basic, choices: frozenset) -> None:
        stack = [(expr, choices)]
        while stack:
            budget.tick()
            node, known = stack.pop()
            if node in temps:
                needed[node] = needed[node] & known if node in needed else known
            elif isinstance(node, where) and not any(s.name in varying for s in node.args[0].free_symbols):
                cond = node.args[0]
                stack.append((cond, known))
                stack.extend((branch, known | {(cond, side)}) for side, branch in ((True, node.args[1]),
                                                                                   (False, node.args[2]))
                             if (cond, not side) not in known)  # a branch the choices rule out is never taken
            else:
                stack.extend((arg, known) for arg in node.args)

    for e in exprs:
        visit(e, frozenset())
    for sym, value in reversed(replacements):
        visit(value, needed.get(sym, frozenset()))
    conditions: set = set()  # the temporaries that hold a truth value
    same: dict = {}  # a temporary that is, once its choices are known, another symbol: that symbol
    out = []
    for sym, value in replacements:
        choices = needed.get(sym, frozenset())
        value = _known(value.xreplace(same), choices)
        if isinstance(value, sympy.Symbol):
            same[sym] = value
            continue
        if isinstance(value, (Relational, BooleanFunction, BooleanAtom)) or value in conditions:
            conditions.add(sym)
        out.append((sym, _guarded(value, choices, sym in conditions)))
    return out, [e.xreplace(same) for e in exprs]


def _known(value: sympy.Basic, choices: frozenset) -> sympy.Basic:
    """``value`` with each ``where`` whose condition ``choices`` decide replaced by the branch it takes."""
    side_of = dict(choices)
    while found := {c: c.args[1 if side_of[c.args[0]] else 2] for c in value.atoms(where) if c.args[0] in side_of}:
        budget.tick()
        value = value.xreplace(found)
    return value


def _guarded(value: sympy.Basic, choices: frozenset, condition: bool) -> sympy.Basic:
    """``value`` computed only under ``choices`` (each a condition and the side it takes), 0 elsewhere (false
    for a ``condition``: under a compiler both branches run, and what the other holds must have the value's
    kind)."""
    if not choices:
        return value
    other = sympy.false if condition else sympy.S.Zero
    if len(choices) == 1:
        ((cond, side),) = choices
        return where(cond, value, other) if side else where(cond, other, value)
    literals = [c if side else sympy.Not(c) for c, side in sorted(choices, key=lambda c: sympy.default_sort_key(c[0]))]
    return where(sympy.And(*literals, evaluate=False), value, other)


def _needed(replacements, exprs) -> tuple[tuple, tuple]:
    """The temporaries ``exprs`` depend on, in order, and ``exprs`` (for a function that prints only them).

    A temporary the joint pass shares with a gradient may be used once here:
    it is put back in its place, so that the value-only code reads as if it
    had been shared on its own.
    """
    wanted = set().union(*(e.free_symbols for e in exprs))
    keep = []
    for sym, value in reversed(replacements):
        if sym in wanted:
            keep.append((sym, value))
            wanted |= value.free_symbols
    keep.reverse()
    temps = {sym for sym, _ in keep}
    uses: Counter = Counter()
    for e in (*(v for _, v in keep), *exprs):
        uses.update(n for n in sympy.preorder_traversal(e) if n in temps)
    inline: dict = {}
    lines = []
    for sym, value in keep:
        value = value.xreplace(inline) if inline else value
        if uses[sym] == 1:
            inline[sym] = value
        else:
            lines.append((sym, value))
    exprs = tuple(e.xreplace(inline) for e in exprs) if inline else tuple(exprs)
    return tuple(lines), exprs


#: The width a kernel's lines have (they are indented once), and the most a value or gradient that a template
#: places inside a call may take before it gets a line of its own.
_ROOM = layout.LINE - len(layout.INDENT)
_INLINE = 50


def _code(printer, replacements, exprs, scaled=False) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The temporaries as assignment lines, then the printed expressions; with ``scaled``, every expression after
    the first (the gradients) times ``scale``, the reduction's factor (:func:`_times`). Each spelled as ruff
    writes it, a line within its width (:func:`lossforge.codegen.layout.fit`)."""
    base = printer.array_names
    fresh = layout.counter([sym.name for sym, _ in replacements])
    lines: list[str] = []

    def fitted(text: str, width: int) -> str:
        hoisted, text = layout.fit(layout.expression(text), width, _ROOM, fresh)
        lines.extend(f"{name} = {part}" for name, part in hoisted)
        return text

    try:
        with budget.deadline("render"):
            for sym, value in replacements:
                budget.tick()
                lines.append(f"{sym} = {fitted(printer.doprint(value), _ROOM - len(sym.name) - 3)}")
                if printer._has_arrays(value):  # the temporary varies per element too
                    printer.array_names = printer.array_names | {sym.name}
            budget.tick()
            printed = [fitted(printer.doprint(e), _INLINE) for e in exprs[:1 if scaled else None]]
            scaled_grads = [_times(printer, e, fitted) for e in exprs[1:] if scaled]
            return tuple(lines), (*printed, *scaled_grads)
    finally:
        printer.array_names = base


def _times(printer, grad: sympy.Expr, fitted) -> str:
    """A gradient times ``scale`` (the generated ``_times``): its numeric coefficient apart, so that the number and
    the scale multiply as numbers and the array takes one pass (``2*_t0`` scaled by 1/n is ``(2/n)*_t0``)."""
    coefficient, rest = grad.as_coeff_Mul()
    number = layout.expression(printer.doprint(coefficient))
    return f"_times({number}, {fitted(printer.doprint(rest), _INLINE - len(number) - 17)}, scale)"


def _prepared(spec: LossSpec, local: tuple[tuple[str, str], ...], index: tuple[str, str] | None = None,
              learned: bool = False, exp_log_softmax: bool = True):
    """The loss and each input's gradient as the printers take them, the same for every target.

    Symbols renamed to their locals, constant calls as floats, the cheaper forms
    (:func:`lossforge.codegen.forms.cheaper`), the NaN-propagating select and the
    double-where guards (:func:`guard_where`), sums grouped. With ``index``, a
    ``(one-hot symbol, vector on its axis)`` pair, the one-hot symbol stands for
    class indices (:func:`lossforge.codegen.indices.indexed`); None if the loss has
    no such form. ``exp_log_softmax``: the printer's choice of :func:`softmaxes`' forms.
    Not cached itself: :func:`_shared` caches what it makes.
    """
    local = dict(local)
    derivation = derive(spec)
    table = spec.sympy_symbols
    rename = {table[n]: sympy.Symbol(local[n], **v.domain.assumptions()) for n, v in spec.symbols.items()}
    array_syms = frozenset(rename[table[n]] for n, v in spec.symbols.items() if v.per_element)
    vector_syms = sorted((rename[table[n]] for n in spec.arrays if spec.symbols[n].axis
                          and not (index and n == index[0])), key=lambda s: s.name)

    def axis_of(node: axis_size | axis_ones) -> axis_size | axis_ones:
        # The length (or ones) of an axis is that of any vector on it: name the first one,
        # so that the printed code reads `z.shape[-1]` even after CSE.
        return node.func(next(s for s in vector_syms if node.args[0].has(s)))

    rename = {old: new for old, new in rename.items() if old != new}  # most symbols keep their names

    def prepared(exprs: tuple[sympy.Expr, ...]) -> tuple[sympy.Expr, ...]:
        exprs = walk.replace(walk.xreplace(exprs, rename), lambda n: isinstance(n, (axis_size, axis_ones)), axis_of)
        # Constant calls such as log(2) or sqrt(2) become float literals.
        return walk.replace(exprs, lambda n: n.is_number and isinstance(n, (sympy.Function, sympy.Pow))
                            and not n.is_Rational, lambda n: sympy.Float(float(n.evalf(30))))

    def symbol(name: str) -> sympy.Symbol:  # as the printers see it
        return rename.get(table[name], table[name])

    lower = {symbol(n): sympy.Float(v.domain.lo) for n, v in spec.symbols.items() if math.isfinite(v.domain.lo)}
    upper = {symbol(n): sympy.Float(v.domain.hi) for n, v in spec.symbols.items() if math.isfinite(v.domain.hi)}
    wrt = spec.differentiated if learned else spec.inputs  # the learnable params' gradients: Torch only
    exprs = _lifted(prepared((derivation.loss, *(derivation.gradients[n] for n in wrt))), array_syms)
    if index is not None:
        per_class = {rename.get(table[n], table[n]) for n in spec.params if spec.symbols[n].axis}  # weight[class]
        exprs = indexed(exprs, symbol(index[0]), symbol(index[1]), frozenset(vector_syms) | per_class)
        if exprs is None:
            return None
    exprs = cheaper(exprs, lower, upper)
    # One sympy.Tuple through each rewrite: its walk visits a node the gradients share once, not once per gradient.
    return group_sums(guard_where(softmaxes(sympy.Tuple(*exprs), exp_log_softmax), array_syms), array_syms).args


def _build_term(target: Target, term: str, weight: str, spec: LossSpec, local: dict[str, str],
                index: tuple[str, str] | None = None, aimed: bool = True) -> Term | None:
    """One term's printed code; with ``index``, its class-index form (None if it has none); with ``aimed``, also
    the form differentiated in its smooth targets (a variant's own variants are built by the variant)."""
    args = [Arg(n, local[n], v) for n, v in spec.symbols.items()]
    arrays = [a for a in args if a.var.role != "param"]
    params = [a for a in args if a.var.role == "param"]
    inputs = [a for a in args if a.var.role == "input"]
    printer = _printer(target, args, indices=local[index[0]] if index else None)
    try:
        shared = _shared(spec, tuple(local.items()), index, learned=target.learns and bool(spec.learnable),
                         exp_log_softmax=printer.exp_log_softmax)
        if shared is None:
            return None
        replacements, (loss, *grads) = shared
        value_lines, (value,) = _code(printer, *_needed(replacements, [loss]))
        both_lines, (both_value, *both_grads) = _code(printer, replacements, [loss, *grads], scaled=True)
    except LossforgeError:
        raise
    except Exception as exc:  # noqa: BLE001 - a construct a printer cannot print, named for the user
        raise RenderError(f"cannot print spec {spec.name!r} for {target.name}: {exc}", token=spec.name) from None
    has_axes = any(a.axis for a in arrays)
    first = next(a for a in arrays if not (index and a.name == index[0]))  # the batch shape is its shape,
    batch = f"{first.local}.shape[:-1]" if first.axis else f"{first.local}.shape"  # less the axis of a vector
    expand = tuple(a.local for a in (*arrays, *params) if has_axes and a.varies and not a.axis)
    tensors = tuple(a for a in params if a.var.tensor)
    lengths = tuple(a.axis and next(f"{b.local}.shape[-1]" for b in arrays
                                    if b.axis == a.axis and not (index and b.name == index[0])) for a in tensors)
    reach = tuple(f"batch + ({n},)" if n else "batch" for n in lengths)
    pair = None if index else _index_pair(spec)  # the class-index form of a term that is not one already
    return Term(
        name=term,
        func=f"{term}_indexed" if index else term,
        weight=weight,
        args=tuple(arrays),
        params=tuple(params),
        inputs=tuple(inputs),
        learned=tuple(a for a in params if a.var.learnable) if target.learns else (),
        has_axes=has_axes,
        batch=batch,
        first=first.local,
        expand=expand,
        tensors=tensors,
        reach=reach,
        lengths=lengths,
        sampled=any(a.var.samples for a in arrays),
        value_lines=value_lines,
        value=value,
        both_lines=both_lines,
        both_value=both_value,
        both_grads=tuple(both_grads),
        helpers=frozenset(printer.helpers),
        imports=printer.imports(),
        indexed=_build_term(target, term, weight, spec, local, pair) if pair else None,
        folded=_folded(target, term, weight, spec, local, tuple(params)) if not index else None,
        smooth=tuple(a for a in arrays if a.name in spec.smooth_targets) if target.learns else (),
        targeted=_targeted(target, term, weight, spec, local) if aimed and not index and target.learns
        else None,
        index=index[0] if index else None,
    )


def _targeted(target: Target, term: str, weight: str, spec: LossSpec, local: dict[str, str]) -> Term | None:
    """The term differentiated in its smooth targets too (None if it has none): built as the spec with those
    targets as inputs, its gradients then in the base term's order, the targets' last.

    A one-hot target given as class indices has no gradient (integers): the class-index variants come from the
    spec with every smooth target but that one promoted, and print None for its gradient."""
    smooth = spec.smooth_targets
    if not smooth:
        return None
    pair = _index_pair(spec)

    def promoted(names: tuple[str, ...]) -> tuple[LossSpec, Term]:
        made = LossSpec(name=f"{term}_targeted", expr=spec.sympy, reduction=spec.reduction, accept=spec.accept,
                        symbols={n: dataclasses.replace(v, role="input", **dict.fromkeys(v.samples)) if n in names
                                 else v for n, v in spec.symbols.items()})  # (which samples count: the base's)
        return made, _build_term(target, f"{term}_targeted", weight, made, local, aimed=False)

    base = [*spec.differentiated, *smooth]  # the order backward reads them in
    args = {a.name: a for a in (Arg(n, local[n], v, n in spec.class_index_params) for n, v in spec.symbols.items())}

    def signed(t: Term | None, made: LossSpec) -> Term | None:  # the base term's roles and signature, targets last
        if t is None:
            return None
        grads = dict(zip(made.differentiated, t.both_grads))  # an index target's: none (the template prints None)
        return dataclasses.replace(
            t, name=term, args=tuple(args[a.name] for a in t.args), params=tuple(args[a.name] for a in t.params),
            inputs=tuple(args[n] for n in spec.inputs), target_grads=tuple(args[n] for n in smooth),
            sampled=any(args[a.name].var.samples for a in t.args),
            both_grads=tuple(grads.get(n, "None") for n in base),
            indexed=signed(t.indexed, made), folded=signed(t.folded, made))

    whole, built = promoted(smooth)
    out = signed(built, whole)
    if pair is None or pair[0] not in smooth:
        return out
    partial, rest = promoted(tuple(n for n in smooth if n != pair[0]))  # the index target stays a target
    indexed = signed(rest, partial)
    folded = out.folded and dataclasses.replace(out.folded, indexed=indexed.folded and indexed.folded.indexed)
    return dataclasses.replace(out, indexed=indexed.indexed, folded=folded)


def _folded(target: Target, term: str, weight: str, spec: LossSpec, local: dict[str, str],
            params: tuple[Arg, ...]) -> Term | None:
    """The term with its tensor params replaced by their defaults (None if it has none), taking all its params."""
    tensors = [n for n, v in spec.symbols.items() if v.tensor]
    if not tensors:
        return None
    table = spec.sympy_symbols
    folded = LossSpec(name=f"{term}_folded", reduction=spec.reduction,
                      expr=spec.sympy.xreplace({table[n]: _number(spec.symbols[n].default, n) for n in tensors}),
                      symbols={n: dataclasses.replace(v, mean_weight=None) for n, v in spec.symbols.items()
                               if not v.tensor})  # an absent weight weights no mean
    built = _build_term(target, f"{term}_folded", weight, folded, local, aimed=False)

    def signed(t: Term) -> Term:  # the signature of the term it folds: the absent params are passed, unread
        return dataclasses.replace(t, name=term, params=params, indexed=t.indexed and signed(t.indexed))

    return signed(built)


def _index_pair(spec: LossSpec) -> tuple[str, str] | None:
    """``(one-hot target, vector on its axis)`` when a term has exactly one one-hot target with such a mate."""
    onehot = [n for n in spec.arrays if spec.symbols[n].axis and spec.symbols[n].domain.name == "onehot"
              and spec.symbols[n].role == "target"]
    if len(onehot) != 1:
        return None
    axis = spec.symbols[onehot[0]].axis
    mate = next((n for n in spec.arrays if n != onehot[0] and spec.symbols[n].axis == axis), None)
    return (onehot[0], mate) if mate else None


# -- docstrings -----------------------------------------------------------------------

_EXAMPLE_VALUES = {
    "real": "[0.5, -1.0]",
    "positive": "[0.5, 2.0]",
    "nonnegative": "[0.0, 2.0]",
    "probability": "[0.25, 0.75]",
    "binary": "[1.0, 0.0]",
    "sign": "[1.0, -1.0]",
}
_EXAMPLE_VECTORS = {
    "onehot": "[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]",
    "simplex": "[[0.5, 0.25, 0.25], [0.0, 0.0, 1.0]]",
    "probability": "[[0.25, 0.5, 0.75], [1.0, 0.0, 0.5]]",
    "binary": "[[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]",
    "positive": "[[0.5, 1.0, 2.0], [1.5, 0.25, 1.0]]",
    "nonnegative": "[[0.0, 1.0, 2.0], [1.5, 0.0, 1.0]]",
    "real": "[[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]]",
}


def example_values(var: Var) -> str:
    """A small literal array in the variable's domain, for docstring examples."""
    dom = var.domain
    if var.axis:
        return _EXAMPLE_VECTORS.get(dom.name, f"[[{dom.lo!r}, {dom.hi!r}, {dom.lo!r}], [{dom.hi!r}, {dom.lo!r}, {dom.hi!r}]]")
    return _EXAMPLE_VALUES.get(dom.name, f"[{dom.lo!r}, {dom.hi!r}]")


def _shape_lines(spec: LossSpec, local: dict[str, str]) -> list[str]:
    lines = []
    arrays = [n for n in spec.arrays]
    first = {}
    letters = {}
    for n in arrays:
        var = spec.symbols[n]
        if var.axis:
            letters.setdefault(var.axis, "C" if not letters else f"C{len(letters) + 1}")
    for n in arrays:
        var = spec.symbols[n]
        dom = f"domain {var.domain.name}"
        if var.axis:
            k = letters[var.axis]
            if var.dim is None:
                text = f"``(*, {k})``: {k} entries along axis ``{var.axis}``; {dom}"
            else:  # torch's layout: (C), (N, C), (N, C, d1, ...) for dim 1
                lead = ", ".join(f"N{i}" if var.dim > 1 else "N" for i in range(var.dim))
                text = (f"``({k})``, ``({lead}, {k})`` or ``({lead}, {k}, d1, ...)``: {k} entries along axis "
                        f"``{var.axis}``, dimension {var.dim} (the last one with at most {var.dim + 1} dimensions); {dom}")
            if var.domain.name == "onehot":
                text += ", or integer class indices of the shape without the axis"
        else:
            ref = first.get("scalar")
            text = "``(*)``, any batch shape" if ref is None else f"``(*)``, the same shape as {ref}"
            if var.broadcast:
                text += " (or with its last dimension missing or 1: one value per row)"
            text += f"; {dom}"
            first.setdefault("scalar", local[n])
        lines.append(f"{local[n]}: {text}.")
    out = "``(*)`` with ``reduction=\"none\"``" if not spec.terms else "``(*)`` with ``reduction=\"none\"`` (terms of equal shape)"
    lines.append(f"Output: a scalar; {out}.")
    return lines


def docstring(spec: LossSpec, target: Target, local: dict[str, str]) -> str:
    """The generated docstring, in the shape of PyTorch's loss documentation (:func:`card` as text).

    The text is plain: the renderer passes it through :func:`lossforge.text.inert`.
    Expression text is one line (a TOML multi-line expression's line breaks are
    spaces); free text keeps its lines, indented with the block it sits in. What
    lossforge writes is wrapped within the line length (the Torch class's
    docstring sits 4 in); a spec's own text is never rewrapped.
    """
    return docs.as_text(card(spec, target, local), layout.LINE - (len(layout.INDENT) if target.module_class else 0))


def card(spec: LossSpec, target: Target, local: dict[str, str]) -> list[docs.Section]:
    """The sections of a loss's documentation, in the order PyTorch documents its losses: the text of the
    generated docstring and of ``lossforge doc`` (which adds the gradients, hazards and properties)."""
    head = spec.summary or spec.description or f"The {spec.name} loss."
    parts = [docs.Section(None, "text", (head,), verbatim=bool(spec.summary or spec.description))]
    if spec.description and spec.description != head:
        parts.append(docs.Section(None, "text", (spec.description,), verbatim=True))
    call = ", ".join(local[n] for n in spec.arrays)
    text = one_line(spec.text)
    formula = spec.formula or text
    parts.append(docs.Section("The per-sample loss is", "code", (f"{spec.name}({call}) = {formula}",),
                              verbatim=bool(spec.formula)))
    if spec.formula and spec.formula != spec.text:
        parts.append(docs.Section("computed as", "code", (text,)))
    own = spec.term_reductions
    if spec.terms:
        parts.append(docs.Section("a weighted sum of terms, each reduced on its own", "code", tuple(
            f"{w!r} * {t}{f' (reduced by {own[t]})' if own else ''}: {one_line(term)}"
            for t, (w, term) in spec.terms.items())))
    if own:
        parts.append(docs.Section(None, "text", (
            "With ``reduction=None`` (the default) each term is reduced as listed above, then weighted and\n"
            "added; ``\"mean\"``, ``\"sum\"`` or ``\"batchmean\"`` reduces every term so instead; ``\"none\"``\n"
            "returns the per-sample weighted sum of the terms, unreduced (the formula above).",)))
    else:
        parts.append(docs.Section(None, "text", (
            "With ``reduction=\"mean\"`` (the default) the per-sample losses are averaged over every\n"
            "element of the batch; ``\"sum\"`` adds them up; ``\"none\"`` returns them unreduced.",)))
    kinds = "``\"mean\"`` | ``\"sum\"`` | ``\"none\"`` | ``\"batchmean\"`` (the sum divided by the batch's first dimension)"
    described = {  # keyed as the constructor names them: a param named reduction is reduction_ there
        "reduction": (f"reduction (str or None, optional): ``None`` (each term its own) | {kinds}. Default: ``None``."
                      if own else f"reduction (str, optional): {kinds}. Default: ``\"mean\"``."),
        "size_average": "size_average (bool, optional): deprecated (see ``reduction``), as in torch. Default: ``None``.",
        "reduce": "reduce (bool, optional): deprecated (see ``reduction``), as in torch. Default: ``None``.",
    }
    tensor_kind = f"float or {target.array}"
    for n in spec.params:
        var = spec.symbols[n]
        if var.tensor and var.axis:
            kind, each = tensor_kind, f", one per entry of axis ``{var.axis}`` (shape ``(C,)``), or one for all"
        elif var.tensor:
            kind, each = tensor_kind, ", each element; it broadcasts to the batch (its trailing dimensions)"
        else:
            kind, each = ("int", "; a sample whose class index is this one counts for nothing (its loss 0, not in "
                          "the mean)") if n in spec.class_index_params else ("float", "")
        if n in {v.mean_weight for v in spec.symbols.values()}:
            each += "; given class indices, ``\"mean\"`` is the weighted mean (sum of losses / sum of weight[class])"
        default = (f"``None`` (absent: as {var.default!r}, with no operation for it in the code)" if var.tensor
                   else f"``{Arg(n, local[n], var, n in spec.class_index_params).default}``")
        described[local[n]] = f"{local[n]} ({kind}, optional): domain {var.domain.name}{each}. Default: {default}."
    if target.module_class:  # the constructor's order
        positional, keyword_only = constructor(spec, local)
        args = [described[n] for n, _ in (*positional, *keyword_only)]
    else:
        args = [described[n] for n in ("reduction", *(local[n] for n in spec.params))]
    if target.fused:
        args.append("fused (bool, optional): compute loss and gradient in one compiled kernel (``torch.compile``). "
                    "Default: ``False``.")
    args.append(f"validate (bool, optional): check every {target.array.lower()} "
                f"and param against its declared domain; a ValueError names the first value outside it"
                f"{' (a learnable param in every call, as an optimizer left it)' if spec.learnable and target.learns else ''}. "
                f"Default: ``{spec.validate}``.")
    parts.append(docs.Section("Args", "items", tuple(args)))
    parts.append(docs.Section("Shape", "bullets", tuple(_shape_lines(spec, local))))
    if spec.stable_form:
        parts.append(docs.Section("Stable form", "block", (spec.stable_form,), verbatim=True))
    if spec.reference:
        parts.append(docs.Section("Reference", "block", (spec.reference,), verbatim=True))
    values = ", ".join(f"{target.array_call}({example_values(spec.symbols[n])})" for n in spec.arrays)
    if not target.module_class:
        example = (
            f">>> {target.example_import}",
            f">>> value, grads = loss_and_grad({values})",
        )
    else:
        first = spec.inputs[0]
        example = (
            ">>> import torch",
            f">>> criterion = {class_name(spec)}()",
            f">>> {local[first]} = torch.tensor({example_values(spec.symbols[first])}, requires_grad=True)",
            ">>> value = criterion(" + ", ".join(
                local[n] if n == first else f"torch.tensor({example_values(spec.symbols[n])})" for n in spec.arrays
            ) + ")",
            ">>> value.backward()",
        )
    parts.append(docs.Section("Example", "code", example))
    return parts


# -- the Jinja environment ---------------------------------------------------------------


def _template_text(name: str) -> str:
    try:
        return resources.files(f"{_package}.templates").joinpath(name).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):  # a source checkout without the package mapping
        return (Path(__file__).resolve().parents[2] / "templates" / name).read_text(encoding="utf-8")


class _CompiledTemplates(jinja2.FileSystemBytecodeCache):
    """Jinja's cache of compiled templates, where a cache that cannot be read or written is no cache."""

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except OSError:
            bucket.reset()

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError:
            pass


def _template_cache() -> jinja2.BytecodeCache | None:
    """The two templates compiled once per user, not once per process (0.15-0.2 s of every cold start).

    Jinja's own per-user directory under the temp folder (created 0700 and
    checked to be the user's), each entry keyed by the template's name and the
    checksum of its text, so an edited template is compiled afresh. Only the
    shipped templates are cached: spec text is data in the render context, never
    template source.
    """
    try:
        return _CompiledTemplates()
    except (OSError, RuntimeError):  # no writable temp folder: compile per process
        return None


@cache
def environment() -> jinja2.Environment:
    """Jinja environment: strict undefined names, trailing newline kept, no autoescape.

    No autoescape, because the output is Python, not HTML: text is made inert by
    the ``comment`` and ``literal`` filters and by :func:`docstring`, all of them
    :func:`lossforge.text.inert`.
    """
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(_template_text),
        bytecode_cache=_template_cache(),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # The only ways text reaches the source: each filter is lossforge.text.inert for one place.
    env.filters["comment"] = lambda text: inert(text, "comment")
    env.filters["literal"] = lambda text: inert(text, "string")
    # What a Function's backward returns for an argument: its gradient's local, or None for data and fixed params.
    # (a target of a continuous domain gets one when it requires grad: Term.targeted)
    # Python's spelling of a tuple of (already source) items, and of the targets of an unpacking: ruff's
    # (``(a,)`` for one, no trailing comma for more, which would keep the tuple split over lines).
    # lossforge's own docstring prose with names filled in, refilled within the line length
    env.filters["refilled"] = lambda text, indent: docs.refilled(text, indent, layout.LINE)
    env.filters["pytuple"] = lambda items: _tuple(list(items))
    env.filters["targets"] = lambda items: f"({items[0]},)" if len(items) == 1 else ", ".join(items)
    env.filters["gradient_of"] = lambda arg: f"grad_{arg.local}" if arg.var.differentiable else "None"
    return env


def locals_of(spec: LossSpec) -> dict[str, str]:
    """Each symbol's name in generated code (a Python keyword or a name the code uses itself is changed)."""
    return _mangle(list(spec.symbols), also=frozenset({class_name(spec)}))


def target_named(name: str) -> Target:
    """The target ``name`` (``numpy``, ``torch``), or a RenderError naming the known ones."""
    if name not in TARGETS:
        raise RenderError(f"unknown target {name!r} (expected one of {', '.join(TARGETS)})", token=str(name))
    return TARGETS[name]


@lru_cache(maxsize=256)
def generate(spec: LossSpec, target: str) -> str:
    """The standalone source of ``spec`` for ``target`` ("numpy", "torch" or "jax")."""
    if not isinstance(spec, LossSpec):
        raise RenderError(f"generate() needs a LossSpec, got {type(spec).__name__}", token=type(spec).__name__)
    tgt = target_named(target)
    if spec.torch_class in RESERVED:
        raise RenderError(f"[torch] class {spec.torch_class!r} is a name the generated code uses itself; choose "
                          f"another (such as {spec.torch_class + 'Loss'!r})", token=spec.torch_class)
    local = locals_of(spec)
    specs = _term_specs(spec)
    terms = [dataclasses.replace(_build_term(tgt, t, w, s, local), own=spec.term_reductions.get(t)) for t, w, s in specs]
    arrays = [Arg(n, local[n], spec.symbols[n]) for n in spec.arrays]
    pair = _index_pair(spec)
    # Class indices are kept as indices when every term that holds the one-hot symbol has their form.
    if pair and all(t.indexed for t, (_, _, s) in zip(terms, specs) if pair[0] in s.symbols):
        index = {"local": local[pair[0]], "mate": local[pair[1]]}
    else:
        index = None
        terms = [dataclasses.replace(t, indexed=None) for t in terms]
    sampler = next((a for a in arrays if a.var.samples), None)
    samples = sampler and {
        "target": sampler.local,
        "ignore": spec.params.index(sampler.var.ignore_index) if sampler.var.ignore_index else None,
        "weight": spec.params.index(sampler.var.mean_weight) if sampler.var.mean_weight else None,
        "weight_name": local[sampler.var.mean_weight] if sampler.var.mean_weight else None,
        "mate": next(b.local for b in arrays if b.axis == sampler.axis and not b.onehot),
    }
    mates = {}
    for a in arrays:
        if a.onehot and not (index and a.local == index["local"]):
            mate = next((b for b in arrays if b.axis == a.axis and not b.onehot), None)
            mates[a.local] = mate.local if mate else None
    context = {
        "spec": spec,
        "version": VERSION,
        "digest": spec.digest(),
        "header": (f'Generated by lossforge {VERSION} from spec "{spec.name}" (digest {spec.digest()}). Do not edit.\n'
                   f"Formula: {one_line(spec.text)}"),
        "docstring": inert(docstring(spec, tgt, local), "docstring"),
        "arrays": arrays,
        "inputs": [a for a in arrays if a.var.role == "input"],
        "targets": [a for a in arrays if a.var.role == "target"],
        "params": [Arg(n, local[n], spec.symbols[n], n in spec.class_index_params) for n in spec.params],
        "learned": [Arg(n, local[n], spec.symbols[n]) for n in spec.learnable] if tgt.learns else [],
        "smooth": [a for a in arrays if a.name in spec.smooth_targets] if tgt.learns else [],
        "tensor_params": any(v.tensor for v in spec.symbols.values()),
        "terms": terms,
        "combined": bool(spec.terms),
        "default_reduction": default_reduction(spec),
        "validate": spec.validate,
        "mates": mates,
        "samples": samples,
        "dims": any(a.var.dim is not None for a in arrays),
        "index": index,
        "class_name": class_name(spec),
        "constructor": constructor(spec, local),
        "signature": signatures(spec, tgt, local),
        "array_type": tgt.array_type,
        "legacy": spec.torch_args is not None and "reduce" in spec.torch_args,
        "helpers": frozenset().union(*(t.all_helpers for t in terms)),
        "imports": sorted(frozenset().union(*(t.all_imports for t in terms))),
        "grad_names": ", ".join(f"grad_{a.local}" for a in arrays if a.var.role == "input"),
        # each array declared broadcast, by the array whose shape it takes: the first of the first term holding it
        "spread": {a.local: t.args[0].local for t in reversed(terms) for a in t.args if a.var.broadcast},
    }
    try:
        source = environment().get_template(tgt.template).render(**context)
    except jinja2.TemplateError as exc:
        raise RenderError(f"template {tgt.template} failed for spec {spec.name!r}: {exc}", token=spec.name) from None
    return layout.module(source)


def compile(spec: LossSpec, target: str):  # noqa: A001 - the public name of the contract
    """Generate and import: the NumPy module, or the Torch ``nn.Module`` subclass.

    One module per spec and target in a process, also under threads: compiling
    the same spec again returns the same module (the same class). The modules are
    registered in ``sys.modules`` (so classes and functions pickle by reference in
    this process), at most :data:`MAX_MODULES` of them, the least recently
    compiled leaving first. A Torch loss instance pickles by its spec: unpickled in
    a fresh process, it is rebuilt from the spec's TOML text and its state.
    """
    if not isinstance(spec, LossSpec):
        raise RenderError(f"compile() needs a LossSpec, got {type(spec).__name__}", token=type(spec).__name__)
    tgt = target_named(target)
    key = (tgt.name, dumps(spec))  # the spec's full identity: every field, its exact text
    with _LOCK:
        module = _MODULES.pop(key, None)
        if module is None:
            module = _load(spec, tgt, key[1])
        _MODULES[key] = module  # most recent last
        while len(_MODULES) > MAX_MODULES:
            _, old = _MODULES.popitem(last=False)
            if sys.modules.get(old.__name__) is old:
                del sys.modules[old.__name__]
                linecache.cache.pop(old.__file__, None)
    return module.Loss if tgt.module_class else module


#: How many generated modules a process keeps registered (one per distinct spec and target).
MAX_MODULES = 512
_MODULES: OrderedDict[tuple[str, str], types.ModuleType] = OrderedDict()
_LOCK = threading.RLock()


def _load(spec: LossSpec, tgt: Target, text: str) -> types.ModuleType:
    target = tgt.name
    source = generate(spec, target)
    digest = hashlib.sha256(f"{VERSION}\0{target}\0{text}".encode()).hexdigest()[:20]
    name = f"lossforge_generated_{spec.name}_{target}_{digest}"
    module = sys.modules.get(name)
    if isinstance(module, types.ModuleType) and getattr(module, "__lossforge_spec__", None) == text:
        _lines(module.__file__, source)
        return module  # registered earlier in this process and evicted from _MODULES since
    module = types.ModuleType(name)
    module.__file__ = f"<lossforge:{spec.name}:{target}:{digest[:12]}>"
    _lines(module.__file__, source)
    code = builtins.compile(source, module.__file__, "exec")  # our own generated code; spec text is inert in it
    try:
        exec(code, module.__dict__)  # noqa: S102
    except ImportError as exc:  # an optional package the printed functions call (scipy.special for erf, lgamma)
        missing = exc.name or str(exc)
        raise RenderError(f"the {target} code of spec {spec.name!r} imports {missing!r}, which is not installed: "
                          f"pip install 'lossforge[{missing.split('.')[0]}]'", token=missing) from None
    module.__lossforge_spec__ = text
    if tgt.module_class:
        module.Loss.__reduce__ = _reduce_loss
    sys.modules[name] = module
    return module


def _lines(filename: str, source: str) -> None:
    """The generated source in linecache under its module's file name.

    Tracebacks and ``inspect`` show the generated lines, and torch.compile sees
    functions with a source file: without one, torch 2.11 and earlier wrap each
    compiled function in one shared frame, so that every fused kernel of a
    process counts against one recompile limit (8) and the ninth falls back to
    eager (seen on CUDA). No modification time: ``linecache.checkcache`` keeps it.
    """
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)


def _reduce_loss(self):
    """Pickle a generated Torch loss by its spec: ``(rebuild, (spec text, ...), state)``."""
    text = sys.modules[type(self).__module__].__lossforge_spec__
    return (rebuild, (text, "torch"), self.__getstate__())


def rebuild(text: str, target: str):
    """Unpickling: a new, uninitialised instance of the loss ``text`` (a spec's TOML) compiles to."""
    cls = compile(loads(text, source="<pickle>"), target)
    return cls.__new__(cls)


__all__ = ["generate", "compile", "TARGETS", "class_name", "docstring", "environment"]
