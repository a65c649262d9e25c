"""The spec language: lossforge's own SymPy functions, its safe parser and its printer.

* :mod:`.functions`: the elementwise functions a loss may use, each a
  :class:`sympy.Function` subclass with its derivative, assumptions and rewrite;
* :mod:`.axes`: the axis operations (``sum``, ``mean``, ``logsumexp``, ``norm``,
  ``amax``, ``amin``, ``cumsum``, ``logcumsumexp``, ``flip``, ``sort``, ``sort_by``) over a
  vector symbol's axis;
* :mod:`.parser`: the vocabulary of names and :func:`parse`, which walks
  Python's ``ast`` under a whitelist. User text is never given to ``eval``,
  ``exec``, ``sympify`` or ``parse_expr``;
* :mod:`.printer`: :func:`to_text`, the spec-language text of an expression,
  which :func:`parse` reads back.
"""

from .axes import (
    AXIS_OPERATIONS as AXIS_OPERATIONS,
)
from .axes import (
    AxisFunction as AxisFunction,
)
from .axes import (
    amax as amax,
)
from .axes import (
    amin as amin,
)
from .axes import (
    axis_mean as axis_mean,
)
from .axes import (
    axis_ones as axis_ones,
)
from .axes import (
    axis_size as axis_size,
)
from .axes import (
    axis_sort as axis_sort,
)
from .axes import (
    axis_sum as axis_sum,
)
from .axes import (
    cumsum as cumsum,
)
from .axes import (
    extremum_share as extremum_share,
)
from .axes import (
    flip as flip,
)
from .axes import (
    logcumsumexp as logcumsumexp,
)
from .axes import (
    logcumsumexp_adjoint as logcumsumexp_adjoint,
)
from .axes import (
    logsumexp as logsumexp,
)
from .axes import (
    norm as norm,
)
from .axes import (
    power as power,
)
from .axes import (
    real_abs as real_abs,
)
from .axes import (
    rev_cumsum as rev_cumsum,
)
from .axes import (
    softmax_argument as softmax_argument,
)
from .axes import (
    unsort as unsort,
)
from .functions import (
    acos as acos,
)
from .functions import (
    clamp as clamp,
)
from .functions import (
    erfc as erfc,
)
from .functions import (
    expm1 as expm1,
)
from .functions import (
    heaviside as heaviside,
)
from .functions import (
    lgamma as lgamma,
)
from .functions import (
    log1p as log1p,
)
from .functions import (
    maximum as maximum,
)
from .functions import (
    minimum as minimum,
)
from .functions import (
    quotient as quotient,
)
from .functions import (
    sigmoid as sigmoid,
)
from .functions import (
    sign as sign,
)
from .functions import (
    softplus as softplus,
)
from .functions import (
    where as where,
)
from .functions import (
    xlogy as xlogy,
)
from .parser import (
    CONSTANTS as CONSTANTS,
)
from .parser import (
    FUNCTIONS as FUNCTIONS,
)
from .parser import (
    check_symbol_name as check_symbol_name,
)
from .parser import (
    finite_float as finite_float,
)
from .parser import (
    not_real as not_real,
)
from .parser import (
    parse as parse,
)
from .printer import SpecPrinter as SpecPrinter
from .printer import latex_text as latex_text
from .printer import to_latex as to_latex
from .printer import to_text as to_text
