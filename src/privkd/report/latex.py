"""The results as a booktabs LaTeX table, ready for ``\\input`` in a paper.

It is built from the same cells as the report's markdown and HTML tables (the scores on the
headline metric and each row against the baseline, with the paired tests), so the paper
quotes exactly what the report shows; the report's notes under the results become the
table's notes. Every cell is escaped to plain ASCII LaTeX, so that pdfLaTeX takes the file
without a Unicode package.
"""

from __future__ import annotations

from collections.abc import Sequence

from privkd.report.tables import Table

__all__ = ["LATEX_FILE", "results_latex", "tex_escape"]

LATEX_FILE = "results.tex"
"""The table's file name, beside the figures."""

_TEX = str.maketrans({
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"$<$", ">": r"$>$",
    "±": r"$\pm$", "—": "---", "–": "--", "−": "$-$", "Δ": r"$\Delta$", "†": r"$^\dagger$", "‡": r"$^\ddagger$",
    "×": r"$\times$", "·": r"$\cdot$", "²": r"$^2$", "→": r"$\to$", "←": r"$\leftarrow$", "★": r"$\star$",
    "≥": r"$\geq$", "≤": r"$\leq$", "…": r"\dots{}", "’": "'", "“": "``", "”": "''",
})
"""LaTeX's special characters escaped, and the symbols the report's cells and notes use
written as LaTeX commands."""


def tex_escape(text: object) -> str:
    """``text`` as LaTeX source that typesets as the text; any character left outside ASCII
    (a letter of a row or class name) becomes ``?``, as pdfLaTeX would refuse the file for it."""
    escaped = str(text).translate(_TEX)
    return escaped.encode("ascii", "replace").decode("ascii")


def _row(cells: Sequence[str]) -> str:
    return " & ".join(tex_escape(c) for c in cells) + r" \\"


def _merged(scores: Table, comparison: Table, headline: str) -> Table:
    """The comparison table with, after the method, the number of values and the headline
    score from the scores table (the same rows in the same order)."""
    column = scores.header.index(headline)
    header = [comparison.header[0], scores.header[1], f"{headline} (mean ± std)", *comparison.header[1:]]
    rows = [[mine[0], theirs[1], theirs[column], *mine[1:]] for mine, theirs in zip(comparison.rows, scores.rows, strict=True)]
    return Table(header, rows)


def results_latex(scores: Table, comparison: Table, *, headline: str, caption: str, label: str,
                  notes: Sequence[str]) -> str:
    """A page-wide ``table*`` float holding one booktabs ``tabular`` (method, n, the headline score, then
    the comparison's columns) and the ``notes`` beneath it. ``headline`` is the scores table's
    column title of the headline metric."""
    table = _merged(scores, comparison, headline)
    lines = [
        "% privkd report: results with the paired tests against the baseline. Needs \\usepackage{booktabs}.",
        r"\begin{table*}[htbp]",  # as wide as the page: the paired tests need the room
        r"\centering",
        r"\small",
        rf"\caption{{{tex_escape(caption)}}}",
        rf"\label{{{label}}}",
        r"\begin{tabular}{l" + "r" * (len(table.header) - 1) + "}",
        r"\toprule",
        _row(table.header),
        r"\midrule",
        *(_row(row) for row in table.rows),
        r"\bottomrule",
        r"\end{tabular}",
        r"\par\smallskip",
        r"\begin{minipage}{\linewidth}\footnotesize",
        *(tex_escape(note) + r"\par" for note in notes),
        r"\end{minipage}",
        r"\end{table*}",
    ]
    return "\n".join(lines) + "\n"
