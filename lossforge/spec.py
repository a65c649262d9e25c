"""The spec model: :class:`Var`, :class:`LossSpec` and their TOML form.

A :class:`LossSpec` is a frozen value. Constructing one validates it
completely: its expression is parsed (:mod:`lossforge.language`) against the
declared symbols, so a spec that exists is a spec every later stage can use.
The order in which symbols are declared is kept: it is the argument order of
generated code.
"""

from __future__ import annotations

import hashlib
import keyword
import math
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import sympy

from . import language as _expr
from .domains import CATALOGUE, Domain, domain_of
from .errors import DomainError, LossforgeError, RoleError, SpecError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

ROLES = ("input", "target", "param")
REDUCTIONS = ("mean", "sum", "none", "batchmean")
#: What a term of a combined spec may reduce by on its own (``term_reductions``): a reduction to one number.
TERM_REDUCTIONS = ("mean", "sum", "batchmean")

#: Free-text fields a spec may carry, in the order ``dumps`` writes them.
TEXT_FIELDS = ("description", "summary", "formula", "reference", "stable_form")
#: The constructor arguments of a Torch module that are not params (``[torch] args``).
TORCH_ARGS = ("reduction", "size_average", "reduce")


class FrozenMap(Mapping):
    """An ordered, immutable, hashable mapping (declaration order matters)."""

    __slots__ = ("_items", "_index")

    def __init__(self, items: Mapping | Iterable[tuple[Any, Any]] = ()) -> None:
        pairs = tuple(items.items()) if isinstance(items, Mapping) else tuple(items)
        self._items = pairs
        self._index = {k: v for k, v in pairs}

    def __getitem__(self, key):
        return self._index[key]

    def __iter__(self) -> Iterator:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._items == other._items
        if isinstance(other, Mapping):
            return dict(self._items) == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k!r}: {v!r}" for k, v in self._items) + "}"


def finite_number(value: object, what: str, token: str | None = None) -> float:
    """``value`` as a float64, or a SpecError naming ``what`` (a 400-digit integer, inf, a string ...)."""
    out = _expr.finite_float(value)
    if out is None:
        shown = f"{str(value)[:20]}..." if isinstance(value, int) and not isinstance(value, bool) else repr(value)
        raise SpecError(f"{what} {shown} is not a finite float64 number", token=shown if token is None else token)
    return out


#: The keys of a one-hot target that name the params deciding which samples count and how they weigh in the mean.
SAMPLE_KEYS = ("ignore_index", "mean_weight")


