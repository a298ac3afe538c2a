"""``privkd report``: a finished run directory → ``report.md`` and a self-contained ``report.html``.

The report holds the results table (mean ± std over test folds, the share of the
baseline → teacher gap each student closes, paired tests against the baseline across folds)
and every figure the run has data for; figures whose data are absent are skipped and listed.
PNGs are saved under ``RUN_DIR/report/`` and embedded in the HTML as base64 data URIs, so the
HTML file needs nothing else. All files are written atomically.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from privkd.atomic import write_bytes_atomic, write_text_atomic
from privkd.errors import PrivkdError
from privkd.evaluation import plots
from privkd.evaluation.stats import (
    RowStats,
    format_p,
    format_percent,
    headline_metric,
    row_stats,
)
from privkd.evaluation.summary import metric_label

FIGURE_DIR = "report"
SELECTION_METRIC = {"classification": "f1", "regression": "ccc"}


@dataclass
class ReportPaths:
    """Where the report went."""

    markdown: Path
    html: Path
    figures: list[Path] = field(default_factory=list)


@dataclass
class ReportFigure:
    key: str
    title: str
    caption: str
    png: bytes
    path: Path | None = None


# --------------------------------------------------------------------------- loading


def _read_json(path: Path, fix: str) -> object:
    if not path.is_file():
        raise PrivkdError(f"{path} is missing", fix)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise PrivkdError(f"{path} is unreadable or not valid JSON ({err})", fix) from err


def fold_dirs(run_dir: Path) -> list[Path]:
    """``fold_<i>`` directories in fold order."""
    found = [(int(m.group(1)), p) for p in run_dir.glob("fold_*") if p.is_dir() and (m := re.fullmatch(r"fold_(\d+)", p.name))]
    return [p for _, p in sorted(found)]


def figure_run(run_dir: Path) -> Path:
    """The run whose folds the figures and diagnostics come from: the run itself or, for a
    ``privkd study`` directory (folds under ``seed_<s>/<run>/``), its first seed's run."""
    if fold_dirs(run_dir):
        return run_dir
    runs = sorted((int(p.parent.parent.name.split("_")[1]), p.parent) for p in run_dir.glob("seed_*/*/fold_0")
                  if p.parent.parent.name.split("_")[1].isdigit())
    return runs[0][1] if runs else run_dir


def load_summary(run_dir: Path) -> dict:
    """``summary.json`` of a finished run, or a :class:`PrivkdError` saying what is missing and what to do."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PrivkdError(f"{run_dir}: run directory not found", "pass a directory written by `privkd run` (it holds summary.json)")
    path = run_dir / "summary.json"
    if not path.is_file():
        finished = len(list(run_dir.glob("fold_*/*/metrics.json")))
        state = (f"the run is incomplete ({finished} finished (fold, method) result(s) but no summary)" if finished
                 else "this is not a finished privkd run directory")
        raise PrivkdError(f"{path} is missing: {state}",
                          "let `privkd run` finish (or rerun it), then pass the run directory it prints")
    summary = _read_json(path, "rerun `privkd run`; summary.json is rewritten at the end of a run")
    if not isinstance(summary, dict) or not isinstance(summary.get("methods"), dict) or not summary["methods"]:
        raise PrivkdError(f"{path} has no 'methods' results", "rerun `privkd run`; summary.json is rewritten at the end of a run")
    return summary


def load_sweep(sweep_dir: Path) -> dict:
    path = Path(sweep_dir) / "sweep.json"
    sweep = _read_json(path, "pass --sweep a directory written by `privkd sweep` (it holds sweep.json)")
    if not isinstance(sweep, dict) or not isinstance(sweep.get("points"), list):
        raise PrivkdError(f"{path} has no 'points' list", "pass --sweep a directory written by `privkd sweep`")
    return sweep


def dataset_names(run_dir: Path) -> tuple[list[str] | None, list[str] | None]:
    """Class names and target names of the run's dataset, when its file is still there."""
    try:
        env = json.loads((run_dir / "environment.json").read_text())
        path = Path(env["data_path"])
        if not path.is_file():
            return None, None
        from privkd.data import read_info

        info = read_info(path)
        return (list(info.class_names) if info.class_names else None,
                list(info.target_names) if info.target_names else None)
    except Exception:  # noqa: BLE001 - names are a nicety: any problem → class ids
        return None, None


