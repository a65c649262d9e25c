"""Composition: ``total = a*loss1 + b*loss2`` as one spec.

:func:`combine` is a spec-to-spec function (it sits beside ``stabilize`` in
the pipeline): the result is an ordinary :class:`LossSpec` whose ``terms``
table remembers each weighted term, so generated code can return every
term's value for logging.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

import sympy

from . import language as _expr
from .errors import SpecError
from .language.parser import _number
from .spec import TERM_REDUCTIONS, LossSpec, Var, finite_number


def combine(
    terms: Mapping[str, tuple[LossSpec, float]],
    name: str = "combined",
    reduction: str | None = None,
) -> LossSpec:
    """The weighted sum of specs: ``combine({"cls": (spec1, 1.0), "reg": (spec2, 0.5)})``.

    Its value is the weighted sum of each term's reduced loss. Symbols of the
    same name are shared (they must be declared identically); keep them apart
    with ``spec.rename(old="new")``. The positional arguments are the terms'
    inputs and targets in term order, shared ones once; params follow.

    Each term keeps its own reduction (``reduction=None``): where all terms reduce
    alike, the combined spec has that reduction and the generated code reduces
    every term as its call says (``reduction="mean"`` by default); where they
    differ (a mean data term beside a summed penalty), the combined spec's
    reduction is None and ``term_reductions`` holds each term's, so that its value
    is ``sum_k weight_k * reduce_k(term_k)``: the generated code's ``reduction``
    then defaults to None (each term its own), an explicit ``"mean"``, ``"sum"`` or
    ``"batchmean"`` reduces every term so, and ``"none"`` returns the per-sample
    weighted sum of the terms, unreduced (the formula itself). A term reduced by
    ``"none"`` adds to no reduced term. An explicit ``reduction`` here reduces
    every term by it.
    """
    if not isinstance(terms, Mapping) or not terms:
        raise SpecError("combine() needs a mapping of term name -> (spec, weight)", token="terms")
    arrays: dict[str, Var] = {}
    params: dict[str, Var] = {}
    owner: dict[str, str] = {}
    accept: dict[str, str] = {}
    reductions: dict[str, str] = {}
    weighted: list[tuple[str, float, LossSpec]] = []
    for term, value in terms.items():
        _expr.check_symbol_name(term)
        if not isinstance(value, tuple) or len(value) != 2 or not isinstance(value[0], LossSpec):
            raise SpecError(f"term {term!r} must be (LossSpec, weight)", token=term)
        spec, weight = value
        finite_number(weight, f"term {term!r}: weight", token=term)
        if spec.terms:
            raise SpecError(f"term {term!r} is itself combined: combine its terms directly", token=term)
        for sym, var in spec.symbols.items():
            table = params if var.role == "param" else arrays
            if sym in arrays or sym in params:
                seen = arrays.get(sym) or params.get(sym)
                if seen != var:
                    raise SpecError(
                        f"symbol {sym!r} is declared differently in terms {owner[sym]!r} and {term!r}: "
                        f"keep them apart with spec.rename({sym}=...)",
                        token=sym,
                    )
                continue
            table[sym] = var
            owner[sym] = term
        for kind, reason in spec.accept.items():
            accept[kind] = f"{accept[kind]}; {term}: {reason}" if kind in accept else f"{term}: {reason}"
        reductions[term] = spec.reduction
        weighted.append((term, float(weight), spec))
    own: dict[str, str] = {}
    if reduction is None:
        kinds = set(reductions.values())
        if len(kinds) == 1:
            reduction = kinds.pop()
        else:  # each term reduces on its own
            apart = next((t for t, r in reductions.items() if r not in TERM_REDUCTIONS), None)
            if apart is not None:
                other = next(t for t, r in reductions.items() if r != reductions[apart])
                raise SpecError(
                    f"term {apart!r} reduces by {reductions[apart]!r} (one loss per sample), which cannot be added "
                    f"to term {other!r} reduced by {reductions[other]!r}: pass reduction= to combine() for one "
                    "reduction of all terms",
                    token=apart,
                )
            own = reductions
    total = sympy.Add(*(_number(w, repr(w)) * s.sympy for _, w, s in weighted))
    description = " + ".join(f"{w!r}*{t}({s.name}{', reduced by ' + own[t] if own else ''})" for t, w, s in weighted)
    return LossSpec(
        name=name,
        expr=_expr.to_text(total),
        symbols={**arrays, **params},
        reduction=reduction,
        # the first docstring line within ruff's 88 columns (4 in, after the quotes), the rest wrapped as well
        description="\n".join(textwrap.wrap(f"Weighted sum of losses: {description}.", 81, break_long_words=False)),
        accept=accept,
        terms={t: (w, s.text if isinstance(s.expr, str) else _expr.to_text(s.sympy)) for t, w, s in weighted},
        term_reductions=own,
        validate=any(s.validate for _, _, s in weighted),  # a term whose arrays are checked keeps its checks
    )