@dataclass(frozen=True)
class Var:
    """A symbol's declaration: its role, default, domain and axis.

    ``role`` is ``"input"`` (differentiated), ``"target"`` (data) or ``"param"``
    (a scalar hyper-parameter with a ``default``). ``domain`` is a catalogue
    name (``"positive"``, ``"probability"`` ...), ``"[lo, hi]"`` or a pair.
    ``axis`` names the axis of a vector symbol (the last dimension of its array).
    A ``learnable`` param is trained with the model: the generated Torch module
    holds it as an ``nn.Parameter`` and derives its gradient (reduced over the batch).
    A ``tensor`` param may also be given as an array that broadcasts to the batch
    (torch's ``pos_weight`` of shape ``(C,)``, a per-element weight): it is then
    one value per element, checked against its domain element by element; with an ``axis`` it is one value
    per entry of that axis (torch's per-class ``weight`` of shape ``(C,)``).

    ``dim`` places an array's axis where torch's class-axis losses have it: in an array of more than ``dim + 1``
    dimensions the axis is dimension ``dim`` (``dim = 1``: ``(N, C, d1, ...)``), otherwise the last. A one-hot
    target given as class indices may leave samples out and weight the mean, as torch's ``CrossEntropyLoss``:
    ``ignore_index`` names the param whose value marks a sample left out (its loss 0, no gradient, not counted
    in the mean), and ``mean_weight`` the tensor param on its axis by whose entry at each sample's class
    ``reduction="mean"`` weights the mean (``sum(loss) / sum(weight[class])``). An elementwise array declared
    ``broadcast`` may also come with the first array's last dimension missing or 1 (torch's GaussianNLLLoss takes
    ``var`` so: one variance per row): it is expanded to the batch, and its gradient summed back. An array declared
    ``validate`` is checked against its domain in every call, also with ``validate=False`` (torch's GaussianNLLLoss
    refuses a negative ``var`` so); the spec's own ``validate`` checks every array.
    """

    role: str
    default: float | None = None
    domain: Domain | str = "real"
    axis: str | None = None
    learnable: bool = False
    tensor: bool = False
    dim: int | None = None
    ignore_index: str | None = None
    mean_weight: str | None = None
    broadcast: bool = False
    validate: bool = False

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise RoleError(f"unknown role {self.role!r} (expected one of {', '.join(ROLES)})", token=str(self.role))
        dom = domain_of(self.domain)
        object.__setattr__(self, "domain", dom)
        if self.axis is not None:
            if not isinstance(self.axis, str) or not self.axis.isidentifier() or not self.axis.isascii():
                raise SpecError(f"axis {self.axis!r} is not a plain identifier", token=str(self.axis))
            if self.role == "param" and not self.tensor:
                raise RoleError(f"a param has an axis only if it is a tensor (axis {self.axis!r}): declare "
                                "tensor = true for one value per entry of the axis", token=self.axis)
        elif dom.vector:
            raise DomainError(f"domain {dom.name!r} needs an axis: declare axis = \"NAME\"", token=dom.name)
        if not isinstance(self.learnable, bool):
            raise SpecError(f"learnable must be true or false, got {self.learnable!r}", token="learnable")
        if self.learnable and self.role != "param":
            raise RoleError(f"only a param can be learnable, not an {self.role} (an input is always differentiated)",
                            token="learnable")
        if not isinstance(self.tensor, bool):
            raise SpecError(f"tensor must be true or false, got {self.tensor!r}", token="tensor")
        if self.tensor and self.role != "param":
            raise RoleError(f"only a param is declared tensor, not an {self.role} (arrays are tensors already)",
                            token="tensor")
        if self.tensor and self.learnable:
            raise RoleError("a learnable param is a scalar: declare it learnable or tensor, not both "
                            "(a tensor param is data, such as a weight per element)", token="tensor")
        if self.dim is not None:
            if isinstance(self.dim, bool) or not isinstance(self.dim, int) or not 0 <= self.dim <= 8:
                raise SpecError(f"dim must be an integer from 0 to 8 (the axis's dimension), got {self.dim!r}",
                                token="dim")
            if self.axis is None or self.role == "param":
                raise SpecError("dim places an array's axis: declare it on an input or target with an axis",
                                token="dim")
        if not isinstance(self.broadcast, bool):
            raise SpecError(f"broadcast must be true or false, got {self.broadcast!r}", token="broadcast")
        if self.broadcast and (self.role == "param" or self.axis is not None):
            raise SpecError("broadcast belongs to an elementwise input or target (one value for a row of the batch, "
                            f"as torch's GaussianNLLLoss takes var), not to a {'param' if self.role == 'param' else 'vector'}",
                            token="broadcast")
        if not isinstance(self.validate, bool):
            raise SpecError(f"validate must be true or false, got {self.validate!r}", token="validate")
        if self.validate and self.role == "param":
            raise SpecError("validate on a symbol belongs to an input or target (checked in every call); a param "
                            "given as a number is checked whenever the module takes it", token="validate")
        for key in SAMPLE_KEYS:
            name = getattr(self, key)
            if name is None:
                continue
            if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
                raise SpecError(f"{key} must name a param, got {name!r}", token=key)
            if dom.name != "onehot" or self.role != "target":
                raise SpecError(f"{key} belongs to a one-hot target (it acts on class indices), not to an "
                                f"{self.role} of domain {dom.name!r}", token=key)
        if self.role == "param":
            if self.default is None:
                raise SpecError("a param needs a default value", token="default")
            if isinstance(self.default, bool) or not isinstance(self.default, (int, float)):
                raise SpecError(f"default {self.default!r} is not a number", token=repr(self.default))
            value = finite_number(self.default, "default")
            if not dom.contains(value):
                raise DomainError(f"default {value!r} is outside the domain {dom.name!r}", token=repr(value))
            object.__setattr__(self, "default", value)
        elif self.default is not None:
            raise RoleError(f"only a param takes a default, not an {self.role}", token="default")

    @property
    def samples(self) -> dict[str, str]:
        """The params that decide which samples count and how they weigh in the mean, by key
        (:data:`SAMPLE_KEYS`): a one-hot target's ``ignore_index`` and ``mean_weight``, where declared."""
        return {key: getattr(self, key) for key in SAMPLE_KEYS if getattr(self, key) is not None}

    @property
    def differentiable(self) -> bool:
        """Whether the loss can be differentiated in it: an input, a learnable param, or a target of a continuous
        domain, which the Torch module differentiates when it requires grad. A one-hot target counts: its rows may be
        class probabilities (torch's CrossEntropyLoss takes them, and differentiates them for a teacher that
        learns through soft labels); class indices are integers, which never require grad. Binary and sign
        targets are labels: no gradient."""
        return (self.role == "input" or self.learnable
                or (self.role == "target" and (self.domain.values is None or self.domain.name == "onehot")))

    @property
    def per_element(self) -> bool:
        """Whether it may hold one value per element: an array (input, target), or a param declared ``tensor``."""
        return self.role != "param" or self.tensor

    def to_toml(self) -> str:
        parts = [f"role = {_toml_value(self.role)}"]
        if self.default is not None:
            parts.append(f"default = {_toml_value(self.default)}")
        if self.domain.name != "real":
            parts.append(f"domain = {_toml_value(self.domain.spec_text())}")
        if self.axis is not None:
            parts.append(f"axis = {_toml_value(self.axis)}")
        if self.learnable:
            parts.append("learnable = true")
        if self.tensor:
            parts.append("tensor = true")
        if self.dim is not None:
            parts.append(f"dim = {self.dim}")
        if self.broadcast:
            parts.append("broadcast = true")
        if self.validate:
            parts.append("validate = true")
        for key in SAMPLE_KEYS:
            if getattr(self, key) is not None:
                parts.append(f"{key} = {_toml_value(getattr(self, key))}")
        return "{ " + ", ".join(parts) + " }"