def run_name(run_dir: Path) -> str:
    try:
        import yaml

        return str(yaml.safe_load((run_dir / "config.yaml").read_text())["name"])
    except Exception:  # noqa: BLE001 - no readable name → the directory name
        return run_dir.name


def read_epoch_log(path: Path, task: str) -> dict[str, list[float]]:
    """Per-epoch means of ``train/loss`` and the validation selection metric from a Lightning
    CSV log (train and validation values sit on different lines of the same epoch)."""
    sums: dict[int, dict[str, list[float]]] = {}
    with path.open(newline="") as handle:
        for line in csv.DictReader(handle):
            try:
                epoch = int(float(line.get("epoch") or "nan"))
            except ValueError:
                continue
            bucket = sums.setdefault(epoch, {})
            for column, value in line.items():
                if column and value not in (None, ""):
                    try:
                        bucket.setdefault(column, []).append(float(value))
                    except ValueError:
                        pass
    selection = f"val/{SELECTION_METRIC.get(task, 'f1')}"
    out: dict[str, list[float]] = {"epoch": [], "train/loss": [], "val/selection": []}
    for epoch in sorted(sums):
        bucket = sums[epoch]

        def mean(*names: str, _bucket: dict = bucket) -> float:
            for name in names:
                if name in _bucket:
                    return float(np.mean(_bucket[name]))
            return math.nan

        out["epoch"].append(epoch)
        out["train/loss"].append(mean("train/loss", "train/loss_epoch"))
        out["val/selection"].append(mean("val/selection", selection))
    return out


# --------------------------------------------------------------------------- figures


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


class _FigureCollector:
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
        self.figures.append(ReportFigure(key, title, caption, _png(fig)))


