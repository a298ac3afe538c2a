"""Scoring predictions: one definition for validation (model selection) and test folds.

Classification: accuracy and macro-F1 (torchmetrics). Regression: Lin's CCC per target
(torchmetrics ``concordance_corrcoef``) and their mean, optionally computed per
recording/video group and averaged over groups.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torchmetrics.functional import concordance_corrcoef
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

SELECTION_METRIC = {"classification": "f1", "regression": "ccc"}
"""Validation metric each task's checkpoints are selected on (higher is better)."""


def score(
    task: str,
    outputs: Tensor,
    labels: Tensor,
    *,
    n_outputs: int,
    target_names: Sequence[str] | None = None,
    groups: Sequence[str] | np.ndarray | None = None,
) -> dict[str, float]:
    """Metrics of ``outputs`` against ``labels``; ``groups`` switches regression to per-group averaging."""
    if task == "classification":
        return {
            "accuracy": float(multiclass_accuracy(outputs, labels, num_classes=n_outputs, average="micro")),
            "f1": float(multiclass_f1_score(outputs, labels, num_classes=n_outputs, average="macro")),
        }
    if task == "regression":
        names = list(target_names or [f"target_{i}" for i in range(n_outputs)])
        per_target = _grouped_ccc(outputs, labels, groups) if groups is not None else _ccc(outputs, labels)
        metrics = {"ccc": float(per_target.mean())}
        metrics.update({f"ccc_{name}": float(value) for name, value in zip(names, per_target)})
        return metrics
    raise ValueError(f"unknown task kind {task!r}")


def _ccc(outputs: Tensor, labels: Tensor) -> Tensor:
    outputs, labels = outputs.reshape(len(outputs), -1).double(), labels.reshape(len(labels), -1).double()
    return concordance_corrcoef(outputs, labels).reshape(-1)


def _grouped_ccc(outputs: Tensor, labels: Tensor, groups: Sequence[str] | np.ndarray) -> Tensor:
    """Mean over groups of each group's CCC (groups with fewer than 2 samples are skipped)."""
    groups = np.asarray(groups)
    values = [_ccc(outputs[torch.as_tensor(groups == g)], labels[torch.as_tensor(groups == g)]) for g in np.unique(groups) if (groups == g).sum() > 1]
    return torch.stack(values).nanmean(dim=0)


@torch.no_grad()
def predict(net: torch.nn.Module, loader: torch.utils.data.DataLoader) -> tuple[Tensor, Tensor, Tensor]:
    """Outputs, labels and file row indices for every sample of ``loader`` (net in eval mode)."""
    was_training = net.training
    net.eval()
    outputs, labels, indices = [], [], []
    for batch in loader:
        outputs.append(net(batch["inputs"]).logits)
        labels.append(batch["label"])
        indices.append(batch["index"])
    net.train(was_training)
    return torch.cat(outputs), torch.cat(labels), torch.cat(indices)
