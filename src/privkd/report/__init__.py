"""``privkd report``: a finished run directory → ``report.md``, a self-contained ``report.html``
and what a paper takes: every figure as PDF, SVG and 300 dpi PNG, and the results as a booktabs
LaTeX table.

The report holds the results table (mean ± std over test folds, the share of the
baseline → teacher gap each student closes, paired tests against the baseline across folds)
and every figure the run has data for; figures whose data are absent are skipped and listed.
Everything goes to one directory (``--out``, by default the run directory): the markdown and
HTML there, the figures and ``results.tex`` under its ``report/``, so that a report moved or
written elsewhere keeps all its parts. The PNGs are also embedded in the HTML as base64 data
URIs, so the HTML file needs nothing else. All files are written atomically.

The reference rows are the method registry's lower and upper bounds and the method figures
are those the registered methods declare, so the report names no method.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from privkd.atomic import write_bytes_atomic, write_text_atomic
from privkd.data.h5format.spec import independent
from privkd.errors import PrivkdError
from privkd.evaluation.artifacts import fold_dirs
from privkd.evaluation.stats import headline_metric
from privkd.evaluation.summary import metric_label
from privkd.methods.registry import bound_row
from privkd.paths import refuse_output_onto_inputs
from privkd.report import tables
from privkd.report.figures import ReportFigure, collect_figures
from privkd.report.latex import LATEX_FILE, results_latex
from privkd.report.reading import figure_run, load_summary, load_sweep, run_name
from privkd.report.render import ReportContent, html_page, markdown
from privkd.report.subjects import (
    CI_NOTE,
    difference_interval,
    format_interval,
    subject_scores,
    subject_table,
)

__all__ = ["FIGURE_DIR", "ReportPaths", "build_report", "figure_run"]

FIGURE_DIR = "report"
"""Where, under the report's directory, the figures and the LaTeX table go."""


@dataclass
class ReportPaths:
    """Where the report went: ``figures`` are the PNGs (each with its PDF and SVG beside it)."""

    markdown: Path
    html: Path
    figures: list[Path] = field(default_factory=list)
    latex: Path | None = None


HAND_EDITED = (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError)
"""What reading a results file of another shape raises: a key missing, a list where a number was."""


def build_report(run_dir: str | Path, sweep_dir: str | Path | None = None, out_dir: str | Path | None = None) -> ReportPaths:
    """Write ``report.md`` and ``report.html`` for ``run_dir`` into ``out_dir`` (default: the run
    directory), and every figure (PNG, PDF, SVG) and the LaTeX table under ``out_dir/report/``.

    The run's files are read as privkd wrote them; a ``summary.json``, ``metrics.json`` or
    ``sweep.json`` edited by hand into another shape is refused with one :class:`PrivkdError`
    naming the run and what was wrong, not a traceback from deep inside a table."""
    try:
        return _build_report(Path(run_dir), sweep_dir, out_dir)
    except PrivkdError:
        raise
    except HAND_EDITED as err:
        raise PrivkdError(f"{run_dir}: its summary.json, a fold's metrics.json or the sweep's sweep.json does not hold "
                          f"what privkd writes there ({type(err).__name__}: {err}); was one edited by hand?",
                          "restore the file, or let privkd write it again (privkd run --resume RUN_DIR rewrites "
                          "summary.json; a new run writes everything), then run privkd report again") from err


def _save_figures(figures: list[ReportFigure], figure_dir: Path) -> None:
    """Each figure in each of its formats, ``<key>.<format>`` under ``figure_dir``."""
    for figure in figures:
        for fmt, data in figure.files.items():
            figure.paths[fmt] = write_bytes_atomic(figure_dir / f"{figure.key}.{fmt}", data)


def _build_report(run_dir: Path, sweep_dir: str | Path | None, out_dir: str | Path | None) -> ReportPaths:
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    figure_dir = out_dir / FIGURE_DIR
    if figure_dir.is_symlink():
        raise PrivkdError(f"{figure_dir}: a symbolic link (to {figure_dir.resolve()}); the report never writes through "
                          "a link out of the report's directory", f"delete the link (rm {figure_dir}); the report makes the directory")
    summary = load_summary(run_dir)
    sweep = load_sweep(Path(sweep_dir)) if sweep_dir is not None else None
    own = [run_dir / "report.md", run_dir / "report.html"]  # the report's own files, replaced by each report
    for output in (out_dir / "report.md", out_dir / "report.html"):
        refuse_output_onto_inputs("--out", output, [("RUN_DIR", run_dir), ("--sweep", sweep_dir)], own=own)

    source = figure_run(run_dir)
    collector = collect_figures(source, summary, sweep)
    _save_figures(collector.figures, figure_dir)

    baseline, teacher = bound_row("lower"), bound_row("upper")
    headline = headline_metric(summary)
    per_subject = subject_scores(source, list(summary["methods"]), summary.get("task", "classification"), headline)
    intervals = ({row: format_interval(difference_interval(scores, per_subject[baseline]))
                  for row, scores in per_subject.items() if row != baseline} if baseline in per_subject else None)
    results, comparison, stats = tables.results_table(summary, baseline=baseline, teacher=teacher, intervals=intervals)
    notes = tables.notes(summary, stats, baseline=baseline, teacher=teacher) + ([CI_NOTE] if intervals else [])
    n_folds = summary.get("folds", len(fold_dirs(source)))
    latex = results_latex(results, comparison, headline=metric_label(headline), notes=notes, label=_latex_label(run_dir),
                          caption=f"{run_name(run_dir)}: {metric_label(headline)} on {n_folds} "
                                  f"{independent(summary.get('independence'))} test fold(s), against the baseline.")
    latex_path = write_text_atomic(figure_dir / LATEX_FILE, latex)
    content = ReportContent(
        name=run_name(run_dir),
        run_dir=run_dir,
        task=summary.get("task", "?"),
        n_folds=n_folds,
        study=f" per seed, seeds {summary['seeds']}; figures and diagnostics from `{source}`" if source != run_dir else "",
        headline=metric_label(headline),
        results=results,
        comparison=comparison,
        subjects=subject_table(per_subject, headline),
        notes=notes,
        gap_per_fold=tables.gap_per_fold_table(summary, stats),
        diagnostics=tables.diagnostics_table(source),
        figures=collector.figures,
        skipped=collector.skipped,
        independence=summary.get("independence"),
        leaks=list(summary.get("leaks") or []),
        latex=latex,
        latex_path=latex_path,
    )
    if sweep is not None:
        content.sweep = tables.sweep_table(sweep)
        content.sweep_dir = Path(sweep_dir)
        content.sweep_config = str(sweep.get("config", "?"))

    markdown_path, html_path = out_dir / "report.md", out_dir / "report.html"
    write_text_atomic(markdown_path, markdown(content, out_dir))
    write_text_atomic(html_path, html_page(content))
    return ReportPaths(markdown_path, html_path, [f.path for f in collector.figures if f.path is not None], latex_path)


def _latex_label(run_dir: Path) -> str:
    """``tab:<run name>``, in the characters a LaTeX label may hold."""
    return "tab:" + re.sub(r"[^A-Za-z0-9:.-]+", "-", run_name(run_dir)).strip("-")
