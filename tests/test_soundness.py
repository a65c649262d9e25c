"""Issue 14: "clean means finite", witnesses, and the check in a chosen floating type.

Every hazard carries a witness, a point of the declared domains; here the
generated code is evaluated at it to see the claim the report makes: a
non-finite value or gradient for the error rules (Torch in float32 and
float16, NumPy in float64: the NumPy target computes in float64 whatever its
input), the precision loss, the kink or the zero gradient for the others. A
spec the checker calls clean is evaluated at the extreme points of its
domains, in float32 and float64, and must be finite there.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import sympy
import torch

import lossforge as lf
from lossforge.analysis.hazards import exp_minus_one, one_plus
from lossforge.errors import LossforgeError, UnknownNameError

from .random_specs import special_spec
from .test_hazards import FIXTURES, make

TORCH = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}


def _array(spec: lf.LossSpec, name: str, value) -> np.ndarray:
    """A one-sample array of ``value`` (a vector symbol: three elements of it)."""
    if spec.symbols[name].axis:
        value = np.broadcast_to(np.asarray(value, dtype=np.float64), (3,))
        return np.asarray(value, dtype=np.float64).reshape(1, 3)
    return np.asarray([value], dtype=np.float64)


def _values(spec: lf.LossSpec, point: dict, dtype: str):
    """The loss (per sample) and every input's gradient at ``point``: NumPy in float64, Torch otherwise."""
    params = {n: point[n] for n in spec.params if n in point}
    arrays = [_array(spec, n, point[n]) for n in spec.arrays]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if dtype == "float64":
            value, grads = lf.compile(spec, "numpy").loss_and_grad(*arrays, reduction="sum", **params)
            return [np.asarray(value), *grads]
        module = lf.compile(spec, "torch")(reduction="sum", **params)
        tensors = [torch.tensor(a, dtype=TORCH[dtype]).requires_grad_(spec.symbols[n].role == "input")
                   for a, n in zip(arrays, spec.arrays)]
        value = module(*tensors)
        value.backward()
        return [value.detach().double().numpy(), *(t.grad.double().numpy() for t in tensors if t.grad is not None)]


def _finite(values) -> bool:
    return all(np.isfinite(v).all() for v in values)


# -- witnesses ----------------------------------------------------------------------------------

def _scalar_fixtures():
    for kind, (bad, _) in FIXTURES.items():
        for expr, decl in bad:
            if "onehot" not in decl and "simplex" not in decl:
                yield kind, expr, decl


#: Hazards whose witness cannot be exact, and why (each is also stated in its rule's docstring):
#: sin and cos are never exactly 0 at a float (pi is irrational), and p + 1e-7 reaches 0 at p = -1e-7 only
#: once the constant is rounded to float32: the bound reaches 0, no float point does, and the message says so.
NO_POINT = {("unguarded-log", "log(p + 1e-7)"), ("unguarded-log", "log(sin(x))"), ("division-by-zero", "1/cos(x)"),
            ("division-by-zero", "1/sin(x)")}
#: Below float32's smallest normal a kernel may flush to 0 (CUDA, denormals off); the CPU keeps the subnormal.
FLUSHED = {("unguarded-log", "log(erfc(x))"), ("division-by-zero", "-log(erfc(x))")}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("kind", "expr", "decl"), list(_scalar_fixtures()))
def test_every_error_has_a_witness_where_the_generated_code_is_not_finite(kind, expr, decl, dtype):
    spec = make(expr, decl)
    report = lf.check(spec, dtype=dtype)
    errors = [h for h in report.hazards if h.severity == "error" and h.kind != "zero-gradient"]  # its claim: below
    for h in errors:
        assert set(h.witness) <= set(spec.symbols)
        if not h.witness:
            assert (kind, expr) in NO_POINT, str(h)
            assert "no single point found" in h.message
            continue
        for name, value in h.witness.items():  # a point of the declared domains (an end the type cannot hold:
            dom = spec.symbols[name].domain     # the value of the type nearest to it, 1e-40 in float32)
            ends = [float(np.dtype(dtype).type(e)) for e in (dom.lo, dom.hi)]
            assert dom.contains(value) or value in ends, (name, value)
        assert " = " in h.message  # shown in the report
        values = _values(spec, dict(h.witness), dtype)
        if (kind, expr) in FLUSHED and dtype == "float32":
            x = h.witness["x"]
            assert 0 <= math.erfc(x) < np.finfo(np.float32).tiny
            continue
        assert not _finite(values), (str(h), values)


