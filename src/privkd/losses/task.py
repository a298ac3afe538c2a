"""Task losses (MT-PKDOT Eq. 8)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def task_loss(task: str, outputs: Tensor, targets: Tensor) -> Tensor:
    """Categorical cross-entropy for classification, Eq. 8 (second case)."""
    if task == "classification":
        return F.cross_entropy(outputs, targets)
    raise ValueError(f"task kind {task!r} is not supported yet; supported: ['classification']")
