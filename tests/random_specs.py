"""Random loss specs in the spec language, for sweeping the whole pipeline.

``scalar_spec(seed)`` composes elementwise functions of up to two inputs, a
target and a param; ``vector_spec(seed)`` reduces vector expressions over an
axis. Each seed gives the same spec every time (``random.Random(seed)``), so a
failure is a reproducible case, not a flake. Seeds whose expression SymPy
simplifies to something without an input give None.
"""

from __future__ import annotations

import random
import re

import lossforge as lf
from lossforge.errors import LossforgeError

UNARY = ("exp({})", "log({})", "sqrt({})", "abs({})", "tanh({})", "sigmoid({})", "softplus({})", "cosh({})",
         "log1p({})", "expm1({})", "sign({})", "heaviside({})", "({})**2", "({})**3", "clamp({}, -1, 1)")
BINARY = ("({} + {})", "({} - {})", "({} * {})", "({} / {})", "max({}, {})", "min({}, {})", "xlogy({}, {})",
          "where({} > 0, {}, {})")
REDUCE = ("sum({})", "mean({})", "logsumexp({})", "norm({})", "sum(cumsum({}))", "sum(abs(cumsum({})))")
DOMAINS = ("real", "positive", "probability", "nonnegative", [-2.0, 3.0])


def _compose(rng: random.Random, leaves: list[str], depth: int, unary=UNARY, binary=BINARY) -> str:
    if depth == 0 or rng.random() < 0.25:
        return rng.choice(leaves)
    if rng.random() < 0.45:
        return rng.choice(unary).format(_compose(rng, leaves, depth - 1, unary, binary))
    form = rng.choice(binary)
    return form.format(*(_compose(rng, leaves, depth - 1, unary, binary) for _ in range(form.count("{}"))))


def _spec(expr: str, symbols: dict[str, lf.Var], reduction: str) -> lf.LossSpec | None:
    used = set(re.findall(r"\b[a-z]\b", expr))
    symbols = {k: v for k, v in symbols.items() if k in used}
    for _ in range(len(symbols)):
        try:
            spec = lf.LossSpec(name="random", expr=expr, symbols=symbols, reduction=reduction)
        except LossforgeError as exc:  # SymPy simplified a symbol away (log(exp(x)) - x): drop it and retry
            found = re.search(r"'(\w+)' is declared but does not appear", str(exc))
            if not found:
                raise
            symbols.pop(found.group(1))
            continue
        return spec if spec.inputs else None
    return None


def scalar_spec(seed: int) -> tuple[str, lf.LossSpec | None]:
    rng = random.Random(seed)
    symbols = {"x": lf.Var("input", domain=rng.choice(DOMAINS)), "t": lf.Var("target", domain=rng.choice(DOMAINS)),
               "y": lf.Var("input", domain=rng.choice(DOMAINS)), "w": lf.Var("param", default=0.7, domain="positive")}
    expr = _compose(rng, ["x", "x", "x", "y", "t", "w", "0.5", "2"], 3)
    return expr, _spec(expr, symbols, rng.choice(["mean", "sum", "none"]))


#: The special and trigonometric functions, with a few of the others to compose them with.
SPECIAL = ("erf({})", "erfc({})", "lgamma({})", "digamma({})", "cos({})", "sin({})", "acos({})", "atan({})",
           "acos(tanh({}))", "log({})", "exp({})", "sqrt({})", "tanh({})", "({})**2")


def special_spec(seed: int) -> tuple[str, lf.LossSpec | None]:
    """A random elementwise spec over erf erfc lgamma digamma cos sin acos atan (and a few others)."""
    rng = random.Random(seed)
    symbols = {"x": lf.Var("input", domain=rng.choice(DOMAINS)), "t": lf.Var("target", domain=rng.choice(DOMAINS)),
               "y": lf.Var("input", domain=rng.choice(DOMAINS)), "w": lf.Var("param", default=0.7, domain="positive")}
    expr = _compose(rng, ["x", "x", "y", "t", "w", "0.5"], 3, SPECIAL, BINARY[:4])
    return expr, _spec(expr, symbols, rng.choice(["mean", "sum"]))


def vector_spec(seed: int) -> tuple[str, lf.LossSpec | None]:
    rng = random.Random(seed)
    symbols = {"z": lf.Var("input", domain=rng.choice(["real", "probability", "positive"]), axis="c"),
               "y": lf.Var("target", domain=rng.choice(["onehot", "simplex", "real", "binary"]), axis="c"),
               "x": lf.Var("input", domain=rng.choice(["real", "positive"]))}
    leaves = ["z", "z", "y", "x", "0.5"]
    expr = rng.choice(REDUCE).format(_compose(rng, leaves, 3, UNARY[:10], BINARY[:7]))
    if rng.random() < 0.5:
        expr += " + " + rng.choice(REDUCE).format(_compose(rng, leaves, 2, UNARY[:10], BINARY[:7]))
    return expr, _spec(expr, symbols, "mean")
