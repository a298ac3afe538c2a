"""Scoring predictions: one definition for validation (model selection) and test folds.

Classification: accuracy (= WA, weighted accuracy), UA (unweighted accuracy: the mean of
per-class recalls) and macro-F1 (torchmetrics), plus k-NN retrieval recall R@K of
embeddings (AMID Table 2). Regression: Lin's CCC per target and their mean, optionally
computed per recording/video group and averaged over groups. The CCC is the one the loss
uses (:func:`privkd.losses.task.concordance_cc`, Eq. 8 with population moments), so the
trained objective, the epoch selection and the reported score are one quantity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    multiclass_accuracy,
    multiclass_f1_score,
    multiclass_recall,
)

from privkd.losses.task import concordance_cc

SELECTION_METRIC = {"classification": "f1", "regression": "ccc"}
"""The metric each task's epochs are selected on and its results headed by, unless the config
names another (``evaluation.metric``); higher is better."""

TASK_METRICS = {"classification": ("accuracy", "f1", "ua", "auroc", "ap"), "regression": ("ccc",)}
"""Metrics ``evaluation.metric`` may name per task (``auroc`` and ``ap`` for two classes only)."""

BINARY_METRICS = ("auroc", "ap")
"""The ranking metrics :func:`score` adds for two classes only."""


def available_metrics(task: str, n_outputs: int) -> list[str]:
    """The metrics :func:`score` reports, so ``evaluation.metric`` may name, for this task and output count."""
    return [m for m in TASK_METRICS[task] if n_outputs == 2 or m not in BINARY_METRICS]


def resolve_metric(requested: str, task: str) -> str:
    """The selection and headline metric of a run: ``evaluation.metric``, or the task's default for ``auto``."""
    return SELECTION_METRIC[task] if requested == "auto" else requested


def score(
    task: str,
    outputs: Tensor,
    labels: Tensor,
    *,
    n_outputs: int,
    target_names: Sequence[str] | None = None,
    groups: Sequence[str] | np.ndarray | None = None,
) -> dict[str, float]:
    """Metrics of ``outputs`` against ``labels``; ``groups`` switches regression to per-group averaging.

    Two classes add the ranking metrics of the second class's probability: AUROC and average
    precision (the area under the precision-recall curve), which a majority-class predictor
    cannot flatter."""
    if task == "classification":
        metrics = {
            "accuracy": float(multiclass_accuracy(outputs, labels, num_classes=n_outputs, average="micro")),
            "ua": float(multiclass_recall(outputs, labels, num_classes=n_outputs, average="macro")),
            "f1": float(multiclass_f1_score(outputs, labels, num_classes=n_outputs, average="macro")),
        }
        if n_outputs == 2:
            positive = torch.softmax(outputs.float(), dim=-1)[:, 1]
            metrics["auroc"] = float(binary_auroc(positive, labels))
            metrics["ap"] = float(binary_average_precision(positive, labels))
        return metrics
    if task == "regression":
        names = list(target_names or [f"target_{i}" for i in range(n_outputs)])
        per_target = _grouped_ccc(outputs, labels, groups) if groups is not None else _ccc(outputs, labels)
        metrics = {"ccc": float(per_target.mean())}
        metrics.update({f"ccc_{name}": float(value) for name, value in zip(names, per_target)})
        return metrics
    raise ValueError(f"unknown task kind {task!r}")


COUNTED_METRICS = ("accuracy", "ua", "f1")
"""Classification metrics :func:`per_group_metric` computes from per-group confusion counts."""


def per_group_metric(task: str, outputs: Tensor, labels: Tensor, groups: np.ndarray, metric: str,
                     n_outputs: int) -> dict[str, float]:
    """``metric`` of :func:`score` on each group's samples (``groups``: one id per sample), e.g.
    one score per test subject.

    Accuracy, UA and macro-F1 come from every group's confusion counts at once, as torchmetrics
    defines them per call: accuracy = correct / n; per class, recall = tp / (tp + fn) and
    F1 = 2 tp / (2 tp + fp + fn) (0 where undefined), averaged over the classes with
    tp + fp + fn > 0. A study scores thousands of subjects, and one :func:`score` call per
    subject took minutes there. Other metrics call :func:`score` per group."""
    ids, index = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    if task != "classification" or metric not in COUNTED_METRICS:
        return {str(g): score(task, outputs[torch.as_tensor(index == i)], labels[torch.as_tensor(index == i)],
                              n_outputs=n_outputs).get(metric, math.nan) for i, g in enumerate(ids)}
    predicted = outputs.argmax(dim=-1).numpy()
    truth = labels.numpy().astype(int)
    counts = np.zeros((len(ids), n_outputs, n_outputs))  # group, true class, predicted class
    np.add.at(counts, (index, truth, predicted), 1)
    tp = np.diagonal(counts, axis1=1, axis2=2)
    fn, fp = counts.sum(axis=2) - tp, counts.sum(axis=1) - tp
    if metric == "accuracy":
        values = tp.sum(axis=1) / counts.sum(axis=(1, 2))
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            per_class = tp / (tp + fn) if metric == "ua" else 2 * tp / (2 * tp + fp + fn)
        present = (tp + fp + fn) > 0
        values = np.where(present, np.nan_to_num(per_class), 0).sum(axis=1) / present.sum(axis=1)
    return {str(g): float(v) for g, v in zip(ids, values, strict=True)}


def _ccc(outputs: Tensor, labels: Tensor) -> Tensor:
    outputs, labels = outputs.reshape(len(outputs), -1).double(), labels.reshape(len(labels), -1).double()
    return concordance_cc(outputs, labels)


def _grouped_ccc(outputs: Tensor, labels: Tensor, groups: Sequence[str] | np.ndarray) -> Tensor:
    """Mean over groups of each group's CCC (groups with fewer than 2 samples are skipped)."""
    groups = np.asarray(groups)
    masks = [torch.as_tensor(groups == g) for g in np.unique(groups)]
    values = [_ccc(outputs[mask], labels[mask]) for mask in masks if mask.sum() > 1]
    return torch.stack(values).nanmean(dim=0)


def retrieval_recall(
    query: Tensor, query_labels: Tensor, gallery: Tensor, gallery_labels: Tensor, ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """k-NN retrieval R@K (AMID Table 2): the share of queries with a same-class sample
    among their K nearest gallery embeddings by cosine similarity."""
    similarity = torch.nn.functional.normalize(query, dim=1) @ torch.nn.functional.normalize(gallery, dim=1).T
    nearest = similarity.topk(min(max(ks), len(gallery)), dim=1).indices
    hits = gallery_labels[nearest] == query_labels[:, None]
    return {f"recall@{k}": float(hits[:, :k].any(dim=1).float().mean()) for k in ks}
