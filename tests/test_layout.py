"""Generated code as ruff formats it (lossforge.codegen.layout): its spelling of expressions, the temporaries that
keep a line within 88 characters, the split of what is still too long; ruff itself is the reference."""

from __future__ import annotations

import ast
import random
import subprocess
import sys
from pathlib import Path

import pytest

import lossforge as lf
from lossforge.codegen import layout

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
RULES = "E,F,W,I,B,UP"


def _ruff(*args: str, cwd: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], capture_output=True, text=True, cwd=cwd,
                          input=stdin)


def _same_tree(a: str, b: str, mode: str = "eval") -> bool:
    return ast.dump(ast.parse(a, mode=mode)) == ast.dump(ast.parse(b, mode=mode))


# -- the goldens: every built-in and example, every target ----------------------------------------------------


def test_goldens_are_ruff_formatted():
    out = _ruff("format", "--isolated", "--check", "--diff", str(GOLDEN))
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr


def test_goldens_are_ruff_clean():
    out = _ruff("check", "--isolated", "--no-cache", "--select", RULES, "--output-format", "concise", str(GOLDEN))
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr


LONG = """
name = "cost_sensitive_loss_for_triage"
expr = '''
where(model_prediction > threshold_that_decides,
      log(1 + exp(-model_prediction)) * positive_weight_factor,
      (model_prediction - observed_target_value)**2 / 2)
+ softplus(model_prediction - threshold_that_decides) * observed_target_value
'''
[symbols]
model_prediction = { role = "input" }
observed_target_value = { role = "target" }
threshold_that_decides = { role = "param", default = 0.5 }
positive_weight_factor = { role = "param", default = 2.0, domain = "positive" }
"""


#: Longer still: a 39-character spec name and 30-character symbols, about the most that every line of every
#: target takes (a longer name can leave a line that no split shortens, such as a dict entry ``"name": name``).
LONGER = """
name = "missed_positive_weighted_screening_loss"
expr = '''
missed_positive_cost_weight_ab * softplus(-classifier_head_logit_output_x) * ground_truth_label_per_sample
+ (1 - ground_truth_label_per_sample) * softplus(classifier_head_logit_output_x)
'''
[symbols]
classifier_head_logit_output_x = { role = "input" }
ground_truth_label_per_sample = { role = "target", domain = "probability" }
missed_positive_cost_weight_ab = { role = "param", default = 5.0, domain = "positive" }
"""


@pytest.mark.parametrize("text", [LONG, LONGER], ids=["long", "longer"])
@pytest.mark.parametrize("target", ["numpy", "torch", "jax"])
def test_long_names_stay_ruff_clean(tmp_path, target, text):
    """A user's long symbol and spec names: signatures, calls, unpackings and docstrings split as ruff splits
    them."""
    source = lf.generate(lf.loads(text), target)
    assert max(len(line) for line in source.splitlines()) <= 88
    path = tmp_path / "generated.py"
    path.write_text(source)
    assert _ruff("format", "--isolated", "--check", "--diff", str(path)).returncode == 0, \
        _ruff("format", "--isolated", "--diff", str(path)).stdout
    checked = _ruff("check", "--isolated", "--no-cache", "--select", RULES, str(path))
    assert checked.returncode == 0, checked.stdout


def test_longer_names_compute_as_before():
    """The unpackings and calls split over lines still compute the loss (NumPy against its formula by hand)."""
    import numpy as np

    module = lf.compile(lf.loads(LONGER), "numpy")
    x = np.array([-30.0, -0.5, 0.0, 2.0, 40.0])
    y = np.array([1.0, 0.0, 0.5, 1.0, 0.0])
    softplus = np.logaddexp(0.0, x)
    by_hand = 5.0 * (softplus - x) * y + (1 - y) * softplus
    value, (grad,) = module.loss_and_grad(x, y, reduction="sum")
    np.testing.assert_allclose(module.loss(x, y, reduction="none"), by_hand, rtol=1e-12)
    np.testing.assert_allclose(value, by_hand.sum(), rtol=1e-12)
    sigmoid = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(grad, 5.0 * (sigmoid - 1) * y + (1 - y) * sigmoid, rtol=1e-12, atol=1e-300)


