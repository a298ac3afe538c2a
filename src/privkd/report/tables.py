"""The report's tables as plain cells: results, the notes under them, gap closed per fold,
held-out diagnostics and the sweep.

The reference rows (``baseline``, ``teacher``) are passed in by the caller, which asks the
method registry for its lower and upper bounds; the diagnostics table finds its rows by what
their records carry. So no table here knows a method by name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np

from privkd.evaluation.artifacts import fold_dirs
from privkd.evaluation.stats import (
    MIN_TEACHER_GAP,
    RowStats,
    describe_paired_tests,
    format_p,
    format_percent,
    headline_metric,
    mean_std,
    row_stats,
    run_values,
)
from privkd.evaluation.summary import (
    DEPARTURE_MARK,
    departure_lines,
    marked_row,
    metric_label,
    warning_lines,
)

__all__ = ["DIAGNOSTICS_NOTE", "GAP_NOTE", "GapCheck", "Table", "diagnostics_table", "gap_check", "gap_per_fold_table",
           "has_runs", "notes", "results_table", "sweep_table"]

DIAGNOSTICS_NOTE = ("On the test subjects of each fold, mean over folds. T-Net: R² and cosine of the hallucinated "
                    "privileged tokens against the teacher's real ones. Structure: mean |teacher − student| of the "
                    "anchored similarity rows and the structural OT value on test batches, for the student as "
                    "initialised (before) and as trained (after); distillation claims to lower both.")

GAP_NOTE = ("Per fold, the same ratio from that fold's scores; it swings widely (or is n/a) in folds where the "
            "teacher barely beats, or does not beat, the baseline.")


class Table(NamedTuple):
    """A header and rows of cells, every cell already a string."""

    header: list[str]
    rows: list[list[str]]


def has_runs(summary: Mapping) -> bool:
    """Whether the summary holds ``per_run`` values (folds × seeds)."""
    return any("per_run" in e for m in summary["methods"].values() for e in m.values())


def by_subject(summary: Mapping) -> bool:
    """Whether the Wilcoxon test is across subjects (a study that repeats folds of one dataset over
    seeds) rather than across runs (folds of one run, or seeds that each drew their own dataset)."""
    return has_runs(summary) and not summary.get("independent_datasets")


class GapCheck(NamedTuple):
    """How far a gap's reference (the teacher) beats the baseline against the noise of the runs:
    a share of a gap the runs cannot tell from zero would be a ratio of noise."""

    difference: float
    """Mean of the paired reference − baseline differences on the headline metric."""
    noise: float
    """Their sample std (ddof = 1); NaN with fewer than two pairs, when no noise can be measured."""
    reference: str

    @property
    def clear(self) -> bool:
        """Whether the reference beats the baseline by more than the noise."""
        return math.isfinite(self.noise) and self.difference > self.noise


def gap_check(summary: Mapping, stats: RowStats, *, baseline: str | None, teacher: str | None) -> GapCheck | None:
    """The :class:`GapCheck` of the reference ``stats``' gap closed is measured to (the teacher
    row, or the row's own online teacher), paired run by run as the paired tests pair them; None
    when no gap is measured for the row."""
    if not stats.gap_reference or baseline is None:
        return None
    methods, headline = summary["methods"], stats.headline
    reference = (methods[teacher][headline] if stats.gap_reference == teacher
                 else methods[stats.row][stats.gap_reference])
    top, base = run_values(reference), run_values(methods[baseline][headline])
    n = min(len(top), len(base))
    difference, noise, _ = mean_std(top[:n] - base[:n])  # a NaN on either side drops the pair
    return GapCheck(difference, noise if n > 1 else math.nan, stats.gap_reference)


def _gap_cell(summary: Mapping, stats: RowStats, *, baseline: str | None, teacher: str | None) -> str:
    """The gap closed, "—" for the reference rows and where the reference does not clear the
    noise (:func:`gap_check`), † where it is measured to the row's own online teacher."""
    if stats.row in (baseline, teacher):
        return "—"
    check = gap_check(summary, stats, baseline=baseline, teacher=teacher)
    gap = "—" if check is not None and not check.clear else format_percent(stats.gap_closed)
    return gap + (" †" if stats.gap_reference and stats.gap_reference != teacher else "")


