"""Code generation: golden files, standalone modules, numbers against hand-written torch."""

from __future__ import annotations

import ast
import doctest
import hashlib
import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import sympy
import torch
import torch.nn.functional as F

import lossforge as lf
from lossforge.codegen.printers import NumpyLossPrinter, TorchLossPrinter, guard_where, softmaxes
from lossforge.errors import RenderError

from .regen_golden import TARGETS, golden_path, golden_specs

ROOT = Path(__file__).resolve().parent.parent
V = lf.Var
SPECS = golden_specs()


def spec(expr, reduction="mean", **symbols):
    return lf.LossSpec(name="custom", expr=expr, symbols=symbols, reduction=reduction)


# -- golden files, determinism, standalone ------------------------------------------


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("key", sorted(SPECS))
def test_generated_source_matches_its_golden_file(key, target):
    path = golden_path(key, target)
    assert path.exists(), f"no golden file for {key}/{target}: run `make golden`"
    assert lf.generate(SPECS[key], target) == path.read_text(encoding="utf-8"), "run `make golden` and review"


def test_no_stale_golden_files():
    expected = {golden_path(k, t).name for k in SPECS for t in TARGETS}
    assert {p.name for p in (ROOT / "tests" / "golden").glob("*.py")} == expected


def test_same_spec_same_bytes_across_processes():
    code = (
        "import hashlib, lossforge as lf\n"
        "print(hashlib.sha256(''.join(lf.generate(lf.builtin(n), t) for n in ('focal', 'triplet', 'cross_entropy')"
        " for t in ('numpy', 'torch')).encode()).hexdigest())"
    )
    digests = set()
    for seed in ("0", "1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
        digests.add(out.stdout.strip())
    local = hashlib.sha256(
        "".join(lf.generate(lf.builtin(n), t) for n in ("focal", "triplet", "cross_entropy") for t in ("numpy", "torch")).encode()
    ).hexdigest()
    assert digests == {local}


def test_header_names_spec_formula_and_hash():
    s = lf.builtin("huber")
    src = lf.generate(s, "numpy")
    first, *rest = src.splitlines()
    assert '"huber"' in first and s.digest() in first
    formula = [line.removeprefix("# ") for line in itertools.takewhile(lambda line: line.startswith("#"), rest)]
    assert len(formula) > 1  # wrapped within the line length at spaces, every word kept
    assert " ".join(formula) == f"Formula: {s.text}"


@pytest.mark.parametrize("target", list(TARGETS))
def test_generated_modules_import_only_their_framework(target):
    # and the standard library's warnings, for the one warning of fused=True falling back to eager; a NumPy
    # module whose loss uses erf, erfc, lgamma or digamma (none in NumPy) imports scipy.special too, and only then
    for key, s in SPECS.items():
        special = target == "numpy" and s.sympy.has(sympy.erf, sympy.erfc, sympy.loggamma, sympy.polygamma)
        allowed = {target} | ({"warnings"} if target == "torch" else set()) | ({"scipy"} if special else set())
        allowed |= {"functools", "math"} if target == "jax" else set()  # the custom_vjp's partial; math.prod
        tree = ast.parse(lf.generate(s, target))
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                    for a in n.names}
        assert imported == allowed, (key, imported)


