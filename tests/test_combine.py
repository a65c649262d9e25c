"""Composition of losses: total = a*loss1 + b*loss2."""

from __future__ import annotations

import pytest
import sympy

import lossforge as lf
from lossforge.errors import SpecError


def multitask():
    return lf.combine(
        {
            "cls": (lf.builtin("cross_entropy"), 1.0),
            "box": (lf.builtin("huber").rename(pred="box_pred", target="box_target"), 0.5),
        }
    )


def test_combined_value_is_the_weighted_sum_of_terms():
    spec = multitask()
    ce, hub = lf.builtin("cross_entropy"), lf.builtin("huber").rename(pred="box_pred", target="box_target")
    assert sympy.expand(spec.sympy - (ce.sympy + hub.sympy / 2)) == 0
    assert list(spec.terms) == ["cls", "box"]
    assert spec.terms["box"][0] == 0.5


def test_positional_arguments_are_inputs_and_targets_in_term_order_shared_once():
    spec = lf.combine({"a": (lf.builtin("mse"), 1.0), "b": (lf.builtin("mae"), 2.0), "c": (lf.builtin("huber"), 1.0)})
    assert spec.arrays == ("pred", "target")
    assert spec.params == ("delta",)
    spec = multitask()
    assert spec.arrays == ("logits", "target", "box_pred", "box_target")
    assert spec.params == ("weight", "ignore_index", "label_smoothing", "delta")


def test_same_name_different_declaration_is_refused_naming_it():
    # bce's target is a probability, cross_entropy's a one-hot vector.
    with pytest.raises(SpecError, match="'target'.*rename") as info:
        lf.combine({"cls": (lf.builtin("cross_entropy"), 1.0), "bin": (lf.builtin("bce"), 1.0)})
    assert info.value.token == "target"


def test_terms_that_reduce_differently_keep_their_own_reductions():
    import dataclasses

    summed = dataclasses.replace(lf.builtin("mae"), reduction="sum")
    spec = lf.combine({"a": (lf.builtin("mse"), 1.0), "b": (summed, 1.0)})
    assert spec.reduction is None and dict(spec.term_reductions) == {"a": "mean", "b": "sum"}
    text = lf.dumps(spec)
    assert "\nreduction =" not in text and 'reduction = "mean" }' in text and 'reduction = "sum" }' in text
    assert lf.loads(text) == spec
    # an explicit reduction reduces every term by it, as one spec; terms that agree keep their common one
    forced = lf.combine({"a": (lf.builtin("mse"), 1.0), "b": (summed, 1.0)}, reduction="sum")
    assert forced.reduction == "sum" and not forced.term_reductions
    agreed = lf.combine({"a": (summed, 1.0), "b": (dataclasses.replace(lf.builtin("mse"), reduction="sum"), 1.0)})
    assert agreed.reduction == "sum" and not agreed.term_reductions


def test_a_per_sample_term_beside_a_reduced_one_is_refused_naming_it():
    import dataclasses

    unreduced = dataclasses.replace(lf.builtin("mae"), reduction="none")
    with pytest.raises(SpecError, match=r"term 'b' reduces by 'none'.*term 'a' reduced by 'mean'.*reduction=") as info:
        lf.combine({"a": (lf.builtin("mse"), 1.0), "b": (unreduced, 1.0)})
    assert info.value.token == "b"
    assert lf.combine({"a": (lf.builtin("mse"), 1.0), "b": (unreduced, 1.0)}, reduction="none").reduction == "none"


_TERMS = """
name = "two"
expr = "1.0*(p**2) + 2.0*(abs(p))"
{top}
[symbols]
p = {{ role = "input" }}
[terms]
a = {{ weight = 1.0, expr = "p**2"{a} }}
b = {{ weight = 2.0, expr = "abs(p)"{b} }}
"""


@pytest.mark.parametrize(
    ("top", "a", "b", "message", "token"),
    [
        ('reduction = "mean"', ', reduction = "mean"', ', reduction = "sum"', "takes no reduction key", "reduction"),
        ("", ', reduction = "mean"', "", "term 'b' has no reduction", "b"),
        ("", ', reduction = "mean"', ', reduction = "none"', "reduction 'none' is not one a term can take", "none"),
        ("", ', reduction = "mean"', ', reduction = "avg"', "reduction 'avg' is not one a term can take", "avg"),
    ],
)
def test_a_spec_file_with_wrong_term_reductions_is_refused_naming_the_token(top, a, b, message, token):
    with pytest.raises(SpecError, match=message) as info:
        lf.loads(_TERMS.format(top=top, a=a, b=b))
    assert info.value.token == token
    assert lf.loads(_TERMS.format(top="", a=', reduction = "mean"', b=', reduction = "sum"')).reduction is None


def test_reduction_none_belongs_to_a_combined_spec_only():
    with pytest.raises(SpecError, match="belongs to a combined spec") as info:
        lf.LossSpec(name="x", expr="p**2", symbols={"p": lf.Var("input")}, reduction=None)
    assert info.value.token == "reduction"
    with pytest.raises(SpecError, match="carry no reduction of their own") as info:
        lf.LossSpec(name="x", expr="p**2", symbols={"p": lf.Var("input")}, terms={"a": (1.0, "p**2")},
                    term_reductions={"a": "sum"})
    assert info.value.token == "a"


@pytest.mark.parametrize(
    ("terms", "token"),
    [
        ({}, "terms"),
        ({"a": (lf.builtin("mse"), float("nan"))}, "a"),
        ({"a": ("mse", 1.0)}, "a"),
        ({"class": (lf.builtin("mse"), 1.0)}, "class"),
    ],
)
def test_bad_terms_name_the_token(terms, token):
    with pytest.raises(SpecError) as info:
        lf.combine(terms)
    assert info.value.token == token


def test_accepts_are_kept_per_term_and_the_spec_round_trips():
    spec = lf.combine({"rate": (lf.builtin("poisson_nll"), 1.0), "reg": (lf.builtin("mse").rename(target="log_target"), 0.1)})
    assert spec.accept["overflow"].startswith("rate: ")
    assert lf.loads(lf.dumps(spec)) == spec


def test_gradients_of_a_combination_are_the_weighted_sums():
    spec = lf.combine({"a": (lf.builtin("mse"), 2.0), "b": (lf.builtin("mae"), 0.5)})
    g = spec.gradient()["pred"]
    mse_g, mae_g = lf.builtin("mse").gradient()["pred"], lf.builtin("mae").gradient()["pred"]
    assert sympy.expand(g - (2 * mse_g + mae_g / 2)) == 0