def _cell(stats: RowStats, metric: str) -> str:
    if metric not in stats.metrics:
        return "—"
    mean, std, n = stats.metrics[metric]
    if n == 0:
        return "n/a"
    return f"{mean:.4f}" if n == 1 else f"{mean:.4f} ± {std:.4f}"  # no spread from a single value


def results_table(summary: Mapping, *, baseline: str | None, teacher: str | None,
                  intervals: Mapping[str, str] | None = None) -> tuple[Table, Table, list[RowStats]]:
    """The results as two tables narrow enough to read side by side with nothing scrolled out of
    sight: the scores of every row, and each row against the baseline (gap closed, difference,
    its per-subject bootstrap ``intervals`` when given, the paired tests); and the statistics
    behind them. The gap closed is "—" for the two reference rows and where the teacher does
    not beat the baseline by more than the noise of the runs, and marked † where it is measured
    to a row's own online teacher."""
    stats = row_stats(summary, baseline=baseline, teacher=teacher)
    metrics = list(dict.fromkeys(name for m in summary["methods"].values() for name in m))
    headline = headline_metric(summary)
    across = "across runs" if has_runs(summary) else "across folds"
    scores = Table(["Method", "n", *[metric_label(m) for m in metrics]],
                   [[s.row, str(s.n_runs), *[_cell(s, m) for m in metrics]] for s in stats])
    header = ["Method", f"Gap closed ({metric_label(headline)})", f"Δ {metric_label(headline)} vs baseline",
              *(["95 % CI of Δ per subject"] if intervals is not None else []),
              f"Wilcoxon p ({'subjects' if by_subject(summary) else across})", f"corrected t-test p ({across})"]
    rows = []
    for s in stats:
        test = s.test
        delta = "—" if test is None or not math.isfinite(test.mean_difference) else f"{test.mean_difference:+.4f}"
        gap = _gap_cell(summary, s, baseline=baseline, teacher=teacher)
        interval = [] if intervals is None else ["—" if s.row == baseline else intervals.get(s.row, "—")]
        wilcoxon = s.subject_test if by_subject(summary) else test
        rows.append([marked_row(summary, s.row), gap, delta, *interval, "—" if wilcoxon is None else format_p(wilcoxon.wilcoxon_p),
                     "—" if test is None else format_p(test.corrected_p)])
    return scores, Table(header, rows), stats


def notes(summary: Mapping, stats: list[RowStats], *, baseline: str | None, teacher: str | None) -> list[str]:
    """What a reader needs to read the results table: units, definitions, and what is missing or limited."""
    headline = headline_metric(summary)
    methods = summary["methods"]
    unit = "runs (folds × seeds)" if has_runs(summary) else "test folds"
    held_out = summary.get("independence") or "subject"  # recordings for data without subject ids
    out = [
        (f"Scores are on test {held_out}s never seen in training or selection: mean ± sample std (ddof = 1) over {unit}; "
         "n is the number of values."),
        (f"Gap closed = (student − baseline) / (teacher − baseline) on the headline metric, {metric_label(headline)}, "
         "from the means: 0 % is the prevalent-only baseline, 100 % the privileged teacher; n/a where the teacher "
         f"beats the baseline by less than {MIN_TEACHER_GAP:g} (one point, about what a run moves between processors), "
         "as a share of so small a gap is noise."),
        (f"Gap closed is shown only where the teacher beats the baseline by more than the fold noise: the mean of "
         f"the paired teacher − baseline differences on {metric_label(headline)} must exceed their sample std "
         f"(ddof = 1) over the {unit}; otherwise —, as the gap itself is then within what the folds scatter."),
        describe_paired_tests(summary, stats),
    ]
    out += _noisy_gap_notes(summary, stats, baseline=baseline, teacher=teacher)
    distilled = {row: source for row, source in (summary.get("teachers") or {}).items() if source and row in methods}
    if distilled:
        out.append("Each distilled row's teacher (trained once per fold): "
                   + "; ".join(f"{row} ← {source}" for row, source in distilled.items()) + ".")
    out += [f"{DEPARTURE_MARK} Departs from its paper: {line}." for line in departure_lines(summary)]
    out += [f"Warning: {line}" for line in warning_lines(summary)]
    if baseline not in methods:
        out.append("No baseline row: gap closed and paired tests are not available.")
    elif teacher not in methods:
        own = sorted({s.gap_reference for s in stats if s.gap_reference})
        out.append("No teacher row: the gap closed is not available" + (
            f", except † relative to the row's own online teacher ({', '.join(own)}), which trains jointly with the "
            "student and is not the offline upper bound." if own else "."))
    wilcoxons = [s.subject_test if by_subject(summary) else s.test for s in stats]
    tested = [t for t in wilcoxons if t is not None and t.n_nonzero > 0]
    if tested and not all(t.can_reach_alpha for t in tested):
        n = max(t.n_nonzero for t in tested)
        out.append(f"With n = {n} paired values the exact two-sided Wilcoxon test cannot give p below "
                   f"{2 / 2 ** n:.4g}, so p < 0.05 is unreachable whatever the effect (6 or more folds are needed).")
    by_note: dict[str, list[str]] = {}
    for s in stats:
        for note in s.test.notes if s.test is not None else []:
            if not note.startswith("n = "):
                by_note.setdefault(note, []).append(s.row)
    out += [f"{', '.join(rows)}: {note}." for note, rows in by_note.items()]
    if any(s.n_runs == 1 for s in stats):
        out.append("A single value has no spread: such cells show the mean alone.")
    return out


