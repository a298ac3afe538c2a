"""The report's figures: the generic ones every run has data for (results per class or
predicted vs. true, training curves, the sweep) and those the registered methods declare.

A method's figures are found through the registry, never by name: each
:class:`~privkd.evaluation.artifacts.FigureSpec` a registered method declares is drawn from
the rows whose records say they trained a method declaring it. Every figure is drawn to the
bytes of its files here; one whose data are absent, or that fails, is listed as not drawn instead of
costing the report.

Every figure is kept in the three formats a paper and a page need: a 300 dpi PNG (what the
HTML embeds and a slide takes), a PDF with TrueType fonts (what publishers' checks accept,
where Type 3 fonts are refused) and an SVG (editable). Each is written without a creation
date or random ids, so that the same run gives the same bytes and a rerun report can be
compared file by file.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from privkd.evaluation import plots
from privkd.evaluation.artifacts import (
    FigureContext,
    FigureSpec,
    RowArtifacts,
    fold_dirs,
    read_npz,
)
from privkd.evaluation.metrics import SELECTION_METRIC
from privkd.methods import registry
from privkd.report.curves import training_curves
from privkd.report.reading import dataset_names, read_epoch_log

__all__ = ["PNG_DPI", "SAVE_OPTIONS", "FigureCollector", "ReportFigure", "collect_figures", "declared_figures", "render"]


PNG_DPI = 300
"""The PNG's resolution: print quality at the figure's own size."""

SAVE_OPTIONS: dict[str, dict] = {
    "png": {"dpi": PNG_DPI},
    "pdf": {"metadata": {"CreationDate": None}},
    "svg": {"metadata": {"Date": None}},
}
"""Every format a figure is saved in (PNG first: the one the pages show), with what keeps its
bytes the same from one report to the next."""

STABLE_OUTPUT = {"svg.hashsalt": "privkd", "svg.fonttype": "none", "pdf.fonttype": 42}
"""Fixed SVG ids instead of random ones, the SVG's text kept as text (editable, and quicker to
write than outlines), and TrueType (not Type 3) fonts in the PDF."""


@dataclass
class ReportFigure:
    """A drawn figure: its bytes per format, its width in inches (the size it is shown at) and,
    once saved, where each file went."""

    key: str
    title: str
    caption: str
    files: dict[str, bytes]
    width_in: float
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def png(self) -> bytes:
        return self.files["png"]

    @property
    def path(self) -> Path | None:
        """The saved PNG, the file the markdown shows."""
        return self.paths.get("png")


def render(fig) -> dict[str, bytes]:
    """``fig`` in every format of :data:`SAVE_OPTIONS`, all with the layout the first one found:
    the panels sit alike in every file, and the layout is solved once instead of per format."""
    from matplotlib import rc_context

    files = {}
    with rc_context(STABLE_OUTPUT):
        for fmt, options in SAVE_OPTIONS.items():
            buffer = io.BytesIO()
            fig.savefig(buffer, format=fmt, **options)
            files[fmt] = buffer.getvalue()
            fig.set_layout_engine("none")  # keeps the positions the first save laid out
    return files


class FigureCollector:
    """Builds each figure, keeping the drawn ones and a note for each skipped one."""

    def __init__(self) -> None:
        self.figures: list[ReportFigure] = []
        self.skipped: list[str] = []

    def add(self, key: str, title: str, caption: str, draw: Callable[[], object], absent: str) -> None:
        try:
            fig = draw()
        except Exception as err:  # noqa: BLE001 - a figure must never cost the whole report
            self.skipped.append(f"{title}: could not be drawn ({type(err).__name__}: {err})")
            return
        if fig is None:
            self.skipped.append(f"{title}: {absent}")
            return
        self.figures.append(ReportFigure(key, title, caption, render(fig), float(fig.get_size_inches()[0])))


def declared_figures() -> dict[FigureSpec, list[str]]:
    """Every figure a registered method declares, in registration order, with the methods declaring it."""
    declared: dict[FigureSpec, list[str]] = {}
    for spec in registry.specs():
        for figure in spec.figures:
            declared.setdefault(figure, []).append(spec.name)
    return declared


def _method_figures(out: FigureCollector, run_dir: Path, rows: Sequence[str], context: FigureContext) -> None:
    """Each declared figure from the rows of its methods: once per row for a ``per_row`` figure,
    else once for all of them; listed as not drawn when the run has no such row."""
    artifacts = [RowArtifacts.of(run_dir, row) for row in rows]
    methods = {row.row: row.method() for row in artifacts}
    for figure, names in declared_figures().items():
        fed = [row for row in artifacts if methods[row.row] in names]
        if not fed:
            out.skipped.append(f"{figure.title}: {figure.absent} (no {' / '.join(names)} row in the run)")
        elif figure.per_row:
            for row in fed:
                out.add(f"{figure.key}_{row.row}", f"{figure.title}: {row.row}", figure.caption,
                        partial(figure.draw, [row], context), figure.absent)
        else:
            out.add(figure.key, figure.title, figure.caption, partial(figure.draw, fed, context), figure.absent)


def _result_figures(out: FigureCollector, folds: Sequence[Path], rows: Sequence[str], context: FigureContext) -> None:
    """Per-class accuracy and confusion matrices, or predicted vs. true: test predictions of all folds pooled."""
    per_fold: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for row in rows:
        parts = [p for fold in folds if (p := read_npz(fold / row / "test_predictions.npz")) is not None]
        if parts:
            per_fold[row] = [(p["outputs"], p["labels"]) for p in parts]
    predictions = {row: (np.concatenate([o for o, _ in parts]), np.concatenate([lab for _, lab in parts]))
                   for row, parts in per_fold.items()}
    n_folds = len(folds)
    if context.task == "classification":
        out.add("per_class_accuracy", "Per-class accuracy",
                (f"Accuracy within each true class (correct / samples of the class): mean over the {n_folds} test fold(s), "
                 "error bars one sample std over the folds that hold the class, cut at 0 and 1."),
                partial(plots.per_class_accuracy, per_fold, context.class_names), "no test_predictions.npz in the run")
        out.add("confusion_matrices", "Confusion matrices",
                f"Row-normalised (each true class sums to 1), test windows of all {n_folds} fold(s) pooled.",
                partial(plots.confusion_matrices, predictions, context.class_names), "no test_predictions.npz in the run")
    else:
        out.add("regression_scatter", "Predicted vs. true",
                f"Test predictions of all {n_folds} fold(s) pooled (at most 2000 random points per panel); "
                "grey line = identity; the pooled CCC differs from the per-fold mean in the table.",
                partial(plots.regression_scatter, predictions, context.target_names), "no test_predictions.npz in the run")


def _training_curves(out: FigureCollector, folds: Sequence[Path], rows: Sequence[str], task: str) -> None:
    """Training loss and validation selection metric per epoch, one curve per fold: a single
    fold's curve hides how much training varies from one split of subjects to the next."""
    logs: dict[str, dict[int, dict[str, list[float]]]] = {}
    for fold in folds:
        index = int(fold.name.removeprefix("fold_"))  # fold_dirs gives only fold_<i> directories
        for row in rows:
            path = fold / row / "logs" / "metrics.csv"
            if path.is_file():
                try:
                    logs.setdefault(row, {})[index] = read_epoch_log(path, task)
                except (OSError, csv.Error):
                    continue
    selection = SELECTION_METRIC.get(task, "f1")
    out.add("training_curves", "Training curves",
            f"Every fold (one colour each), one row of panels per method: training loss (each method's own objective, "
            f"so levels are not comparable across methods; validation loss dotted) and the validation {selection} the "
            "best epoch is selected on (★ the selected epoch of each fold).",
            partial(training_curves, logs, f"val/{selection}"), "no logs/metrics.csv in any fold")


