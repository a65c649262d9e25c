"""The explicit-element expansion used as an independent reference in tests.

It lives in :mod:`lossforge.numeric` (verification uses it too); it shares
no code with :mod:`lossforge.derive`'s reverse-mode axis handling.
"""

from lossforge.numeric import element_symbol, expand

__all__ = ["element_symbol", "expand"]
