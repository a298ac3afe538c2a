"""Task losses (MT-PKDOT Eq. 8): cross-entropy for classes, 1 - CCC for continuous targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

TASKS = ("classification", "regression")


def balanced_class_weights(labels: Tensor, n_classes: int) -> Tensor:
    """``n / (n_classes * count_c)`` per class (scikit-learn's "balanced"); a class absent from
    ``labels`` gets weight 0 (it cannot be learnt from them anyway)."""
    counts = torch.bincount(torch.as_tensor(labels).long().reshape(-1), minlength=n_classes).double()
    weights = torch.where(counts > 0, counts.sum() / (n_classes * counts.clamp_min(1)), torch.zeros_like(counts))
    return weights.float()


def concordance_cc(predictions: Tensor, targets: Tensor) -> Tensor:
    r"""Lin's concordance correlation coefficient per target column (Eq. 8, first case).

    .. math:: \mathrm{CCC} = \frac{2 \rho \sigma_x \sigma_y}{\sigma_x^2 + \sigma_y^2 + (\mu_x - \mu_y)^2}
              = \frac{2 \operatorname{cov}(x, y)}{\sigma_x^2 + \sigma_y^2 + (\mu_x - \mu_y)^2}

    with population (biased) moments over the batch, the convention of the AVEC/ABAW
    evaluation scripts. ``predictions`` and ``targets`` are ``(n,)`` or ``(n, T)``.
    """
    x, y = predictions.reshape(len(predictions), -1), targets.reshape(len(targets), -1)
    mean_x, mean_y = x.mean(dim=0), y.mean(dim=0)
    covariance = ((x - mean_x) * (y - mean_y)).mean(dim=0)
    denominator = x.var(dim=0, unbiased=False) + y.var(dim=0, unbiased=False) + (mean_x - mean_y) ** 2
    return 2.0 * covariance / denominator.clamp_min(1e-12)


def task_loss(task: str, outputs: Tensor, targets: Tensor, class_weights: Tensor | None = None) -> Tensor:
    """Eq. 8: categorical cross-entropy, or 1 - CCC averaged over the regression targets.

    ``class_weights`` (classification) weigh each sample's cross-entropy by its class's weight
    and normalise by the summed weights (torch's weighted mean), so an imbalanced task does not
    reward predicting the majority class."""
    if task == "classification":
        weight = class_weights.to(outputs.device, outputs.dtype) if class_weights is not None else None
        return F.cross_entropy(outputs, targets, weight=weight)
    if task == "regression":
        return (1.0 - concordance_cc(outputs, targets)).mean()
    raise ValueError(f"unknown task kind {task!r}; supported: {list(TASKS)}")