def _sweep_figure(out: FigureCollector, sweep: Mapping) -> None:
    """Test score of the swept row at every point (the sweep's own row, else the first distilled row)."""
    metric = "ccc" if str(sweep.get("objective", "")).endswith("ccc") else "accuracy"
    points = sweep.get("points", [])
    bounds = {registry.bound_row("lower"), registry.bound_row("upper")}
    row = sweep.get("row") or next((r for p in points for r in p.get("test", {}) if r not in bounds), None)
    absent = f"no point has a test {metric} for a distilled row"
    if not row:
        out.skipped.append(f"Sweep: {absent}")
        return
    out.add("sweep", "Sweep",
            f"Test {metric} (mean over folds) of row {row!r} at every swept point; the sweep picks its best point on "
            f"{sweep.get('objective', 'validation')}, not on this test score (cf. MT-PKDOT Fig. 7).",
            partial(plots.sweep_curves, points, list(sweep.get("parameters", [])), row, metric), absent)


def collect_figures(run_dir: Path, summary: Mapping, sweep: Mapping | None) -> FigureCollector:
    """Every figure of the report, drawn from the folds of ``run_dir`` (and the sweep, when given)."""
    task = summary.get("task", "classification")
    rows = list(summary["methods"])
    folds = fold_dirs(run_dir)
    context = FigureContext(task, *dataset_names(run_dir))
    out = FigureCollector()
    _result_figures(out, folds, rows, context)
    _method_figures(out, run_dir, rows, context)
    _training_curves(out, folds, rows, task)
    if sweep is not None:
        _sweep_figure(out, sweep)
    return out
