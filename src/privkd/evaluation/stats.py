"""Statistics of a finished run for the report: mean ± std, share of the teacher gap closed,
and paired tests of every row against the prevalent-only baseline.

Values come from ``summary.json``: ``methods[row][metric]`` holds ``per_fold`` (one value per
test fold) and, once a run repeats folds over several seeds, may hold ``per_run`` (one value per
(fold, seed), in the same order for every row). Every function below takes the per-run values
when present and the per-fold values otherwise, and never assumes a number of folds.

Paired tests pair row and baseline values by position (same fold, same seed). With n pairs, the
exact two-sided Wilcoxon signed-rank test cannot give p below ``2 / 2**n`` (n = 5 → 0.0625), so
p < 0.05 is out of reach below 6 folds whatever the effect; the report says so.

Cross-validation folds are not independent samples: every two folds share most of their
training subjects, and a study that re-draws the folds for every seed tests each subject once
per seed. A paired t-test that counts the (fold, seed) runs as independent therefore
understates the variance of the mean difference, and adding seeds alone drives its p towards 0.
The t-test here is the corrected resampled t-test of Nadeau & Bengio (2003, "Inference for the
generalization error", Machine Learning 52), in the form Bouckaert & Frank (2004, "Evaluating
the replicability of significance tests for comparing learning algorithms", PAKDD) give for
r-times repeated k-fold cross-validation (:func:`corrected_resampled_t`). The naive paired
t-test is kept on :class:`PairedTest` so that the two can be compared. A study's Wilcoxon test
is taken across subjects, each subject's difference averaged over the seeds first
(``summary["subjects"]``), so that each subject counts once.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ALPHA", "HEADLINE_METRICS", "MIN_TEACHER_GAP", "PairedTest", "RowStats", "corrected_resampled_t",
           "describe_paired_tests", "format_p", "format_percent", "gap_closed", "gap_closed_per_fold", "headline_metric",
           "holdout_ratio",
           "mean_std", "min_wilcoxon_p", "paired_test", "row_stats", "run_values"]

HEADLINE_METRICS = {"classification": "f1", "regression": "ccc"}
"""The metric of the gap-closed column and of the paired tests of a summary that does not say
(``summary["metric"]``, the run's selection metric, does): the selection metrics' defaults."""

ALPHA = 0.05


def run_values(entry: Mapping) -> np.ndarray:
    """One metric's values over runs: ``per_run`` (folds × seeds) when present, else ``per_fold``."""
    values = entry.get("per_run")
    if values is None:
        values = entry.get("per_fold")
    if values is None:  # a summary with only a mean: one value
        values = [entry["mean"]] if "mean" in entry else []
    return np.asarray([math.nan if v is None else v for v in values], dtype=float)


def mean_std(values: Sequence[float] | np.ndarray) -> tuple[float, float, int]:
    """Mean, sample std (ddof=1; 0 for one value) and count of the finite ``values``;
    ``(nan, nan, 0)`` when none is finite."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan, 0
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0, int(x.size)


MIN_TEACHER_GAP = 0.01
"""How far (on the headline metric, a score in [0, 1]) the teacher must beat the baseline for a
gap closed to be computed: one point, about what the same run moves between two processors
(other oneDNN kernels). A share of a smaller gap is a ratio of noise (a student 0.5 points above
the baseline would "close 145 %" of a 0.35-point gap), and of a negative gap it has no meaning."""


def gap_closed(student: float, baseline: float, teacher: float) -> float:
    """``100 · (student − baseline) / (teacher − baseline)``: the share (in percent) of the
    baseline → teacher gap the student closes; NaN when the teacher does not beat the baseline by
    at least :data:`MIN_TEACHER_GAP` or any value is missing. 0 % = baseline, 100 % = teacher; may
    be negative or > 100 %."""
    if not all(math.isfinite(v) for v in (student, baseline, teacher)) or teacher - baseline < MIN_TEACHER_GAP:
        return math.nan
    return 100.0 * (student - baseline) / (teacher - baseline)


def gap_closed_per_fold(student: Sequence[float], baseline: Sequence[float], teacher: Sequence[float]) -> np.ndarray:
    """:func:`gap_closed` fold by fold (NaN where a fold's teacher does not beat its baseline by
    :data:`MIN_TEACHER_GAP`)."""
    n = min(len(student), len(baseline), len(teacher))
    return np.array([gap_closed(float(student[i]), float(baseline[i]), float(teacher[i])) for i in range(n)], dtype=float)


def min_wilcoxon_p(n: int) -> float:
    """Smallest two-sided p-value the exact Wilcoxon signed-rank test can give with ``n``
    non-zero paired differences (all of one sign, no ties): ``2 / 2**n``, capped at 1."""
    return 1.0 if n <= 0 else min(1.0, math.ldexp(1.0, 1 - n))  # 2 / 2**n, 0.0 past float range (thousands of subjects)


def corrected_resampled_t(differences: Sequence[float] | np.ndarray, ratio: float) -> tuple[float, float]:
    """The corrected resampled t-test of the paired ``differences`` (row − baseline, one per
    (fold, seed) run of cross-validation): its statistic and two-sided p.

    Nadeau & Bengio (2003), Eq. for the "corrected resampled t-test", as Bouckaert & Frank
    (2004, Sec. 3) apply it to r-times repeated k-fold cross-validation with J = k·r values::

        t = mean(d) / sqrt((1/J + n_test/n_train) · s²),   s² = var(d, ddof=1),   df = J − 1

    where ``ratio`` is n_test / n_train, the test part's size over the training part's. The
    naive paired t-test is the same with ``n_test/n_train`` = 0; the added term stands for the
    correlation between runs whose training sets overlap, and does not shrink with more seeds.
    NaN (statistic and p) with fewer than 2 values or differences that are all equal.
    """
    from scipy import stats

    d = np.asarray(differences, dtype=float)
    d = d[np.isfinite(d)]
    if d.size < 2 or float(np.ptp(d)) <= 1e-12 * float(np.abs(d).max()):
        return math.nan, math.nan
    t = float(d.mean() / math.sqrt((1.0 / d.size + ratio) * float(d.var(ddof=1))))
    return t, float(2.0 * stats.t.sf(abs(t), d.size - 1))


def holdout_ratio(summary: Mapping) -> float | None:
    """n_test / n_train of the corrected t-test (:func:`corrected_resampled_t`): the mean over
    folds of test samples over the samples fitted or selected on (training + validation), as the
    run recorded it (``summary["holdout_ratio"]``); for a summary written before privkd
    recorded it, 1 / (k − 1) of k-fold cross-validation; None when neither is known."""
    ratio = summary.get("holdout_ratio")
    if ratio is not None:
        return float(ratio)
    folds = summary.get("folds")
    return 1.0 / (folds - 1) if isinstance(folds, int) and folds >= 2 else None


@dataclass
class PairedTest:
    """A row against the baseline over paired runs (folds, or folds × seeds)."""

    n: int
    """Pairs used (both values present)."""
    mean_difference: float
    wilcoxon_p: float
    t_statistic: float
    ttest_p: float
    notes: list[str] = field(default_factory=list)
    n_nonzero: int = 0
    """Pairs with a non-zero difference: the Wilcoxon test's effective n."""
    corrected_t: float = math.nan
    corrected_p: float = math.nan
    """The corrected resampled t-test (:func:`corrected_resampled_t`); NaN when no n_test /
    n_train ratio was given. ``t_statistic`` / ``ttest_p`` are the naive paired t-test."""

    @property
    def can_reach_alpha(self) -> bool:
        """Whether the Wilcoxon test could give p < 0.05 with this many non-zero differences."""
        return min_wilcoxon_p(self.n_nonzero) < ALPHA


def paired_test(row: Sequence[float], baseline: Sequence[float], ratio: float | None = None) -> PairedTest:
    """Two-sided Wilcoxon signed-rank and paired t-test of ``row`` against ``baseline``, and,
    given the cross-validation's n_test / n_train ``ratio``, the corrected resampled t-test.

    Pairs with a NaN on either side are dropped. Identical values (all differences zero) give
    p = 1 for both tests; constant non-zero differences leave the t-test undefined (NaN, noted);
    no pair at all gives NaN. Never raises for degenerate inputs.
    """
    from scipy import stats

    a, b = np.asarray(row, dtype=float), np.asarray(baseline, dtype=float)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    keep = np.isfinite(a) & np.isfinite(b)
    notes = []
    if not keep.all():
        notes.append(f"{int((~keep).sum())} pair(s) with a missing value dropped")
    d = a[keep] - b[keep]
    if d.size == 0:
        return PairedTest(0, math.nan, math.nan, math.nan, math.nan, [*notes, "no paired values"])
    mean_diff = float(d.mean())
    nonzero = int(np.count_nonzero(d))
    if nonzero == 0:
        return PairedTest(int(d.size), 0.0, 1.0, math.nan, 1.0, [*notes, "identical to the baseline on every run"], 0,
                          math.nan, 1.0 if ratio is not None else math.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            w_p = float(stats.wilcoxon(d, alternative="two-sided").pvalue)
        except ValueError as err:  # defensive: scipy rejects some degenerate inputs
            w_p = math.nan
            notes.append(f"Wilcoxon not computable ({err})")
        if d.size < 2:
            t_stat, t_p = math.nan, math.nan
            notes.append("t-test needs at least 2 pairs")
        elif float(np.ptp(d)) <= 1e-12 * float(np.abs(d).max()):  # equal up to rounding
            t_stat, t_p = math.nan, math.nan
            notes.append("t-test undefined: the differences are all equal")
        else:
            result = stats.ttest_rel(a[keep], b[keep])
            t_stat, t_p = float(result.statistic), float(result.pvalue)
    if min_wilcoxon_p(nonzero) >= ALPHA:
        notes.append(f"n = {nonzero}: Wilcoxon p cannot go below {min_wilcoxon_p(nonzero):.4g}, "
                     f"so p < {ALPHA} is unreachable")
    corrected_t, corrected_p = corrected_resampled_t(d, ratio) if ratio is not None else (math.nan, math.nan)
    return PairedTest(int(d.size), mean_diff, w_p, t_stat, t_p, notes, nonzero, corrected_t, corrected_p)


@dataclass
class RowStats:
    """One results row: every metric's mean ± std, and on the headline metric the gap closed
    and the paired tests against the baseline (None for the baseline itself)."""

    row: str
    metrics: dict[str, tuple[float, float, int]]
    headline: str
    gap_closed: float = math.nan
    gap_closed_per_fold: list[float] = field(default_factory=list)
    test: PairedTest | None = None
    """Across the runs (folds, or folds × seeds): the corrected t-test's unit."""
    subject_test: PairedTest | None = None
    """Across subjects, each subject's score averaged over the seeds first (a study's
    ``summary["subjects"]``): the Wilcoxon test's unit when runs repeat folds; None otherwise."""
    gap_reference: str = ""
    """What the gap is measured to: the teacher row's name, or ``"teacher_<metric>"`` (the row's
    own online teacher, e.g. AMID's, when the run has no teacher row); empty when not measured."""

    @property
    def n_runs(self) -> int:
        return self.metrics[self.headline][2] if self.headline in self.metrics else 0


def headline_metric(summary: Mapping) -> str:
    """The run's selection metric (``summary["metric"]``; by default macro-F1 for classification,
    CCC for regression), else the first metric of the summary."""
    metric = summary.get("metric") or HEADLINE_METRICS.get(summary.get("task", ""), "f1")
    if any(metric in m for m in summary["methods"].values()):
        return metric
    return next((name for m in summary["methods"].values() for name in m), metric)


def row_stats(summary: Mapping, *, baseline: str | None, teacher: str | None) -> list[RowStats]:
    """Statistics of every row of ``summary.json``, in its order.

    ``baseline`` and ``teacher`` name the reference rows (the method registry's lower and upper
    bounds; ``None`` when there is none), so that this module knows no method by name.
    The gap closed is computed for rows other than the baseline and the teacher when both are
    present; without a teacher row, a row that scores its own online teacher (AMID's
    ``teacher_<metric>``) is measured against that teacher instead (``gap_reference`` says which).
    Paired tests for every row other than the baseline when it is present: across runs, with
    the corrected t-test given the summary's :func:`holdout_ratio`, and across subjects when the
    summary holds each subject's seed-averaged score (``summary["subjects"][row]``).
    """
    methods = summary["methods"]
    metric = headline_metric(summary)
    ratio = holdout_ratio(summary)
    subjects = summary.get("subjects") or {}

    def headline_values(row: str | None) -> np.ndarray | None:
        return run_values(methods[row][metric]) if row is not None and metric in methods.get(row, {}) else None

    base, top = headline_values(baseline), headline_values(teacher)
    out = []
    for row, metrics in methods.items():
        values = {name: run_values(entry) for name, entry in metrics.items()}
        stats = RowStats(row, {name: mean_std(v) for name, v in values.items()}, metric)
        if row != baseline and base is not None and metric in values:
            stats.test = paired_test(values[metric], base, ratio)
            if row in subjects and baseline in subjects:
                common = [name for name in subjects[row] if name in subjects[baseline]]
                stats.subject_test = paired_test([subjects[row][name] for name in common],
                                                 [subjects[baseline][name] for name in common])
            own = f"teacher_{metric}"
            reference, ref_name = (top, teacher) if top is not None else (values.get(own), own)
            if row != teacher and reference is not None:
                stats.gap_closed = gap_closed(mean_std(values[metric])[0], mean_std(base)[0], mean_std(reference)[0])
                stats.gap_closed_per_fold = gap_closed_per_fold(values[metric], base, reference).tolist()
                stats.gap_reference = ref_name
        out.append(stats)
    return out


def describe_paired_tests(summary: Mapping, stats: Sequence[RowStats]) -> str:
    """Which paired tests the p-values of ``stats`` come from, and why those: the sentence a
    study's and a report's tables carry."""
    repeated = len(summary.get("seeds") or ()) > 1 and not summary.get("independent_datasets")
    tests = [s.test for s in stats if s.test is not None]
    n = max((t.n for t in tests), default=0)
    ratio = holdout_ratio(summary)
    subjects = [s.subject_test for s in stats if s.subject_test is not None]
    why = ("every two folds share most of their training subjects" + (
        ", and each seed re-draws the folds, so every subject is tested once per seed" if repeated else ""))
    if summary.get("independent_datasets"):
        return (f"Paired tests against the baseline, two-sided, on {headline_metric(summary)}, not corrected for "
                f"multiple comparisons, across the {n} runs: each seed drew a dataset of its own, so the runs share no "
                "sample and are independent; t-test = paired t-test (the corrected test's overlap term "
                "n_test/n_train is 0), Wilcoxon = exact signed-rank test across the runs.")
    corrected = ("t-test = the corrected resampled t-test (Nadeau & Bengio 2003, in Bouckaert & Frank's 2004 form "
                 f"for repeated k-fold cross-validation) over the J = {n} runs: the variance of the mean difference "
                 f"is s² · (1/J + n_test/n_train) with n_test/n_train = {ratio:.3f}, df = J − 1"
                 if ratio is not None else "t-test: not computed (the run recorded no n_test/n_train ratio)")
    if subjects:
        wilcoxon = (f"Wilcoxon = exact signed-rank test across the {max(t.n for t in subjects)} subjects, each "
                    "subject's scores averaged over the seeds first, so that each counts once")
    elif repeated:
        wilcoxon = ("Wilcoxon: not computed (no one score per subject and seed to average: folds over samples "
                    "test every subject in every fold, or the runs kept no test predictions)")
    else:
        wilcoxon = "Wilcoxon = exact signed-rank test across the test folds"
    return (f"Paired tests against the baseline, two-sided, on {headline_metric(summary)}, not corrected for multiple "
            f"comparisons. Runs of cross-validation are not independent samples ({why}): a t-test that counts them as "
            f"independent understates the variance, and more seeds alone would drive its p to 0. {corrected}. "
            f"{wilcoxon}.")


def format_p(p: float) -> str:
    """``0.0625``, ``<0.001`` or ``n/a`` (NaN)."""
    if not math.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3g}"


def format_percent(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.1f} %"
