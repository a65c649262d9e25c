"""Verification: prove a loss and its gradient right, and test a user's own code.

``verify(spec)`` runs independent checks on points drawn from every declared
domain (edges included) and returns a :class:`VerifyReport`, one row per check:

* the symbolic gradient against central differences of the loss, both in
  30-digit mpmath arithmetic (interior points: a difference quotient across a
  domain edge or a kink measures nothing);
* the generated NumPy code (float64) against a 30-digit evaluation of the
  expression, values and gradients;
* the generated Torch code against the NumPy code (float64), and in float32
  against the 30-digit evaluation;
* ``torch.autograd.gradcheck`` with a non-unit upstream gradient, and
  ``gradgradcheck`` (double backward through the generated module);
* where JAX is installed, the generated JAX code under ``jax.jit`` (its
  ``jax.custom_vjp`` gradient through ``jax.value_and_grad``) against the NumPy
  code in float64 and against the 30-digit evaluation in float32;
* finiteness of loss and gradients in every framework and both dtypes at the
  domains' extreme points.

``verify(spec, against=fn)`` compares a user's implementation instead: values
per sample and in a batch, and gradients (autograd for torch, central
differences for NumPy). A failing row carries a copy-pasteable reproduction
of its worst point.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import display
from .errors import VerifyError
from .spec import LossSpec, dumps
from .text import inert

#: Tolerances, each an error measured as |got - want| / (1 + |want|) (mixed
#: absolute/relative, so that both huge losses and values near 0 are judged fairly).
TOLERANCES = {
    # 30-digit central differences with step 1e-12 have truncation error ~1e-24:
    # what remains is the float64 rounding of the gradient's own evaluation.
    "fd": 1e-9,
    # float64 code against the exact value: a few hundred ulps at most.
    "numpy": 1e-9,
    "torch64": 1e-11,
    # float32 has 6e-8 resolution; transcendental chains lose a few hundred ulps.
    "torch32": 2e-4,
    # XLA fuses and reorders a jitted computation (a sum's order, a fused multiply-add): float64 rounding of
    # the same formulas, a few ulps per operation, as torch's; float32 as torch's float32.
    "jax64": 1e-11,
    "jax32": 2e-4,
    # A user's float64 implementation may order operations differently; a 1%
    # (or even 0.01%) error is far outside this.
    "against_value": 1e-6,
    "against_grad_torch": 1e-6,
    # NumPy implementations are differentiated by central differences in float64.
    "against_grad_numpy": 1e-5,
}

AXIS_LENGTH = 4


@dataclass(frozen=True)
class Row:
    """One check: its name, worst error, tolerance, verdict and (if failed) a reproduction."""

    name: str
    ok: bool
    max_error: float
    tolerance: float
    detail: str = ""
    reproduction: str = ""
    #: Not run (its detail says why: torch is not installed); it fails nothing.
    skipped: bool = False

    @property
    def result(self) -> str:
        return "skip" if self.skipped else "pass" if self.ok else "FAIL"


@dataclass(frozen=True)
class VerifyReport:
    """The rows of a verification; ``ok`` when every row passed."""

    spec: str
    rows: tuple[Row, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def __str__(self) -> str:
        width = max(len(r.name) for r in self.rows) if self.rows else 10
        lines = [f"verify {self.spec}: {'ok' if self.ok else 'FAILED'}"]
        lines.append(f"  {'check':<{width}}  {'max error':>10}  {'tolerance':>9}  result")
        for r in self.rows:
            err = "-" if math.isnan(r.max_error) else f"{r.max_error:.3g}"
            lines.append(f"  {r.name:<{width}}  {err:>10}  {r.tolerance:>9.3g}  {r.result}"
                         + (f"  ({r.detail})" if r.detail else ""))
        for r in self.rows:
            if not r.ok and r.reproduction:
                lines.append("")
                lines.append(f"worst point of {r.name!r}:")
                lines.extend("    " + line for line in r.reproduction.splitlines())
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """The rows as a table, for a notebook."""
        rows = [(r.name, "-" if math.isnan(r.max_error) else f"{r.max_error:.3g}", f"{r.tolerance:.3g}",
                 r.result, r.detail) for r in self.rows]
        return display.table(f"verify {self.spec}", self.ok, ("check", "max error", "tolerance", "result", "detail"),
                             rows)


# -- sampling ----------------------------------------------------------------------


def _shape(spec: LossSpec, name: str, n: int) -> tuple[int, ...]:
    return (n, AXIS_LENGTH) if spec.symbols[name].axis else (n,)


def draw(spec: LossSpec, n: int, seed: int = 0, edges: bool = True) -> dict[str, np.ndarray]:
    """``n`` samples of every array argument, from its domain (float64)."""
    rng = np.random.default_rng(seed)
    return {name: spec.symbols[name].domain.sample(rng, _shape(spec, name, n), edges) for name in spec.arrays}


def interior(spec: LossSpec, n: int, seed: int) -> dict[str, np.ndarray]:
    """Points for derivative checks: away from domain edges, and off the simplex.

    A difference quotient across a domain edge or a kink measures nothing.
    Histograms of equal mass (two simplex vectors) make ``cumsum(p - q)``
    end exactly at 0, a kink of ``abs``; rows of vector inputs are therefore
    rescaled by a random factor in [0.6, 1.4].
    """
    rng = np.random.default_rng(seed + 101)
    arrays = draw(spec, n, seed, edges=False)
    for name in spec.inputs:
        if spec.symbols[name].axis and spec.symbols[name].domain.vector:
            arrays[name] = arrays[name] * rng.uniform(0.6, 1.4, size=(n, 1))
    return arrays


def extreme_points(spec: LossSpec, limit: int = 64) -> dict[str, np.ndarray]:
    """Every combination of the arguments' extreme values (a vector takes each one in turn)."""
    choices = []
    for name in spec.arrays:
        var = spec.symbols[name]
        dom = var.domain
        if var.axis is None:
            choices.append([np.float64(v) for v in dom.extremes()])
        elif dom.name == "onehot":
            choices.append([np.eye(AXIS_LENGTH)[0], np.eye(AXIS_LENGTH)[-1]])
        elif dom.name == "simplex":
            choices.append([np.eye(AXIS_LENGTH)[0], np.full(AXIS_LENGTH, 1 / AXIS_LENGTH)])
        else:
            ext = dom.extremes()
            vectors = [np.full(AXIS_LENGTH, v) for v in ext]
            vectors.append(np.resize(np.asarray(ext, dtype=float), AXIS_LENGTH))
            choices.append(vectors)
    combos = list(itertools.islice(itertools.product(*choices), limit))
    return {name: np.stack([c[i] for c in combos]) for i, name in enumerate(spec.arrays)}