def _npz(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def collect_figures(run_dir: Path, summary: Mapping, sweep: Mapping | None) -> _FigureCollector:
    task = summary.get("task", "classification")
    rows = list(summary["methods"])
    folds = fold_dirs(run_dir)
    class_names, target_names = dataset_names(run_dir)
    out = _FigureCollector()

    def metrics_records(row: str) -> list[dict]:
        records = []
        for fold in folds:
            path = fold / row / "metrics.json"
            if path.is_file():
                try:
                    records.append(json.loads(path.read_text()))
                except (OSError, json.JSONDecodeError):
                    continue
        return records

    # results: per class / confusion or regression scatter (test predictions of all folds pooled)
    predictions: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for row in rows:
        parts = [p for fold in folds if (p := _npz(fold / row / "test_predictions.npz")) is not None]
        if parts:
            predictions[row] = (np.concatenate([p["outputs"] for p in parts]), np.concatenate([p["labels"] for p in parts]))
    n_folds = len(folds)
    if task == "classification":
        out.add("per_class_accuracy", "Per-class accuracy",
                f"Accuracy within each true class (correct / samples of the class), test windows of all {n_folds} fold(s) pooled.",
                lambda: plots.per_class_accuracy(predictions, class_names), "no test_predictions.npz in the run")
        out.add("confusion_matrices", "Confusion matrices",
                f"Row-normalised (each true class sums to 1), test windows of all {n_folds} fold(s) pooled.",
                lambda: plots.confusion_matrices(predictions, class_names), "no test_predictions.npz in the run")
    else:
        out.add("regression_scatter", "Predicted vs. true",
                f"Test predictions of all {n_folds} fold(s) pooled (at most 2000 random points per panel); "
                "grey line = identity; the pooled CCC differs from the per-fold mean in the table.",
                lambda: plots.regression_scatter(predictions, target_names), "no test_predictions.npz in the run")

    # MT-PKDOT Fig. 4: similarity matrices, first fold with the file
    for row in rows:
        sim = next((s for fold in folds if (s := _npz(fold / row / "similarity.npz")) is not None), None)
        if sim is None:
            continue
        out.add(f"similarity_{row}", f"Similarity matrices: {row}",
                "Cosine similarity of joint embeddings on a fixed validation probe batch sorted by class (regression: by the "
                "first target; first fold with "
                "the record): the frozen teacher, then the student before training and at 50 %, 75 % and 100 % of its epochs "
                "(cf. MT-PKDOT Fig. 4).",
                lambda sim=sim, row=row: plots.similarity_evolution(sim["teacher"], sim["student"], sim["labels"], row),
                "no student epochs recorded")
    if not any(f.key.startswith("similarity_") for f in out.figures):
        out.skipped.append("Similarity matrices: no similarity.npz (no row distils from a fold teacher)")

    # MT-PKDOT Fig. 5: alignment t-SNE
    align = next((a for fold in folds if (a := _npz(fold / "teacher" / "alignment.npz")) is not None), None)
    if align is None:
        out.skipped.append("Teacher alignment t-SNE: no teacher/alignment.npz (no teacher row, or a teacher without modality adapters)")
    else:
        before = {k.split("/", 1)[1]: v for k, v in align.items() if k.startswith("before/")}
        after = {k.split("/", 1)[1]: v for k, v in align.items() if k.startswith("after/")}
        out.add("alignment_tsne", "Teacher alignment (t-SNE)",
                "2-D t-SNE (random_state = 0) of the teacher's joint embedding and each modality adapter's view of the "
                "validation probe batch (first fold), before and after training with the alignment loss; colour = view, "
                "marker = class (regression: tercile of the first target); each side is one shared map (cf. MT-PKDOT Fig. 5, there in 3-D).",
                lambda: plots.alignment_tsne(before, after, align["labels"], class_names), "fewer than 5 probe samples")

    # MT-PKDOT Fig. 6: teacher selection
    selection: dict[str, dict[str, float]] = {}
    for row in rows:
        for record in metrics_records(row):
            for epoch in record.get("teacher_selection") or []:
                for teacher, count in epoch.items():
                    selection.setdefault(row, {}).setdefault(teacher, 0)
                    selection[row][teacher] += count
    if selection:
        out.add("teacher_selection", "Teacher selection (MT-PKDOT)",
                "Share of training batches on which each teacher (joint or modality adapter) was the one distilled from, "
                "summed over epochs and folds (cf. MT-PKDOT Fig. 6).",
                lambda: plots.teacher_selection(selection), "no batches counted")
    else:
        out.skipped.append("Teacher selection: no MT-PKDOT row in the run")

    # AMID Fig. 4
    gaps = {row: [r.get("teacher_student_gap") or [] for r in metrics_records(row)] for row in rows}
    gaps = {row: folds_ for row, folds_ in gaps.items() if any(folds_)}
    if gaps:
        out.add("amid_gap", "AMID teacher-student gap",
                "Training accuracy of AMID's online teacher and of the student per epoch and their difference, mean over the "
                "folds that reached each epoch (cf. AMID Fig. 4).",
                lambda: plots.amid_gap(gaps), "no epochs recorded")
    else:
        out.skipped.append("AMID teacher-student gap: no AMID row in the run")

    # training curves, first fold
    logs = {}
    first = folds[0] if folds else None
    if first is not None:
        for row in rows:
            path = first / row / "logs" / "metrics.csv"
            if path.is_file():
                try:
                    logs[row] = read_epoch_log(path, task)
                except (OSError, csv.Error):
                    continue
    selection_name = SELECTION_METRIC.get(task, "f1")
    out.add("training_curves", "Training curves",
            f"First fold: training loss (each method's own objective, so levels are not comparable across methods) and the "
            f"validation {selection_name} the best epoch is selected on.",
            lambda: plots.training_curves(logs, f"val/{selection_name} (selection)"), "no logs/metrics.csv in the first fold")

    # MT-PKDOT Fig. 7: sweep
    if sweep is not None:
        metric = "ccc" if str(sweep.get("objective", "")).endswith("ccc") else "accuracy"
        points = sweep.get("points", [])
        row = sweep.get("row") or next((r for p in points for r in p.get("test", {}) if r not in ("baseline", "teacher")), None)
        out.add("sweep", "Sweep",
                f"Test {metric} (mean over folds) of row {row!r} at every swept point; the sweep picks its best point on "
                f"{sweep.get('objective', 'validation')}, not on this test score (cf. MT-PKDOT Fig. 7).",
                lambda: plots.sweep_curves(points, list(sweep.get("parameters", [])), row, metric) if row else None,
                f"no point has a test {metric} for a distilled row")
    return out


# --------------------------------------------------------------------------- tables


def _cell(stats: RowStats, metric: str) -> str:
    if metric not in stats.metrics:
        return "—"
    mean, std, n = stats.metrics[metric]
    if n == 0:
        return "n/a"
    return f"{mean:.4f}" if n == 1 else f"{mean:.4f} ± {std:.4f}"  # no spread from a single value


def results_table(summary: Mapping) -> tuple[list[str], list[list[str]], list[RowStats]]:
    """Header and cells of the results table, and the statistics behind them."""
    stats = row_stats(summary)
    metrics = list(dict.fromkeys(name for m in summary["methods"].values() for name in m))
    headline = headline_metric(summary)
    across = "across runs" if _has_runs(summary) else "across folds"
    header = ["Method", "n", *[metric_label(m) for m in metrics], f"Gap closed ({metric_label(headline)})",
              f"Δ {metric_label(headline)} vs baseline", f"Wilcoxon p ({across})", f"t-test p ({across})"]
    rows = []
    for s in stats:
        test = s.test
        delta = "—" if test is None or not math.isfinite(test.mean_difference) else f"{test.mean_difference:+.4f}"
        gap = "—" if s.row in ("baseline", "teacher") else format_percent(s.gap_closed)
        if s.gap_reference.startswith("teacher_"):
            gap += " †"
        rows.append([s.row, str(s.n_runs), *[_cell(s, m) for m in metrics], gap, delta,
                     "—" if test is None else format_p(test.wilcoxon_p), "—" if test is None else format_p(test.ttest_p)])
    return header, rows, stats


def _has_runs(summary: Mapping) -> bool:
    """Whether the summary holds ``per_run`` values (folds × seeds)."""
    return any("per_run" in e for m in summary["methods"].values() for e in m.values())


def _notes(summary: Mapping, stats: list[RowStats]) -> list[str]:
    headline = headline_metric(summary)
    methods = summary["methods"]
    unit = "runs (folds × seeds)" if _has_runs(summary) else "test folds"
    notes = [
        (f"Scores are on test subjects never seen in training or selection: mean ± sample std (ddof = 1) over {unit}; "
         "n is the number of values."),
        (f"Gap closed = (student − baseline) / (teacher − baseline) on the headline metric, {metric_label(headline)}, "
         "from the means: 0 % is the prevalent-only baseline, 100 % the privileged teacher."),
        (f"p-values are across {unit}, paired by fold, two-sided, on {metric_label(headline)}, against the baseline row, "
         "not corrected for multiple comparisons. Wilcoxon = exact signed-rank test; t-test = paired t-test."),
    ]
    if "baseline" not in methods:
        notes.append("No baseline row: gap closed and paired tests are not available.")
    elif "teacher" not in methods:
        own = sorted({s.gap_reference for s in stats if s.gap_reference.startswith("teacher_")})
        notes.append("No teacher row: the gap closed is not available" + (
            f", except † relative to the row's own online teacher ({', '.join(own)}), which trains jointly with the "
            "student and is not the offline upper bound." if own else "."))
    tested = [s.test for s in stats if s.test is not None and s.test.n_nonzero > 0]
    if tested and not all(t.can_reach_alpha for t in tested):
        n = max(t.n_nonzero for t in tested)
        notes.append(f"With n = {n} paired values the exact two-sided Wilcoxon test cannot give p below "
                     f"{2 / 2 ** n:.4g}, so p < 0.05 is unreachable whatever the effect (6 or more folds are needed).")
    by_note: dict[str, list[str]] = {}
    for s in stats:
        for note in s.test.notes if s.test is not None else []:
            if not note.startswith("n = "):
                by_note.setdefault(note, []).append(s.row)
    notes += [f"{', '.join(rows)}: {note}." for note, rows in by_note.items()]
    if any(s.n_runs == 1 for s in stats):
        notes.append("A single value has no spread: such cells show the mean alone.")
    return notes


def _gap_per_fold_rows(stats: list[RowStats]) -> list[list[str]]:
    return [[s.row, *[format_percent(v) for v in s.gap_closed_per_fold]] for s in stats if s.gap_closed_per_fold]


def _sweep_rows(sweep: Mapping) -> tuple[list[str], list[list[str]]]:
    params = list(sweep.get("parameters", []))
    row = sweep.get("row")
    header = [*params, f"{sweep.get('objective', 'objective')} (validation)"]
    test_rows = [row] if row else []
    header += [f"test {metric} ({r})" for r in test_rows for metric in ("accuracy", "ccc")
               if any(metric in p.get("test", {}).get(r, {}) for p in sweep["points"])]
    rows = []
    for p in sweep["points"]:
        cells = [str(p.get("params", {}).get(k, "")) for k in params]
        objective = p.get("objective")
        cells.append(f"{objective:.4f}" if isinstance(objective, (int, float)) else "n/a")
        for r in test_rows:
            for metric in ("accuracy", "ccc"):
                if any(metric in q.get("test", {}).get(r, {}) for q in sweep["points"]):
                    value = p.get("test", {}).get(r, {}).get(metric)
                    cells.append(f"{value:.4f}" if isinstance(value, (int, float)) else "n/a")
        rows.append(cells)
    return header, rows


# --------------------------------------------------------------------------- rendering


DIAGNOSTICS_NOTE = ("On the test subjects of each fold, mean over folds. T-Net: R² and cosine of the hallucinated "
                    "privileged tokens against the teacher's real ones. Structure: mean |teacher − student| of the "
                    "anchored similarity rows and the structural OT value on test batches, for the student as "
                    "initialised (before) and as trained (after); distillation claims to lower both.")


def _diagnostic_rows(run_dir: Path) -> tuple[list[str], list[list[str]]]:
    """One row per distilled method (structure before/after) and one for the T-Net, from each fold's metrics.json."""
    records: dict[str, list[dict]] = {}
    for fold in fold_dirs(run_dir):
        for path in sorted(fold.glob("*/metrics.json")):
            records.setdefault(path.parent.name, []).append(json.loads(path.read_text()))

    def mean(values: list[float]) -> str:
        return f"{np.mean(values):.4f}" if values else "—"

    header = ["Diagnostic", "anchor |Δ| before", "anchor |Δ| after", "OT before", "OT after", "T-Net R²", "T-Net cosine"]
    rows = []
    tnet = [r["tnet_test"] for r in records.get("teacher", []) if "tnet_test" in r]
    if tnet:
        rows.append(["T-Net (teacher)", "—", "—", "—", "—", mean([t["r2"] for t in tnet]), mean([t["cosine"] for t in tnet])])
    for row, recs in records.items():
        gaps = [r["structure_test"] for r in recs if "structure_test" in r]
        if gaps:
            rows.append([f"structure: {row}", *(mean([g[when][key] for g in gaps]) for key in ("anchor_mad", "ot")
                                                 for when in ("before", "after")), "—", "—"])
    return header, rows


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    esc = lambda text: str(text).replace("|", "\\|")
    return ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]]


