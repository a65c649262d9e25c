"""The special and trigonometric functions of the spec language: erf erfc lgamma digamma cos sin acos atan.

One row per function (as the library is tested, a database): its spec, the domain it is checked on, and three
independent references for its value and derivative: torch's own function under torch's autograd, scipy.special
with the textbook derivative, and mpmath at 30 digits (``mpmath.diff``, numerical differentiation of the
function itself, checks that derivative where it is accurate; at the extremes, where a tiny derivative is below
its reach, the textbook formula in mpmath is the reference). Each is compared with both generated targets at ordinary and extreme points, in float64 and float32.

Tolerances, as ``|got - ref| <= rtol*|ref| + atol``:

* float64 against mpmath, ``rtol = 1e-13`` (450 ulps): libm's and torch's erf, erfc, lgamma, digamma, cos, sin,
  acos and atan are correct to a few ulps, and the derivative adds one multiplication or division; measured
  errors are below 4e-16. The exception is torch's ``polygamma(1, x)`` (digamma's derivative, which torch's
  own autograd of ``torch.digamma`` uses too): its float64 series is off by up to 5e-10 relative (measured
  4.6e-10 at x = 1.5), so the Torch gradient of digamma is held to ``2e-9``;
* float32 (Torch; NumPy computes in float64 whatever its input), ``rtol = 2e-6`` (16 float32 ulps: float32
  kernels are correct to 1-4 ulps, and one more rounding enters through the derivative) against mpmath at the
  float32 input itself, so only the arithmetic is measured;
* ``atol`` is the smallest normal of the dtype: a result that underflows (erfc(30) = 2.6e-393, atan's gradient
  1e-60 at 1e30) is exact as 0.
* torch's own autograd, in the same dtype, is held to the same rtol but for acos: its derivative
  ``-1/sqrt(1 - x*x)`` rounds ``x*x`` first and loses digits near +-1 (float32 at 0.999: 3.3e-6, more closer
  in; float64 at 1 - 1e-7: 2e-11), where lossforge's ``-1/sqrt((1 - x)*(1 + x))`` does not: against
  torch's autograd acos gets 1e-10 (float64) and 1e-4 (float32), and against mpmath the tight tolerance.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import mpmath
import numpy as np
import pytest
import scipy.special as sc
import sympy
import torch

import lossforge as lf
from lossforge import language as E
from lossforge.errors import LossforgeError, ParseError, RenderError


@dataclass(frozen=True)
class Row:
    """One function: its spec text in x, x's domain, and the references for its value and derivative."""

    name: str
    domain: object
    torch_fn: object
    scipy_value: object
    scipy_grad: object
    mp_fn: object
    mp_grad: object
    ordinary: tuple[float, ...]
    extreme: tuple[float, ...]
    torch_grad_rtol64: float = 1e-13
    #: How far torch's own autograd may be from the exact gradient, per dtype, where it is less precise.
    autograd_rtol: tuple[float, float] | None = None


def _mp_lgamma(v):
    return mpmath.re(mpmath.loggamma(v))


