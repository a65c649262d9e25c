"""What a notebook shows: lf.plot's Figure (no pyplot state), and the rich displays of reports and specs."""

from __future__ import annotations

import sys

import pytest

import lossforge as lf

matplotlib = pytest.importorskip("matplotlib")


def test_plot_returns_a_figure_and_leaves_matplotlib_as_it_was():
    backend = matplotlib.get_backend()
    had_pyplot = "matplotlib.pyplot" in sys.modules
    fig = lf.plot(["mse", lf.builtin("huber")], lo=-2, hi=2)
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert [line.get_label() for line in fig.axes[0].get_lines()][:2] == ["mse", "huber"]
    x, y = fig.axes[0].get_lines()[1].get_data()
    assert x[0] == -2 and x[-1] == 2 and y[0] == pytest.approx(1.5)  # huber at |r| = 2, delta = 1
    assert matplotlib.get_backend() == backend
    assert ("matplotlib.pyplot" in sys.modules) == had_pyplot  # pyplot never imported on lossforge's account
    assert type(lf.plot("mse")).__name__ == "Figure"  # one name alone


def test_plot_names_what_it_cannot_take():
    with pytest.raises(lf.SpecError, match="at least one"):
        lf.plot([])
    with pytest.raises(lf.SpecError, match="int"):
        lf.plot([3])
    with pytest.raises(lf.UnknownNameError, match="did you mean mse"):
        lf.plot("mse_")