_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")  # used with fullmatch: "$" would let a trailing newline in


def _as_var(name: str, value: object) -> Var:
    if isinstance(value, Var):
        return value
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {f.name for f in fields(Var)})
        if unknown:
            raise SpecError(f"symbol {name!r}: unknown key {unknown[0]!r}", token=unknown[0])
        if "role" not in value:
            raise RoleError(f"symbol {name!r} has no role (input, target or param)", token=name)
        try:
            return Var(**value)
        except LossforgeError as exc:
            raise type(exc)(f"symbol {name!r}: {exc}", token=exc.token) from None
    raise SpecError(f"symbol {name!r}: expected Var(...) or a table, got {type(value).__name__}", token=name)


def _storable(field_name: str, text: str) -> None:
    """Refuse text no file can hold: a lone surrogate cannot be encoded (UTF-8, TOML) at all."""
    bad = next((ch for ch in text if 0xD800 <= ord(ch) <= 0xDFFF), None)
    if bad is not None:
        raise SpecError(f"{field_name} holds a lone surrogate U+{ord(bad):04X}, which no UTF-8 file or TOML "
                        "spec can store: remove it (it is usually a decoding error upstream)",
                        token=f"\\u{ord(bad):04x}")


@dataclass(frozen=True, eq=False)
class LossSpec:
    """A loss: an expression over declared symbols, and how it is reduced.

    ``expr`` is spec-language text or a SymPy expression over symbols named as
    in ``symbols``. ``reduction`` is how generated code reduces the per-sample
    loss: ``"mean"`` (default), ``"sum"``, ``"none"`` or ``"batchmean"`` (the sum divided by the batch's first
    dimension, torch's KLDivLoss reduction), or None for a combined spec whose terms each reduce as its
    ``term_reductions`` entry says (``lf.combine`` of terms that reduce differently). ``accept`` maps a
    hazard kind to the reason it is carried on purpose. ``validate`` is the
    default of the generated code's ``validate`` flag (check every array and
    param against its declared domain at run time; on for the built-ins whose
    torch counterpart checks, such as ``bce``). The remaining text fields
    document the loss (the built-in library fills them in).
    """

    name: str
    expr: str | sympy.Expr
    symbols: Mapping[str, Var]
    reduction: str | None = "mean"
    description: str = ""
    accept: Mapping[str, str] = field(default_factory=dict)
    summary: str = ""
    formula: str = ""
    reference: str = ""
    stable_form: str = ""
    #: For a combined loss (``lf.combine``): term name -> (weight, term expression
    #: text). ``expr`` then equals the weighted sum of the terms.
    terms: Mapping[str, tuple[float, str]] = field(default_factory=dict)
    #: For a combined spec of ``reduction`` None: term name -> the reduction of that term alone ("mean", "sum"
    #: or "batchmean"), so that the value is ``sum_k weight_k * reduce_k(term_k)``. Empty otherwise: every term
    #: reduces as the call says.
    term_reductions: Mapping[str, str] = field(default_factory=dict)
    validate: bool = False
    #: The generated Torch module's class name (``[torch] class``), and the names its constructor takes
    #: positionally, in order (``[torch] args``): params, ``reduction`` and torch's deprecated
    #: ``size_average`` and ``reduce``; the other params are keyword-only. Empty class: the name from
    #: the spec's name; None: ``(reduction, *params)``.
    torch_class: str = ""
    torch_args: tuple[str, ...] | None = None
    #: The parsed expression over lossforge's own symbols (set in __post_init__).
    sympy: sympy.Expr = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name):
            raise SpecError(f"spec name {self.name!r} is not a plain identifier", token=str(self.name))
        if self.reduction is not None and self.reduction not in REDUCTIONS:
            raise SpecError(
                f"unknown reduction {self.reduction!r} (expected one of {', '.join(REDUCTIONS)})",
                token=str(self.reduction),
            )
        if not isinstance(self.validate, bool):
            raise SpecError(f"validate must be true or false, got {self.validate!r}", token="validate")
        for key in TEXT_FIELDS:
            if not isinstance(getattr(self, key), str):
                raise SpecError(f"{key} must be a string", token=key)
            _storable(key, getattr(self, key))
        if not isinstance(self.symbols, Mapping) or not self.symbols:
            raise SpecError("a spec needs a [symbols] table with at least one input", token="symbols")
        symbols = FrozenMap((_expr.check_symbol_name(n), _as_var(n, v)) for n, v in self.symbols.items())
        object.__setattr__(self, "symbols", symbols)
        if not isinstance(self.accept, Mapping):
            raise SpecError("accept must map a hazard kind to a reason", token="accept")
        for kind, reason in self.accept.items():
            if not isinstance(reason, str) or not reason.strip():
                raise SpecError(f"[accept] {kind!r} needs a reason (a non-empty string)", token=str(kind))
            _storable(f"[accept] {kind}", reason)
        object.__setattr__(self, "accept", FrozenMap(self.accept))
        if not self.inputs:
            raise RoleError("no symbol has role 'input': nothing to differentiate", token="input")
        self._check_axes()
        object.__setattr__(self, "sympy", self._parse())
        object.__setattr__(self, "terms", self._check_terms())
        object.__setattr__(self, "term_reductions", self._check_term_reductions())
        object.__setattr__(self, "torch_args", self._check_torch())

    def _check_torch(self) -> tuple[str, ...] | None:
        """Validate ``torch_class`` and ``torch_args``: a public class name, args that name a constructor argument."""
        if not isinstance(self.torch_class, str) or (self.torch_class and (
                not _NAME_RE.fullmatch(self.torch_class) or keyword.iskeyword(self.torch_class))):
            raise SpecError(f"[torch] class {self.torch_class!r} is not a public Python class name (such as "
                            "'MSELoss')", token=str(self.torch_class))
        if self.torch_args is None:
            return None
        if isinstance(self.torch_args, str) or not isinstance(self.torch_args, (tuple, list)):
            raise SpecError("[torch] args must be a list of argument names", token="args")
        known = (*TORCH_ARGS, *(n for n in self.params if n not in TORCH_ARGS))  # a param named reduction: keyword
        seen = set()
        for name in self.torch_args:
            if name not in known:
                raise SpecError(f"[torch] args: {name!r} is neither a param of the spec nor one of "
                                f"{', '.join(TORCH_ARGS)} (known: {', '.join(known)})", token=str(name))
            if name in seen:
                raise SpecError(f"[torch] args: {name!r} is listed twice", token=name)
            seen.add(name)
        if ("size_average" in seen) != ("reduce" in seen):
            raise SpecError("[torch] args: torch's deprecated size_average and reduce come together", token="reduce")
        return tuple(self.torch_args)

    def _check_axes(self) -> None:
        """Cross-symbol rules: one ``dim`` per axis, tensor params on an array's axis, and ``ignore_index`` /
        ``mean_weight`` naming a fitting param (on one target only)."""
        dims: dict[str, tuple[str, int | None]] = {}
        for name in self.arrays:
            var = self.symbols[name]
            if var.axis is None:
                continue
            seen = dims.setdefault(var.axis, (name, var.dim))
            if seen[1] != var.dim:
                raise SpecError(f"{name!r} declares dim {var.dim!r} for axis {var.axis!r} but {seen[0]!r} declares "
                                f"{seen[1]!r}: every array on an axis has it at one dimension", token=name)
        for name in self.params:
            axis = self.symbols[name].axis
            if axis is not None and axis not in dims:
                raise SpecError(f"tensor param {name!r} is on axis {axis!r}, which no input or target has (its "
                                "length comes from theirs)", token=name)
        spread = [n for n in self.arrays if self.symbols[n].broadcast]
        if spread and not self.terms and (spread[0] == self.arrays[0] or dims):  # (a combined spec: its terms')
            raise SpecError(f"{spread[0]!r} declares broadcast: it takes the shape of the first array, "
                            f"{self.arrays[0]!r}, which must not broadcast itself, in a spec without axes",
                            token=spread[0])
        sampled = [n for n in self.arrays if self.symbols[n].samples]
        if len(sampled) > 1:
            raise SpecError(f"{sampled[0]!r} and {sampled[1]!r} both declare ignore_index or mean_weight: one "
                            "target decides which samples count", token=sampled[1])
        for name in sampled:
            var = self.symbols[name]
            if not any(n != name and self.symbols[n].axis == var.axis for n in self.arrays):
                raise SpecError(f"{name!r} declares ignore_index or mean_weight, but no other input or target is on "
                                f"axis {var.axis!r} to give the number of classes", token=name)
            for key, want in (("ignore_index", "a scalar param with an integer default"), ("mean_weight", f"a tensor param on axis {var.axis!r}")):
                other = getattr(var, key)
                if other is None:
                    continue
                decl = self.symbols.get(other)
                fits = decl is not None and decl.role == "param" and not decl.learnable and (
                    not decl.tensor and float(decl.default).is_integer() if key == "ignore_index"
                    else decl.tensor and decl.axis == var.axis)
                if not fits:
                    raise SpecError(f"{name!r}: {key} = {other!r} must name {want}, declared in [symbols]",
                                    token=other)

    # -- construction helpers -------------------------------------------------

    def _parse(self) -> sympy.Expr:
        table = self.sympy_symbols
        axes = {n: v.axis for n, v in self.symbols.items() if v.axis is not None}
        if isinstance(self.expr, str):
            text = self.expr
        elif isinstance(self.expr, sympy.Basic):
            text = self._text_of(self.expr)
        else:
            raise SpecError(f"expr must be a string or a SymPy expression, got {type(self.expr).__name__}", token="expr")
        value = _expr.parse(text, table, axes)
        for node in sorted(value.atoms(_expr.norm), key=sympy.default_sort_key):
            for sym in sorted(node.order.free_symbols, key=str):
                var = self.symbols[sym.name]
                if var.role != "param" or var.learnable or var.tensor:
                    raise SpecError(f"the order of {_expr.to_text(node)} must be numbers and scalar params that are "
                                    f"not learnable, but {sym.name!r} is a{' learnable' if var.learnable else ''} "
                                    f"{'tensor ' if var.tensor else ''}{var.role}: an order is an option, not a "
                                    "per-element value", token=sym.name)
        used = value.free_symbols
        for name, var in self.symbols.items():
            if var.role != "param" and table[name] not in used:
                raise SpecError(f"{var.role} {name!r} is declared but does not appear in the expression", token=name)
        return value

    def _check_terms(self) -> FrozenMap:
        """Validate ``terms``: each a (weight, text) pair whose weighted sum is ``expr``."""
        from . import budget  # the size-bounded comparison of expressions
        if not isinstance(self.terms, Mapping):
            raise SpecError("terms must map a term name to (weight, expr)", token="terms")
        out = []
        total = sympy.S.Zero
        table = self.sympy_symbols
        axes = {n: v.axis for n, v in self.symbols.items() if v.axis is not None}
        for name, value in self.terms.items():
            _expr.check_symbol_name(name)
            if isinstance(value, Mapping):
                value = (value.get("weight"), value.get("expr"))
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                raise SpecError(f"term {name!r} must be (weight, expr)", token=name)
            weight, text = value
            finite_number(weight, f"term {name!r}: weight", token=name)
            if isinstance(text, sympy.Basic):
                text = self._text_of(text)
            if not isinstance(text, str):
                raise SpecError(f"term {name!r}: expr must be text", token=name)
            total += sympy.Float(weight) * _expr.parse(text, table, axes)
            out.append((name, (float(weight), text)))
        # Compared without expanding powers ((x0 + ... + x9)**30 has 211 million terms): SymPy's own
        # canonical form, then products distributed over sums where that stays small.
        if out and not budget.identically_zero(total - self.sympy):
            raise SpecError(
                "expr is not the weighted sum of its terms, as compared without expanding powers, exps or "
                "logs: write expr as the literal weighted sum of the term expressions "
                "(weight1*(term1) + weight2*(term2) + ...)", token="terms")
        return FrozenMap(out)

    def _check_term_reductions(self) -> FrozenMap:
        """Validate ``term_reductions``: one reduction to a number per term exactly when ``reduction`` is None."""
        if not isinstance(self.term_reductions, Mapping):
            raise SpecError("term_reductions must map a term name to its reduction", token="term_reductions")
        own = FrozenMap(self.term_reductions)
        if self.reduction is not None:
            if own:
                raise SpecError(f"the spec reduces every term by {self.reduction!r}, so its terms carry no reduction "
                                "of their own: drop the terms' reductions, or leave the spec's reduction out",
                                token=next(iter(own)))
            return own
        if not self.terms:
            raise SpecError("reduction None (each term its own) belongs to a combined spec: give the spec a "
                            f"reduction ({', '.join(REDUCTIONS)})", token="reduction")
        for term in self.terms:
            if term not in own:
                raise SpecError(f"term {term!r} has no reduction: a spec without a reduction of its own gives "
                                f"each term one ({', '.join(TERM_REDUCTIONS)})", token=term)
        for term, kind in own.items():
            if term not in self.terms:
                raise SpecError(f"a reduction is given for {term!r}, which is not a term (terms: "
                                f"{', '.join(self.terms)})", token=str(term))
            if kind not in TERM_REDUCTIONS:
                raise SpecError(f"term {term!r}: reduction {kind!r} is not one a term can take alone (expected one "
                                f"of {', '.join(TERM_REDUCTIONS)}; \"none\" is per sample, which no reduced term "
                                "adds to)", token=str(kind))
        return FrozenMap((term, own[term]) for term in self.terms)  # in the terms' order

    def _text_of(self, value: sympy.Basic) -> str:
        """Spec-language text of a user's SymPy expression, symbols matched by name."""
        for sym in sorted(value.free_symbols, key=str):
            if str(sym) not in self.symbols:
                raise SpecError(f"undeclared name {str(sym)!r}: declare it in symbols", token=str(sym))
        return _expr.to_text(value)

    # -- views ------------------------------------------------------------------

    @property
    def sympy_symbols(self) -> dict[str, sympy.Symbol]:
        """The SymPy symbol of each declared name, with its domain's assumptions."""
        return {n: sympy.Symbol(n, **v.domain.assumptions()) for n, v in self.symbols.items()}

    def symbol(self, name: str) -> sympy.Symbol:
        if name not in self.symbols:
            raise SpecError(f"unknown symbol {name!r} in spec {self.name!r}", token=name)
        return self.sympy_symbols[name]

    def _role(self, role: str) -> tuple[str, ...]:
        return tuple(n for n, v in self.symbols.items() if v.role == role)

    @property
    def inputs(self) -> tuple[str, ...]:
        return self._role("input")

    @property
    def targets(self) -> tuple[str, ...]:
        return self._role("target")

    @property
    def params(self) -> tuple[str, ...]:
        return self._role("param")

    @property
    def learnable(self) -> tuple[str, ...]:
        """The learnable params, in declaration order."""
        return tuple(n for n, v in self.symbols.items() if v.learnable)

    @property
    def smooth_targets(self) -> tuple[str, ...]:
        """The targets the loss can be differentiated in: of a continuous domain, or one-hot (see ``Var.differentiable``).
        The Torch module gives them a gradient when they require one (a trainable teacher's output)."""
        return tuple(n for n in self.arrays if self.symbols[n].role == "target" and self.symbols[n].differentiable)

    @property
    def class_index_params(self) -> frozenset[str]:
        """The params that hold a class index (a target's ``ignore_index``): integers, as torch takes them."""
        return frozenset(v.ignore_index for v in self.symbols.values() if v.ignore_index)

    @property
    def differentiated(self) -> tuple[str, ...]:
        """What the loss is differentiated in: the inputs, then the learnable params."""
        return (*self.inputs, *self.learnable)

    @property
    def arrays(self) -> tuple[str, ...]:
        """The positional arguments of generated code: inputs and targets in declaration order."""
        return tuple(n for n, v in self.symbols.items() if v.role != "param")

    @property
    def text(self) -> str:
        """The expression in the spec language (the user's own text when given as text)."""
        return self.expr if isinstance(self.expr, str) else _expr.to_text(self.sympy)

    def digest(self) -> str:
        """A short content hash (sha256 of the canonical TOML), stable across runs."""
        return hashlib.sha256(dumps(self).encode()).hexdigest()[:16]

    # -- derived values -------------------------------------------------------

    def gradient(self, wrt: str | Iterable[str] | None = None) -> dict[str, sympy.Expr]:
        """The symbolic gradient: ``{input name: d loss / d input}`` (per element), and for a learnable param
        the per-sample derivative.

        ``wrt`` limits it to some of them; naming a target, a param that is not
        learnable or an unknown symbol raises :class:`RoleError` naming it.
        """
        from .derive import derive  # a later stage, used on request only

        names = [wrt] if isinstance(wrt, str) else (None if wrt is None else list(wrt))
        for name in names or ():
            if name not in self.symbols:
                raise RoleError(f"no symbol {name!r} in spec {self.name!r}", token=name)
            role = self.symbols[name].role
            if name not in self.differentiated:
                raise RoleError(f"{name!r} is a {role}, not an input{' (declare learnable = true)' if role == 'param' else ''}: "
                                "it has no gradient", token=name)
        grads = derive(self).gradients
        return {n: g for n, g in grads.items() if names is None or n in names}

    def rename(self, **mapping: str) -> LossSpec:
        """The same loss with symbols renamed: ``spec.rename(target="box")``."""
        for old, new in mapping.items():
            if old not in self.symbols:
                raise SpecError(f"cannot rename {old!r}: no such symbol in spec {self.name!r}", token=old)
            _expr.check_symbol_name(new)
        new_names = [mapping.get(n, n) for n in self.symbols]
        if len(set(new_names)) != len(new_names):
            dup = next(n for n in new_names if new_names.count(n) > 1)
            raise SpecError(f"renaming would declare {dup!r} twice", token=dup)
        symbols = {mapping.get(n, n): replace(v, **{k: mapping.get(p, p) for k, p in v.samples.items()})
                   for n, v in self.symbols.items()}
        old_syms = self.sympy_symbols
        new_syms = {mapping.get(n, n): sympy.Symbol(mapping.get(n, n), **v.domain.assumptions())
                    for n, v in self.symbols.items()}
        swapped = self.sympy.xreplace({old_syms[n]: new_syms[mapping.get(n, n)] for n in self.symbols})
        args = None if self.torch_args is None else tuple(mapping.get(n, n) for n in self.torch_args)
        return replace(self, expr=_expr.to_text(swapped), symbols=symbols, torch_args=args)

    # -- value semantics --------------------------------------------------------

    def _key(self) -> tuple:
        # The exact text, not only the mathematics: equal expressions written differently are
        # different specs (their generated source, header and docstring differ), so caches keyed
        # by specs never hand one spec's code to the other.
        return (
            self.name,
            self.text,
            self.symbols,
            self.reduction,
            self.accept,
            self.terms,
            self.term_reductions,
            self.validate,
            self.torch_class,
            self.torch_args,
            *(getattr(self, k) for k in TEXT_FIELDS),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LossSpec):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"LossSpec(name={self.name!r}, expr={self.text!r}, reduction={self.reduction!r})"

    def _repr_latex_(self) -> str:
        """The per-sample loss and its gradient for each input, as a notebook shows a spec."""
        lines = [rf"\text{{{_expr.latex_text(self.name)}}} &= {_expr.to_latex(self.sympy)}"]
        for name, grad in self.gradient().items():
            lines.append(rf"\frac{{\partial \ell}}{{\partial {_expr.to_latex(self.sympy_symbols[name])}}} &= "
                         f"{_expr.to_latex(grad)}")
        return "$\\begin{aligned}" + r" \\ ".join(lines) + "\\end{aligned}$"