def _noisy_gap_notes(summary: Mapping, stats: list[RowStats], *, baseline: str | None, teacher: str | None) -> list[str]:
    """One note per reference whose gap the rule of :class:`GapCheck` hides, naming its rows."""
    hidden: dict[str, tuple[GapCheck, list[str]]] = {}  # by reference: the teacher row's, or each row's own teacher
    for s in stats:
        check = gap_check(summary, s, baseline=baseline, teacher=teacher) if s.row not in (baseline, teacher) else None
        if check is not None and not check.clear:
            hidden.setdefault(teacher if check.reference == teacher else s.row, (check, []))[1].append(s.row)
    label = metric_label(headline_metric(summary))
    return [f"{', '.join(rows)}: gap closed not shown (—): the {check.reference} − baseline difference on {label}, "
            f"{check.difference:+.4f}, is " + (f"not larger than the fold noise (std {check.noise:.4f})."
                                                  if math.isfinite(check.noise) else "a single pair: no fold noise to compare it with.")
            for check, rows in hidden.values()]


def gap_per_fold_table(summary: Mapping, stats: list[RowStats]) -> Table:
    """The gap closed fold by fold (run by run for a study), one row per row that has one."""
    rows = [[s.row, *[format_percent(v) for v in s.gap_closed_per_fold]] for s in stats if s.gap_closed_per_fold]
    n = max((len(r) - 1 for r in rows), default=0)
    return Table(["Method", *[f"{'run' if has_runs(summary) else 'fold'} {i}" for i in range(n)]], rows)


def sweep_table(sweep: Mapping) -> Table:
    """Every swept point: its parameters, its validation objective and the swept row's test scores."""
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
    return Table(header, rows)


def diagnostics_table(run_dir: Path) -> Table:
    """From each fold's ``metrics.json``: one T-Net row per row whose records carry ``tnet_test``,
    then one structure row (before/after) per row whose records carry ``structure_test``."""
    records: dict[str, list[dict]] = {}
    for fold in fold_dirs(run_dir):
        for path in sorted(fold.glob("*/metrics.json")):
            records.setdefault(path.parent.name, []).append(json.loads(path.read_text()))

    def mean(values: list[float]) -> str:
        return f"{np.mean(values):.4f}" if values else "—"

    header = ["Diagnostic", "anchor |Δ| before", "anchor |Δ| after", "OT before", "OT after", "T-Net R²", "T-Net cosine"]
    rows = []
    for row, recs in records.items():
        tnet = [r["tnet_test"] for r in recs if "tnet_test" in r]
        if tnet:
            rows.append([f"T-Net ({row})", "—", "—", "—", "—", mean([t["r2"] for t in tnet]), mean([t["cosine"] for t in tnet])])
    for row, recs in records.items():
        gaps = [r["structure_test"] for r in recs if "structure_test" in r]
        if gaps:
            rows.append([f"structure: {row}", *(mean([g[when][key] for g in gaps]) for key in ("anchor_mad", "ot")
                                                 for when in ("before", "after")), "—", "—"])
    return Table(header, rows)