def test_witnesses_of_warnings_and_infos_show_their_claim():
    # cancellation: at the witness the argument is nonzero and 1 + x (exp(x)) rounds to 1 in float32
    for expr, decl in FIXTURES["cancellation"][0]:
        spec = make(expr, decl)
        for h in lf.check(spec).hazards:
            if h.kind != "cancellation":
                continue
            subs = {spec.symbol(n): v for n, v in h.witness.items()}
            node = h.expr.args[0] if isinstance(h.expr, sympy.log) else h.expr
            x = one_plus(node) if isinstance(h.expr, sympy.log) else exp_minus_one(node)[0]
            value = float(x.subs(subs))
            assert value != 0, str(h)
            rounded = np.float32(1) + np.float32(value) if isinstance(h.expr, sympy.log) else np.exp(np.float32(value))
            assert rounded == 1, str(h)
    # non-differentiable: the kink is at the witness
    report = lf.check(make("abs(x - t) + max(0, 1 - x)", "x: real, t: real target"))
    assert len(report.hazards) == 2
    for h in report.hazards:
        gap = h.expr.args[0] if isinstance(h.expr, sympy.Abs) else h.expr.args[0] - h.expr.args[1]
        assert float(gap.xreplace({s: h.witness[s.name] for s in gap.free_symbols})) == 0, str(h)
    # zero-gradient: the term's gradient is 0 at the witness, while its value is finite there
    spec = make("(x - t)**2 + where(x > t, 1, 0)", "x: real, t: real target")
    h = next(h for h in lf.check(spec).hazards if h.kind == "zero-gradient")
    term = lf.LossSpec(name="term", expr=lf.language.to_text(h.expr), symbols=dict(spec.symbols))
    grads = _values(term, dict(h.witness), "float64")[1:]
    assert all((g == 0).all() for g in grads)


README_SPEC = """
name = "cost_sensitive_bce"
expr = "-(fn_weight * y * log(clamp(p, eps, 1 - eps)) + (1 - y) * log(clamp(1 - p, eps, 1)))"
[symbols]
p         = { role = "input",  domain = "probability" }
y         = { role = "target", domain = "binary" }
fn_weight = { role = "param",  default = 5.0,  domain = "positive" }
eps       = { role = "param",  default = 1e-7, domain = "DOMAIN" }
"""


def test_readme_spec_finding_says_why():
    # With eps "positive", 1 - eps reaches 0 (eps = 1): the witness says so, and the code is -inf there.
    spec = lf.loads(README_SPEC.replace("DOMAIN", "positive"))
    report = lf.check(spec)
    assert not report.ok
    h = next(h for h in report.hazards if h.kind == "unguarded-log")
    assert h.witness["eps"] >= 0.5 and "eps = " in h.message
    for dtype in ("float32", "float64"):
        found = next(h for h in lf.check(spec, dtype=dtype).hazards if h.kind == "unguarded-log")
        assert not _finite(_values(spec, dict(found.witness), dtype))
    # The README's spec bounds eps as examples/cost_sensitive.toml does: clean.
    assert lf.check(lf.loads(README_SPEC.replace("DOMAIN", "[1e-12, 0.1]"))).ok


# -- the floating type --------------------------------------------------------------------------

def test_a_spec_clean_in_float32_overflows_in_float16_at_its_witness():
    spec = make("exp(x) + (x - t)**2", "x: [0; 20], t: [0; 1] target")
    assert lf.check(spec).ok and lf.check(spec, dtype="float32").ok
    report = lf.check(spec, dtype="float16")
    h = next(h for h in report.hazards if h.kind == "overflow" and h.where == "loss")
    assert h.expr == sympy.exp(spec.symbol("x"))
    assert not report.ok and h.witness["x"] > math.log(np.finfo(np.float16).max)  # exp passes 65504 above 11.09
    values = _values(spec, dict(h.witness), "float16")
    assert np.isinf(values[0]).all()
    # ... and in bfloat16, whose range is float32's, it is clean
    assert lf.check(spec, dtype="bfloat16").ok