# --------------------------------------------------------------------------
# TOML
# --------------------------------------------------------------------------

_TOP_KEYS = ("name", "expr", "reduction", "validate", *TEXT_FIELDS, "symbols", "accept", "terms", "torch")


def _toml_str(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif not ch.isprintable():  # controls, C1, bidi overrides, separators: escaped, so no reader acts on them
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_value(value: object) -> str:
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SpecError(f"{value!r} cannot be written to a spec", token=repr(value))
        text = repr(value)
        return text if any(c in text for c in ".e") else text + ".0"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise SpecError(f"{value!r} cannot be written to a spec", token=repr(value))


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_str(key)


def dumps(spec: LossSpec, layout: str | None = None) -> str:
    """The spec as TOML text; ``loads(dumps(spec)) == spec``.

    ``layout`` is the TOML text of a spec this one was derived from (what ``stabilize`` read): its comments,
    blank lines, key order, line endings and inline tables are kept, and only the entries whose meaning
    differs are rewritten, added or removed; ``loads`` reads the result as the same spec as without it.
    """
    if layout is not None:
        return _dumps_into(spec, layout)
    lines = [f"name = {_toml_str(spec.name)}"]
    for key in TEXT_FIELDS[:2]:
        if getattr(spec, key):
            lines.append(f"{key} = {_toml_str(getattr(spec, key))}")
    lines.append(f"expr = {_toml_str(spec.text)}")
    if spec.reduction is not None:  # None: each term's own, written in [terms]
        lines.append(f"reduction = {_toml_str(spec.reduction)}")
    if spec.validate:
        lines.append("validate = true")
    for key in TEXT_FIELDS[2:]:
        if getattr(spec, key):
            lines.append(f"{key} = {_toml_str(getattr(spec, key))}")
    lines += ["", "[symbols]"]
    width = max(len(_toml_key(n)) for n in spec.symbols)
    for name, var in spec.symbols.items():
        lines.append(f"{_toml_key(name).ljust(width)} = {var.to_toml()}")
    if spec.accept:
        lines += ["", "[accept]"]
        for kind, reason in spec.accept.items():
            lines.append(f"{_toml_key(kind)} = {_toml_str(reason)}")
    if spec.torch_class or spec.torch_args is not None:
        lines += ["", "[torch]"]
        if spec.torch_class:
            lines.append(f"class = {_toml_str(spec.torch_class)}")
        if spec.torch_args is not None:
            lines.append(f"args = {_toml_value(list(spec.torch_args))}")
    if spec.terms:
        lines += ["", "[terms]"]
        for term, (weight, text) in spec.terms.items():
            own = f", reduction = {_toml_str(spec.term_reductions[term])}" if spec.term_reductions else ""
            lines.append(f"{_toml_key(term)} = {{ weight = {_toml_value(weight)}, expr = {_toml_str(text)}{own} }}")
    return "\n".join(lines) + "\n"


def _toml_multiline(text: str) -> str:
    """``text`` as a multi-line basic string: its line breaks kept as lines, everything else escaped as
    ``_toml_str`` does (the break after the opening quotes is not part of the value)."""
    body = _toml_str(text)[1:-1].replace("\\n", "\n")
    return '"""\n' + body + '"""'


def _dumps_into(spec: LossSpec, layout: str) -> str:
    """``dumps(spec)`` written over ``layout`` with tomlkit: an entry of ``layout`` that means the same
    as in ``spec`` stays as the user wrote it; the others are ``dumps``'s own text for them."""
    from tomlkit.exceptions import TOMLKitError  # the round-trip editor: only where a layout is to be kept

    plain = dumps(spec)
    try:
        text = _edited(plain, layout)
    except (LossforgeError, TOMLKitError, RecursionError, ValueError, KeyError, TypeError):
        return plain  # a layout tomlkit cannot edit (or no readable one): nothing to keep
    if "\r\n" in layout and "\n" not in layout.replace("\r\n", ""):  # a CRLF file stays CRLF throughout
        text = re.sub(r"(?<!\r)\n", "\r\n", text)
    try:
        same = loads(text, source="<stabilized>") == loads(plain)
    except LossforgeError:
        same = False
    return text if same else plain  # never a file that reads differently from dumps's own


def _edited(plain: str, layout: str) -> str:
    """``layout`` with the entries that differ from ``plain`` (``dumps(spec)``) replaced by ``plain``'s."""
    import tomlkit

    before = loads(layout, source="<layout>")
    doc = tomlkit.parse(layout)
    old = tomllib.loads(dumps(before))  # both sides in dumps's normal form, so a difference is one of meaning
    new = tomllib.loads(plain)
    fresh = tomlkit.parse(plain)
    for key in [k for k in old if k not in new]:
        del doc[key]
    for key, value in new.items():
        if key in old and old[key] == value:
            continue
        if isinstance(value, dict) and isinstance(old.get(key), dict) and isinstance(doc.get(key), dict):
            table = doc[key]
            for sub in [k for k in old[key] if k not in value]:
                del table[sub]
            for sub, item in value.items():
                if old[key].get(sub) != item:
                    table[sub] = fresh[key][sub]
        elif key == "expr" and isinstance(value, str) and _is_multiline(doc):
            doc[key] = tomlkit.parse(f"x = {_toml_multiline(value)}")["x"]
        elif key in doc:
            doc[key] = fresh[key]
        elif isinstance(value, dict):  # a new table: after a blank line, as dumps writes one
            text = doc.as_string()
            if text and not text.endswith("\n"):
                doc.add(tomlkit.nl())
            doc.add(tomlkit.nl())
            doc.add(key, fresh[key])
        else:  # a new top-level key: tomlkit places it before the first table
            doc[key] = fresh[key]
    return doc.as_string()


def _is_multiline(doc: Any) -> bool:
    """Whether the layout ``doc`` writes its expr as a multi-line string."""
    from tomlkit.items import String

    item = doc.get("expr")
    return isinstance(item, String) and item.type.is_multiline()


def from_dict(data: Mapping[str, Any], source: str = "<spec>") -> LossSpec:
    """Build a spec from a parsed TOML table, naming any unknown or missing key."""
    unknown = [k for k in data if k not in _TOP_KEYS]
    if unknown:
        raise SpecError(f"{source}: unknown key {unknown[0]!r} (known: {', '.join(_TOP_KEYS)})", token=unknown[0])
    for key in ("name", "expr", "symbols"):
        if key not in data:
            raise SpecError(f"{source}: missing key {key!r}", token=key)
    symbols = data["symbols"]
    if not isinstance(symbols, Mapping):
        raise SpecError(f"{source}: [symbols] must be a table", token="symbols")
    accept = data.get("accept", {})
    if not isinstance(accept, Mapping):
        raise SpecError(f"{source}: [accept] must be a table", token="accept")
    if not isinstance(data["expr"], str):
        raise SpecError(f"{source}: expr must be a string", token="expr")
    terms = data.get("terms", {})
    if not isinstance(terms, Mapping):
        raise SpecError(f"{source}: [terms] must be a table", token="terms")
    for term, value in terms.items():
        if not isinstance(value, Mapping) or not {"weight", "expr"} <= set(value) <= {"weight", "expr", "reduction"}:
            raise SpecError(f"{source}: term {term!r} must be {{ weight = ..., expr = ... }}, with reduction = ... "
                            "where each term reduces on its own", token=term)
    own = {term: value["reduction"] for term, value in terms.items() if "reduction" in value}
    kwargs = {k: data[k] for k in ("name", "expr", "reduction", "validate", *TEXT_FIELDS) if k in data}
    if own:  # each term reduces on its own: the spec has no reduction
        if "reduction" in data:
            raise SpecError(f"{source}: the terms give their own reductions, so the spec takes no reduction key: "
                            "remove it (or the terms' reductions, for one reduction of all)", token="reduction")
        kwargs["reduction"] = None
    terms = {term: {"weight": value["weight"], "expr": value["expr"]} for term, value in terms.items()}
    torch_table = data.get("torch", {})
    if not isinstance(torch_table, Mapping) or set(torch_table) - {"class", "args"}:
        extra = sorted(set(torch_table) - {"class", "args"}) if isinstance(torch_table, Mapping) else ["torch"]
        raise SpecError(f"{source}: [torch] takes class and args only, got {extra[0]!r}", token=str(extra[0]))
    if "class" in torch_table:
        kwargs["torch_class"] = torch_table["class"]
    if "args" in torch_table:
        kwargs["torch_args"] = torch_table["args"]
    return LossSpec(symbols={n: _as_var(n, v) for n, v in symbols.items()}, accept=accept, terms=terms,
                    term_reductions=own, **kwargs)


def loads(text: str, source: str = "<string>") -> LossSpec:
    """Read a spec from TOML text."""
    if not isinstance(text, str):
        raise SpecError(f"{source}: expected TOML text, got {type(text).__name__}", token=source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{source}: malformed TOML: {exc}", token=source) from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise SpecError(f"{source}: malformed TOML: arrays or inline tables nested too deeply", token=source) from None
    return from_dict(data, source)


def load(path: str | Path) -> LossSpec:
    """Read a spec from a TOML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"no such spec file: {str(path)!r}", token=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read spec file {str(path)!r}: {exc}", token=str(path)) from None
    return loads(text, source=str(path))


__all__ = ["Var", "LossSpec", "FrozenMap", "load", "loads", "dumps", "from_dict", "CATALOGUE"]
