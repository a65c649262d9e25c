"""Printing a SymPy expression back to the spec language, and as LaTeX for notebooks."""

from __future__ import annotations

import sympy
from sympy import S
from sympy.printing.latex import LatexPrinter
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.str import StrPrinter

__all__ = ["SpecPrinter", "to_text", "LatexSpecPrinter", "to_latex", "latex_text"]



class SpecPrinter(StrPrinter):
    """Prints a SymPy expression in the spec language, so that :func:`parse` reads it back."""

    def _print_Function(self, expr):
        name = getattr(expr.func, "spec_name", None)
        if name is None:
            return super()._print_Function(expr)
        return f"{name}({', '.join(self._print(a) for a in expr.args)})"

    def _print_axis_sort(self, expr):
        e, key, descending = expr.args
        head = f"sort({self._print(e)}" if key == e else f"sort_by({self._print(e)}, {self._print(key)}"
        return head + (", descending=True)" if descending else ")")

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_quotient(self, expr):
        u, v = (self.parenthesize(a, PRECEDENCE["Mul"]) for a in expr.args)
        return f"({u}/{v})"

    def _print_Exp1(self, expr):
        return "e"

    def _print_Abs(self, expr):
        return f"abs({self._print(expr.args[0])})"

    def _print_sign(self, expr):
        return f"sign({self._print(expr.args[0])})"

    def _print_Heaviside(self, expr):
        return f"heaviside({self._print(expr.args[0])})"

    def _print_polygamma(self, expr):
        n, x = expr.args
        if n == 0:
            return f"digamma({self._print(x)})"
        return super()._print_Function(expr)  # polygamma(1, x) appears in gradients only

    def _print_loggamma(self, expr):  # SymPy's own, for a constant argument lgamma evaluated to it
        return f"lgamma({self._print(expr.args[0])})"

    def _nested(self, name, args):
        out = self._print(args[-1])
        for a in reversed(args[:-1]):
            out = f"{name}({self._print(a)}, {out})"
        return out

    def _print_Max(self, expr):
        return self._nested("max", expr.args)

    def _print_Min(self, expr):
        return self._nested("min", expr.args)

    def _print_Piecewise(self, expr):
        *pieces, (last, cond) = expr.args
        out = self._print(last) if cond is S.true else f"where({self._print(cond)}, {self._print(last)}, nan)"
        for value, cond in reversed(pieces):
            out = f"where({self._print(cond)}, {self._print(value)}, {out})"
        return out

    def _print_Relational(self, expr):
        op = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}[expr.rel_op]
        return f"{self.parenthesize(expr.lhs, 0)} {op} {self.parenthesize(expr.rhs, 0)}"

    def _print_And(self, expr):
        return " and ".join(f"({self._print(a)})" for a in expr.args)

    def _print_Or(self, expr):
        return " or ".join(f"({self._print(a)})" for a in expr.args)

    def _print_Not(self, expr):
        return f"not ({self._print(expr.args[0])})"


def to_text(expr: sympy.Basic) -> str:
    """The spec-language text of a SymPy expression."""
    return SpecPrinter({"order": "none"}).doprint(expr)


class LatexSpecPrinter(LatexPrinter):
    """Prints a SymPy expression as LaTeX, lossforge's functions by their spec-language names
    (``\\operatorname{softplus}``, ``\\operatorname{sum}``)."""

    def _print_Function(self, expr, exp=None):
        name = getattr(expr.func, "spec_name", None)
        if name is None:
            return super()._print_Function(expr, exp)
        out = rf"\operatorname{{{name}}}\left({', '.join(self._print(a) for a in expr.args)}\right)"
        return out if exp is None else rf"{out}^{{{exp}}}"


#: LaTeX's special characters in text, each as it is written to mean itself.
_LATEX_TEXT = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#",
               "^": r"\^{}", "_": r"\_", "%": r"\%", "~": r"\~{}"}


def latex_text(text: str) -> str:
    """``text`` as LaTeX text that means itself (a spec's name in a formula's label, a documentation card's
    lines); its line breaks and tabs kept, other control characters left out."""
    return "".join(_LATEX_TEXT.get(ch, ch) for ch in text if ch.isprintable() or ch in "\n\t")


def to_latex(expr: sympy.Basic) -> str:
    """The LaTeX of an expression, lossforge's functions by name."""
    return LatexSpecPrinter({"order": "none"}).doprint(expr)
