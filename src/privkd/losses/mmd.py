"""Maximum mean discrepancy, an alternative T-Net objective to MSE (PKDOT, T-Net training)."""

from __future__ import annotations

import torch
from torch import Tensor


def gaussian_mmd2(x: Tensor, y: Tensor, bandwidths: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)) -> Tensor:
    """Biased MMD² between samples ``x`` (n, d) and ``y`` (m, d) with a sum of Gaussian kernels.

    MMD²(P, Q) = E k(x, x') + E k(y, y') - 2 E k(x, y), with
    k(u, v) = Σ_σ exp(-|u - v|² / (2 σ² s)), where s is the detached median squared distance
    of the pooled samples, so the bandwidths are relative to the data's scale.
    MMD matches the distribution of hallucinated and real privileged embeddings rather than
    each pair, which tolerates a T-Net that cannot recover sample-level detail.
    """
    pooled = torch.cat([x, y], dim=0)
    sq_dist = torch.cdist(pooled, pooled).pow(2)
    scale = sq_dist.detach().median().clamp_min(1e-8)
    kernel = sum(torch.exp(-sq_dist / (2.0 * bw**2 * scale)) for bw in bandwidths)
    n = x.shape[0]
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2.0 * kernel[:n, n:].mean()
