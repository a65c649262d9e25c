"""Generated NumPy ``loss_and_grad`` against SymPy's lambdify and hand-written NumPy, float64.

For focal, bce_logits and huber at N = 2^21 elements: the generated module's
``loss_and_grad(pred, target)`` (the mean and its gradient) against (a)
``sympy.lambdify(..., "numpy", cse=True)`` of the naive textbook formula and its
``sympy.diff`` gradient, then the mean and gradient / N, and (b) vectorised,
numerically stable NumPy as an expert writes it. The built-ins' default params
throughout. Values and gradients are checked to agree (rtol 1e-7, see
``_timing.disagreement``) before timing; times are alternated medians.
"""

from __future__ import annotations

import ast

import _timing as T
import numpy as np
import sympy

import lossforge as lf

N = 2**21
RTOL = 1e-7
LOSSES = ("focal", "bce_logits", "huber")


def _params(name: str) -> dict[str, float]:
    spec = lf.builtin(name)
    return {n: spec.symbols[n].default for n in spec.params}


def naive_expr(name: str, x: sympy.Symbol, t: sympy.Symbol) -> sympy.Expr:
    """The per-element loss as a textbook writes it (no stable rewriting)."""
    p = _params(name)
    if name == "focal":
        alpha, gamma = sympy.Float(p["alpha"]), sympy.Float(p["gamma"])
        prob = 1 / (1 + sympy.exp(-x))
        bce = -(t * sympy.log(prob) + (1 - t) * sympy.log(1 - prob))
        p_t = prob * t + (1 - prob) * (1 - t)
        return (alpha * t + (1 - alpha) * (1 - t)) * (1 - p_t) ** gamma * bce
    if name == "bce_logits":
        assert p["pos_weight"] == 1.0
        return t * sympy.log(1 + sympy.exp(-x)) + (1 - t) * sympy.log(1 + sympy.exp(x))
    if name == "huber":
        r, delta = x - t, sympy.Float(p["delta"])
        return sympy.Piecewise((r**2 / 2, sympy.Abs(r) < delta), (delta * (sympy.Abs(r) - delta / 2), True))
    raise KeyError(name)


def lambdified(name: str):
    """``f(x, t) -> (mean, gradient)`` from sympy.lambdify of the naive formula and its derivative."""
    x, t = sympy.symbols("x t", real=True)
    loss = naive_expr(name, x, t)
    f = sympy.lambdify((x, t), [loss, sympy.diff(loss, x)], "numpy", cse=True)

    def run(xv, tv):
        value, grad = f(xv, tv)
        return value.mean(), grad / xv.size

    return run


def _sigmoids(x):
    """sigmoid(x) and sigmoid(-x), each without cancellation, and exp(-|x|)."""
    e = np.exp(-np.abs(x))
    inv = 1 / (1 + e)
    pos = x >= 0
    return np.where(pos, inv, e * inv), np.where(pos, e * inv, inv), e


def expert_bce_logits(x, t):
    s, _, e = _sigmoids(x)
    value = np.maximum(x, 0) - x * t + np.log1p(e)
    return value.mean(), (s - t) / x.size


def expert_focal(x, t, alpha=0.25, gamma=2.0):
    s, s_neg, e = _sigmoids(x)
    ce = np.maximum(x, 0) - x * t + np.log1p(e)
    q = t * s_neg + (1 - t) * s  # 1 - p_t
    w = alpha * t + (1 - alpha) * (1 - t)
    q_gamma = q**gamma
    grad = w * (gamma * q ** (gamma - 1) * (1 - 2 * t) * s * s_neg * ce + q_gamma * (s - t))
    return (w * q_gamma * ce).mean(), grad / x.size


def expert_huber(x, t, delta=1.0):
    r = x - t
    a = np.abs(r)
    value = np.where(a < delta, 0.5 * r * r, delta * (a - 0.5 * delta))
    return value.mean(), np.clip(r, -delta, delta) / x.size


EXPERTS = {"focal": expert_focal, "bce_logits": expert_bce_logits, "huber": expert_huber}


def inputs(name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if name == "huber":
        return rng.standard_normal(N), rng.standard_normal(N)
    return rng.standard_normal(N) * 4, (rng.random(N) < 0.5).astype(np.float64)


def signature(name: str) -> str:
    """The generated ``def loss_and_grad(...)``'s parameters, checked to take the built-in's arrays first."""
    spec = lf.builtin(name)
    tree = ast.parse(lf.generate(spec, "numpy"))
    found = next((f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "loss_and_grad"), None)
    names = [a.arg for a in found.args.args] if found is not None else []
    if names[: len(spec.arrays)] != list(spec.arrays):
        T.fail(f"{name}: the generated NumPy module has no loss_and_grad({', '.join(spec.arrays)}, ...)")
    keywords = [a.arg for a in found.args.kwonlyargs]
    return f"loss_and_grad({', '.join(names + (['*', *keywords] if keywords else []))})"


def numpy_speed(reps: int) -> None:
    """Section 4."""
    rows, notes, failures = [], [], []
    for name in LOSSES:
        x, t = inputs(name)
        module = lf.compile(lf.builtin(name), "numpy")
        notes.append(f"{name}: {signature(name)}")
        fns = _functions(name, module, x, t)
        got = fns["lossforge"]()
        for ref in ("lambdify", "expert"):
            want = fns[ref]()
            failures += T.mismatches(f"{name} N={N} lossforge vs {ref}", got, want, RTOL)
        if failures:
            continue
        with T.OtherLoad() as load:
            res = T.alternated(fns, reps)
        for ref, label in (("lambdify", "sympy.lambdify (naive, cse=True)"), ("expert", "hand-written NumPy")):
            rows.append([name, "loss_and_grad", label, T.seconds(res["lossforge"].median),
                         T.seconds(res[ref].median), T.ratio(res["lossforge"].median, res[ref].median),
                         f"{load.share:.0%}"])
    if failures:
        T.fail("lossforge disagrees with a NumPy reference:\n" + "\n".join(failures))
    notes[:0] = [f"float64, N = 2^{N.bit_length() - 1}, {reps} repetitions each; the value is the mean, "
                 "the gradient that of the mean", T.OTHERS_NOTE]
    T.table("4. NumPy loss and gradient, float64 (median per call)",
            ["loss", "lossforge", "reference", "lossforge", "reference", "lf/ref", "others"], rows, "lllrrrr", notes)


def _functions(name: str, module, x, t) -> dict:
    """The three implementations of ``name`` on ``(x, t)``, each returning (mean, gradient), lossforge first."""
    naive, expert = lambdified(name), EXPERTS[name]

    def lossforge():
        value, (grad,) = module.loss_and_grad(x, t)
        return value, grad

    return {"lossforge": lossforge, "lambdify": lambda: naive(x, t), "expert": lambda: expert(x, t)}
