"""Hypothesis strategies, one per domain of the catalogue.

Each strategy reaches the edges of its domain on purpose: ``probability``
draws exactly 0.0 and 1.0, ``positive`` draws subnormal-tiny and huge values,
``real`` draws ±1000 (the magnitude the analysis promises finiteness for).
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from lossforge.domains import CATALOGUE, REAL_EXTREME, Domain, domain_of

_EDGE_REALS = (0.0, -0.0, 1.0, -1.0, REAL_EXTREME, -REAL_EXTREME, 1e-12, -1e-12)


def real() -> st.SearchStrategy[float]:
    return st.one_of(
        st.sampled_from(_EDGE_REALS),
        st.floats(-REAL_EXTREME, REAL_EXTREME, allow_nan=False, allow_infinity=False),
    )


def positive() -> st.SearchStrategy[float]:
    return st.one_of(
        st.sampled_from((5e-324, 1e-300, 1e-30, 1e-7, 1.0, 1e7, 1e30, 1e300)),
        st.floats(min_value=0.0, max_value=1e300, exclude_min=True, allow_nan=False),
    )


def nonnegative() -> st.SearchStrategy[float]:
    return st.one_of(st.just(0.0), positive())


def probability() -> st.SearchStrategy[float]:
    return st.one_of(
        st.sampled_from((0.0, 1.0, 0.5, 1e-12, 1.0 - 1e-12)),
        st.floats(0.0, 1.0, allow_nan=False),
    )


def binary() -> st.SearchStrategy[float]:
    return st.sampled_from((0.0, 1.0))


def sign() -> st.SearchStrategy[float]:
    return st.sampled_from((-1.0, 1.0))


def interval(domain: Domain) -> st.SearchStrategy[float]:
    return st.one_of(st.sampled_from(domain.extremes()), st.floats(domain.lo, domain.hi, allow_nan=False))


_SCALAR = {
    "real": real,
    "positive": positive,
    "nonnegative": nonnegative,
    "probability": probability,
    "binary": binary,
    "sign": sign,
}


def onehot(n: int) -> st.SearchStrategy[np.ndarray]:
    return st.integers(0, n - 1).map(lambda k: np.eye(n)[k])


def simplex(n: int) -> st.SearchStrategy[np.ndarray]:
    """Nonnegative vectors summing to 1, including vertices (exact zeros)."""
    weights = st.lists(st.sampled_from((0.0, 1e-12, 0.25, 1.0, 3.0)), min_size=n, max_size=n)
    return st.one_of(
        onehot(n),
        weights.filter(lambda w: sum(w) > 0).map(lambda w: np.asarray(w) / sum(w)),
    )


def scalar(domain: Domain | str) -> st.SearchStrategy[float]:
    """A strategy for one value of a scalar domain."""
    dom = domain_of(domain)
    if dom.is_interval:
        return interval(dom)
    return _SCALAR[dom.name]()


def values(domain: Domain | str, n: int | None = None) -> st.SearchStrategy:
    """A value of ``domain``: a float, or a length-``n`` vector for an axis symbol."""
    dom = domain_of(domain)
    if n is None:
        return scalar(dom)
    if dom.name == "onehot":
        return onehot(n)
    if dom.name == "simplex":
        return simplex(n)
    return st.lists(scalar(dom), min_size=n, max_size=n).map(np.asarray)


STRATEGIES = {name: (lambda name=name: values(name)) for name in CATALOGUE if not CATALOGUE[name].vector}
