"""The built-in losses: one TOML spec per loss, in the language users write.

The library is the spec format's first user: every file here is loaded with
:func:`lossforge.loads`, exactly as a user's own spec would be.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from ..errors import UnknownNameError, did_you_mean
from ..spec import LossSpec, loads


@cache
def builtin_names() -> tuple[str, ...]:
    """The names of the built-in losses, sorted."""
    files = resources.files(__name__).iterdir()
    return tuple(sorted(f.name[: -len(".toml")] for f in files if f.name.endswith(".toml")))


@cache
def builtin(name: str) -> LossSpec:
    """The built-in loss ``name`` as a :class:`LossSpec`."""
    if name not in builtin_names():
        hint = did_you_mean(name, builtin_names()) or " ('lossforge list' names them)"
        raise UnknownNameError(f"no built-in loss named {name!r}{hint}", token=str(name))
    text = resources.files(__name__).joinpath(f"{name}.toml").read_text(encoding="utf-8")
    return loads(text, source=f"lossforge/library/{name}.toml")
