"""``privkd report``: a finished run directory → ``report.md`` and a self-contained ``report.html``.

The report holds the results table (mean ± std over test folds, the share of the
baseline → teacher gap each student closes, paired tests against the baseline across folds)
and every figure the run has data for; figures whose data are absent are skipped and listed.
PNGs are saved under ``RUN_DIR/report/`` and embedded in the HTML as base64 data URIs, so the
HTML file needs nothing else. All files are written atomically.

The reference rows are the method registry's lower and upper bounds and the method figures
are those the registered methods declare, so the report names no method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from privkd.atomic import write_bytes_atomic, write_text_atomic
from privkd.errors import PrivkdError
from privkd.evaluation.artifacts import fold_dirs
from privkd.evaluation.stats import headline_metric
from privkd.evaluation.summary import metric_label
from privkd.methods.registry import bound_row
from privkd.paths import refuse_output_onto_inputs
from privkd.report import tables
from privkd.report.figures import collect_figures
from privkd.report.reading import figure_run, load_summary, load_sweep, run_name
from privkd.report.render import ReportContent, html_page, markdown
from privkd.report.subjects import CI_NOTE, difference_interval, format_interval, subject_scores, subject_table

__all__ = ["FIGURE_DIR", "ReportPaths", "build_report", "figure_run"]

FIGURE_DIR = "report"
"""Where, under the run directory, the figures' PNGs go."""


@dataclass
class ReportPaths:
    """Where the report went."""

    markdown: Path
    html: Path
    figures: list[Path] = field(default_factory=list)


HAND_EDITED = (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError)
"""What reading a results file of another shape raises: a key missing, a list where a number was."""


def build_report(run_dir: str | Path, sweep_dir: str | Path | None = None, out_dir: str | Path | None = None) -> ReportPaths:
    """Write ``report.md`` and ``report.html`` for ``run_dir`` into ``out_dir`` (default: the run
    directory) and every figure as a PNG under ``run_dir/report/``.

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


def _build_report(run_dir: Path, sweep_dir: str | Path | None, out_dir: str | Path | None) -> ReportPaths:
    figure_dir = run_dir / FIGURE_DIR
    if figure_dir.is_symlink():
        raise PrivkdError(f"{figure_dir}: a symbolic link (to {figure_dir.resolve()}); the report never writes through "
                          "a link out of the run directory", f"delete the link (rm {figure_dir}); the report makes the directory")
    summary = load_summary(run_dir)
    sweep = load_sweep(Path(sweep_dir)) if sweep_dir is not None else None
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    own = [run_dir / "report.md", run_dir / "report.html"]  # the report's own files, replaced by each report
    for output in (out_dir / "report.md", out_dir / "report.html"):
        refuse_output_onto_inputs("--out", output, [("RUN_DIR", run_dir), ("--sweep", sweep_dir)], own=own)

    source = figure_run(run_dir)
    collector = collect_figures(source, summary, sweep)
    for figure in collector.figures:
        figure.path = run_dir / FIGURE_DIR / f"{figure.key}.png"
        write_bytes_atomic(figure.path, figure.png)

    baseline, teacher = bound_row("lower"), bound_row("upper")
    headline = headline_metric(summary)
    per_subject = subject_scores(source, list(summary["methods"]), summary.get("task", "classification"), headline)
    intervals = ({row: format_interval(difference_interval(scores, per_subject[baseline]))
                  for row, scores in per_subject.items() if row != baseline} if baseline in per_subject else None)
    results, comparison, stats = tables.results_table(summary, baseline=baseline, teacher=teacher, intervals=intervals)
    content = ReportContent(
        name=run_name(run_dir),
        run_dir=run_dir,
        task=summary.get("task", "?"),
        n_folds=summary.get("folds", len(fold_dirs(source))),
        study=f" per seed, seeds {summary['seeds']}; figures and diagnostics from `{source}`" if source != run_dir else "",
        headline=metric_label(headline),
        results=results,
        comparison=comparison,
        subjects=subject_table(per_subject, headline),
        notes=tables.notes(summary, stats, baseline=baseline, teacher=teacher) + ([CI_NOTE] if intervals else []),
        gap_per_fold=tables.gap_per_fold_table(summary, stats),
        diagnostics=tables.diagnostics_table(source),
        figures=collector.figures,
        skipped=collector.skipped,
        independence=summary.get("independence"),
        leaks=list(summary.get("leaks") or []),
    )
    if sweep is not None:
        content.sweep = tables.sweep_table(sweep)
        content.sweep_dir = Path(sweep_dir)
        content.sweep_config = str(sweep.get("config", "?"))

    markdown_path, html_path = out_dir / "report.md", out_dir / "report.html"
    write_text_atomic(markdown_path, markdown(content, out_dir))
    write_text_atomic(html_path, html_page(content))
    return ReportPaths(markdown_path, html_path, [f.path for f in collector.figures if f.path is not None])