def test_long_names_compute_as_before():
    """The split code computes what the spec says (NumPy against its own formula, by hand)."""
    import numpy as np

    module = lf.compile(lf.loads(LONG), "numpy")
    x = np.array([-3.0, 0.2, 0.7, 4.0])
    y = np.array([0.0, 1.0, 0.5, 1.0])
    by_hand = np.where(x > 0.5, np.log1p(np.exp(-x)) * 2.0, (x - y) ** 2 / 2) + np.log1p(np.exp(x - 0.5)) * y
    np.testing.assert_allclose(module.loss(x, y, reduction="none"), by_hand, rtol=1e-12)


# -- expression: ruff's spelling -------------------------------------------------------------------------------

#: (as a printer writes it, as ruff 0.17 formats it): each right-hand side checked with ruff once.
SPELLED = [
    ("-x**2", "-(x**2)"),
    ("(1/2)*_t1*(2*_t0 - _t1)", "(1 / 2) * _t1 * (2 * _t0 - _t1)"),
    ("x*(-2)", "x * (-2)"),
    ("(~x) & (y > 0)", "(~x) & (y > 0)"),
    ("(label_smoothing > 0)", "label_smoothing > 0"),
    ("x**(-1)", "x ** (-1)"),
    ("x**-1", "x**-1"),
    ("f(x)**2", "f(x) ** 2"),
    ("x[..., 0]**2", "x[..., 0] ** 2"),
    ("a.b**c.d", "a.b**c.d"),
    ("x**2**y", "x**2**y"),
    ("(x**y)**z", "(x**y) ** z"),
    ("x[a+1:]", "x[a + 1 :]"),
    ("x[f(a):g(b)]", "x[f(a) : g(b)]"),
    ("x[-1:]", "x[-1:]"),
    ("x[a.b:]", "x[a.b :]"),
    ("-(-x)", "-(-x)"),
    ("not x**2", "not (x**2)"),
    ("x ** -(y**z)", "x ** -(y**z)"),
    ("_choose(c, lambda: -x**2, lambda: 0)", "_choose(c, lambda: -(x**2), lambda: 0)"),
    ("np.sum(t*w*(a - b), axis=-1, keepdims=True)", "np.sum(t * w * (a - b), axis=-1, keepdims=True)"),
    ("a if b else c if d else e", "a if b else c if d else e"),
    ("x.shape[:-1] + (1,)", "x.shape[:-1] + (1,)"),
    ("'s' + x", '"s" + x'),
]


@pytest.mark.parametrize(("printed", "spelled"), SPELLED)
def test_expression_spelled_as_ruff(printed, spelled):
    assert layout.expression(printed) == spelled
    assert _same_tree(printed, spelled)


def test_spelled_cases_are_what_ruff_writes():
    source = "".join(f"v = {spelled}\n" for _, spelled in SPELLED)
    out = _ruff("format", "--isolated", "-", stdin=source)
    assert out.returncode == 0 and out.stdout == source, out.stdout


def _random_expression(rng: random.Random, depth: int) -> str:
    """A random expression in the constructs the printers write, every compound part in parentheses."""
    if depth == 0 or rng.random() < 0.2:
        return rng.choice(["x", "y", "_t0", "a.b", "2", "0.5", "1e-05", "True", "x[..., 0]"])
    a, b = (f"({_random_expression(rng, depth - 1)})" for _ in range(2))
    return rng.choice([
        f"{a}{rng.choice(['+', '-', '*', '/', '**', '%'])}{b}",
        f"{rng.choice(['-', '~', 'not '])}{a}",
        f"np.where({a}, {b}, {a})",
        f"{a} {rng.choice(['<', '>=', '==', 'is'])} {b}",
        f"{a} {rng.choice(['and', 'or', '&', '|'])} {b}",
        f"{a} if {b} else {a}",
        f"_choose({a}, lambda: {b}, lambda: 0)",
        f"f({a}, axis=-1, keepdims={b})",
    ])


