"""Per-subject scores, their bootstrap intervals against the baseline, and the per-class bars'
spread over folds, checked against hand computations and the normal approximation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.container import BarContainer

from privkd.evaluation import plots
from privkd.report.subjects import difference_interval, subject_scores, subject_table


def _logits(predicted: list[int], n_classes: int = 2) -> np.ndarray:
    return np.eye(n_classes, dtype=np.float32)[predicted] * 5.0


def _write_fold(run_dir, fold: int, row: str, predicted: list[int], labels: list[int], subjects: list[str]) -> None:
    directory = run_dir / f"fold_{fold}" / row
    directory.mkdir(parents=True)
    np.savez_compressed(directory / "test_predictions.npz", outputs=_logits(predicted), labels=np.array(labels),
                        indices=np.arange(len(labels)), subjects=np.array(subjects))


def test_each_subject_is_scored_on_its_own_test_samples(tmp_path):
    # fold 0 tests a (4 samples) and b (2); fold 1 tests c (2)
    _write_fold(tmp_path, 0, "baseline", [0, 1, 1, 1, 0, 0], [0, 1, 0, 1, 0, 1], ["a", "a", "a", "a", "b", "b"])
    _write_fold(tmp_path, 1, "baseline", [1, 1], [1, 1], ["c", "c"])
    scores = subject_scores(tmp_path, ["baseline", "absent"], "classification", "accuracy")
    assert scores == {"baseline": {"a": (0, 0.75), "b": (0, 0.5), "c": (1, 1.0)}}
    table = subject_table(scores, "accuracy")
    assert table.header == ["Subject", "Test fold", "baseline (Accuracy)"]
    assert table.rows == [["a", "0", "0.7500"], ["b", "0", "0.5000"], ["c", "1", "1.0000"]]


def test_the_interval_matches_the_normal_approximation_on_many_subjects():
    rng = np.random.default_rng(1)
    differences = rng.normal(0.03, 0.05, size=400)
    row = {f"s{i}": (0, 0.5 + d) for i, d in enumerate(differences)}
    baseline = {f"s{i}": (0, 0.5) for i in range(400)}
    low, high, n = difference_interval(row, baseline)
    half = 1.96 * differences.std(ddof=1) / math.sqrt(len(differences))
    assert n == 400
    assert low == pytest.approx(differences.mean() - half, abs=0.15 * half)
    assert high == pytest.approx(differences.mean() + half, abs=0.15 * half)
    assert difference_interval(row, baseline) == (low, high, n)  # a fixed seed: the report does not move


def test_no_interval_from_too_few_subjects_or_a_constant_difference():
    base = {s: (0, 0.5) for s in "abcd"}
    assert difference_interval({s: (0, 0.6) for s in "abcd"}, base) is None
    assert difference_interval({"a": (0, 0.6), "b": (0, 0.7)}, base) is None
    assert difference_interval({"a": (0, 0.6), "b": (0, 0.7), "c": (0, math.nan), "x": (0, 0.9)}, base) is None


def test_per_class_bars_are_the_mean_over_folds_with_the_std_as_error_bars():
    folds = [(_logits([0, 0, 1, 1]), np.array([0, 0, 1, 0])),   # class 0: 2/3, class 1: 1/1
             (_logits([0, 1, 1, 1]), np.array([0, 0, 1, 1]))]   # class 0: 1/2, class 1: 2/2
    np.testing.assert_allclose(plots.class_recalls(*folds[0], 2), [2 / 3, 1.0])
    np.testing.assert_allclose(plots.class_recalls(_logits([1]), np.array([1]), 2)[1], 1.0)
    assert math.isnan(plots.class_recalls(_logits([1]), np.array([1]), 2)[0])  # no sample of class 0
    fig = plots.per_class_accuracy({"row": folds})
    (bars,) = [c for c in fig.axes[0].containers if isinstance(c, BarContainer)]
    np.testing.assert_allclose([b.get_height() for b in bars], [(2 / 3 + 1 / 2) / 2, 1.0])
    (segments,) = bars.errorbar.lines[2]
    spreads = [abs(seg[1][1] - seg[0][1]) / 2 for seg in segments.get_segments()]
    np.testing.assert_allclose(spreads, [np.std([2 / 3, 1 / 2], ddof=1), 0.0], atol=1e-12)
