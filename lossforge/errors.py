"""The exceptions lossforge raises for mistakes a user can make.

Every user-facing error is a :class:`LossforgeError`. Its message names the
offending symbol or token, and the same name is kept in ``.token`` so that
tools (the CLI, tests) can point at it without parsing the message.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: object, known: Iterable[str]) -> str:
    """`` (did you mean sigmoid?)`` for a misspelt ``name`` among ``known`` (up to three, closest first), or ""."""
    close = difflib.get_close_matches(str(name), list(known), n=3)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


class LossforgeError(Exception):
    """Base class of every error lossforge raises on purpose."""

    def __init__(self, message: str, token: str | None = None) -> None:
        super().__init__(message)
        self.token = token


class SpecError(LossforgeError, ValueError):
    """A loss spec is malformed: a bad role, reduction, symbol or TOML table."""


class ParseError(SpecError):
    """The expression text is not in the spec language."""


class UnsafeExpressionError(ParseError):
    """The expression text uses a construct lossforge never evaluates (attributes, lambdas, ...)."""


class DomainError(SpecError):
    """An unknown domain, or a value outside its declared domain."""


class RoleError(SpecError):
    """A symbol used in a way its role forbids (e.g. a gradient asked for a target)."""


class DeriveError(SpecError):
    """The gradient is undefined as written: a derivative taken at a constant singular point."""


class UnknownNameError(LossforgeError, KeyError):
    """An unknown built-in, hazard kind or target name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class AnalysisError(LossforgeError):
    """The hazard analysis or the stabilizer was asked something it cannot do."""


class RenderError(LossforgeError):
    """Code generation failed for a spec (e.g. an unknown target)."""


class VerifyError(LossforgeError):
    """Verification could not run (e.g. a user implementation with the wrong arity)."""
