"""Stabilizing rewrites: a loss rewritten into forms that stay finite.

A safe rewrite is a value, ``(name, query, replacement)``, kept in one
ordered tuple like SymPy's ``optims_numpy``: it preserves the value exactly
(``log(1 + x) -> log1p(x)``) and is applied wherever its pattern appears.
Then the hazard rules' own fixes are applied where ``lf.check`` reports a
hazard: the safe ones always (the two-term log-sum-exp), the unsafe ones,
which change values near the hazard (a clamp or an eps), only when asked.
So stabilize and check never disagree.

Recognising a pattern never simplifies: ``x*log(x)`` is matched when the
cofactor of the log *is* its argument, after SymPy's automatic
canonicalisation (and products distributed, within the expansion budget).
``simplify`` on a product that holds the rest of the loss costs time
exponential in the nesting of ``where``. The whole stage runs under
:mod:`lossforge.budget`.
"""

from __future__ import annotations

from dataclasses import replace

import sympy
from sympy.codegen.cfunctions import expm1, log1p

from .. import budget
from .. import language as E
from ..errors import AnalysisError, SpecError
from ..spec import LossSpec
from .hazards import (
    check,
    exp_minus_one,
    one_plus,
    sigmoid_factors,
    sigmoid_form,
    softmax_form,
    sum_of_exps,
)


def _is_log_of(pred):
    return lambda n: isinstance(n, sympy.log) and pred(n.args[0])


def _log_of_cofactor(n: sympy.Basic) -> sympy.log | None:
    """The factor ``log(u)`` of the product ``n`` whose cofactor is ``u`` (``n == u*log(u)``), if any."""
    if not n.is_Mul:
        return None
    for lg in (a for a in n.args if isinstance(a, sympy.log)):
        budget.tick()
        if budget.identically_zero(n / lg - lg.args[0]):
            return lg
    return None


def _x_log_x(n: sympy.Basic) -> bool:
    return _log_of_cofactor(n) is not None


def _xlogy(n: sympy.Mul) -> sympy.Expr:
    lg = _log_of_cofactor(n)
    return E.xlogy(lg.args[0], lg.args[0])


def _softplus_of(u: sympy.Expr) -> sympy.Expr | None:
    x = one_plus(u)
    return x.args[0] if isinstance(x, sympy.exp) else None


def _log_cosh(x: sympy.Expr) -> sympy.Expr:
    return sympy.Abs(x) + log1p(sympy.exp(-2 * sympy.Abs(x))) - sympy.log(2)


#: The safe rewrites, in the order they are tried: each (name, query, replacement).
SAFE_REWRITES = (
    ("log(sigmoid(x)) -> -softplus(-x)", _is_log_of(lambda u: sigmoid_form(u) is not None),
     lambda n: -E.softplus(-sigmoid_form(n.args[0]))),
    ("log(1 + exp(x)) -> softplus(x)", _is_log_of(lambda u: _softplus_of(u) is not None),
     lambda n: E.softplus(_softplus_of(n.args[0]))),
    ("log(exp(w)/sum(exp(z))) -> w - logsumexp(z)", _is_log_of(lambda u: softmax_form(u) is not None),
     lambda n: softmax_form(n.args[0])[0] - E.logsumexp(softmax_form(n.args[0])[1])),
    ("log(sum(exp(z))) -> logsumexp(z)", _is_log_of(lambda u: sum_of_exps(u) is not None),
     lambda n: E.logsumexp(sum_of_exps(n.args[0]))),
    ("log(cosh(x)) -> |x| + log1p(exp(-2|x|)) - log(2)", _is_log_of(lambda u: isinstance(u, sympy.cosh)),
     lambda n: _log_cosh(n.args[0].args[0])),
    ("log(1 + x) -> log1p(x)", _is_log_of(lambda u: one_plus(u) is not None), lambda n: log1p(one_plus(n.args[0]))),
    ("exp(x) - 1 -> expm1(x)", lambda n: n.is_Add and exp_minus_one(n) is not None,
     lambda n: exp_minus_one(n)[1] * expm1(exp_minus_one(n)[0])),
    ("exp(x)/(1 + exp(x)) -> sigmoid(x)", lambda n: sigmoid_factors(n) is not None,
     lambda n: sigmoid_factors(n)[1] * E.sigmoid(sigmoid_factors(n)[0])),
    ("1/(1 + exp(-x)) -> sigmoid(x)",
     lambda n: (n.is_Pow or n.is_Mul) and not isinstance(n, E.sigmoid) and sigmoid_form(n) is not None,
     lambda n: E.sigmoid(sigmoid_form(n))),
    ("x*log(x) -> xlogy(x, x)", _x_log_x, _xlogy),
)


def _rewritten(spec: LossSpec, expr: sympy.Expr) -> LossSpec:
    """``spec`` with ``expr``; an input that the rewrite made irrelevant is named, not a bare SpecError."""
    try:
        return replace(spec, expr=E.to_text(expr))
    except SpecError as exc:
        gone = sorted(n for n in spec.symbols if n not in {s.name for s in expr.free_symbols})
        if not gone:
            raise
        raise AnalysisError(
            f"stabilized, the loss no longer depends on {', '.join(map(repr, gone))}: it simplifies to {expr}, "
            "so that symbol reached the loss only through the hazard", token=gone[0]) from exc


def stabilize(spec: LossSpec, unsafe: bool = False) -> LossSpec:
    """``spec`` with its hazards rewritten: safe (exact) rewrites, and unsafe ones if asked.

    The result is a new spec with the same symbols; its ``expr`` is the
    rewritten expression. Safe rewrites keep it symbolically equal to the
    original; unsafe ones (clamps, eps) change values only near the hazard.
    """
    if not isinstance(spec, LossSpec):
        raise AnalysisError(f"stabilize() needs a LossSpec, got {type(spec).__name__}", token=type(spec).__name__)
    with budget.deadline("stabilize"):
        expr = spec.sympy
        budget.check("stabilize", expr)
        for _name, query, rewrite in SAFE_REWRITES:
            expr = expr.replace(query, rewrite)
            budget.check("stabilize", expr)
        result = spec if expr == spec.sympy else _rewritten(spec, expr)
        for _ in range(8):  # each pass fixes what check still reports in the loss (safe fixes, unsafe if asked)
            fixes = {h.expr: h.fix.replacement for h in check(result).hazards
                     if h.where == "loss" and h.fix is not None and not h.accepted and (unsafe or h.fix.safe)}
            if not fixes:
                break
            expr = result.sympy.xreplace(fixes)
            budget.check("stabilize", expr)
            if expr == result.sympy:
                break
            result = _rewritten(result, expr)
    return result