def _params(spec: LossSpec) -> dict[str, float]:
    return {p: spec.symbols[p].default for p in spec.params}


def _error(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    return np.abs(got - want) / (1.0 + np.abs(want))


# -- reproduction ----------------------------------------------------------------


def _spec_line(spec: LossSpec) -> str:
    from .library import builtin, builtin_names

    if spec.name in builtin_names() and builtin(spec.name) == spec:
        return f"spec = lf.builtin({spec.name!r})"
    return f"spec = lf.loads({inert(dumps(spec), 'string')})"


def _point_text(spec: LossSpec, arrays: dict[str, np.ndarray], i: int) -> str:
    parts = []
    for name in spec.arrays:
        value = np.asarray(arrays[name][i : i + 1])
        parts.append(f"{name}={value.tolist()!r}")
    return ", ".join(parts)


def _repro(spec: LossSpec, arrays: dict[str, np.ndarray], i: int, what: str, got: object, want: object,
           got_name: str, want_name: str) -> str:
    args = ", ".join(f"np.array({np.asarray(arrays[n][i:i + 1]).tolist()!r})" for n in spec.arrays)
    return "\n".join([
        "import numpy as np",
        "import lossforge as lf",
        _spec_line(spec),
        f"args = ({args},)",
        f"# {what} at {_point_text(spec, arrays, i)}",
        f"# {got_name}: {got!r}",
        f"# {want_name}: {want!r}",
    ])


# -- the checks of verify(spec) ------------------------------------------------------


#: What a row that needs torch says where torch is not installed.
NEEDS_TORCH = "needs torch, which is not installed: pip install 'lossforge[torch]'"


def _torch():
    """torch if it is installed, else None: verify runs its NumPy rows without it."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def _numpy_module(spec):
    from .codegen.render import compile as compile_spec

    return compile_spec(spec, "numpy")


def _torch_module(spec):
    from .codegen.render import compile as compile_spec

    return compile_spec(spec, "torch")


def _jax_module(spec):
    """The generated JAX module, or None where JAX is not installed (its rows are then left out)."""
    try:
        import jax  # noqa: F401
    except ImportError:
        return None
    from .codegen.render import compile as compile_spec

    return compile_spec(spec, "jax")


def _jax_loss_grads(module, spec: LossSpec, arrays: dict[str, np.ndarray], dtype: str):
    """Per-sample losses and the gradient of their sum, from ``jax.jit(jax.value_and_grad(...))`` in ``dtype``
    (float64 under JAX's x64 mode, switched on for this call only)."""
    import jax

    x64 = jax.enable_x64 if hasattr(jax, "enable_x64") else jax.experimental.enable_x64
    inputs = tuple(spec.arrays.index(n) for n in spec.inputs)
    with x64(True):
        args = [np.asarray(arrays[n], dtype=dtype if spec.symbols[n].role == "input" else np.float64)
                for n in spec.arrays]

        def total(*xs):
            per_sample = module.loss(*xs, reduction="none")
            return per_sample.sum(), per_sample

        (_, value), grads = jax.jit(jax.value_and_grad(total, argnums=inputs, has_aux=True))(*args)
        return np.asarray(value, dtype=float), [np.asarray(g, dtype=float) for g in grads]


def _jax_rows(spec: LossSpec, module, arrays, ours, exact, sides) -> list[Row]:
    if module is None:
        return []
    return [
        _compare_row("jax float64 (jit, custom_vjp) vs numpy float64", TOLERANCES["jax64"], spec, arrays,
                     _jax_loss_grads(module, spec, arrays, "float64"), ours, "jax", "numpy"),
        _compare_row("jax float32 (jit, custom_vjp) vs 30-digit evaluation", TOLERANCES["jax32"], spec, arrays,
                     _jax_loss_grads(module, spec, arrays, "float32"), exact, "jax float32", "exact", sides),
    ]


def _np_loss_grads(module, spec: LossSpec, arrays: dict[str, np.ndarray]):
    with np.errstate(all="ignore"):
        value, grads = module.loss_and_grad(*(arrays[n] for n in spec.arrays), reduction="none")
    return np.asarray(value, dtype=float), [np.asarray(g, dtype=float) for g in grads]


def _torch_loss_grads(cls, spec: LossSpec, arrays: dict[str, np.ndarray], dtype):
    import torch

    tensors = []
    for name in spec.arrays:
        t = torch.tensor(arrays[name], dtype=dtype)
        tensors.append(t.requires_grad_(spec.symbols[name].role == "input"))
    value = cls(reduction="none")(*tensors)
    inputs = [t for t, n in zip(tensors, spec.arrays) if spec.symbols[n].role == "input"]
    grads = torch.autograd.grad(value.sum(), inputs, allow_unused=True)
    out = [np.zeros(tuple(i.shape)) if g is None else g.detach().double().numpy() for g, i in zip(grads, inputs)]
    return value.detach().double().numpy(), out


def _compare_row(name: str, tol: float, spec: LossSpec, arrays, got, want, got_name: str, want_name: str,
                 alternatives=()) -> Row:
    """Compare (value, grads) pairs elementwise; skip entries where either side is not finite.

    ``alternatives`` are further (value, grads) references for the gradients,
    evaluated at points a rounding error away. At a kink (``abs`` at 0) the
    float code sits on one side, on the other, or exactly on it: any value
    between the one-sided derivatives (a subgradient) is a correct answer.
    """
    worst, where, what, pair = 0.0, None, "", (None, None)
    parts = [("loss", got[0], [want[0]])]
    parts += [(f"d/d{n}", got[1][k], [want[1][k], *(alt[1][k] for alt in alternatives)])
              for k, n in enumerate(spec.inputs[: len(got[1])])]
    for label, g, refs in parts:
        g = np.asarray(g, dtype=float)
        errs = []
        for w in refs:
            w = np.asarray(w, dtype=float)
            ok = np.isfinite(g) & np.isfinite(w)
            errs.append(np.where(ok, _error(np.where(ok, g, 0), np.where(ok, w, 0)), np.where(np.isfinite(g), np.inf, 0)))
        err = np.minimum.reduce(errs)
        if len(refs) > 1:  # between the one-sided derivatives: a subgradient
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: undefined points
                stack = np.stack([np.asarray(w, dtype=float) for w in refs])
                inside = (g >= np.nanmin(stack, axis=0)) & (g <= np.nanmax(stack, axis=0))
            err = np.where(inside, 0.0, err)
        base = np.asarray(refs[0], dtype=float)
        err = np.where(np.isfinite(base) & np.isfinite(g), err, 0.0)  # non-finite points: the finiteness row
        if not err.size:
            continue
        flat = int(np.argmax(err))
        if err.flat[flat] > worst:
            worst = float(err.flat[flat])
            idx = np.unravel_index(flat, err.shape)
            where, what = idx[0], f"{label}[{', '.join(map(str, idx))}]"
            pair = (g[idx].item(), base[idx].item())
    ok = worst <= tol
    repro = "" if ok or where is None else _repro(spec, arrays, where, what, pair[0], pair[1], got_name, want_name)
    return Row(name, ok, worst, tol, reproduction=repro)


def _nudged(spec: LossSpec, arrays: dict[str, np.ndarray], sign: float) -> dict[str, np.ndarray]:
    """Inputs moved by about 1e-9 of their size: the two sides of any kink they sit on."""
    out = dict(arrays)
    for name in spec.inputs:
        x = np.asarray(arrays[name], dtype=float)
        out[name] = x + sign * 1e-9 * (1.0 + np.abs(x))
    return out


def _mp_reference(spec: LossSpec, arrays: dict[str, np.ndarray]):
    from .numeric import evaluate_batch

    return evaluate_batch(spec, arrays, dps=30)


def _fd_row(spec: LossSpec, seed: int, n: int) -> Row:
    from .numeric import evaluate_batch, finite_difference_batch

    arrays = interior(spec, n, seed + 1)
    _, grads = evaluate_batch(spec, arrays, dps=30)
    fds = finite_difference_batch(spec, arrays, dps=30)
    return _compare_row("gradient vs 30-digit central differences", TOLERANCES["fd"], spec, arrays,
                        (np.zeros(n), grads), (np.zeros(n), fds), "symbolic gradient", "central difference")


def _gradcheck_rows(spec: LossSpec, cls, seed: int) -> list[Row]:
    import torch
    from torch.autograd.gradcheck import GradcheckError

    arrays = interior(spec, 3, seed + 2)
    fixed = {n: torch.tensor(arrays[n], dtype=torch.float64) for n in spec.arrays}
    inputs = tuple(fixed[n].clone().requires_grad_(True) for n in spec.inputs)
    module = cls(reduction="none")
    upstream = 0.5 + torch.rand(arrays[spec.arrays[0]].shape[:1], generator=torch.Generator().manual_seed(seed),
                                dtype=torch.float64)

    def f(*xs):
        args = dict(fixed)
        args.update(zip(spec.inputs, xs))
        return module(*(args[n] for n in spec.arrays)) * upstream

    rows = []
    for name, check in (("gradcheck (non-unit upstream)", torch.autograd.gradcheck),
                        ("gradgradcheck (double backward)", torch.autograd.gradgradcheck)):
        try:
            ok = bool(check(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, raise_exception=True))
            detail = ""
        except (RuntimeError, GradcheckError) as exc:
            ok, detail = False, str(exc).splitlines()[0][:160]
        rows.append(Row(name, ok, float("nan"), 1e-5, detail=detail,
                        reproduction="" if ok else _repro(spec, arrays, 0, name, "failed", "passed", "lossforge", "torch")))
    return rows


def _finite_row(spec: LossSpec, np_module, cls, jax_module) -> Row:
    """Finite at the extreme points in NumPy, in torch float64 and float32 where ``cls`` (torch's) is given, and in
    JAX float64 and float32 where ``jax_module`` is."""
    arrays = extreme_points(spec)
    bad: list[tuple[str, int]] = []
    results = [("numpy float64", _np_loss_grads(np_module, spec, arrays))]
    if cls is not None:
        import torch

        for dtype, label in ((torch.float64, "torch float64"), (torch.float32, "torch float32")):
            results.append((label, _torch_loss_grads(cls, spec, arrays, dtype)))
    if jax_module is not None:
        results += [(f"jax {dtype}", _jax_loss_grads(jax_module, spec, arrays, dtype)) for dtype in ("float64", "float32")]
    for label, (value, grads) in results:
        for part in (value, *grads):
            rows = np.asarray(part).reshape(len(value), -1)
            for i in np.flatnonzero(~np.isfinite(rows).all(axis=1)):
                bad.append((label, int(i)))
    count = len(bad)
    accepted = sorted(spec.accept)
    ok = count == 0 or bool(accepted)
    detail = f"{len(arrays[spec.arrays[0]])} extreme points, {count} non-finite" + ("" if cls else " (NumPy only)")
    if count and accepted:
        detail += f"; accepted hazards: {', '.join(accepted)}"
    repro = ""
    if not ok:
        label, i = bad[0]
        repro = _repro(spec, arrays, i, f"non-finite in {label}", "nan/inf", "finite", "lossforge", "expected")
    return Row("finite at the domains' extremes", ok, float(count), 0.0, detail=detail, reproduction=repro)


#: The rows that need torch, in their order (without torch each is reported skipped, saying why).
TORCH_ROWS = ("torch float64 vs numpy float64", "torch float32 vs 30-digit evaluation",
              "gradcheck (non-unit upstream)", "gradgradcheck (double backward)")


def _verify_spec(spec: LossSpec, samples: int, seed: int) -> list[Row]:
    torch = _torch()
    np_module = _numpy_module(spec)
    arrays = draw(spec, samples, seed)
    exact = _mp_reference(spec, arrays)
    sides = [_mp_reference(spec, _nudged(spec, arrays, sign)) for sign in (1.0, -1.0)]
    ours = _np_loss_grads(np_module, spec, arrays)
    rows = [
        _fd_row(spec, seed, max(4, samples // 3)),
        _compare_row("numpy float64 vs 30-digit evaluation", TOLERANCES["numpy"], spec, arrays, ours, exact,
                     "numpy", "exact", sides),
    ]
    jax_module = _jax_module(spec)
    jax_rows = _jax_rows(spec, jax_module, arrays, ours, exact, sides)
    if torch is None:
        return [*rows, *(Row(name, True, float("nan"), 0.0, detail=NEEDS_TORCH, skipped=True) for name in TORCH_ROWS),
                *jax_rows, _finite_row(spec, np_module, None, jax_module)]
    cls = _torch_module(spec)
    t64 = _torch_loss_grads(cls, spec, arrays, torch.float64)
    t32 = _torch_loss_grads(cls, spec, arrays, torch.float32)
    return [
        *rows,
        _compare_row(TORCH_ROWS[0], TOLERANCES["torch64"], spec, arrays, t64, ours, "torch", "numpy"),
        _compare_row(TORCH_ROWS[1], TOLERANCES["torch32"], spec, arrays, t32, exact, "torch float32", "exact", sides),
        *jax_rows,
        *_gradcheck_rows(spec, cls, seed),
        _finite_row(spec, np_module, cls, jax_module),
    ]


# -- verify(spec, against=fn) --------------------------------------------------------


def _adapt_targets(spec: LossSpec, arrays: dict[str, np.ndarray], indices: bool) -> dict[str, np.ndarray]:
    if not indices:
        return arrays
    out = dict(arrays)
    for name in spec.targets:
        if spec.symbols[name].domain.name == "onehot":
            out[name] = arrays[name].argmax(-1)
    return out


def _call_torch(fn, spec, arrays, indices: bool, grad: bool):
    import torch

    adapted = _adapt_targets(spec, arrays, indices)
    tensors = []
    for name in spec.arrays:
        value = adapted[name]
        if np.issubdtype(np.asarray(value).dtype, np.integer):
            t = torch.tensor(value, dtype=torch.long)
        else:
            t = torch.tensor(value, dtype=torch.float64)
            if grad and spec.symbols[name].role == "input":
                t.requires_grad_(True)
        tensors.append(t)
    out = fn(*tensors)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"returned {type(out).__name__}, not a tensor")
    if not grad:
        return out.detach().double().numpy(), None
    inputs = [t for t, n in zip(tensors, spec.arrays) if spec.symbols[n].role == "input"]
    if not out.requires_grad:
        return out.detach().double().numpy(), [np.zeros(tuple(t.shape)) for t in inputs]
    grads = torch.autograd.grad(out.sum(), inputs, allow_unused=True)
    return out.detach().double().numpy(), [
        np.zeros(tuple(t.shape)) if g is None else g.double().numpy() for g, t in zip(grads, inputs)
    ]


def _call_numpy(fn, spec, arrays, indices: bool, grad: bool):
    adapted = _adapt_targets(spec, arrays, indices)

    def value(ad):
        with np.errstate(all="ignore"):
            out = fn(*(ad[n] for n in spec.arrays))
        if type(out).__module__.startswith("torch"):
            raise TypeError("returned a torch value for numpy arrays")
        return np.asarray(out, dtype=float)

    v = value(adapted)
    if not grad:
        return v, None
    grads = []
    for name in spec.inputs:
        base = np.asarray(adapted[name], dtype=float)
        g = np.zeros_like(base)
        for idx in np.ndindex(base.shape):
            h = 1e-6 * max(1.0, abs(base[idx]))
            up, down = base.copy(), base.copy()
            up[idx] += h
            down[idx] -= h
            g[idx] = (value({**adapted, name: up}).sum() - value({**adapted, name: down}).sum()) / (2 * h)
        grads.append(g)
    return v, grads


def _classify(fn, spec: LossSpec, probe: dict[str, np.ndarray]):
    """Which kind of callable ``fn`` is, and whether it wants class indices: by trying it."""
    torch = _torch()
    if torch is not None and isinstance(fn, type) and issubclass(fn, torch.nn.Module):
        fn = fn()
    errors = [] if torch is not None else [f"torch: {NEEDS_TORCH}"]
    has_onehot = any(spec.symbols[t].domain.name == "onehot" for t in spec.targets)
    kinds = (("torch", _call_torch), ("numpy", _call_numpy)) if torch is not None else (("numpy", _call_numpy),)
    for kind, call in kinds:
        for indices in ((False, True) if has_onehot else (False,)):
            try:
                with warnings.catch_warnings():  # a NumPy function handed tensors may warn before failing
                    warnings.simplefilter("ignore")
                    call(fn, spec, probe, indices, grad=False)
            except Exception as exc:  # noqa: BLE001 - any failure means "not this kind"
                errors.append(f"{kind}{' (class indices)' if indices else ''}: {type(exc).__name__}: {exc}")
                continue
            return fn, kind, call, indices
    name = getattr(fn, "__name__", type(fn).__name__)
    raise VerifyError(f"cannot call {name!r} with the spec's arguments {', '.join(spec.arrays)}: "
                      + " | ".join(errors), token=name)


def _against_rows(spec: LossSpec, fn: Callable, samples: int, seed: int) -> list[Row]:
    np_module = _numpy_module(spec)
    # Interior points: a spec and a correct implementation may differ on purpose
    # at a domain's edge (bce clamps p to [eps, 1 - eps], PyTorch clamps the log).
    arrays = draw(spec, samples, seed, edges=False)
    fn, kind, call, indices = _classify(fn, spec, {n: a[:2] for n, a in arrays.items()})
    name = getattr(fn, "__name__", type(fn).__name__)
    reduction = spec.reduction
    got_v, want_v = [], []
    got_g: list[list[np.ndarray]] = [[] for _ in spec.inputs]
    want_g: list[list[np.ndarray]] = [[] for _ in spec.inputs]
    for i in range(len(arrays[spec.arrays[0]])):
        one = {n: a[i : i + 1] for n, a in arrays.items()}
        v, g = call(fn, spec, one, indices, grad=True)
        with np.errstate(all="ignore"):
            ov, og = np_module.loss_and_grad(*(one[n] for n in spec.arrays), reduction=reduction)
        got_v.append(np.asarray(v, dtype=float).reshape(-1)[:1] if np.size(v) else np.array([np.nan]))
        want_v.append(np.asarray(ov, dtype=float).reshape(-1)[:1])
        for k in range(len(spec.inputs)):
            got_g[k].append(np.asarray(g[k], dtype=float)[0])
            want_g[k].append(np.asarray(og[k], dtype=float)[0])
    got = (np.concatenate(got_v), [np.stack(x) for x in got_g])
    want = (np.concatenate(want_v), [np.stack(x) for x in want_g])
    value_row = _compare_row(f"value vs {name} ({kind})", TOLERANCES["against_value"], spec, arrays,
                             (got[0], []), (want[0], []), name, "lossforge")
    grad_tol = TOLERANCES["against_grad_torch" if kind == "torch" else "against_grad_numpy"]
    grad_name = "autograd" if kind == "torch" else "central differences"
    grad_row = _compare_row(f"gradient vs {name} ({grad_name})", grad_tol, spec, arrays,
                            (np.zeros_like(got[0]), got[1]), (np.zeros_like(want[0]), want[1]), name, "lossforge")
    batch_v, _ = call(fn, spec, arrays, indices, grad=False)
    with np.errstate(all="ignore"):
        ours_b = np.asarray(np_module.loss(*(arrays[n] for n in spec.arrays), reduction=reduction), dtype=float)
    if np.shape(batch_v) != np.shape(ours_b):
        batch_row = Row(f"batched call of {name} (reduction {reduction!r})", False, float("inf"), 0.0,
                        detail=f"shape {np.shape(batch_v)} vs lossforge's {np.shape(ours_b)}")
    else:
        ok = np.isfinite(ours_b) & np.isfinite(batch_v)
        err = float(_error(np.where(ok, batch_v, 0), np.where(ok, ours_b, 0)).max(initial=0.0))
        batch_row = Row(f"batched call of {name} (reduction {reduction!r})", err <= TOLERANCES["against_value"],
                        err, TOLERANCES["against_value"])
    return [value_row, grad_row, batch_row]


def verify(spec: LossSpec, against: Callable | None = None, *, samples: int = 24, seed: int = 0,
           tolerances: dict[str, float] | None = None) -> VerifyReport:
    """Verify ``spec`` (its gradient and generated code), or a user's implementation of it.

    ``against`` is a torch callable (function, ``nn.Module``, ``autograd.Function.apply``)
    or a NumPy callable taking the spec's positional arrays and returning the
    loss reduced as the spec reduces it. Its kind is found by trying it.
    """
    if not isinstance(spec, LossSpec):
        raise VerifyError(f"verify() needs a LossSpec, got {type(spec).__name__}", token=type(spec).__name__)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise VerifyError(f"samples must be an integer of at least 2, got {samples!r}", token="samples")
    unknown = sorted(set(tolerances or {}) - set(TOLERANCES))
    if unknown:
        raise VerifyError(f"unknown tolerance {unknown[0]!r} (known: {', '.join(TOLERANCES)})", token=unknown[0])
    with _tolerances(tolerances or {}):
        rows = _against_rows(spec, against, samples, seed) if against is not None else _verify_spec(spec, samples, seed)
    return VerifyReport(spec.name, tuple(rows))


@contextlib.contextmanager
def _tolerances(overrides: dict[str, float]):
    saved = dict(TOLERANCES)
    TOLERANCES.update(overrides)
    try:
        yield
    finally:
        TOLERANCES.clear()
        TOLERANCES.update(saved)