def test_expression_keeps_the_tree_and_is_ruff_stable():
    """Random expressions, written with every parenthesis and with the fewest (``ast.unparse``): the same tree as
    written, and ruff leaves the spelling as it is."""
    rng = random.Random(7)
    full = [_random_expression(rng, 4) for _ in range(300)]
    printed = full + [ast.unparse(ast.parse(p, mode="eval")) for p in full]
    spelled = [layout.expression(p) for p in printed]
    for p, s in zip(printed, spelled, strict=True):
        assert _same_tree(p, s), (p, s)
    source = "".join(f"v = {s}\n" for s in spelled if len(s) < 80)
    out = _ruff("format", "--isolated", "-", stdin=source)
    assert out.returncode == 0
    for ours, theirs in zip(source.splitlines(), out.stdout.splitlines(), strict=True):
        assert ours == theirs


# -- fit: temporaries that keep the order of evaluation ------------------------------------------------------


def _run(lines: list[tuple[str, str]], rest: str, namespace: dict) -> object:
    for name, text in lines:
        namespace[name] = eval(text, namespace)  # noqa: S307 - generated text of this test's own making
    return eval(rest, namespace)  # noqa: S307


def test_fit_cuts_a_long_sum_into_prefixes():
    """A 300-term sum: every line within its width, and the same float, bit for bit (same order of additions)."""
    terms = [f"w{i} * x" for i in range(300)]
    text = layout.expression(" + ".join(terms))
    lines, rest = layout.fit(text, 60, 84, layout.counter([]))
    assert len(rest) <= 60 and all(len(n) + 3 + len(t) <= 84 for n, t in lines)
    rng = random.Random(3)
    namespace = {f"w{i}": rng.uniform(-1, 1) for i in range(300)} | {"x": 0.1}
    assert _run(lines, rest, dict(namespace)) == eval(text, dict(namespace))  # noqa: S307


def test_fit_never_runs_a_branch_the_select_does_not_pick():
    """Nothing is lifted out of a select's branches: what only a branch reads runs only where it is picked."""
    calls = []

    def boom(v):
        calls.append(v)
        return v

    def _choose(cond, a, b):
        return a() if cond else b()

    text = layout.expression("_choose(c, lambda: boom(x) * boom(y) + boom(x*y*x*y*x*y*x*y), lambda: 1.5) + z")
    lines, rest = layout.fit(text, 30, 60, layout.counter(["_t4"]))
    assert lines and all(name.startswith("_t") and int(name[2:]) >= 5 for name, _ in lines)
    assert all("boom" not in part or part.startswith("_choose(c, lambda") for _, part in lines)
    for c, expected in ((True, 2 * 3 + 2.0**4 * 3**4 + 10), (False, 1.5 + 10)):
        calls.clear()
        namespace = {"c": c, "x": 2.0, "y": 3.0, "z": 10, "boom": boom, "_choose": _choose}
        assert _run(lines, rest, namespace) == expected
        assert bool(calls) == c  # not picked: never computed


def test_fit_never_lifts_out_of_a_lambda_or_the_right_of_and():
    text = layout.expression("f(a) and g(b, c, d, e, f, g, h) or (lambda: h(a, b, c, d, e, f))()")
    lines, _ = layout.fit(text, 10, 84, layout.counter([]))
    assert lines
    for _, hoisted in lines:  # g(...) only with the f(a) that decides whether it runs; h(...) never
        assert "h(" not in hoisted and ("g(" not in hoisted or hoisted.startswith("f(a) and g("))


# -- module: what is still too long -----------------------------------------------------------------------------


def test_module_splits_and_wraps_as_ruff(tmp_path):
    source = (
        "def function_with_a_long_name(first_argument, second_argument, third_argument, fourth):\n"
        "    value = a_call_with_arguments(first_argument, second_argument, third_argument, fourth_arg)\n"
        "    other = a_call_with_arguments(first_argument, second_argument, third_argument, [1, 2, 3, 4], x)\n"
        "    flag = first_argument is not None and second_argument is not None and third_argument is None\n"
        "    pair = a_call_with_arguments(first_argument, second_argument, third_argument), fourth_arg\n"
        "    # a comment that runs on for far too long for one line, so that it has to be wrapped at a space\n"
        "    return value if first_argument is not None else a_call_with_arguments(second_argument, 1)\n"
    )
    laid = layout.module(source)
    assert _same_tree(source, laid, mode="exec")
    assert max(map(len, laid.splitlines())) <= 88
    out = _ruff("format", "--isolated", "-", stdin=laid)
    assert out.stdout == laid, out.stdout
