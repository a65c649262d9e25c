"""The domain catalogue: where each symbol's values live.

A domain is read in three places and defined only here:

* the parser and the spec give a symbol its SymPy assumptions (``positive``,
  ``nonnegative``, ``integer`` ...), so that SymPy simplifies soundly;
* the hazard analysis reads the closed or open interval ``[lo, hi]`` and,
  for discrete domains, the finite set of values;
* tests and verification draw samples from ``samples`` and ``extremes``.

Intervals are the ones floating point can actually reach: ``probability`` is
the closed ``[0, 1]`` because float32 ``sigmoid`` returns exactly 1.0, and
``positive`` starts just above 0 (the smallest subnormal is a valid value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import DomainError

INF = math.inf


@dataclass(frozen=True)
class Domain:
    """A set of values a symbol may take.

    ``lo``/``hi`` bound it, ``lo_open``/``hi_open`` say whether the bound itself
    is excluded, ``values`` lists the members of a discrete domain, and
    ``vector`` marks domains that only make sense along an axis (``onehot``,
    ``simplex``).
    """

    name: str
    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False
    values: tuple[float, ...] | None = None
    vector: bool = False
    description: str = ""

    @property
    def is_interval(self) -> bool:
        """True for a user-written ``[lo, hi]`` domain."""
        return self.name.startswith("[")

    @property
    def integer(self) -> bool:
        return self.values is not None

    def assumptions(self) -> dict[str, bool]:
        """SymPy assumptions that hold for every value of the domain."""
        out: dict[str, bool] = {"real": True}
        if self.lo > 0 or (self.lo == 0 and self.lo_open):
            out["positive"] = True
        elif self.lo >= 0:
            out["nonnegative"] = True
        elif self.hi < 0 or (self.hi == 0 and self.hi_open):
            out["negative"] = True
        elif self.hi <= 0:
            out["nonpositive"] = True
        if self.values is not None:
            out["integer"] = True
            if 0 not in self.values:
                out["nonzero"] = True
        if math.isfinite(self.lo) and math.isfinite(self.hi):
            out["finite"] = True
        return out

    def contains(self, value: float) -> bool:
        """Whether a scalar value lies in the domain."""
        if not math.isfinite(value):
            return False
        if self.values is not None:
            return value in self.values
        if value < self.lo or (self.lo_open and value == self.lo):
            return False
        if value > self.hi or (self.hi_open and value == self.hi):
            return False
        return True

    def extremes(self) -> tuple[float, ...]:
        """The edge values a test must reach: exact ends, tiny and huge magnitudes.

        Unbounded ends stand in as ±1000 (the largest magnitude the hazard
        analysis promises finiteness for, see ``REAL_EXTREME``).
        """
        if self.values is not None:
            return self.values
        lo = -REAL_EXTREME if self.lo == -INF else self.lo
        hi = REAL_EXTREME if self.hi == INF else self.hi
        points = [lo, hi]
        if self.lo_open and math.isfinite(self.lo):
            points[0] = _just_above(self.lo)
        if self.hi_open and math.isfinite(self.hi):
            points[1] = _just_below(self.hi)
        if self.lo <= 0 <= self.hi and self.contains(0.0):
            points.append(0.0)
        return tuple(sorted(set(points)))

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...], edges: bool = True) -> np.ndarray:
        """Draw an array of values of this domain (float64).

        For a vector domain the last dimension of ``shape`` is the axis. With
        ``edges`` about a quarter of the entries are the domain's extremes
        (exact 0 and 1 for a probability, ±1000 for a real ...).
        """
        if self.name == "onehot":
            k = shape[-1]
            return np.eye(k)[rng.integers(0, k, size=shape[:-1])]
        if self.name == "simplex":
            logits = rng.normal(size=shape) * 2
            if edges:
                logits = np.where(rng.random(shape) < 0.2, -np.inf, logits)
                logits[..., 0] = np.where(np.isinf(logits).all(-1), 0.0, logits[..., 0])
            w = np.exp(logits - logits.max(-1, keepdims=True))
            return w / w.sum(-1, keepdims=True)
        if self.values is not None:
            return rng.choice(np.asarray(self.values), size=shape)
        lo = max(self.lo, -8.0) if self.lo == -INF else self.lo
        hi = min(self.hi, 8.0) if self.hi == INF else self.hi
        if self.lo == 0 and self.hi == INF:
            hi = 8.0
        out = rng.uniform(lo, hi, size=shape)
        if self.lo_open:
            out = np.maximum(out, _just_above(self.lo))
        if edges:
            ext = np.asarray(self.extremes())
            pick = rng.random(shape) < 0.25
            out = np.where(pick, rng.choice(ext, size=shape), out)
        return out

    def spec_text(self) -> str | list[float]:
        """How the domain is written in a TOML spec."""
        if self.is_interval:
            return [self.lo, self.hi]
        return self.name


#: Magnitude standing in for "unbounded" when a test or the analysis needs a
#: concrete extreme point of a real line (DESIGN.md: ±1000 for reals).
REAL_EXTREME = 1000.0


def _just_above(x: float) -> float:
    # Just above an open lower end; above 0 this is a tiny normal number rather
    # than the smallest subnormal, which no framework keeps (flush-to-zero).
    return math.nextafter(x, INF) if x != 0 else 1e-30


def _just_below(x: float) -> float:
    return math.nextafter(x, -INF)


CATALOGUE: dict[str, Domain] = {
    d.name: d
    for d in (
        Domain("real", -INF, INF, True, True, description="any finite real number"),
        Domain("positive", 0.0, INF, True, True, description="a real number > 0"),
        Domain("nonnegative", 0.0, INF, False, True, description="a real number >= 0"),
        Domain("probability", 0.0, 1.0, description="a number in [0, 1], both ends included"),
        Domain("binary", 0.0, 1.0, values=(0.0, 1.0), description="0 or 1"),
        Domain("sign", -1.0, 1.0, values=(-1.0, 1.0), description="-1 or +1"),
        Domain(
            "onehot",
            0.0,
            1.0,
            values=(0.0, 1.0),
            vector=True,
            description="a one-hot vector over an axis (or integer class indices)",
        ),
        Domain(
            "simplex",
            0.0,
            1.0,
            vector=True,
            description="a vector of nonnegative entries summing to 1 over an axis",
        ),
    )
}


def interval(lo: float, hi: float) -> Domain:
    """The closed interval ``[lo, hi]`` as a domain."""
    for bound in (lo, hi):
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise DomainError(f"interval bound {bound!r} is not a number", token=repr(bound))
        if not math.isfinite(bound):
            raise DomainError(f"interval bound {bound!r} is not finite", token=repr(bound))
    lo, hi = float(lo), float(hi)
    if lo > hi:
        raise DomainError(f"interval [{lo!r}, {hi!r}] is empty: lo > hi", token=f"[{lo!r}, {hi!r}]")
    return Domain(f"[{lo!r}, {hi!r}]", lo, hi, description=f"a real number in [{lo!r}, {hi!r}]")


def domain_of(value: object) -> Domain:
    """Read a domain as a spec writes it: a catalogue name, ``"[lo, hi]"``, or a pair."""
    if isinstance(value, Domain):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text in CATALOGUE:
            return CATALOGUE[text]
        if text.startswith("[") and text.endswith("]"):
            parts = text[1:-1].split(",")
            if len(parts) == 2:
                try:
                    lo, hi = (float(p) for p in parts)
                except ValueError:
                    pass
                else:
                    return interval(lo, hi)
        known = ", ".join(CATALOGUE)
        raise DomainError(f"unknown domain {value!r} (known: {known}, or [lo, hi])", token=value)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return interval(*value)
    raise DomainError(f"unknown domain {value!r}", token=repr(value))
