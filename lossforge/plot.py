"""Loss and gradient curves, to compare losses by looking (needs matplotlib).

The first input of each spec sweeps its domain; every other argument is held
at a documented value (:data:`HELD`): a real target at 0 (so the curve is the
loss as a function of the residual), a probability, binary or sign target at
1, a one-hot target at class 0, other inputs at their domain's centre. For a
vector input only its first element moves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import LossforgeError, SpecError
from .spec import LossSpec

#: The files ``plot`` writes, by extension: the formats that make sense for two panels of curves.
FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}

#: The value each argument is held at while the first input sweeps, by domain.
HELD = {
    "real": 0.0,
    "positive": 1.0,
    "nonnegative": 1.0,
    "probability": 1.0,
    "binary": 1.0,
    "sign": 1.0,
}

#: The swept range of the first input, by domain (before --lo/--hi).
SWEEP = {"real": (-3.0, 3.0), "positive": (1e-3, 5.0), "nonnegative": (0.0, 5.0), "probability": (0.0, 1.0)}

AXIS_LENGTH = 4
POINTS = 401


def _held(spec: LossSpec, name: str, n: int) -> np.ndarray:
    var = spec.symbols[name]
    dom = var.domain
    if dom.name == "onehot":
        base = np.zeros(AXIS_LENGTH)
        base[0] = 1.0
    elif dom.name == "simplex":
        base = np.full(AXIS_LENGTH, 1.0 / AXIS_LENGTH)
    elif dom.name in HELD:
        base = HELD[dom.name]
    else:  # an interval: its centre
        base = (dom.lo + dom.hi) / 2
    shape = (n, AXIS_LENGTH) if var.axis else (n,)
    return np.broadcast_to(np.asarray(base, dtype=float), shape).copy()


def curves(spec: LossSpec, lo: float | None = None, hi: float | None = None):
    """``(x, loss, grad)`` arrays for the first input of ``spec``."""
    from .codegen.render import compile as compile_spec

    first = spec.inputs[0]
    dom = spec.symbols[first].domain
    default = SWEEP.get(dom.name, (dom.lo, dom.hi))
    x = np.linspace(default[0] if lo is None else lo, default[1] if hi is None else hi, POINTS)
    if not all(dom.contains(v) for v in x):
        raise LossforgeError(f"the sweep [{x[0]}, {x[-1]}] leaves the domain {dom.name!r} of {first!r}", token=first)
    arrays = []
    for name in spec.arrays:
        value = _held(spec, name, POINTS)
        if name == first:
            if spec.symbols[name].axis:
                value[:, 0] = x
            else:
                value = x.copy()
        arrays.append(value)
    module = compile_spec(spec, "numpy")
    loss, grads = module.loss_and_grad(*arrays, reduction="none")
    grad = grads[0]
    if grad.ndim > 1:
        grad = grad[:, 0]
    return x, np.asarray(loss, dtype=float), np.asarray(grad, dtype=float)


def output_format(output: str | Path) -> str:
    """The format ``plot`` writes to ``output``, from its extension (``.png``, ``.pdf`` or ``.svg``).

    Any other extension, or none, is a :class:`~lossforge.errors.SpecError`
    (a ``ValueError``) naming the path and the accepted extensions.
    """
    path = Path(output)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        why = f"extension {path.suffix!r} is not supported" if path.suffix else "it has no extension"
        raise SpecError(
            f"cannot write a plot to {str(path)!r}: {why} (use one of {', '.join(FORMATS)})", token=str(path)
        )
    return fmt


def _figure_class():
    """matplotlib's ``Figure``: a figure of its own, outside pyplot's global state (no backend chosen or changed,
    nothing left open for a notebook's later plots)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise LossforgeError(
            "plotting needs matplotlib: pip install 'lossforge[plot]'", token="matplotlib"
        ) from None
    return Figure


def _specs(specs) -> list[LossSpec]:
    """One spec, a built-in's name, or a list of them, as specs."""
    from .library import builtin

    items = [specs] if isinstance(specs, (LossSpec, str)) else list(specs)
    if not items:
        raise SpecError("plot() needs at least one spec (a LossSpec or a built-in's name)", token="specs")
    out = []
    for item in items:
        if isinstance(item, str):
            item = builtin(item)
        if not isinstance(item, LossSpec):
            raise SpecError(f"plot() takes LossSpecs or built-in names, got {type(item).__name__}",
                            token=type(item).__name__)
        out.append(item)
    return out


def figure(specs, lo: float | None = None, hi: float | None = None):
    """A :class:`matplotlib.figure.Figure` with two panels: the losses and their gradients.

    Built without pyplot: a notebook shows it as the value of a cell, and it changes
    nothing of matplotlib's global state (the backend, the current figure).
    """
    specs = _specs(specs)
    figure_class = _figure_class()
    curves_ = [curves(spec, lo, hi) for spec in specs]  # before the figure: an error makes none
    fig = figure_class(figsize=(11, 4.2), layout="constrained")
    ax_loss, ax_grad = fig.subplots(1, 2)
    for spec, (x, loss, grad) in zip(specs, curves_):
        first = spec.inputs[0]
        ax_loss.plot(x, loss, label=spec.name)
        ax_grad.plot(x, grad, label=f"d{spec.name}/d{first}")
    ax_loss.set_title("loss (others held: real target 0, labels 1, one-hot class 0)")
    ax_grad.set_title("gradient of the first input")
    for ax in (ax_loss, ax_grad):
        ax.set_xlabel(", ".join(dict.fromkeys(s.inputs[0] for s in specs)))
        ax.grid(alpha=0.3)
        ax.axhline(0, color="0.5", lw=0.6)
        ax.legend()
    return fig


def render(specs, fmt: str, lo: float | None = None, hi: float | None = None) -> bytes:
    """The plot of ``specs`` as the bytes of a ``fmt`` file (one of :data:`FORMATS`' values)."""
    import io

    if fmt not in FORMATS.values():
        raise SpecError(f"cannot render a plot as {fmt!r} (use one of {', '.join(FORMATS.values())})", token=fmt)
    buffer = io.BytesIO()
    figure(specs, lo, hi).savefig(buffer, format=fmt, dpi=110)
    return buffer.getvalue()


def plot(specs, output: str | Path | None = None, lo: float | None = None, hi: float | None = None):
    """The loss and gradient curves of ``specs`` (a spec, a built-in's name, or a list) as a
    :class:`matplotlib.figure.Figure` (``lf.plot``): in a notebook, the cell shows it.

    With ``output`` it is also written there as a PNG, PDF or SVG (by the extension; a missing
    parent directory is created). Another extension raises :class:`~lossforge.errors.SpecError`
    before anything is computed.
    """
    fmt = None if output is None else output_format(output)
    fig = figure(specs, lo, hi)
    if output is not None:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format=fmt, dpi=110)
    return fig
