"""Properties of a loss, derived from its expression: convexity, gradient bound, smoothness, zero at target.

Each property is decided from the loss itself, never looked up: numerical
evidence on the expression (written out element by element and evaluated in
float64, or in 30-digit mpmath where magnitudes are large) decides it, and
``evidence`` says how. A property is False on a counterexample, True when the
evidence holds on every probe, and None where it does not apply.

* ``convex``: midpoint convexity, f((u + v)/2) <= (f(u) + f(v))/2, on random
  pairs of input points (all inputs jointly) at fixed targets and params,
  including pairs that straddle the target (where kinks sit);
* ``bounded_gradient``: the largest gradient magnitude on inputs of size 1e1,
  1e3 and 1e5 (30 digits, so nothing overflows): a gradient that keeps
  growing with the input is unbounded ("sensitive to outliers");
* ``smoothness``: the loss and its gradient scanned along random lines:
  "smooth" (both continuous), "kinked" (the gradient jumps: abs, hinge) or
  "discontinuous" (the loss itself jumps: a step);
* for both, the break of every abs, max, min, clamp, where, sign and
  heaviside (the place its argument crosses, ``p = eps`` for
  ``clamp(p, eps, 1)``) is solved for an input it is linear in and probed
  directly, since random probes would almost never land within 1e-7 of 0;
* ``zero_at_target``: the loss at input = target is identically 0 (for one
  input and one target over the same axis).

The stage runs under :mod:`lossforge.budget`: the written-out loss is size
checked before it is compiled, a break is solved (``Poly``) only when its
expansion is small, ``simplify`` sees only small expressions, and the time
is checked between probes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import mpmath
import numpy as np
import sympy

from .. import budget, display
from .. import language as E
from ..derive import derive
from ..numeric import at_defaults, compiled, element_symbol, evaluator, expand
from ..spec import FrozenMap, LossSpec

LENGTH = 3  # vector length for axis symbols
PAIRS = 300
LINES = 6
STEPS = 1201
#: The largest tree handed to ``sympy.simplify`` (whose cost grows far faster than its operand).
SIMPLIFY_NODES = 1000


@dataclass(frozen=True)
class Properties:
    """What a loss is like, and the evidence for each answer."""

    convex: bool | None
    bounded_gradient: bool | None
    smoothness: str
    zero_at_target: bool | None
    evidence: FrozenMap = field(default_factory=FrozenMap)

    #: The properties in the order they are shown.
    SHOWN = ("convex", "bounded_gradient", "smoothness", "zero_at_target")

    def __str__(self) -> str:
        return "\n".join(f"{key:<17} {getattr(self, key)!s:<7} {self.evidence.get(key, '')}" for key in self.SHOWN)

    def _repr_html_(self) -> str:
        """The properties and their evidence as a table, for a notebook."""
        rows = [(key, getattr(self, key), self.evidence.get(key, "")) for key in self.SHOWN]
        return display.table("properties", None, ("property", "value", "evidence"), rows)


class _Numpy:
    """The loss and its directional structure in float64, vectorised over points."""

    def __init__(self, spec: LossSpec):
        table = spec.sympy_symbols
        vectors = {table[n] for n, v in spec.symbols.items() if v.axis}
        self.spec = spec
        self.names = list(spec.arrays)
        self.args = []
        for name in self.names:
            sym = table[name]
            self.args += [element_symbol(sym, k) for k in range(LENGTH)] if sym in vectors else [sym]
        # Params stay symbols, passed their defaults at each call: substituting them into the
        # expression could fold it into a complex constant SymPy cannot compare.
        # A param on an axis (a weight per class) is one symbol per entry, each at the default.
        self.params, self.defaults = [], []
        for p in spec.params:
            width = LENGTH if spec.symbols[p].axis else 1
            self.params += [element_symbol(table[p], k) for k in range(width)] if table[p] in vectors else [table[p]]
            self.defaults += [float(spec.symbols[p].default)] * width
        #: The loss written out element by element (lossforge's functions kept).
        self.loss = expand(at_defaults(spec, derive(spec).loss), LENGTH, vectors)[0]
        budget.check_compiled("properties", self.loss)  # lambdify: a compiled node's cost
        self.f = self.function(self.loss)

    def function(self, expr: sympy.Expr):
        """``expr`` as a NumPy function of the columns (params at their defaults)."""
        compiled_expr = compiled([*self.args, *self.params], expr, "numpy")
        return lambda *columns: compiled_expr(*columns, *self.defaults)

    def __call__(self, flat: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            out = self.f(*flat)
        return np.broadcast_to(np.asarray(out, dtype=float), flat.shape[1:])

    def columns(self) -> list[tuple[str, int]]:
        out = []
        for name in self.names:
            width = LENGTH if self.spec.symbols[name].axis else 1
            out += [(name, k) for k in range(width)]
        return out


def _sample(spec: LossSpec, cols, rng, n: int, scale: float = 1.0) -> np.ndarray:
    """Points (columns x n): inputs from their domain (scaled when unbounded), targets likewise."""
    flat = np.empty((len(cols), n))
    for i, (name, _) in enumerate(cols):
        dom = spec.symbols[name].domain
        if dom.vector or dom.values is not None or (np.isfinite(dom.lo) and np.isfinite(dom.hi)):
            flat[i] = dom.sample(rng, (n,), edges=False) if not dom.vector else rng.random(n)
        elif np.isfinite(dom.lo):
            flat[i] = dom.lo + scale * rng.random(n) * 3
        else:
            flat[i] = scale * rng.normal(size=n) * 2
    return flat


def _input_rows(spec: LossSpec, cols) -> np.ndarray:
    return np.array([spec.symbols[name].role == "input" for name, _ in cols])


def _clip_to_domains(spec: LossSpec, cols, flat: np.ndarray) -> np.ndarray:
    out = flat.copy()
    for i, (name, _) in enumerate(cols):
        dom = spec.symbols[name].domain
        lo = dom.lo if np.isfinite(dom.lo) else -np.inf
        hi = dom.hi if np.isfinite(dom.hi) else np.inf
        out[i] = np.clip(out[i], lo, hi)
    return out


#: Where each non-smooth function breaks: the expressions that are 0 at its kink or step.
_BREAKS = {
    sympy.Abs: lambda a: [a[0]],
    E.sign: lambda a: [a[0]],
    E.heaviside: lambda a: [a[0]],
    E.maximum: lambda a: [a[0] - a[1]],
    E.minimum: lambda a: [a[0] - a[1]],
    E.clamp: lambda a: [a[0] - a[1], a[0] - a[2]],
    E.where: lambda a: [r.lhs - r.rhs for r in a[0].atoms(sympy.core.relational.Relational)],
}


def _break_points(spec: LossSpec, f: _Numpy, rng, per_break: int = 4) -> list[tuple[np.ndarray, int, float]]:
    """Points where a non-smooth function of the loss breaks, each with the input column to cross it on.

    Random lines rarely pass the thin side of a clamp at eps = 1e-7; so each
    break ``g = 0`` that is linear in an input is solved for that input, at
    a few sampled values of the others. Returns (point, column, half-width)
    where the segment point +- half-width along the column stays in the domains.
    """
    cols = f.columns()
    rows = _input_rows(spec, cols)
    index = {sym: i for i, sym in enumerate(f.args)}
    found = []
    for node in sorted(f.loss.atoms(*_BREAKS), key=sympy.default_sort_key):
        for g in _BREAKS[type(node)](node.args):
            for sym in sorted(g.free_symbols & set(f.args), key=lambda x: x.name):
                budget.tick()
                if not rows[index[sym]]:
                    continue
                if budget.expanded_terms(g, multinomial=True) > budget.EXPAND_TERMS:
                    continue  # Poly would expand it in full: (x0 + ... + x9)**30 has 211 million terms
                try:
                    poly = sympy.Poly(g, sym)
                except sympy.PolynomialError:
                    continue
                if poly.degree() != 1:
                    continue
                a, b = poly.all_coeffs()
                root = f.function(-b / a)
                base = _sample(spec, cols, rng, per_break)
                with np.errstate(all="ignore"):
                    at = np.broadcast_to(np.asarray(root(*base), dtype=float), (per_break,))
                i = index[sym]
                dom = spec.symbols[cols[i][0]].domain
                for k in range(per_break):
                    point, r = base[:, k].copy(), at[k]
                    width = min(0.5 * abs(r) if r else 0.5, r - dom.lo, dom.hi - r)
                    if not np.isfinite(r) or not width > 0:
                        continue
                    point[i] = r
                    found.append((point, i, width))
    return found


def _convex(spec: LossSpec, f: _Numpy, rng, breaks: list) -> tuple[bool | None, str]:
    cols = f.columns()
    rows = _input_rows(spec, cols)
    base = _sample(spec, cols, rng, PAIRS)
    u, v = base.copy(), base.copy()
    u[rows] = _sample(spec, cols, rng, PAIRS)[rows]
    v[rows] = _sample(spec, cols, rng, PAIRS)[rows]
    # a third of the pairs straddle the targets: u = t + a, v = t - b
    targets = [i for i, (n, _) in enumerate(cols) if spec.symbols[n].role == "target"]
    k = PAIRS // 3
    for i in np.flatnonzero(rows):
        if targets:
            t = base[targets[min(len(targets) - 1, 0)], :k]
            u[i, :k], v[i, :k] = t + rng.random(k), t - 2 * rng.random(k)
    u, v = _clip_to_domains(spec, cols, u), _clip_to_domains(spec, cols, v)
    if breaks:  # and pairs that straddle each break: point -+ width along its input
        at = np.stack([point for point, _, _ in breaks], axis=1)
        left, right = at.copy(), at.copy()
        for j, (_, i, width) in enumerate(breaks):
            left[i, j] -= width
            right[i, j] += width
        u, v = np.concatenate([u, left], axis=1), np.concatenate([v, right], axis=1)
    fu, fv, fm = f(u), f(v), f((u + v) / 2)
    ok = np.isfinite(fu) & np.isfinite(fv) & np.isfinite(fm)
    if not ok.any():
        return None, "no finite probe"
    with np.errstate(all="ignore"):  # the non-finite probes are masked out by ok
        gap = fm - (fu + fv) / 2
        tol = 1e-9 * (1 + np.abs(fu) + np.abs(fv))
    bad = np.flatnonzero(ok & (gap > tol))
    if bad.size:
        i = bad[0]
        return False, f"midpoint above the chord at {_describe(cols, u[:, i])} / {_describe(cols, v[:, i])}"
    return True, f"midpoint convexity held on {int(ok.sum())} pairs"


def _describe(cols, column) -> str:
    return ", ".join(f"{n}{f'[{k}]' if k else ''}={x:.3g}" for (n, k), x in zip(cols, column))


def _evaluator(spec: LossSpec):
    """The cached 30-digit evaluator of the loss and every gradient, once the budget says it can be compiled.

    It compiles the loss and, per input, one gradient per element (LENGTH for
    a vector input), each written out element by element (about LENGTH times
    larger where the spec has vectors).
    """
    d = derive(spec)
    exprs = [at_defaults(spec, e) for e in (d.loss, *(
        g for n, g in d.gradients.items() for _ in range(LENGTH if spec.symbols[n].axis else 1)))]
    scale = LENGTH if any(v.axis for v in spec.symbols.values()) else 1
    budget.check_compiled("properties", *exprs, scale=scale)
    return evaluator(spec, LENGTH, 30)


def _bounded(spec: LossSpec, rng) -> tuple[bool | None, str]:
    names = list(spec.arrays)
    scales = (1e1, 1e3, 1e5)
    peaks = []
    unbounded_inputs = [n for n in spec.inputs if not np.isfinite(spec.symbols[n].domain.hi)
                        or not np.isfinite(spec.symbols[n].domain.lo)]
    if not unbounded_inputs:
        return True, "inputs range over a bounded domain; gradient checked finite by lf.check"
    ev = _evaluator(spec)
    for scale in scales:
        budget.tick()
        arrays = {}
        for name in names:
            var = spec.symbols[name]
            shape = (8, LENGTH) if var.axis else (8,)
            if name in unbounded_inputs:
                sign = rng.choice([-1.0, 1.0], size=shape) if not np.isfinite(var.domain.lo) else 1.0
                arrays[name] = sign * scale * (0.5 + rng.random(shape))
            else:
                arrays[name] = var.domain.sample(rng, shape, edges=False)
        _, grads = ev(arrays)
        peaks.append(max(float(np.max(np.abs(g))) for g in grads))
    growth = peaks[-1] / max(peaks[1], 1e-300)
    text = "max |gradient| at inputs of size " + ", ".join(f"{s:.0e}: {p:.3g}" for s, p in zip(scales, peaks))
    if math.isinf(peaks[-1]):  # beyond float64 at large inputs ((x + y)**1000): inf / inf says nothing
        return False, text + " (beyond float64: unbounded)"
    if growth > 10 and peaks[-1] > 10 * max(peaks[0], 1.0):
        return False, text + " (grows with the input: unbounded)"
    return True, text


def _in_domains(spec: LossSpec, cols, points: np.ndarray) -> np.ndarray:
    ok = np.ones(points.shape[1], dtype=bool)
    for i, (name, _) in enumerate(cols):
        dom = spec.symbols[name].domain
        ok &= (points[i] >= dom.lo) & (points[i] <= dom.hi)
    return ok


def _persists(f: _Numpy, start, direction, a: float, b: float, order: int) -> bool:
    """Whether a jump of the values (order 0) or slopes (order 1) between s = a and b survives zooming in.

    A continuous function's jump shrinks with the width of the interval; a
    step keeps its height. Five 40x zooms tell them apart, steep logs included.
    """
    previous = None
    for _ in range(5):
        s = np.linspace(a, b, 41)
        values = f(start[:, None] + direction[:, None] * s[None, :])
        if not np.isfinite(values).all():
            return False
        slopes = np.diff(values) / (s[1] - s[0])
        diffs = np.diff(values) if order == 0 else np.diff(slopes)
        j = int(np.argmax(np.abs(diffs)))
        jump = abs(diffs[j])
        floor = 1e-9 * (np.abs(values).max() + 1.0) if order == 0 else 1e-6 * (np.abs(slopes).max() + 1.0)
        if jump <= floor or (previous is not None and jump < 0.5 * previous):
            return False
        previous = jump
        a, b = (s[j], s[j + 1]) if order == 0 else (s[max(j - 1, 0)], s[min(j + 2, len(s) - 1)])
    return True


def _smoothness(spec: LossSpec, f: _Numpy, rng, breaks: list) -> tuple[str, str]:
    cols = f.columns()
    rows = _input_rows(spec, cols)
    targets = [i for i, (n, _) in enumerate(cols) if spec.symbols[n].role == "target"]
    kinked = False
    s = np.linspace(-3, 3, STEPS)
    for _ in range(LINES):
        budget.tick()
        start = _sample(spec, cols, rng, 1)[:, 0]
        direction = np.where(rows, rng.normal(size=len(cols)), 0.0)
        for i in np.flatnonzero(rows):  # lines through the target cross the kinks at input = target
            if targets and rng.random() < 0.7:
                start[i] = start[targets[0]]
        points = start[:, None] + direction[:, None] * s[None, :]
        keep = _in_domains(spec, cols, points)  # a straight segment inside the domains, never clipped
        if keep.sum() < 50:
            continue
        seg = s[keep]
        values = f(points[:, keep])
        if not np.isfinite(values).all():
            continue
        j = int(np.argmax(np.abs(np.diff(values))))
        if _persists(f, start, direction, seg[j], seg[j + 1], 0):
            return "discontinuous", "the loss jumps along a line through the inputs (a step)"
        slopes = np.diff(values) / (seg[1] - seg[0])
        k = int(np.argmax(np.abs(np.diff(slopes))))
        if not kinked and _persists(f, start, direction, seg[max(k - 1, 0)], seg[min(k + 2, len(seg) - 1)], 1):
            kinked = True
    for point, i, width in breaks:
        budget.tick()
        direction = np.zeros(len(cols))
        direction[i] = 1.0
        if _persists(f, point, direction, -width, width, 0):
            return "discontinuous", f"the loss jumps at {_describe(cols, point)} (a step)"
        if not kinked and _persists(f, point, direction, -width, width, 1):
            return "kinked", f"the gradient jumps at {_describe(cols, point)} (a kink)"
    if kinked:
        return "kinked", "the gradient jumps along a line through the inputs (a kink)"
    return "smooth", f"loss and slope continuous along {LINES} random lines ({STEPS} points each)"


def _zero_at_target(spec: LossSpec) -> tuple[bool | None, str]:
    if len(spec.inputs) != 1 or len(spec.targets) != 1:
        return None, "needs exactly one input and one target"
    i, t = spec.inputs[0], spec.targets[0]
    if spec.symbols[i].axis != spec.symbols[t].axis:
        return None, "input and target live on different axes"
    table = spec.sympy_symbols
    at = spec.sympy.xreplace({table[i]: table[t]})
    if budget.tree_size(at, cap=SIMPLIFY_NODES) <= SIMPLIFY_NODES and at.count_ops() < 60:
        try:
            at = sympy.simplify(at)
        except (TypeError, ValueError):  # simplify's own manipulations met a NaN or an infinity
            pass
    if at == 0:
        return True, f"loss({i} = {t}) simplifies to 0"
    ev = _evaluator(spec)
    rng = np.random.default_rng(7)
    arrays = {}
    for name in spec.arrays:
        var = spec.symbols[name]
        arrays[name] = var.domain.sample(rng, (6, LENGTH) if var.axis else (6,), edges=False)
    arrays[i] = arrays[t].copy()
    with mpmath.workdps(30):
        values, _ = ev(arrays)
    if np.all(np.abs(values) < 1e-12):
        return True, f"loss is 0 at {i} = {t} on 6 probes"
    return False, f"loss at {i} = {t} is {values[0]:.3g} (not 0)"


@lru_cache(maxsize=128)
def properties(spec: LossSpec) -> Properties:
    """Convexity, gradient bound, smoothness and zero-at-target of ``spec``, with evidence.

    Runs under :mod:`lossforge.budget`: past its node or time limit it raises
    :class:`AnalysisError` naming the stage.
    """
    rng = np.random.default_rng(0)
    with budget.deadline("properties"):
        budget.check("properties", *derive(spec).exprs().values())
        f = _Numpy(spec)
        breaks = _break_points(spec, f, rng)  # solved once, probed by both convexity and smoothness
        convex, convex_why = _convex(spec, f, rng, breaks)
        bounded, bounded_why = _bounded(spec, rng)
        smooth, smooth_why = _smoothness(spec, f, rng, breaks)
        zero, zero_why = _zero_at_target(spec)
    evidence = FrozenMap(
        (("convex", convex_why), ("bounded_gradient", bounded_why), ("smoothness", smooth_why),
         ("zero_at_target", zero_why))
    )
    return Properties(convex, bounded, smooth, zero, evidence)
