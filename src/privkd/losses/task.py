"""Task losses (MT-PKDOT Eq. 8): cross-entropy for classes, 1 - CCC for continuous targets."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

TASKS = ("classification", "regression")


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


def task_loss(task: str, outputs: Tensor, targets: Tensor) -> Tensor:
    """Eq. 8: categorical cross-entropy, or 1 - CCC averaged over the regression targets."""
    if task == "classification":
        return F.cross_entropy(outputs, targets)
    if task == "regression":
        return (1.0 - concordance_cc(outputs, targets)).mean()
    raise ValueError(f"unknown task kind {task!r}; supported: {list(TASKS)}")
