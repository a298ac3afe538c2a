"""The losses of PKDOT, MT-PKDOT, AMID and their baselines, as plain functions and modules.

Each takes tensors and returns a scalar tensor, needs nothing of the training stack, and
defaults to the same settings as the run config (``tests/test_api.py`` checks it), so a loss
used on its own computes what a run with the default config computes:

- the task loss (Eq. 8: cross-entropy, or 1 - CCC) and the CCC itself;
- PKDOT / MT-PKDOT's structural OT loss and the Sinkhorn divergence under it (Eq. 2-7),
  MT-PKDOT's centroid loss (Eq. 9);
- the point-to-point baselines (cosine, MSE, softened KL);
- AMID's label-aware MI bound, InfoNCE, JSD and adversarial terms (Eq. 7-17).
"""

from privkd.losses.amid import (
    DynamicDiscriminatorWeights,
    amid_adversarial_loss,
    amid_discriminator_loss,
    info_nce,
    jensen_shannon,
    label_aware_contrastive_mi,
)
from privkd.losses.distillation import (
    centroid_loss,
    confidence_weight,
    cosine_matching,
    mse_matching,
    softened_kl,
)
from privkd.losses.ot import SinkhornOptions, sinkhorn_divergence
from privkd.losses.structural import StructuralOTLoss
from privkd.losses.task import concordance_cc, task_loss

__all__ = [
    "DynamicDiscriminatorWeights",
    "SinkhornOptions",
    "StructuralOTLoss",
    "amid_adversarial_loss",
    "amid_discriminator_loss",
    "centroid_loss",
    "concordance_cc",
    "confidence_weight",
    "cosine_matching",
    "info_nce",
    "jensen_shannon",
    "label_aware_contrastive_mi",
    "mse_matching",
    "sinkhorn_divergence",
    "softened_kl",
    "task_loss",
]