def _html_table(header: list[str], rows: list[list[str]], table_id: str, row_ids: bool = False) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        attrs = f' id="row-{html.escape(row[0])}" class="method" data-method="{html.escape(row[0])}"' if row_ids else ""
        body.append(f"<tr{attrs}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#222}table{border-collapse:collapse;margin:1em 0;font-size:0.85em;display:block;overflow-x:auto;max-width:100%}th,td{border:1px solid #ccc;
padding:0.3em 0.5em;text-align:right;white-space:nowrap}th:first-child,td:first-child{text-align:left}thead{background:#f3f3f3}
figure{margin:2em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:0.9em;color:#444}
.notes li{font-size:0.9em;margin:0.2em 0}code{background:#f6f6f6;padding:0 0.2em}"""


def build_report(run_dir: str | Path, sweep_dir: str | Path | None = None, out_dir: str | Path | None = None) -> ReportPaths:
    """Write ``report.md`` and ``report.html`` for ``run_dir`` into ``out_dir`` (default: the run
    directory) and every figure as a PNG under ``run_dir/report/``."""
    run_dir = Path(run_dir)
    summary = load_summary(run_dir)
    sweep = load_sweep(Path(sweep_dir)) if sweep_dir is not None else None
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    figure_dir = run_dir / FIGURE_DIR

    source = figure_run(run_dir)
    collector = collect_figures(source, summary, sweep)
    for figure in collector.figures:
        figure.path = figure_dir / f"{figure.key}.png"
        write_bytes_atomic(figure.path, figure.png)

    name = run_name(run_dir)
    task = summary.get("task", "?")
    n_folds = summary.get("folds", len(fold_dirs(source)))
    header, rows, stats = results_table(summary)
    notes = _notes(summary, stats)
    gap_rows = _gap_per_fold_rows(stats)
    n_gap = max((len(r) - 1 for r in gap_rows), default=0)
    gap_header = ["Method", *[f"{'run' if _has_runs(summary) else 'fold'} {i}" for i in range(n_gap)]]
    study = f" per seed, seeds {summary['seeds']}; figures and diagnostics from `{source}`" if source != run_dir else ""
    intro = f"Run `{run_dir}`; task: {task}; {n_folds} subject-independent test fold(s){study}."

    # markdown
    md = [f"# privkd report: {name}", "", intro, "", "## Results", "", *_md_table(header, rows), ""]
    md += [f"- {n}" for n in notes] + [""]
    gap_note = ("Per fold, the same ratio from that fold's scores; it swings widely (or is n/a) in folds where the "
                "teacher barely beats, or does not beat, the baseline.")
    if gap_rows:
        md += [f"### Gap closed per fold ({metric_label(headline_metric(summary))})", "", gap_note, "",
               *_md_table(gap_header, gap_rows), ""]
    diagnostics = _diagnostic_rows(source)
    if diagnostics[1]:
        md += ["## Diagnostics", "", DIAGNOSTICS_NOTE, "", *_md_table(*diagnostics), ""]
    if sweep is not None:
        md += ["## Sweep", "", f"Sweep `{sweep_dir}` of `{sweep.get('config', '?')}`.", "", *_md_table(*_sweep_rows(sweep)), ""]
    md += ["## Figures", ""]
    for figure in collector.figures:
        link = Path(os.path.relpath(figure.path.resolve(), out_dir.resolve())).as_posix()
        md += [f"### {figure.title}", "", figure.caption, "", f"![{figure.title}]({link})", ""]
    if collector.skipped:
        md += ["### Figures not drawn", "", *[f"- {s}" for s in collector.skipped], ""]

    # html
    intro_html = (f"Run <code>{html.escape(str(run_dir))}</code>; task: {html.escape(str(task))}; "
                  f"{html.escape(str(n_folds))} subject-independent test fold(s){html.escape(study)}.")
    body = [f"<h1>privkd report: {html.escape(name)}</h1>", f"<p>{intro_html}</p>", "<h2>Results</h2>",
            _html_table(header, rows, "results", row_ids=True),
            '<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"]
    if gap_rows:
        body += [f"<h3>Gap closed per fold ({html.escape(metric_label(headline_metric(summary)))})</h3>",
                 f"<p>{html.escape(gap_note)}</p>", _html_table(gap_header, gap_rows, "gap-per-fold")]
    if diagnostics[1]:
        body += ["<h2>Diagnostics</h2>", f"<p>{html.escape(DIAGNOSTICS_NOTE)}</p>", _html_table(*diagnostics, "diagnostics")]
    if sweep is not None:
        sweep_intro = (f"<p>Sweep <code>{html.escape(str(sweep_dir))}</code> of "
                       f"<code>{html.escape(str(sweep.get('config', '?')))}</code>.</p>")
        body += ["<h2>Sweep</h2>", sweep_intro, _html_table(*_sweep_rows(sweep), "sweep")]
    body.append("<h2>Figures</h2>")
    for figure in collector.figures:
        data = base64.b64encode(figure.png).decode("ascii")
        body.append(f'<figure id="fig-{html.escape(figure.key)}"><h3>{html.escape(figure.title)}</h3>'
                    f'<img src="data:image/png;base64,{data}" alt="{html.escape(figure.title)}">'
                    f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>")
    if collector.skipped:
        items = "".join(f"<li>{html.escape(s)}</li>" for s in collector.skipped)
        body += ["<h3>Figures not drawn</h3>", f'<ul class="notes">{items}</ul>']
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>privkd report: {html.escape(name)}</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")

    markdown_path, html_path = out_dir / "report.md", out_dir / "report.html"
    write_text_atomic(markdown_path, "\n".join(md))
    write_text_atomic(html_path, page)
    return ReportPaths(markdown_path, html_path, [f.path for f in collector.figures if f.path is not None])