def test_generated_modules_run_without_lossforge(tmp_path):
    for key in ("cross_entropy", "triplet", "example_cost_sensitive"):
        (tmp_path / f"gen_{key}_np.py").write_text(lf.generate(SPECS[key], "numpy"))
        (tmp_path / f"gen_{key}_torch.py").write_text(lf.generate(SPECS[key], "torch"))
    script = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, ".")
        sys.modules["lossforge"] = None  # any import of lossforge now fails
        import numpy as np, torch
        import gen_cross_entropy_np, gen_cross_entropy_torch, gen_triplet_np, gen_triplet_torch
        import gen_example_cost_sensitive_np as cs_np, gen_example_cost_sensitive_torch as cs_t
        z = np.random.default_rng(0).normal(size=(4, 3)); y = np.array([0, 2, 1, 1])
        print(gen_cross_entropy_np.loss(z, y), float(gen_cross_entropy_torch.Loss()(torch.tensor(z), torch.tensor(y))))
        a = np.ones((2, 3))
        print(gen_triplet_np.loss(a, a, -a), float(gen_triplet_torch.Loss()(torch.tensor(a), torch.tensor(a), torch.tensor(-a))))
        p = np.array([0.0, 0.3, 1.0]); t = np.array([1.0, 0.0, 1.0])
        print(cs_np.loss(p, t), float(cs_t.Loss()(torch.tensor(p), torch.tensor(t))))
        """
    )
    out = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for line in out.stdout.strip().splitlines():
        a, b = map(float, line.split())
        assert a == pytest.approx(b, rel=1e-12)


def test_generated_code_is_ruff_clean():
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "E,F,W", "--ignore", "E501",
         str(ROOT / "tests" / "golden")],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


# -- numbers against hand-written torch --------------------------------------------------

R = torch.float64


def _red(x, reduction):
    return x if reduction == "none" else (x.mean() if reduction == "mean" else x.sum())


CUSTOM = {
    "several_inputs_params_where_abs_clamp_softplus": (
        spec(
            "w*where(a > b, (a - b)**2, abs(a - b)) + softplus(c*a) - log(clamp(sigmoid(b), eps, 1 - eps))*t",
            a=V("input"), b=V("input"), t=V("target"), c=V("param", default=1.5), w=V("param", default=0.7),
            eps=V("param", default=1e-6, domain="positive"),
        ),
        lambda a, b, t, c=1.5, w=0.7, eps=1e-6: w * torch.where(a > b, (a - b) ** 2, (a - b).abs())
        + F.softplus(c * a) - torch.log(torch.clamp(torch.sigmoid(b), eps, 1 - eps)) * t,
        lambda g: (torch.randn(7, 3, generator=g, dtype=R), torch.randn(7, 3, generator=g, dtype=R),
                   torch.rand(7, 3, generator=g, dtype=R)),
    ),
    "axis_logsumexp_norm_sum": (
        spec(
            "logsumexp(z*s) - sum(y*z) + norm(z - y)*s + mean(z**2)",
            z=V("input", axis="k"), y=V("target", axis="k"), s=V("input"),
        ),
        lambda z, y, s: torch.logsumexp(z * s[..., None], -1) - (y * z).sum(-1) + torch.linalg.vector_norm(z - y, dim=-1) * s
        + (z**2).mean(-1),
        lambda g: (torch.randn(6, 5, generator=g, dtype=R), torch.rand(6, 5, generator=g, dtype=R),
                   torch.rand(6, generator=g, dtype=R) + 0.5),
    ),
    "cumsum_xlogy_expm1": (
        spec("sum(abs(cumsum(p - q))) + sum(xlogy(q, p)) + expm1(x/3)", p=V("input", axis="b"),
             q=V("target", axis="b"), x=V("input")),
        lambda p, q, x: torch.cumsum(p - q, -1).abs().sum(-1) + torch.xlogy(q, p).sum(-1) + torch.expm1(x / 3),
        lambda g: (torch.rand(4, 6, generator=g, dtype=R) + 0.1, torch.rand(4, 6, generator=g, dtype=R),
                   torch.randn(4, generator=g, dtype=R)),
    ),
    # A per-sample input inside a reduction: its gradient is summed over the axis (mean(z - x): -1).
    "per_sample_inside_mean": (
        spec("mean(z - x) + x*sum(z**2)", z=V("input", axis="b"), x=V("input")),
        lambda z, x: (z - x[..., None]).mean(-1) + x * (z**2).sum(-1),
        lambda g: (torch.randn(4, 5, generator=g, dtype=R), torch.randn(4, generator=g, dtype=R)),
    ),
    # The adjoint of cumsum receives a per-sample upstream (x) or a constant: it needs the axis.
    "cumsum_of_a_constant_upstream": (
        spec("x*sum(cumsum(z)) + sum(cumsum(softplus(z)))", z=V("input", axis="b"), x=V("input")),
        lambda z, x: x * torch.cumsum(z, -1).sum(-1) + torch.cumsum(F.softplus(z), -1).sum(-1),
        lambda g: (torch.randn(4, 6, generator=g, dtype=R), torch.randn(4, generator=g, dtype=R)),
    ),
}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", sorted(CUSTOM))
def test_values_and_gradients_match_hand_written_torch(case, reduction):
    s0, ref, make = CUSTOM[case]
    s = lf.LossSpec(name=s0.name, expr=s0.expr, symbols=s0.symbols, reduction=reduction)
    args = make(torch.Generator().manual_seed(1))
    inputs = [i for i, n in enumerate(s.arrays) if s.symbols[n].role == "input"]
    ours_in = [a.clone().requires_grad_(i in inputs) for i, a in enumerate(args)]
    ref_in = [a.clone().requires_grad_(i in inputs) for i, a in enumerate(args)]
    Loss = lf.compile(s, "torch")
    ours = Loss(reduction=reduction)(*ours_in)
    want = _red(ref(*ref_in), reduction)
    torch.testing.assert_close(ours, want, rtol=1e-9, atol=1e-9)
    w = 0.3 + torch.rand(want.shape, generator=torch.Generator().manual_seed(2), dtype=R)
    (ours * w).sum().backward()
    (want * w).sum().backward()
    for i in inputs:
        torch.testing.assert_close(ours_in[i].grad, ref_in[i].grad, rtol=1e-9, atol=1e-9)
    # NumPy agrees with torch: values and gradients (scaled for the reduction, upstream ones for "none").
    mod = lf.compile(s, "numpy")
    value, grads = mod.loss_and_grad(*(a.numpy() for a in args), reduction=reduction)
    np.testing.assert_allclose(value, want.detach().numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(mod.loss(*(a.numpy() for a in args), reduction=reduction), value, rtol=0, atol=0)
    ref_in = [a.clone().requires_grad_(i in inputs) for i, a in enumerate(args)]
    _red(ref(*ref_in), reduction).sum().backward()
    for g, i in zip(grads, inputs):
        assert g.shape == args[i].shape
        np.testing.assert_allclose(g, ref_in[i].grad.numpy(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "expr",
    ["x*exp(-s)", "x*sigmoid(s) + softplus(s)*x**2", "x*log(abs(s) + 1)", "x*max(s, 0.5) + min(0.25, s)*x",
     "clamp(x, -abs(s), abs(s))", "x*abs(s)**0.5 + tanh(s)*cosh(s)*x", "x*heaviside(s) + expm1(s)*x"],
)
@pytest.mark.parametrize("s_value", [0.7, -1.3])
def test_functions_of_params_alone_are_tensors_of_the_working_dtype(expr, s_value):
    # Params arrive as Python floats; torch.exp(0.7) would be a TypeError.
    spec_ = spec(expr, reduction="sum", x=V("input"), s=V("param", default=0.7))
    x = np.array([-2.0, 0.5, 3.0])
    value, (grad,) = lf.compile(spec_, "numpy").loss_and_grad(x, reduction="sum", s=s_value)
    for dtype in (torch.float64, torch.float32):
        xt = torch.tensor(x, dtype=dtype, requires_grad=True)
        out = lf.compile(spec_, "torch")(reduction="sum", s=s_value)(xt)
        out.backward()
        assert out.dtype == dtype
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        assert out.item() == pytest.approx(float(value), rel=tol, abs=tol)
        np.testing.assert_allclose(xt.grad.numpy(), grad, rtol=tol, atol=tol)


def test_float32_stays_float32():
    # float32 resolution is 6e-8; a handful of operations stays well inside 1e-5 relative.
    s, ref, make = CUSTOM["axis_logsumexp_norm_sum"]
    args = [a.float().requires_grad_(i != 1) for i, a in enumerate(make(torch.Generator().manual_seed(3)))]
    out = lf.compile(s, "torch")()(*args)
    assert out.dtype == torch.float32
    out.backward()
    assert args[0].grad.dtype == torch.float32 and args[2].grad.dtype == torch.float32
    want = ref(*(a.double() for a in args)).mean()
    assert abs(out.item() - want.item()) <= 1e-5 * max(1.0, abs(want.item()))


@pytest.mark.parametrize("name", ["focal", "triplet", "cross_entropy", "huber", "gaussian_nll", "emd", "dice",
                                  "cosine_embedding", "log_cosh", "kl_div"])
def test_gradcheck_and_gradgradcheck_with_non_unit_upstream(name):
    s = lf.builtin(name)
    from .library_db import ROWS

    args = ROWS[name].ordinary(torch.Generator().manual_seed(5), torch.float64)
    if name == "emd":  # histograms of equal mass sit on the kink of |cumsum| at the last bin
        args = (args[0] * 1.3, args[1])
    inputs = [i for i, n in enumerate(s.arrays) if s.symbols[n].role == "input"]
    module = lf.compile(s, "torch")(reduction="none")
    upstream = 0.5 + torch.rand(module(*args).shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)

    def f(*xs):
        full = list(args)
        for i, x in zip(inputs, xs):
            full[i] = x
        return module(*full) * upstream

    xs = tuple(args[i].clone().requires_grad_(True) for i in inputs)
    assert torch.autograd.gradcheck(f, xs, eps=1e-6, atol=1e-6, rtol=1e-5)
    assert torch.autograd.gradgradcheck(f, xs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_forward_saves_the_arguments_and_the_derived_gradient_only():
    s = lf.builtin("focal")
    x = torch.randn(10, dtype=torch.float64, requires_grad=True)
    t = (torch.rand(10) < 0.5).double()
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = lf.compile(s, "torch")(reduction="sum")(x, t)
    assert "FocalLossFunction" in type(out.grad_fn).__name__
    # the arguments (references, no copies) and one per-element gradient, computed in the forward
    assert len(saved) == 3 and saved[0] is x and saved[1] is t
    _, (expected,) = lf.compile(s, "numpy").loss_and_grad(x.detach().numpy(), t.numpy(), reduction="sum")
    np.testing.assert_allclose(saved[2].numpy(), expected, rtol=1e-13)
    (grad,) = torch.autograd.grad(out, x)
    assert torch.equal(grad, saved[2])  # backward scales the saved gradient by the upstream 1.0


def test_no_autograd_function_without_a_gradient_to_compute():
    module = lf.compile(lf.builtin("focal"), "torch")()
    x, t = torch.randn(10, dtype=torch.float64), (torch.rand(10) < 0.5).double()
    assert module(x, t).grad_fn is None  # no input requires grad
    with torch.no_grad():
        assert module(x.requires_grad_(), t).grad_fn is None
    assert module(x, t).grad_fn is not None


# -- SymPy 1.14 defects, each with a test ----------------------------------------------------


def _printers():
    x = sympy.Symbol("x", real=True)
    np_p, t_p = NumpyLossPrinter(), TorchLossPrinter()
    for p in (np_p, t_p):
        p.array_names = frozenset({"x"})
    return x, np_p, t_p


def test_a_sum_starts_with_a_positive_term_one_operation_fewer():
    x, np_p, t_p = _printers()
    y = sympy.Symbol("y", real=True)
    for p in (np_p, t_p):
        p.array_names = frozenset({"x", "y"})
        assert p.doprint(1 - x) == "1 - x"  # not -x + 1: a negation and an addition
        assert p.doprint(y - 2 * x) == "y - 2*x"
        assert p.doprint(-x - y) == "-x - y"  # nothing positive to start with
    # The swap is exact: the same bits as the negated-first form, float32 and float64, at awkward values.
    s = spec("1 - x", reduction="none", x=V("input"))
    for dtype in (torch.float32, torch.float64):
        v = torch.tensor([1e-8, 1.0 - 2**-24, 3e38, -3e38, 0.1, -0.0, float("inf"), float("nan")], dtype=dtype)
        got = lf.compile(s, "torch")(reduction="none")(v)
        torch.testing.assert_close(got, -v + 1, rtol=0, atol=0, equal_nan=True)


def test_max_is_elementwise_not_python_max():
    x, np_p, t_p = _printers()
    assert np_p.doprint(sympy.Max(0, x)) == "np.maximum(0, x)"
    assert "torch.max(" not in t_p.doprint(sympy.Max(0, x)) and "max(" not in np_p.doprint(sympy.Max(0, x)).replace("maximum", "")
    s = spec("max(0, x)**2", x=V("input"))
    t = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64, requires_grad=True)
    lf.compile(s, "torch")(reduction="sum")(t).backward()
    assert t.grad.tolist() == [0.0, 0.0, 4.0]


def test_heaviside_has_h0_zero_and_no_torch_heaviside():
    x, np_p, t_p = _printers()
    assert "heaviside" not in t_p.doprint(sympy.Heaviside(x))
    s = spec("heaviside(x) + x", x=V("input"))
    np.testing.assert_array_equal(lf.compile(s, "numpy").loss(np.array([-1.0, 0.0, 2.0]), reduction="none"),
                                  [-1.0, 0.0, 3.0])
    t = torch.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    out = lf.compile(s, "torch")(reduction="none")(t)
    assert out.tolist() == [-1.0, 0.0, 3.0]


def test_log1p_expm1_and_logaddexp_forms_are_printed():
    x, np_p, t_p = _printers()
    assert t_p.doprint(lf.log1p(x)) == "torch.log1p(x)" and t_p.doprint(lf.expm1(x)) == "torch.expm1(x)"
    assert np_p.doprint(lf.softplus(x)) == "_softplus(x)"
    tiny = spec("log1p(x) + expm1(x)", x=V("input"))
    value = lf.compile(tiny, "numpy").loss(np.array([1e-20]), reduction="sum")
    assert value == 2e-20


def test_torch_softplus_is_one_kernel_and_exact_across_its_threshold():
    import mpmath

    x, _, t_p = _printers()
    assert t_p.doprint(lf.softplus(x)) == "torch.nn.functional.softplus(x, beta=1.0, threshold=40.0)"
    s = spec("softplus(x)", reduction="none", x=V("input"))
    points = [-745.0, -100.0, -20.0, -1e-8, 0.0, 1e-8, 19.5, 20.5, 36.0, 39.9, 40.1, 700.0]
    for dtype in (torch.float64, torch.float32):
        got = lf.compile(s, "torch")(reduction="none")(torch.tensor(points, dtype=dtype))
        exact = torch.tensor([float(mpmath.log1p(mpmath.exp(mpmath.mpf(v)))) for v in points], dtype=dtype)
        # F.softplus's default threshold of 20 would be 1e-10 off at 20.5 in float64. At -745 the exact
        # value (5e-324) is subnormal, where no relative accuracy exists: the vectorised exp of some CPUs
        # flushes it to 0. Hence an absolute tolerance of the smallest normal number, and none above it.
        torch.testing.assert_close(got, exact, rtol=2 * torch.finfo(dtype).eps, atol=torch.finfo(dtype).tiny)


def test_numpy_softplus_is_exact_from_underflow_to_overflow():
    import mpmath

    s = spec("softplus(x)", reduction="none", x=V("input"))
    points = [-1e308, -745.0, -100.0, -20.0, -1e-300, -0.0, 0.0, 1e-8, 20.5, 36.0, 40.1, 700.0, 1e308]
    got = lf.compile(s, "numpy").loss(np.array(points), reduction="none")
    exact = np.array([float(mpmath.log1p(mpmath.exp(mpmath.mpf(v)))) for v in points])
    # max(x, 0) + log1p(exp(-|x|)) rounds twice: 2 eps relative; at -745 the exact value is subnormal (see the
    # Torch test above), hence the absolute tolerance of the smallest normal number.
    np.testing.assert_allclose(got, exact, rtol=2 * np.finfo(np.float64).eps, atol=np.finfo(np.float64).tiny)
    special = lf.compile(s, "numpy").loss(np.array([np.inf, -np.inf, np.nan]), reduction="none")
    assert special[0] == np.inf and special[1] == 0.0 and np.isnan(special[2])  # as np.logaddexp(0, x)


def test_numpy_sigmoid_is_torchs_from_underflow_to_saturation():
    import mpmath

    s = spec("sigmoid(x)", reduction="none", x=V("input"))
    module = lf.compile(s, "numpy")
    normal = [-708.0, -100.0, -40.0, -1.0, -1e-300, 0.0, 1e-8, 1.0, 36.0, 40.0, 745.0, 1e308]
    got = module.loss(np.array(normal), reduction="none")
    exact = np.array([float(1 / (1 + mpmath.exp(-mpmath.mpf(v)))) for v in normal])
    # exp rounds once, 1 + e and 1 / d once each: 3 eps relative, down to the smallest normal result.
    np.testing.assert_allclose(got, exact, rtol=3 * np.finfo(np.float64).eps, atol=0)
    # Below -709.78 the exact value is subnormal: 0 here, and in torch.sigmoid; inf, -inf and NaN as torch.
    edge = np.array([-1e308, -745.0, -720.0, -709.9, -np.inf, np.inf, np.nan])
    with np.errstate(all="raise"):  # no overflow warning escapes
        got = module.loss(edge, reduction="none")
    np.testing.assert_array_equal(got, torch.sigmoid(torch.tensor(edge, dtype=torch.float64)).numpy())


def test_exp_of_u_minus_logsumexp_is_one_softmax_exact_at_huge_logits():
    z = sympy.Symbol("z", real=True)
    whole = softmaxes(sympy.exp(z - lf.logsumexp(z)))
    for printer, text in ((TorchLossPrinter(), "torch.softmax(z, dim=-1)"), (NumpyLossPrinter(), "_softmax(z)")):
        printer.vector_names = printer.array_names = frozenset({"z"})
        assert printer.doprint(whole) == text
    # exp(z - logsumexp(z)) at z ~ 1e10 keeps only ~6 digits (z - lse rounds at 1e10 * 2**-52); the softmax
    # form subtracts the max exactly: both targets give 1/2 to each of two equal largest logits, to the last bit.
    ce = lf.builtin("cross_entropy")
    logits, target = np.array([[1e10 + 0.25, 1e10 + 0.25, 3.0]]), np.array([[0.0, 0.0, 1.0]])
    _, (grad,) = lf.compile(ce, "numpy").loss_and_grad(logits, target, reduction="sum")
    assert grad.tolist() == [[0.5, 0.5, -1.0]]
    zt = torch.tensor(logits, requires_grad=True)
    lf.compile(ce, "torch")(reduction="sum")(zt, torch.tensor(target)).backward()
    assert zt.grad.tolist() == [[0.5, 0.5, -1.0]]


def test_untaken_where_branch_never_poisons_value_gradient_or_hessian():
    s = spec("where(x > 0, x*log(x), 0) + where(x < 1, sqrt(1 - x), 0)", x=V("input"))
    assert "np.select" not in lf.generate(s, "numpy")
    x = torch.tensor([0.0, -1.0, 1.0, 2.0, 0.5], dtype=torch.float64, requires_grad=True)
    out = lf.compile(s, "torch")(reduction="sum")(x)
    (g,) = torch.autograd.grad(out, x, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), x)
    assert torch.isfinite(out) and torch.isfinite(g).all() and torch.isfinite(h).all()
    with np.errstate(all="raise"):  # no warning from an untaken branch
        value, (grad,) = lf.compile(s, "numpy").loss_and_grad(np.array([0.0, -1.0, 2.0]), reduction="none")
    assert np.isfinite(value).all() and np.isfinite(grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_select_drops_an_overflowed_branch_in_every_dtype(dtype):
    # x**4 overflows in the branch not taken for |x| >= 2: the result must be |x|, and values
    # and gradients must equal torch.where's, with and without create_graph.
    s = spec("where(abs(x) < 2, x**4, abs(x))", reduction="none", x=V("input"))
    big = torch.finfo(dtype).max ** 0.5
    x = torch.tensor([0.0, 1.5, -1.5, 2.0, -3.0, big, -big], dtype=dtype, requires_grad=True)
    module = lf.compile(s, "torch")(reduction="none")
    out = module(x)
    expected = torch.where(x.abs() < 2, x**4, x.abs())
    assert out.dtype == dtype and torch.equal(out, expected)
    (grad,) = torch.autograd.grad(out.sum(), x)
    (grad_graph,) = torch.autograd.grad(module(x).sum(), x, create_graph=True)
    expected_grad = torch.where(x.abs() < 2, 4 * x.detach() ** 3, torch.sign(x.detach()))
    assert torch.equal(grad, expected_grad) and torch.equal(grad_graph, expected_grad)
    assert "torch.where(" in lf.generate(s, "torch")


def test_guard_where_is_symbolically_equal_where_selected():
    x = sympy.Symbol("x", real=True)
    e = lf.where(x > 0, sympy.log(x) / x, sympy.exp(x))
    g = guard_where(e, frozenset({x}))
    for v in (0.5, 2.0, -3.0):
        assert float(g.subs(x, v)) == pytest.approx(float(e.subs(x, v)))


# -- argument checks and names ------------------------------------------------------------------


def test_shape_mismatch_names_both_arguments():
    mod, Loss = lf.compile(lf.builtin("mse"), "numpy"), lf.compile(lf.builtin("mse"), "torch")
    with pytest.raises(ValueError, match=r"target.*\(5,\).*pred.*\(5, 1\)"):
        mod.loss(np.zeros((5, 1)), np.zeros(5))
    with pytest.raises(ValueError, match=r"target.*pred"):
        Loss()(torch.zeros(5, 1), torch.zeros(5))
    ce = lf.compile(lf.builtin("cross_entropy"), "numpy")
    with pytest.raises(ValueError, match=r"target has 4 entries along axis 'class' but logits has 3"):
        ce.loss(np.zeros((2, 3)), np.zeros((2, 4)))


def test_unknown_reduction_is_a_value_error():
    with pytest.raises(ValueError, match="'avg'"):
        lf.compile(lf.builtin("mse"), "numpy").loss(np.zeros(2), np.zeros(2), reduction="avg")
    with pytest.raises(ValueError, match="'avg'"):
        lf.compile(lf.builtin("mse"), "torch")(reduction="avg")


def test_names_that_collide_with_generated_code_still_work():
    names = ["np", "torch", "F", "self", "loss", "grad", "value", "dtype", "l", "_t0", "grad_x", "sum", "batch"]
    symbols = {n: V("input") for n in names[:7]} | {n: V("target") for n in names[7:11]}
    symbols |= {"batch": V("param", default=2.0), "sum": V("param", default=3.0)}
    expr = " + ".join(f"{n}**2" for n in names[:7]) + " - " + " - ".join(names[7:11]) + " + batch*sum(np)"
    # sum(np) needs an axis: use a scalar form instead
    expr = expr.replace(" + batch*sum(np)", " + batch*sum*np")
    s = lf.LossSpec(name="collide", expr=expr, symbols=symbols)
    args = [np.full(3, float(i + 1)) for i in range(11)]
    value, grads = lf.compile(s, "numpy").loss_and_grad(*args, reduction="sum")
    expected = sum(float(i + 1) ** 2 for i in range(7)) * 3 - sum(float(i + 1) for i in range(7, 11)) * 3 + 2 * 3 * 1 * 3
    assert value == pytest.approx(expected)
    np.testing.assert_allclose(grads[0], 2 * 1.0 + 6.0)
    Loss = lf.compile(s, "torch")
    # A param whose name the generated code uses is accepted under its mangled name.
    assert "batch_ (float, optional)" in Loss.__doc__
    assert float(Loss(reduction="sum", batch_=2.0)(*map(torch.tensor, args))) == pytest.approx(expected)


def test_symbols_named_reduction_work_under_mangled_names():
    # A param named `reduction` becomes the keyword `reduction_`; `reduction=` stays the reduction.
    s = lf.LossSpec(name="r", expr="x*reduction", symbols={"x": V("input"), "reduction": V("param", default=1.0)})
    x = np.array([1.0, 2.0, 3.0])
    assert lf.compile(s, "numpy").loss(x, reduction="sum", reduction_=2.0) == 12.0
    Loss = lf.compile(s, "torch")
    assert "reduction_ (float, optional)" in Loss.__doc__
    assert float(Loss(reduction="mean", reduction_=2.0)(torch.tensor(x))) == 4.0
    # An input named `reduction` is positional, as every array is.
    s = lf.LossSpec(name="r", expr="(reduction - t)**2", symbols={"reduction": V("input"), "t": V("target")})
    value, (grad,) = lf.compile(s, "numpy").loss_and_grad(x, np.zeros(3), reduction="sum")
    assert value == 14.0 and grad.tolist() == [2.0, 4.0, 6.0]
    out = lf.compile(s, "torch")(reduction="sum")(torch.tensor(x, requires_grad=True), torch.zeros(3))
    assert out.item() == 14.0


def test_unknown_target_names_it():
    with pytest.raises(RenderError) as info:
        lf.generate(lf.builtin("mse"), "tensorflow")
    assert info.value.token == "tensorflow" and "numpy, torch, jax" in str(info.value)


def test_onehot_targets_take_class_indices_in_both_targets():
    s = lf.builtin("cross_entropy")
    z = np.random.default_rng(0).normal(size=(6, 4))
    idx = np.array([0, 3, 1, 1, 2, 0])
    ref = F.cross_entropy(torch.tensor(z), torch.tensor(idx)).item()
    assert lf.compile(s, "numpy").loss(z, idx) == pytest.approx(ref, rel=1e-12)
    assert lf.compile(s, "torch")()(torch.tensor(z), torch.tensor(idx)).item() == pytest.approx(ref, rel=1e-12)
    with pytest.raises(ValueError, match="out of range"):
        lf.compile(s, "numpy").loss(z, np.array([0, 4, 1, 1, 2, 0]))


# -- combined specs ---------------------------------------------------------------------------


def multitask():
    return lf.combine({"cls": (lf.builtin("cross_entropy"), 1.0),
                       "box": (lf.builtin("huber").rename(pred="box_pred", target="box_target"), 0.5)})


def test_combined_loss_is_the_weighted_sum_of_reduced_terms_and_reports_each_term():
    s = multitask()
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(8, 5, generator=g, dtype=R), torch.randint(0, 5, (8,), generator=g)
    bp, bt = torch.randn(8, 4, generator=g, dtype=R), torch.randn(8, 4, generator=g, dtype=R)
    zr, bpr = z.clone().requires_grad_(), bp.clone().requires_grad_()
    want = F.cross_entropy(zr, y) + 0.5 * F.huber_loss(bpr, bt)
    want.backward()
    Loss = lf.compile(s, "torch")
    zo, bpo = z.clone().requires_grad_(), bp.clone().requires_grad_()
    out = Loss()(zo, y, bpo, bt)
    out.backward()
    torch.testing.assert_close(out, want.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(zo.grad, zr.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bpo.grad, bpr.grad, rtol=1e-12, atol=1e-12)
    terms = Loss().terms(z, y, bp, bt)
    assert set(terms) == {"cls", "box"}
    assert terms["box"].item() == pytest.approx(F.huber_loss(bp, bt).item())
    mod = lf.compile(s, "numpy")
    value, grads = mod.loss_and_grad(z.numpy(), y.numpy(), bp.numpy(), bt.numpy())
    assert value == pytest.approx(want.item(), rel=1e-12)
    np.testing.assert_allclose(grads[0], zr.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert mod.loss_terms(z.numpy(), y.numpy(), bp.numpy(), bt.numpy())["cls"] == pytest.approx(terms["cls"].item())
    with pytest.raises(ValueError, match="one per-sample shape"):
        mod.loss(z.numpy(), y.numpy(), bp.numpy(), bt.numpy(), reduction="none")


# -- docstrings --------------------------------------------------------------------------------


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("name", ["mse", "cross_entropy", "triplet", "gaussian_nll"])
def test_docstring_has_pytorch_shape_and_its_example_runs(name, target):
    if target == "jax":
        pytest.importorskip("jax")
    s = lf.builtin(name)
    mod_or_cls = lf.compile(s, target)
    doc = (mod_or_cls if target == "torch" else sys.modules[mod_or_cls.__name__]).__doc__
    for section in ("The per-sample loss is::", "Args:", "reduction (str, optional)", "Shape:", "Example::"):
        assert section in doc, section
    for p in s.params:
        kind = "float or " if s.symbols[p].tensor else "int" if p in s.class_index_params else "float"
        assert f"{p} ({kind}" in doc
    example = [e.source for e in doctest.DocTestParser().get_examples(doc)]  # ">>>", continued with "..."
    namespace = dict(vars(sys.modules[mod_or_cls.__module__] if target == "torch" else mod_or_cls))
    exec("".join(example), namespace)  # our own generated docstring


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_runs_on_cuda_with_constants_on_the_device():
    s = lf.builtin("focal")
    x = torch.randn(64, device="cuda", requires_grad=True)
    t = (torch.rand(64, device="cuda") < 0.5).float()
    out = lf.compile(s, "torch")()(x, t)
    out.backward()
    assert out.device.type == "cuda" and x.grad.device.type == "cuda" and x.grad.dtype == torch.float32


def test_templates_ship_inside_the_wheel(tmp_path):
    import zipfile

    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
         str(ROOT)],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("lossforge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"lossforge/templates/{name}.py.j2" for name in ("numpy", "torch", "jax", "_shapes", "_kernels")} <= names
    assert "lossforge/library/focal.toml" in names


def test_compiled_templates_are_cached_per_user_and_a_broken_cache_is_no_cache(tmp_path):
    import jinja2

    from lossforge.codegen import render

    env = render.environment()
    assert isinstance(env.bytecode_cache, render._CompiledTemplates)

    def fresh(cache):
        return jinja2.Environment(loader=env.loader, bytecode_cache=cache, keep_trailing_newline=True,
                                  trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)

    # A cache folder that does not exist: nothing is written, the template still compiles.
    missing = render._CompiledTemplates(str(tmp_path / "missing"))
    code = fresh(None).get_template("_shapes.py.j2").root_render_func.__code__.co_code
    assert fresh(missing).get_template("_shapes.py.j2").root_render_func.__code__.co_code == code
    assert not (tmp_path / "missing").exists()
    # A cache entry that cannot be read (a folder where the file should be): compiled afresh.
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    cache = render._CompiledTemplates(str(blocked))
    first = fresh(cache)
    first.get_template("_shapes.py.j2")
    (entry,) = blocked.iterdir()
    entry.unlink()
    entry.mkdir()
    assert fresh(cache).get_template("_shapes.py.j2").root_render_func.__code__.co_code == code
    # A cached entry loads back to the same template.
    good = tmp_path / "good"
    good.mkdir()
    cache = render._CompiledTemplates(str(good))
    fresh(cache).get_template("_shapes.py.j2")
    assert len(list(good.iterdir())) == 1
    assert fresh(cache).get_template("_shapes.py.j2").root_render_func.__code__.co_code == code