ROWS = [
    Row("erf", "real", torch.erf, sc.erf, lambda x: 2 / np.sqrt(np.pi) * np.exp(-x * x), mpmath.erf,
        lambda v: 2 / mpmath.sqrt(mpmath.pi) * mpmath.exp(-v * v),
        (-2.5, -0.5, 0.0, 0.3, 1.7), (-10.0, 10.0, -1000.0, 1e-30, 3.9)),
    Row("erfc", "real", torch.erfc, sc.erfc, lambda x: -2 / np.sqrt(np.pi) * np.exp(-x * x), mpmath.erfc,
        lambda v: -2 / mpmath.sqrt(mpmath.pi) * mpmath.exp(-v * v),
        (-2.5, -0.5, 0.0, 0.3, 1.7), (10.0, 30.0, -30.0, 9.2, 26.0)),
    Row("lgamma", "positive", torch.lgamma, sc.gammaln, sc.psi, _mp_lgamma, lambda v: mpmath.psi(0, v),
        (0.25, 0.5, 1.5, 3.7, 12.0), (1e-10, 1e10, 1e-30, 1e30)),
    Row("digamma", "positive", torch.digamma, sc.psi, lambda x: sc.polygamma(1, x), lambda v: mpmath.psi(0, v),
        lambda v: mpmath.psi(1, v), (0.25, 0.5, 1.5, 3.7, 12.0), (1e-6, 1e-3, 1e6, 1e10), torch_grad_rtol64=2e-9),
    Row("cos", "real", torch.cos, np.cos, lambda x: -np.sin(x), mpmath.cos, lambda v: -mpmath.sin(v),
        (-2.5, -0.5, 0.0, 0.3, 1.7), (1e-30, 100.0, -1000.0, 1e4)),
    Row("sin", "real", torch.sin, np.sin, np.cos, mpmath.sin, mpmath.cos,
        (-2.5, -0.5, 0.0, 0.3, 1.7), (1e-30, 100.0, -1000.0, 1e4)),
    # the float64 reference derivative as (1 - x)*(1 + x): written 1 - x*x it would itself lose digits near +-1
    Row("acos", [-1.0, 1.0], torch.acos, np.arccos, lambda x: -1 / np.sqrt((1 - x) * (1 + x)), mpmath.acos,
        lambda v: -1 / mpmath.sqrt(1 - v * v), (-0.9, -0.3, 0.0, 0.5, 0.75), (1 - 1e-7, -1 + 1e-7, 1 - 1e-3, 1e-30),
        autograd_rtol=(1e-10, 1e-4)),
    Row("atan", "real", torch.atan, np.arctan, lambda x: 1 / (1 + x * x), mpmath.atan, lambda v: 1 / (1 + v * v),
        (-2.5, -0.5, 0.0, 0.3, 1.7), (1e30, -1e30, 1e-30, 1e8)),
]
IDS = [r.name for r in ROWS]
RTOL = {np.float64: 1e-13, np.float32: 2e-6}
ATOL = {np.float64: float(np.finfo(np.float64).tiny), np.float32: float(np.finfo(np.float32).tiny)}
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}


def spec_of(row: Row) -> lf.LossSpec:
    return lf.LossSpec(name=f"fn_{row.name}", expr=f"{row.name}(x)", symbols={"x": lf.Var("input", domain=row.domain)},
                       reduction="sum")