@pytest.mark.parametrize(("expr", "decl", "clean_in", "fails_in"), [
    ("exp(x)", "x: [0; 100]", ("float64",), ("float32", "bfloat16", "float16")),
    ("log(1 - sigmoid(x))", "x: [0; 10]", ("float32", "float64"), ("float16", "bfloat16")),  # bf16: 1.0 from 6.2
    ("1/(x + 1e-6)", "x: nonnegative", ("float32", "float64", "bfloat16"), ("float16",)),  # 1e6 > 65504
])
def test_each_type_has_its_own_limits(expr, decl, clean_in, fails_in):
    spec = make(expr, decl)
    for dtype in clean_in:
        assert lf.check(spec, dtype=dtype).ok, dtype
    for dtype in fails_in:
        report = lf.check(spec, dtype=dtype)
        assert not report.ok, dtype
        h = next(h for h in report.hazards if h.severity == "error")
        assert not _finite(_values(spec, dict(h.witness), dtype)), (dtype, str(h))


def test_unknown_dtype_is_named():
    with pytest.raises(UnknownNameError) as info:
        lf.check(make("x**2", "x: real"), dtype="float8")
    assert info.value.token == "float8" and "float16" in str(info.value)


# -- false alarms: clean, and finite at the extreme points ------------------------------------

