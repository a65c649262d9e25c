"""Properties derived from the expression: the chapter's claims, and counterexamples."""

from __future__ import annotations

import pytest

import lossforge as lf

V = lf.Var


def custom(expr):
    return lf.LossSpec(name="c", expr=expr, symbols={"x": V("input"), "t": V("target")})


# name -> (convex, bounded_gradient, smoothness, zero_at_target)
CLAIMS = {
    "mse": (True, False, "smooth", True),  # convex, sensitive to outliers
    "mae": (True, True, "kinked", True),  # robust, not differentiable at 0
    "huber": (True, True, "smooth", True),  # robust and smooth
    "smooth_l1": (True, True, "smooth", True),
    "log_cosh": (True, True, "smooth", True),
    "hinge": (True, True, "kinked", True),
    "quantile": (True, True, "kinked", True),
    "bce_logits": (True, True, "smooth", False),
    "cross_entropy": (True, True, "smooth", False),
    "soft_margin": (True, True, "smooth", False),
    "wasserstein": (True, True, "smooth", False),
    # The clamp at eps = 1e-7 is a kink, and a concave one: below eps the loss is flat at
    # -log(eps), above it falls, so the clamped loss is neither smooth nor convex (on [0, 1]).
    "bce": (False, True, "kinked", False),
    "cost_sensitive_bce": (False, True, "kinked", False),
}


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_chapter_claims(name):
    p = lf.properties(lf.builtin(name))
    assert (p.convex, p.bounded_gradient, p.smoothness, p.zero_at_target) == CLAIMS[name], dict(p.evidence)


@pytest.mark.parametrize(
    ("expr", "convex", "bounded", "smoothness"),
    [
        ("-(x - t)**2", False, False, "smooth"),
        ("sigmoid(x - t)", False, True, "smooth"),
        ("1 - exp(-(x - t)**2)", False, True, "smooth"),
        ("heaviside(x - t) + x**2", False, False, "discontinuous"),
        ("where(x > t, (x - t)**2, 0)", True, False, "smooth"),
        ("abs(x - t)**0.5 * 0 + abs(x - t)", True, True, "kinked"),
    ],
)
def test_counterexamples(expr, convex, bounded, smoothness):
    p = lf.properties(custom(expr))
    assert (p.convex, p.bounded_gradient, p.smoothness) == (convex, bounded, smoothness), dict(p.evidence)


def test_evidence_says_how_each_property_was_decided():
    p = lf.properties(lf.builtin("mse"))
    assert set(p.evidence) == {"convex", "bounded_gradient", "smoothness", "zero_at_target"}
    assert "pairs" in p.evidence["convex"]
    assert "unbounded" in p.evidence["bounded_gradient"]


def test_zero_at_target_needs_one_input_and_one_target():
    assert lf.properties(lf.builtin("triplet")).zero_at_target is None
    assert lf.properties(lf.builtin("margin_ranking")).zero_at_target is None


@pytest.mark.parametrize("name", lf.builtin_names())
def test_every_builtin_has_properties(name):
    p = lf.properties(lf.builtin(name))
    assert p.smoothness in ("smooth", "kinked", "discontinuous")
    assert p.convex in (True, False) and p.bounded_gradient in (True, False)


def test_a_kink_on_the_thin_side_of_a_clamp_is_found_where_it_is():
    # Random lines through [0, 1] almost never pass below 1e-7: the break of the clamp is solved for.
    spec = lf.LossSpec(name="c", expr="-log(clamp(p, 1e-7, 1))", symbols={"p": V("input", domain="probability")})
    p = lf.properties(spec)
    assert p.smoothness == "kinked" and "p=1e-07" in p.evidence["smoothness"]
    assert p.convex is False
    smooth = lf.LossSpec(name="c", expr="-log(p + 1e-7)", symbols={"p": V("input", domain="probability")})
    assert lf.properties(smooth).smoothness == "smooth" and lf.properties(smooth).convex is True
