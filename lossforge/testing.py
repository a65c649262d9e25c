"""pytest helpers: put a hand-written loss under test in one line.

    from lossforge.testing import assert_matches

    def test_my_focal():
        assert_matches(lf.builtin("focal"), my_focal)
"""

from __future__ import annotations

from collections.abc import Callable

from .spec import LossSpec
from .verify import verify


def assert_matches(spec: LossSpec, fn: Callable, **options) -> None:
    """Raise ``AssertionError`` with the verification report unless ``fn`` implements ``spec``.

    ``fn`` takes the spec's positional arrays (torch tensors or NumPy arrays)
    and returns the loss reduced as the spec reduces it. ``options`` go to
    :func:`lossforge.verify` (``samples``, ``seed``, ``tolerances``).
    """
    __tracebackhide__ = True  # pytest shows the caller's line
    report = verify(spec, against=fn, **options)
    if not report.ok:
        raise AssertionError(str(report))