def mp_reference(row: Row, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Value and derivative at 30 digits (the textbook derivative, written here, not SymPy's)."""
    with mpmath.workdps(30):
        values = [float(row.mp_fn(mpmath.mpf(float(v)))) for v in points]
        grads = [float(row.mp_grad(mpmath.mpf(float(v)))) for v in points]
    return np.array(values), np.array(grads)


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_the_textbook_derivatives_are_the_functions_derivatives(row):
    # mpmath's numerical differentiation of the function itself, where it is accurate (ordinary points)
    with mpmath.workdps(30):
        for v in row.ordinary:
            exact = row.mp_grad(mpmath.mpf(v))
            assert abs(mpmath.diff(row.mp_fn, mpmath.mpf(v)) - exact) <= mpmath.mpf(1e-20) * (1 + abs(exact))


def torch_autograd(row: Row, points: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray]:
    x = torch.tensor(points, dtype=TORCH_DTYPE[dtype], requires_grad=True)
    value = row.torch_fn(x)
    value.sum().backward()
    return value.detach().double().numpy(), x.grad.double().numpy()


def generated_numpy(row: Row, points: np.ndarray):
    mod = lf.compile(spec_of(row), "numpy")
    value = mod.loss(points, reduction="none")
    _, (grad,) = mod.loss_and_grad(points, reduction="sum")
    return np.asarray(value, dtype=float), np.asarray(grad, dtype=float)


def generated_torch(row: Row, points: np.ndarray, dtype):
    x = torch.tensor(points, dtype=TORCH_DTYPE[dtype], requires_grad=True)
    value = lf.compile(spec_of(row), "torch")(reduction="none")(x)
    value.sum().backward()
    return value.detach().double().numpy(), x.grad.double().numpy()


def relative_error(got: np.ndarray, ref: np.ndarray, atol: float) -> float:
    """The largest |got - ref| / max(|ref|, atol): 0 where both are equal (infinities included)."""
    got, ref = np.asarray(got, dtype=float), np.asarray(ref, dtype=float)
    same = (got == ref)
    with np.errstate(all="ignore"):
        err = np.where(same, 0.0, np.abs(got - ref) / np.maximum(np.abs(ref), atol))
    return float(np.max(err))


def assert_close(got, ref, rtol, atol, what):
    got, ref = np.asarray(got, dtype=float), np.asarray(ref, dtype=float)
    assert np.array_equal(np.isfinite(got), np.isfinite(ref)), (what, got, ref)
    fin = np.isfinite(ref)
    diff = np.abs(got[fin] - ref[fin])
    atol = np.broadcast_to(atol, ref.shape)[fin]
    assert np.all(diff <= rtol * np.abs(ref[fin]) + atol), (what, float(np.max(diff / (np.abs(ref[fin]) + atol))),
                                                           got, ref)


def points_of(row: Row, dtype) -> np.ndarray:
    """The row's points as the dtype holds them (references are evaluated at exactly these values)."""
    return np.array([*row.ordinary, *row.extreme], dtype=dtype).astype(np.float64)


# -- values and gradients against three references ------------------------------------------


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_float64_both_targets_match_mpmath_scipy_and_torch(row):
    x = points_of(row, np.float64)
    mp_value, mp_grad = mp_reference(row, x)
    with np.errstate(all="ignore"):
        sc_value, sc_grad = row.scipy_value(x), row.scipy_grad(x)
    th_value, th_grad = torch_autograd(row, x, np.float64)
    np_value, np_grad = generated_numpy(row, x)
    gt_value, gt_grad = generated_torch(row, x, np.float64)
    rtol, atol = RTOL[np.float64], ATOL[np.float64]
    for label, value in (("numpy", np_value), ("torch", gt_value), ("scipy", sc_value), ("torch autograd", th_value)):
        assert_close(value, mp_value, rtol, atol, f"{row.name} value, {label} vs mpmath")
    assert_close(np_grad, mp_grad, rtol, atol, f"{row.name} gradient, numpy vs mpmath")
    assert_close(np_grad, sc_grad, rtol, atol, f"{row.name} gradient, numpy vs scipy")
    assert_close(gt_grad, mp_grad, row.torch_grad_rtol64, atol, f"{row.name} gradient, torch vs mpmath")
    assert_close(gt_grad, th_grad, max(rtol, (row.autograd_rtol or (0, 0))[0]), atol,
                 f"{row.name} gradient, torch vs torch autograd")
    assert_close(th_grad, mp_grad, max(row.torch_grad_rtol64, (row.autograd_rtol or (0, 0))[0]), atol,
                 f"{row.name} gradient, torch autograd vs mpmath")
    assert_close(gt_value, th_value, rtol, atol, f"{row.name} value, torch vs torch's own")


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_float32_torch_matches_mpmath_and_torch_autograd(row):
    x = points_of(row, np.float32)
    x = x[np.isfinite(x.astype(np.float32))]
    mp_value, mp_grad = mp_reference(row, x)
    # the exact results rounded to float32: beyond its range they are inf, below its smallest normal 0 or so
    with np.errstate(over="ignore"):
        mp_value, mp_grad = mp_value.astype(np.float32).astype(float), mp_grad.astype(np.float32).astype(float)
    gt_value, gt_grad = generated_torch(row, x, np.float32)
    th_value, th_grad = torch_autograd(row, x, np.float32)
    rtol, atol = RTOL[np.float32], ATOL[np.float32]
    assert_close(gt_value, mp_value, rtol, atol, f"{row.name} float32 value vs mpmath")
    assert_close(gt_grad, mp_grad, rtol, atol, f"{row.name} float32 gradient vs mpmath")
    assert_close(gt_value, th_value, rtol, atol, f"{row.name} float32 value vs torch's own")
    assert_close(gt_grad, th_grad, max(rtol, (row.autograd_rtol or (0, 0))[1]), atol,
                 f"{row.name} float32 gradient vs torch autograd")


def test_the_extreme_points_named_by_the_brief_are_exact():
    # erfc(-x) stays as written: 2 - erfc(x) would be 2 - 2 = 0 at x = -10, where erfc(10) = 2.09e-45
    spec = lf.LossSpec(name="upper_tail", expr="erfc(-x)", symbols={"x": lf.Var("input")}, reduction="none")
    assert isinstance(spec.sympy, E.erfc)
    value = lf.compile(spec, "numpy").loss(np.array([-10.0, -26.0]), reduction="none")
    np.testing.assert_allclose(value, [float(mpmath.erfc(10)), float(mpmath.erfc(26))], rtol=1e-13)
    # lgamma at 1e-10 and 1e10, digamma near 0+, atan at +-1e30, acos near +-1 (float32)
    lg = lf.compile(spec_of(ROWS[2]), "torch")(reduction="none")
    got = lg(torch.tensor([1e-10, 1e10], dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(got, [float(mpmath.loggamma(1e-10)), float(mpmath.loggamma(1e10))], rtol=2e-6)
    dg = lf.compile(spec_of(ROWS[3]), "numpy")
    value, (grad,) = dg.loss_and_grad(np.array([1e-8]), reduction="sum")
    assert value == pytest.approx(float(mpmath.psi(0, 1e-8)), rel=1e-14)
    assert grad[0] == pytest.approx(float(mpmath.psi(1, 1e-8)), rel=1e-14)
    at = lf.compile(spec_of(ROWS[7]), "torch")(reduction="sum")
    x = torch.tensor([1e30, -1e30], dtype=torch.float32, requires_grad=True)
    at(x).backward()
    assert x.grad.tolist() == [0.0, 0.0]  # 1/(1 + x**2): x**2 is inf in float32, the gradient 0 (exact: 1e-60)
    ac = lf.compile(spec_of(ROWS[6]), "torch")(reduction="none")
    near = torch.tensor([1 - 2**-24, -1 + 2**-24], dtype=torch.float32)  # the floats next to +-1
    np.testing.assert_allclose(ac(near).double().numpy(),
                               [float(mpmath.acos(1 - 2**-24)), float(mpmath.acos(-1 + 2**-24))], rtol=2e-6)


def test_acos_at_plus_minus_one_is_what_its_hazard_says():
    # acos over [-1, 1] is reported (sqrt-at-zero: the gradient is infinite at the ends), and so it is:
    # finite values 0 and pi, infinite gradients, in both targets and in torch's own autograd.
    spec = spec_of(ROWS[6])
    assert "sqrt-at-zero" in lf.check(spec).kinds()
    ends = np.array([1.0, -1.0])
    with np.errstate(all="ignore"):
        value, (grad,) = lf.compile(spec, "numpy").loss_and_grad(ends, reduction="none")
    np.testing.assert_allclose(value, [0.0, math.pi])
    assert not np.isfinite(grad).any()
    for g in (generated_torch(ROWS[6], ends, np.float32)[1], torch_autograd(ROWS[6], ends, np.float32)[1]):
        assert not np.isfinite(g).any()


# -- the spec language ------------------------------------------------------------------------


X = sympy.Symbol("x", real=True)
P = sympy.Symbol("p", positive=True)


@pytest.mark.parametrize("text", ["erf(x)", "erfc(-x)", "lgamma(p)", "digamma(p)", "cos(x)", "sin(2*x)",
                                  "acos(tanh(x))", "atan(x/2)", "cos(acos(tanh(x)) + 1/2)", "lgamma(p + 1) - digamma(p)"])
def test_parse_and_print_back(text):
    value = E.parse(text, {"x": X, "p": P})
    assert E.parse(E.to_text(value), {"x": X, "p": P}) == value


@pytest.mark.parametrize(("text", "token"), [("acos(x, x)", "acos"), ("erf()", "erf"), ("lgamma(x, 1)", "lgamma"),
                                             ("digamma(x, x)", "digamma"), ("atan(x, 1)", "atan")])
def test_wrong_arity_names_the_function(text, token):
    with pytest.raises(ParseError, match="takes 1 argument") as info:
        E.parse(text, {"x": X})
    assert info.value.token == token


@pytest.mark.parametrize(("text", "token"), [("erf + x", "erf"), ("lgamma(0)", "lgamma(0)"),
                                             ("lgamma(-2)", "lgamma(-2)"), ("digamma(0)", "digamma(0)"),
                                             ("x*acos(2)", "acos(2)"), ("scipy.special.erf(x)", "scipy.special.erf")])
def test_mistakes_are_refused_naming_the_token(text, token):
    with pytest.raises(LossforgeError) as info:
        E.parse(text, {"x": X})
    assert info.value.token == token


def test_lgamma_is_the_log_of_the_absolute_value():
    # as torch.lgamma and scipy's gammaln: real between the poles, +inf at them
    assert E.lgamma(sympy.Rational(-1, 2)) == sympy.log(2 * sympy.sqrt(sympy.pi))
    assert E.lgamma(3) == sympy.log(2)
    assert E.lgamma(X).is_extended_real and E.lgamma(P).is_finite
    assert E.lgamma(P).diff(P) == sympy.polygamma(0, P)
    assert float(sympy.N(E.lgamma(sympy.Rational(-1, 2)))) == pytest.approx(sc.gammaln(-0.5), rel=1e-15)


# -- generated modules: SciPy only where a function needs it -----------------------------------


def _imports(source: str) -> list[str]:
    return [line for line in source.splitlines() if line.startswith(("import ", "from "))]


@pytest.mark.parametrize("text", ["erf(x)", "erfc(x)", "lgamma(p)", "digamma(p)", "x + lgamma(p)"])
def test_numpy_module_imports_scipy_special_where_a_function_needs_it(text):
    spec = lf.LossSpec(name="needs_scipy", expr=text, symbols={"x": lf.Var("input"), "p": lf.Var("input", domain="positive")}
                       if "x" in text and "p" in text else ({"x": lf.Var("input")} if "x" in text
                                                             else {"p": lf.Var("input", domain="positive")}))
    assert _imports(lf.generate(spec, "numpy")) == ["import numpy as np", "import scipy.special"]
    assert _imports(lf.generate(spec, "torch")) == ["import warnings", "import torch"]


@pytest.mark.parametrize("text", ["cos(x) + sin(x)", "acos(tanh(x))", "atan(x)", "x**2"])
def test_numpy_module_imports_numpy_only_otherwise(text):
    spec = lf.LossSpec(name="numpy_only", expr=text, symbols={"x": lf.Var("input")})
    assert _imports(lf.generate(spec, "numpy")) == ["import numpy as np"]


def test_a_missing_scipy_is_a_lossforge_error_naming_it(monkeypatch):
    spec = lf.LossSpec(name="no_scipy_here", expr="erf(x)*x", symbols={"x": lf.Var("input")})
    monkeypatch.setitem(sys.modules, "scipy", None)  # `import scipy.special` now raises ImportError
    monkeypatch.setitem(sys.modules, "scipy.special", None)
    with pytest.raises(RenderError, match=r"lossforge\[scipy\]") as info:
        lf.compile(spec, "numpy")
    assert info.value.token.startswith("scipy")


# -- properties: sound, from the expression ----------------------------------------------------


@pytest.mark.parametrize(("text", "domain", "convex", "smoothness"), [
    ("lgamma(x)", "positive", True, "smooth"),  # Gamma is log-convex on the positive reals
    ("1 - cos(x - t)", "real", False, "smooth"),
    ("atan(x - t)**2", "real", False, "smooth"),
    ("erf(x - t)**2", "real", False, "smooth"),
    ("abs(erf(x - t))", "real", None, "kinked"),
])
def test_properties(text, domain, convex, smoothness):
    symbols = {"x": lf.Var("input", domain=domain)}
    if "t" in text:
        symbols["t"] = lf.Var("target")
    props = lf.properties(lf.LossSpec(name="props", expr=text, symbols=symbols))
    if convex is not None:
        assert props.convex is convex, props.evidence
    assert props.smoothness == smoothness, props.evidence
    if "t" in text:
        assert props.zero_at_target is True, props.evidence  # each is 0 where x = t


def test_bounded_gradients_of_bounded_derivatives():
    for text in ("erf(x - t)", "atan(x - t)", "sin(x - t)"):
        spec = lf.LossSpec(name="bounded", expr=text, symbols={"x": lf.Var("input"), "t": lf.Var("target")})
        assert lf.properties(spec).bounded_gradient is True, text


# -- real losses the functions make expressible ------------------------------------------------

EXAMPLES = __import__("pathlib").Path(__file__).resolve().parent.parent / "examples"


def example(name: str) -> lf.LossSpec:
    return lf.load(EXAMPLES / f"{name}.toml")


def crps_reference(mu, y, sigma):
    """The Gaussian CRPS through torch.distributions' CDF and density (not erf), for autograd."""
    normal = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    z = (y - mu) / sigma
    return sigma * (z * (2 * normal.cdf(z) - 1) + 2 * normal.log_prob(z).exp() - 1 / math.sqrt(math.pi))


def crps_by_integration(mu: float, y: float, sigma: float) -> float:
    """The CRPS from its definition, the integral of (F(x) - [x >= y])**2, by quadrature (scipy)."""
    from scipy import integrate, stats

    below = integrate.quad(lambda x: stats.norm.cdf(x, mu, sigma) ** 2, mu - 40 * sigma, y)[0] if y > mu - 40 * sigma else 0
    above = integrate.quad(lambda x: stats.norm.sf(x, mu, sigma) ** 2, y, mu + 40 * sigma)[0] if y < mu + 40 * sigma else 0
    return below + above


def student_t_reference(mu, y, sigma, nu):
    return -torch.distributions.StudentT(nu, mu, sigma).log_prob(y)


def arcface_reference(c, labels, s=64.0, m=0.5, eps=1e-7):
    """ArcFace as its papers' code writes it: the target logit cos(acos(c) + m), then F.cross_entropy."""
    theta = torch.acos(torch.clamp(c, -1 + eps, 1 - eps))
    target = torch.nn.functional.one_hot(labels, c.shape[-1]).bool()
    logits = s * torch.where(target, torch.cos(theta + m), c)
    return torch.nn.functional.cross_entropy(logits, labels, reduction="none")


def _rng_points(n: int = 24, seed: int = 3):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 2, n), rng.normal(0, 2, n), np.exp(rng.uniform(np.log(0.1), np.log(5), n))


#: Extreme corners of the declared domains: the smallest and largest sigma, residuals of 0 and 2000.
CRPS_EXTREMES = ([0.0, 0.0, -1000.0, 1000.0, 3.0], [0.0, 0.0, 1000.0, -1000.0, 3.0], [1e-3, 1e3, 1e-3, 1e3, 1e-3])


def mp_student_t(mu, y, sigma, nu):
    """-log p(y) of the Student-t, written here in mpmath."""
    r = (y - mu) / sigma
    return (mpmath.loggamma(nu / 2) - mpmath.loggamma((nu + 1) / 2) + mpmath.log(nu * mpmath.pi) / 2 + mpmath.log(sigma)
            + (nu + 1) / 2 * mpmath.log1p(r * r / nu))


def mp_crps(mu, y, sigma):
    """The Gaussian CRPS, written here in mpmath with the normal CDF (ncdf) and density (npdf)."""
    z = (y - mu) / sigma
    return sigma * (z * (2 * mpmath.ncdf(z) - 1) + 2 * mpmath.npdf(z) - 1 / mpmath.sqrt(mpmath.pi))


def mp_partials(f, arrays, inputs):
    """Per-sample value and partial derivatives of the mpmath function ``f`` at 30 digits (``mpmath.diff``)."""
    values, grads = [], [[] for _ in inputs]
    with mpmath.workdps(30):
        for k in range(len(arrays[0])):
            point = [mpmath.mpf(float(a[k])) for a in arrays]
            values.append(float(f(*point)))
            for j, i in enumerate(inputs):
                grads[j].append(float(mpmath.diff(lambda v, i=i, at=point: f(*at[:i], v, *at[i + 1:]), point[i])))
    return np.array(values), [np.array(g) for g in grads]


def run_targets(spec, arrays, dtype):
    """Per-sample values and the gradients of every input from both targets (NumPy in float64 only)."""
    tdt = TORCH_DTYPE[dtype]
    tensors = [torch.tensor(np.asarray(a), dtype=tdt, requires_grad=spec.symbols[n].role == "input")
               for a, n in zip(arrays, spec.arrays)]
    value = lf.compile(spec, "torch")(reduction="none")(*tensors)
    value.sum().backward()
    out = {"torch": (value.detach().double().numpy(), [t.grad.double().numpy() for t in tensors if t.requires_grad])}
    if dtype == np.float64:
        mod = lf.compile(spec, "numpy")
        _, grads = mod.loss_and_grad(*arrays, reduction="sum")
        out["numpy"] = (np.asarray(mod.loss(*arrays, reduction="none")), [np.asarray(g) for g in grads])
    return out


def run_reference(reference, spec, arrays, dtype):
    """The torch reference's per-sample values and its autograd gradients of every input."""
    tdt = TORCH_DTYPE[dtype]
    tensors = [torch.tensor(np.asarray(a), dtype=tdt, requires_grad=spec.symbols[n].role == "input")
               if np.asarray(a).dtype.kind == "f" else torch.tensor(np.asarray(a)) for a, n in zip(arrays, spec.arrays)]
    value = reference(*tensors)
    value.sum().backward()
    return value.detach().double().numpy(), [t.grad.double().numpy() for t in tensors if t.requires_grad]


def _in_dtype(arrays, dtype):
    return [np.asarray(a, dtype=dtype).astype(np.float64) for a in arrays]


STUDENT_EXTREMES = ([0.0, 1000.0, -5.0, 0.0], [0.0, -1000.0, 5.0, 1e-3], [1e-3, 1e-3, 1e3, 1.0], [0.1, 1e3, 0.1, 1e3])


def _student_points():
    mu, y, sigma = _rng_points()
    nu = np.exp(np.random.default_rng(5).uniform(np.log(0.1), np.log(1000), len(mu)))
    return [np.concatenate([a, b]) for a, b in zip((mu, y, sigma, nu), STUDENT_EXTREMES)]


def test_real_losses_check_as_expected():
    # clean over their declared domains; ArcFace's clamp is a kink, listed as info
    assert lf.check(example("gaussian_crps")).hazards == ()
    assert lf.check(example("student_t_nll")).hazards == ()
    report = lf.check(example("arcface"))
    assert report.ok and {(h.where, h.kind, h.severity) for h in report.hazards} == {
        ("loss", "non-differentiable", "info")}
    # the finding each domain note justifies: a scale that is merely positive lets sigma**-2 overflow in float32
    for name in ("gaussian_crps", "student_t_nll"):
        spec = example(name)
        loose = lf.LossSpec(name=name, expr=spec.text, symbols={
            n: lf.Var(v.role, domain="positive") if n == "sigma" else v for n, v in spec.symbols.items()})
        report = lf.check(loose)
        errors = [h for h in report.hazards if h.severity == "error"]
        assert {h.kind for h in errors} == {"overflow"}
        # the power of the residual over sigma, printed as written: ((y - mu)/sigma)**2 passes 3.4e38 at
        # sigma = 1e-30 (SymPy's sigma**-2 did already at a zero residual)
        assert all(h.expr.is_Pow and loose.symbol("sigma") in h.expr.base.free_symbols for h in errors)
        assert all(h.witness["sigma"] == float(np.float32(1e-30)) and h.witness["y"] != h.witness["mu"] for h in errors)
    # and an ArcFace whose eps is below float32's step at 1 (1 - 1e-8 == 1.0) has the infinite gradient of acos
    spec = example("arcface")
    tight = lf.LossSpec(name="arcface", expr=spec.text, symbols={
        **spec.symbols, "eps": lf.Var("param", default=1e-8, domain=[1e-9, 1e-8])})
    assert "sqrt-at-zero" in lf.check(tight).kinds()


def test_gaussian_crps_against_mpmath_torch_and_its_definition():
    spec = example("gaussian_crps")
    mu, y, sigma = _rng_points()
    ordinary = [mu, y, sigma]
    points = [np.concatenate([a, b]) for a, b in zip(ordinary, CRPS_EXTREMES)]
    for dtype, rtol in ((np.float64, 1e-12), (np.float32, 2e-5)):
        arrays = _in_dtype(points, dtype)
        exact, (d_mu, d_sigma) = mp_partials(mp_crps, arrays, (0, 2))
        for target, (value, grads) in run_targets(spec, arrays, dtype).items():
            assert_close(value, exact, rtol, ATOL[dtype], f"crps {target} {dtype.__name__} value")
            assert_close(grads[0], d_mu, rtol, ATOL[dtype], f"crps {target} {dtype.__name__} d/dmu")
            assert_close(grads[1], d_sigma, rtol, ATOL[dtype], f"crps {target} {dtype.__name__} d/dsigma")
        # torch's own CDF-based implementation under autograd, at the ordinary points (at sigma = 1e-3 and a
        # residual of 2000, its float32 d/dsigma is -0.625 where the exact value, and lossforge's, is -0.5642)
        n = len(mu)
        value, grads = run_reference(crps_reference, spec, [a[:n] for a in arrays], dtype)
        ours, our_grads = run_targets(spec, [a[:n] for a in arrays], dtype)["torch"]
        assert_close(ours, value, 10 * rtol, ATOL[dtype], "crps vs torch reference")
        for g, r in zip(our_grads, grads):
            assert_close(g, r, 10 * rtol, ATOL[dtype], "crps gradient vs torch reference")
    for k in range(4):  # the closed form is the definition's integral (scipy's quadrature, to 1e-8)
        assert crps_by_integration(mu[k], y[k], sigma[k]) == pytest.approx(float(mp_crps(mu[k], y[k], sigma[k])), rel=1e-8)


def test_student_t_nll_against_mpmath_and_torch_distributions():
    spec = example("student_t_nll")
    for dtype, rtol in ((np.float64, 1e-12), (np.float32, 2e-5)):
        arrays = _in_dtype(_student_points(), dtype)
        exact, exact_grads = mp_partials(mp_student_t, arrays, (0, 2, 3))
        ref_value, ref_grads = run_reference(student_t_reference, spec, arrays, dtype)
        cancelled = 32 * np.finfo(dtype).eps * (np.abs(sc.psi(arrays[3] / 2)) + 1)
        for target, (value, grads) in run_targets(spec, arrays, dtype).items():
            # value: lgamma(nu/2) - lgamma((nu + 1)/2) cancels for large nu; measured 8.5e-6 in float32
            assert_close(value, exact, rtol, ATOL[dtype], f"student-t {target} {dtype.__name__} value")
            assert_close(grads[0], exact_grads[0], rtol, ATOL[dtype], f"student-t {target} d/dmu")
            assert_close(grads[1], exact_grads[1], 10 * rtol, ATOL[dtype], f"student-t {target} d/dsigma")
            # d/dnu = (digamma(nu/2) - digamma((nu + 1)/2))/2 + 1/(2 nu) + ... cancels catastrophically for
            # large nu (terms of 6 summing to 1e-6 at nu = 800), in torch's own autograd as much as here: held to
            # 32 ulps of the terms that cancel, a bound torch.distributions' gradient meets too
            assert_close(grads[2], exact_grads[2], rtol, cancelled, f"student-t {target} d/dnu")
        assert_close(ref_value, exact, 10 * rtol, ATOL[dtype], "torch.distributions.StudentT vs mpmath")
        assert_close(ref_grads[2], exact_grads[2], rtol, cancelled, "torch.distributions.StudentT d/dnu")
    from scipy import stats

    mu, y, sigma, nu = _student_points()
    np.testing.assert_allclose(lf.compile(spec, "numpy").loss(mu, y, sigma, nu, reduction="none"),
                               -stats.t.logpdf(y, nu, mu, sigma), rtol=1e-12)


def test_arcface_against_its_torch_implementation():
    spec = example("arcface")
    rng = np.random.default_rng(11)
    c = np.tanh(rng.normal(size=(16, 5)))
    c[0] = [1.0, -1.0, 0.0, 1 - 1e-9, -1 + 1e-9]  # the ends of the domain and beyond the clamp
    c[1] = [1 - 1e-7, -1 + 1e-7, 0.999, -0.999, 0.5]
    labels = rng.integers(0, 5, size=16)
    labels[:2] = [0, 3]
    onehot = np.eye(5)[labels]
    for dtype in (np.float64, np.float32):
        arrays = [np.asarray(c, dtype=dtype).astype(np.float64), onehot]
        # the torch implementation in float64 at the same points is the reference for both dtypes
        ref_value, (ref_grad,) = run_reference(lambda c, y: arcface_reference(c, y.argmax(-1)), spec, arrays, np.float64)
        for target, (value, (grad,)) in run_targets(spec, arrays, dtype).items():
            assert np.isfinite(value).all() and np.isfinite(grad).all()
            if dtype == np.float64:
                assert_close(value, ref_value, 1e-12, 1e-12, f"arcface {target} value")
                assert_close(grad, ref_grad, 1e-11, 1e-11, f"arcface {target} gradient")
            else:
                # float32 logits of up to s = 64: the loss is a difference of values near 100, measured 1.3e-3
                # off (torch's own float32 implementation too); the gradient reaches 629 at c = -0.999, measured
                # 3.7e-5 off (torch's own float32 autograd: 2e-3, through -1/sqrt(1 - c*c))
                assert_close(value, ref_value, 2e-5, 2e-3, "arcface float32 value")
                assert_close(grad, ref_grad, 2e-6, 1e-4, "arcface float32 gradient")
    # the class-index form of the target gives the same
    Loss = lf.compile(spec, "torch")
    x = torch.tensor(c, requires_grad=True)
    by_index = Loss(reduction="none")(x, torch.tensor(labels))
    np.testing.assert_allclose(by_index.detach().numpy(), arcface_reference(torch.tensor(c), torch.tensor(labels))
                               .detach().numpy(), rtol=1e-11)
