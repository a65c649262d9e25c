"""lossforge: losses written as mathematics, turned into code you can trust."""

from .analysis.hazards import Fix as Fix
from .analysis.hazards import Hazard as Hazard
from .analysis.hazards import Report as Report
from .analysis.hazards import check as check
from .analysis.hazards import explain as explain
from .analysis.properties import Properties as Properties
from .analysis.properties import properties as properties
from .analysis.stabilize import stabilize as stabilize
from .codegen.docs import doc as doc
from .codegen.render import compile as compile
from .codegen.render import generate as generate
from .combine import combine as combine
from .derive import Derivation as Derivation
from .derive import derive as derive
from .domains import Domain as Domain
from .errors import AnalysisError as AnalysisError
from .errors import DeriveError as DeriveError
from .errors import DomainError as DomainError
from .errors import LossforgeError as LossforgeError
from .errors import ParseError as ParseError
from .errors import RenderError as RenderError
from .errors import RoleError as RoleError
from .errors import SpecError as SpecError
from .errors import UnknownNameError as UnknownNameError
from .errors import UnsafeExpressionError as UnsafeExpressionError
from .errors import VerifyError as VerifyError
from .language import axis_mean as axis_mean
from .language import axis_sum as axis_sum
from .language import clamp as clamp
from .language import cumsum as cumsum
from .language import expm1 as expm1
from .language import heaviside as heaviside
from .language import log1p as log1p
from .language import logsumexp as logsumexp
from .language import maximum as maximum
from .language import minimum as minimum
from .language import norm as norm
from .language import sigmoid as sigmoid
from .language import softplus as softplus
from .language import where as where
from .language import xlogy as xlogy
from .library import builtin as builtin
from .library import builtin_names as builtin_names
from .plot import plot as plot  # the function; the module stays importable as lossforge.plot
from .spec import LossSpec as LossSpec
from .spec import Var as Var
from .spec import dumps as dumps
from .spec import load as load
from .spec import loads as loads
from .verify import VerifyReport as VerifyReport
from .verify import verify as verify

__version__ = "0.1.0"
