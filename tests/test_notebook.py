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


HOSTILE = """\
name = "evil"
expr = "-(y * log(p) + (1 - y) * log(1 - p))"
[symbols]
p = { role = "input", domain = "probability" }
y = { role = "target", domain = "binary" }
[accept]
unguarded-log = "<b>trust me</b><script>alert(1)</script>"
"""


def test_check_reports_are_html_tables_with_every_text_escaped():
    spec = lf.loads(HOSTILE)
    page = lf.check(spec)._repr_html_()
    assert page.startswith("<div>") and "<table>" in page and "FAILED" in page
    assert "<script>" not in page and "&lt;script&gt;" in page  # an accept reason's text, escaped
    assert "<b>trust me</b>" not in page and "&lt;b&gt;trust me&lt;/b&gt;" in page
    report = lf.check(spec)
    assert page.count("<tr>") == len(report.hazards) + 1  # a header row, then one row per finding
    assert "<code>log(p)</code>" in page or "<code>log(1 - p)</code>" in page


def test_verify_and_properties_are_html_tables():
    report = lf.verify(lf.builtin("mse"))
    page = report._repr_html_()
    assert page.count("<tr>") == len(report.rows) + 1 and "ok</span>" in page
    props = lf.properties(lf.builtin("huber"))
    page = props._repr_html_()
    assert page.count("<tr>") == 5 and "convex" in page and "midpoint convexity" in page
    text = str(props)  # and a text form, one line per property
    assert text.splitlines()[0].split()[:2] == ["convex", "True"] and len(text.splitlines()) == 4


def test_a_spec_is_shown_as_latex_with_its_gradients():
    latex = lf.builtin("bce_logits")._repr_latex_()
    assert latex.startswith("$\\begin{aligned}") and latex.endswith("\\end{aligned}$")
    assert "\\operatorname{softplus}" in latex and "\\operatorname{sigmoid}" in latex  # lossforge's functions by name
    assert latex.count("\\frac{\\partial \\ell}{\\partial") == 1  # one input
    assert "\\text{bce\\_logits}" in latex
    triplet = lf.builtin("triplet")._repr_latex_()
    assert triplet.count("\\frac{\\partial \\ell}") == 3 and "\\operatorname{norm}" in triplet
    assert lf.language.latex_text("a$b}\\c_%") == "a\\$b\\}\\textbackslash{}c\\_\\%"  # specials mean themselves


@pytest.mark.parametrize("fmt", ["md", "rst", "latex"])
def test_doc_card_has_every_section_in_each_format(fmt):
    spec = lf.builtin("bce")
    card = lf.doc(spec, fmt)
    for words in ("BCELoss", "Args", "Shape", "Stable form", "Reference", "Gradient", "Hazards", "Properties",
                  "Example", "eps", "1e-07", "convex"):
        assert words in card, (fmt, words)
    torch_doc = lf.compile(spec, "torch").__doc__  # compile gives the nn.Module class
    summary = spec.summary
    assert summary in card and summary in torch_doc  # the same text the generated docstring has
    if fmt == "md":
        assert card.startswith("# bce (BCELoss)") and "## Hazards" in card and "```python" in card
    elif fmt == "rst":
        assert card.splitlines()[1] == "=" * len(card.splitlines()[0]) and "Example::" in card
    else:
        assert card.startswith("\\section*{bce (BCELoss)}") and "\\begin{verbatim}" in card and "\\_" not in "eps"
        assert "\\texttt{" in card and "``" not in card
    with pytest.raises(lf.UnknownNameError, match="did you mean md"):
        lf.doc(spec, "mdd")


def test_doc_from_the_cli_writes_a_page(tmp_path):
    from lossforge.cli import main

    out = tmp_path / "huber.md"
    assert main(["doc", "huber", "-o", str(out)]) == 0
    assert out.read_text().startswith("# huber (HuberLoss)")


def test_the_shipped_pages_are_what_make_docs_writes():
    from pathlib import Path

    pages = Path(__file__).resolve().parent.parent / "docs" / "builtins"
    assert sorted(p.stem for p in pages.glob("*.md")) == sorted(lf.builtin_names())
    for name in ("mse", "cross_entropy", "focal"):  # regenerate with `make docs` after changing a spec or the card
        assert (pages / f"{name}.md").read_text() == lf.doc(lf.builtin(name)), name