def _extreme_arrays(spec: lf.LossSpec, name: str) -> list:
    dom = spec.symbols[name].domain
    if dom.name == "onehot":
        return [np.eye(3)[0]]
    if dom.name == "simplex":
        return [np.eye(3)[0], np.full(3, 1 / 3)]
    ends = list(dom.extremes())
    if not spec.symbols[name].axis:
        return ends
    return [np.full(3, v) for v in ends] + [np.asarray([ends[0], ends[-1], ends[len(ends) // 2]])]


def _finite_at_extremes(spec: lf.LossSpec, limit: int = 400) -> None:
    grids = [_extreme_arrays(spec, n) for n in spec.arrays]
    for combo in itertools.islice(itertools.product(*grids), limit):
        point = dict(zip(spec.arrays, combo))
        for dtype in ("float32", "float64"):
            assert _finite(_values(spec, point, dtype)), (spec.text, point, dtype)


FALSE_ALARMS = [
    ("sign(x)*(1 - exp(-abs(x)))", "x: real"),  # its gradient is exp(-|x|)
    ("where(x > 0, 1, -1)*(1 - exp(-abs(x)))", "x: real"),
    ("where(x > 0, 1, -1)*u", "x: real, u: real"),
    ("exp(sum(y*z) - logsumexp(z))", "z[c]: real, y[c]: onehot target"),  # generalized cross-entropy
    ("sum(y*exp(k*(z - logsumexp(z))))", "z[c]: real, y[c]: onehot target, k=0.5: [0.1; 1]"),  # bi-tempered
    ("1 - (2*sum(p*t) + smooth)/(sum(p) + sum(t) - sum(p*t) + smooth)",
     "p[c]: probability, t[c]: probability target, smooth=1: [0.01; 10]"),  # soft Jaccard
]


@pytest.mark.parametrize(("expr", "decl"), FALSE_ALARMS)
def test_former_false_alarms_are_clean_and_finite_at_the_extremes(expr, decl):
    spec = make(expr, decl)
    report = lf.check(spec)
    assert report.ok, str(report)
    _finite_at_extremes(spec)


# -- soundness: powers with a param exponent ------------------------------------------------

@pytest.mark.parametrize(("expr", "decl"), [
    ("y*mu**(-p)", "mu: positive, y: real target, p=0.5: [0.1; 0.9]"),
    ("-y*mu**(1 - p)/(1 - p) + mu**(2 - p)/(2 - p)", "mu: positive, y: nonnegative target, p=1.5: [1.1; 1.9]"),
])
def test_a_power_with_a_param_exponent_is_checked_over_its_interval(expr, decl):
    spec = make(expr, decl)
    report = lf.check(spec)
    assert "overflow" in report.kinds() and not report.ok
    h = next(h for h in report.hazards if h.kind == "overflow")
    assert not _finite(_values(spec, dict(h.witness), "float32"))
    # at mu = 1e-30 in float32 the gradient is not finite: what the report warns of
    assert not _finite(_values(spec, {**dict(h.witness), "mu": 1e-30, "y": 1.0}, "float32"))


# -- fuzz: clean implies finite, over erf erfc lgamma digamma cos sin acos atan ----------------

@pytest.mark.parametrize("seed", range(100, 160))
def test_random_special_specs_clean_means_finite(seed):
    try:
        _, spec = special_spec(seed)
    except LossforgeError as exc:
        assert exc.token
        return
    if spec is None:
        return
    try:
        report = lf.check(spec)
    except LossforgeError as exc:
        assert exc.token
        return
    if report.ok:
        _finite_at_extremes(spec, limit=60)


# -- the written form, collected gradients, huge nearly-equal terms ---------------------------

def test_the_power_of_a_quotient_keeps_its_written_form_in_both_targets():
    spec = make("((y - mu)/sigma)**2/2 + log(sigma)", "mu: real, sigma: positive, y: real target")
    for target in ("numpy", "torch"):
        assert "((y - mu) / sigma)" in lf.generate(spec, target)
        assert "sigma**(-2)" not in lf.generate(spec, target) and "/sigma**2" not in lf.generate(spec, target)
    # zero residual at sigma = 1e-30: the value 0 + log(sigma), gradients 0 and 1/sigma; SymPy's
    # (y - mu)**2*sigma**-2 gave 0*inf = NaN in float32 for all three
    point = {"mu": 0.5, "sigma": 1e-30, "y": 0.5}
    for dtype in ("float32", "float64"):
        value, grad_mu, grad_sigma = _values(spec, point, dtype)
        assert np.isclose(value, math.log(np.float32(1e-30)), rtol=1e-6) and grad_mu == 0
        assert np.isclose(grad_sigma, 1 / np.float32(1e-30), rtol=1e-6), dtype


def test_gaussian_crps_gradients_are_exact_and_the_same_in_both_targets():
    spec = lf.load("examples/gaussian_crps.toml")
    grads = spec.gradient()
    z = (spec.symbol("y") - spec.symbol("mu")) / spec.symbol("sigma")
    # d/dmu = -erf(z/sqrt(2)), d/dsigma = 2*phi(z) - 1/sqrt(pi): the closed forms (Gneiting et al. 2005)
    at = {spec.symbol("y"): 0.3, spec.symbol("mu"): -0.2, spec.symbol("sigma"): 0.7}
    assert float(grads["mu"].subs(at)) == pytest.approx(float((-sympy.erf(z / sympy.sqrt(2))).subs(at)), rel=1e-14)
    phi = sympy.exp(-z**2 / 2) / sympy.sqrt(2 * sympy.pi)
    assert float(grads["sigma"].subs(at)) == pytest.approx(float((2 * phi - 1 / sympy.sqrt(sympy.pi)).subs(at)), rel=1e-14)
    # outside the declared domain too, at sigma = 1e-30 with zero residual: Torch (float32) and NumPy (float64)
    # agree with the exact 0 and 2/sqrt(2*pi) - 1/sqrt(pi) = 0.2337 (before: -1.1e15 in Torch)
    wide = lf.LossSpec(name="crps", expr=spec.expr, symbols={**spec.symbols, "sigma": lf.Var("input", domain="positive")})
    exact = 2 / math.sqrt(2 * math.pi) - 1 / math.sqrt(math.pi)
    for dtype in ("float32", "float64"):
        _, grad_mu, grad_sigma = _values(wide, {"mu": 0.0, "y": 0.0, "sigma": 1e-30}, dtype)
        assert grad_mu == 0 and grad_sigma == pytest.approx(exact, rel=1e-6), dtype


def test_huge_nearly_equal_terms_of_a_gradient_are_a_cancellation():
    # sMAPE: d/dp at t = 0 is exactly 0; its two terms are each 2/p
    spec = make("2*abs(p - t)/(abs(p) + abs(t))", "p: positive, t: nonnegative target")
    report = lf.check(spec, dtype="float64")
    assert report.ok  # a warning
    h = next(h for h in report.hazards if h.kind == "cancellation" and h.where == "gradient[p]")
    assert h.severity == "warning" and h.fix is not None and h.fix.safe
    assert sympy.simplify(h.fix.replacement - h.expr) == 0
    (grad,) = _values(spec, dict(h.witness), "float64")[1:]
    assert abs(grad[0]) > 1  # computed as written: digits lost where the exact value is 0
    # the near miss: the same terms with an eps keep their digits
    spec = make("2*abs(p - t)/(abs(p) + abs(t) + eps)", "p: positive, t: nonnegative target, eps=1e-3: [1e-3; 1]")
    assert "cancellation" not in lf.check(spec, dtype="float64").kinds()


def test_cancellation_is_found_however_the_gradient_writes_exp_minus_one():
    for expr in ("exp(v) - v", "exp(v)/2 - v/2", "(exp(v) - v)/2"):
        report = lf.check(make(expr, "v: real"))
        assert any(h.kind == "cancellation" and h.where == "gradient[v]" for h in report.hazards), expr
