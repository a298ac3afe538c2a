"""Per-subject test scores, and a bootstrap confidence interval of each row's difference to the baseline.

The folds test disjoint groups of subjects, so the test predictions of all folds hold every
subject once. A subject's score is the headline metric on that subject's test samples. The
paired difference row − baseline, one value per subject, resampled over subjects (scipy's
bootstrap: BCa, 10 000 resamples, a fixed seed) gives a 95 % interval for the mean
per-subject difference. Subjects are the unit a new cohort differs in, so the interval says
how much of a difference could be the particular subjects tested; the fold-paired tests beside
it say the same over folds, with far fewer values.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np
from scipy import stats

from privkd.evaluation.subjects import subject_scores
from privkd.evaluation.summary import metric_label
from privkd.report.tables import Table

__all__ = ["CI_NOTE", "SUBJECT_NOTE", "difference_interval", "subject_scores", "subject_table"]

RESAMPLES = 10_000
CONFIDENCE = 0.95

SUBJECT_NOTE = ("Each subject's score is the headline metric on its own test samples (the fold that tested it is "
                "given); a row missing a subject did not finish that fold.")
CI_NOTE = (f"{CONFIDENCE * 100:.0f} % CI of Δ per subject: bootstrap interval (BCa, {RESAMPLES} resamples over subjects) of "
           "the mean per-subject difference to the baseline; an interval that holds 0 is no evidence of a difference.")


def difference_interval(row: Mapping[str, tuple[int, float]], baseline: Mapping[str, tuple[int, float]],
                        seed: int = 0) -> tuple[float, float, int] | None:
    """The bootstrap interval of the mean per-subject difference ``row − baseline`` over the
    subjects both scored (finite scores only), and their number; None with fewer than 3 subjects
    or no variation (a constant difference has no interval to estimate)."""
    common = [s for s in row if s in baseline and math.isfinite(row[s][1]) and math.isfinite(baseline[s][1])]
    differences = np.array([row[s][1] - baseline[s][1] for s in common])
    if len(differences) < 3 or np.ptp(differences) == 0:
        return None
    with warnings.catch_warnings():  # BCa on a few subjects can warn of a degenerate jackknife; the interval stands
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap((differences,), np.mean, n_resamples=RESAMPLES, confidence_level=CONFIDENCE,
                                 method="BCa", rng=np.random.default_rng(seed))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return (low, high, len(differences)) if math.isfinite(low) and math.isfinite(high) else None


def format_interval(interval: tuple[float, float, int] | None) -> str:
    return "—" if interval is None else f"[{interval[0]:+.4f}, {interval[1]:+.4f}] (n = {interval[2]})"


def subject_table(scores: Mapping[str, Mapping[str, tuple[int, float]]], metric: str) -> Table:
    """One line per subject (in the order the folds tested them), one column per row."""
    rows = list(scores)
    subjects = sorted({s for row in rows for s in scores[row]},
                      key=lambda s: next((scores[r][s][0], s) for r in rows if s in scores[r]))
    lines = []
    for subject in subjects:
        fold = next(scores[r][subject][0] for r in rows if subject in scores[r])
        cells = [f"{scores[r][subject][1]:.4f}" if subject in scores[r] and math.isfinite(scores[r][subject][1]) else "—"
                 for r in rows]
        lines.append([subject, str(fold), *cells])
    return Table(["Subject", "Test fold", *[f"{r} ({metric_label(metric)})" for r in rows]], lines)
