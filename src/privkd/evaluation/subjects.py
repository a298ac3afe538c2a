"""Per-subject test scores of a finished run, read back from each (fold, row)'s test predictions.

The folds test disjoint groups of subjects, so the test predictions of all folds hold every
subject once. A subject's score is the headline metric on that subject's test samples: the unit
of the report's per-subject interval and of a study's paired test across subjects.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from privkd.evaluation.artifacts import fold_dirs, read_npz
from privkd.evaluation.metrics import per_group_metric

__all__ = ["subject_scores"]


def subject_scores(run_dir: Path, rows: Sequence[str], task: str, metric: str) -> dict[str, dict[str, tuple[int, float]]]:
    """Per row, per test subject: (the fold that tested it, the headline ``metric`` on its test samples)."""
    scores: dict[str, dict[str, tuple[int, float]]] = {}
    for fold_index, fold in enumerate(fold_dirs(run_dir)):
        for row in rows:
            predictions = read_npz(fold / row / "test_predictions.npz")
            if predictions is None or "subjects" not in predictions:
                continue
            outputs, labels = torch.as_tensor(predictions["outputs"]), torch.as_tensor(predictions["labels"])
            n_outputs = outputs.shape[1] if outputs.ndim == 2 else 1
            with warnings.catch_warnings():  # a one-class subject's ranking metrics are undefined; the headline is not
                warnings.simplefilter("ignore", UserWarning)
                values = per_group_metric(task, outputs, labels, predictions["subjects"], metric, n_outputs)
            for subject, value in values.items():
                scores.setdefault(row, {})[subject] = (fold_index, float(value))
    return scores
