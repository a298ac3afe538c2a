"""Test-fold scoring from stored predictions (torchmetrics, the same definitions as validation)."""

from __future__ import annotations

import torch
from torch import Tensor

from privkd.methods.base import classification_metrics


def score(task: str, logits: Tensor, labels: Tensor, n_classes: int) -> dict[str, float]:
    """Accuracy and macro-F1 of ``logits`` against ``labels``."""
    if task != "classification":
        raise ValueError(f"scoring for task {task!r} is not supported yet")
    metrics = classification_metrics(n_classes)
    return {name: float(value) for name, value in metrics(logits, labels).items()}


@torch.no_grad()
def predict(net: torch.nn.Module, loader: torch.utils.data.DataLoader) -> tuple[Tensor, Tensor, Tensor]:
    """Logits, labels and file row indices for every sample of ``loader`` (net in eval mode)."""
    was_training = net.training
    net.eval()
    logits, labels, indices = [], [], []
    for batch in loader:
        logits.append(net(batch["inputs"]).logits)
        labels.append(batch["label"])
        indices.append(batch["index"])
    net.train(was_training)
    return torch.cat(logits), torch.cat(labels), torch.cat(indices)
