r"""Structural distillation of PKDOT / MT-PKDOT: match similarity structures with OT.

The teacher's and the student's batch embeddings are turned into cosine
similarity matrices (Eq. 2-5 of MT-PKDOT). For every sample ``i`` the ``k``
samples the teacher finds *most dissimilar* to ``i`` are its anchors; the
similarities to those anchors, read from both matrices at the same indices,
form ``X`` (teacher) and ``Y`` (student), each ``b x k``. The loss is an
entropy-regularised OT distance between them (Eq. 6-7), here the debiased
Sinkhorn divergence with cost ``1/2 |x - y|^2``.

Why the most dissimilar samples: a sample's nearest neighbours are what a
point-to-point loss already transfers, and its similarity to near-duplicates
is close to 1 for any reasonable encoder. How far apart the teacher places
dissimilar samples is the relational knowledge the student lacks; anchoring on
them spends the ``k`` columns on the informative part of the structure.

Two modes:

* ``"paper"`` (what the authors ran): the ``b`` rows of ``X`` and of ``Y`` are
  two clouds of ``b`` points in ``R^k`` with uniform weights, compared with one
  Sinkhorn divergence (geomloss ``SamplesLoss("sinkhorn", p=2, blur=0.1)``,
  i.e. ``epsilon = 0.01``). The loss is invariant to permuting rows, so
  sample ``i`` of the student is never tied to sample ``i`` of the teacher.
* ``"paired"``: row ``i`` of ``Y`` is compared with row ``i`` of ``X`` only, as
  two clouds of ``k`` scalars; one batched Sinkhorn call over the ``b`` rows,
  averaged. It keeps sample identity that the paper mode discards.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from privkd.losses.ot import SinkhornOptions, sinkhorn_divergence

__all__ = ["StructuralOTLoss", "anchored_similarities", "cosine_similarity_matrix", "select_anchors"]

Mode = Literal["paper", "paired"]
MODES: tuple[str, ...] = ("paper", "paired")


def cosine_similarity_matrix(z: Tensor, eps: float = 1e-8) -> Tensor:
    r"""Cosine similarity matrix ``S = Z Z^T / (N N^T)`` of a batch ``z (b, m)`` (Eq. 2-5).

    ``N`` is the vector of row norms (Eq. 4); dividing by it keeps the
    magnitude of the embeddings out of the structure. Norms are floored at
    ``eps`` so a zero vector has similarity 0 to everything instead of NaN.
    """
    unit = z / z.norm(dim=1, keepdim=True).clamp_min(eps)
    return unit @ unit.T


def select_anchors(s_teacher: Tensor, k: int) -> Tensor:
    """Per row, the indices of the ``min(k, b - 1)`` lowest teacher similarities.

    The row itself is never an anchor. Indices are ordered from the most
    dissimilar sample up, so column ``j`` of every row is its ``j``-th most
    dissimilar anchor.

    Args:
        s_teacher: teacher similarity matrix ``(b, b)``.
        k: requested number of anchors, clipped to ``b - 1``.

    Returns:
        Long tensor ``(b, min(k, b - 1))``.
    """
    b = s_teacher.shape[0]
    if s_teacher.dim() != 2 or s_teacher.shape[1] != b:
        raise ValueError(f"s_teacher must be a square (b, b) matrix, got {tuple(s_teacher.shape)}")
    if b < 2:
        raise ValueError(f"anchors need a batch of at least 2 samples, got b={b}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    self_masked = s_teacher.detach().clone()
    self_masked.fill_diagonal_(float("inf"))
    return torch.topk(self_masked, min(k, b - 1), dim=1, largest=False, sorted=True).indices


def full_precision(device: torch.device) -> torch.autocast:
    """A region where mixed-precision autocast is off: similarity matrices, anchor ranking and
    the Sinkhorn solver run in float32 even under ``bf16-mixed`` / ``16-mixed`` training
    (exp/log of costs divided by epsilon = 0.01 is far outside what 16-bit floats resolve)."""
    return torch.autocast(device_type=device.type, enabled=False)


def at_least_float32(x: Tensor) -> Tensor:
    """Half-precision tensors as float32; float32 and float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def anchored_similarities(z_teacher: Tensor, z_student: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``X = S_t[i, idx_i]`` and ``Y = S_s[i, idx_i]`` (each ``b x k'``), anchors from the teacher.

    The teacher is frozen, so its similarities are computed without gradient. Computed in
    float32 whatever the input precision (see :func:`full_precision`).
    """
    if z_teacher.shape[0] != z_student.shape[0]:
        raise ValueError(f"teacher and student batches differ: {z_teacher.shape[0]} vs {z_student.shape[0]}")
    with full_precision(z_student.device):
        return _anchored_similarities(at_least_float32(z_teacher), at_least_float32(z_student), k)


def _anchored_similarities(z_teacher: Tensor, z_student: Tensor, k: int) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        s_teacher = cosine_similarity_matrix(z_teacher)
    anchors = select_anchors(s_teacher, k)
    s_student = cosine_similarity_matrix(z_student)
    return s_teacher.gather(1, anchors), s_student.gather(1, anchors)


class StructuralOTLoss(nn.Module):
    r"""Structural OT loss of PKDOT / MT-PKDOT (Eq. 2-7): Sinkhorn divergence of anchored similarities.

    Args:
        k: anchors per sample (paper: 30), clipped to ``b - 1``.
        epsilon: entropic regularisation in units of the cost ``1/2 |x - y|^2``
            (paper: 0.01, geomloss ``blur=0.1``); absolute, not relative to a
            cost scale, so that the paper mode is the authors' loss.
        mode: ``"paper"`` (rows as one point cloud each, permutation invariant)
            or ``"paired"`` (row ``i`` against row ``i``, 1-D clouds of ``k``
            values, averaged over rows).
        max_iter: most Sinkhorn iterations per OT problem. Paired rows with an
            isolated value form weakly coupled 1-D problems that can need ~1e4
            iterations at epsilon 0.01; capped at 1000 they are off by ~1e-3
            relative, harmless for a training loss.
        tol: L1 marginal-error tolerance of the Sinkhorn solver; 1e-5 is
            reached in float32 at epsilon 0.01 in tens to hundreds of iterations.
        scaling: epsilon-scaling ratio of the solver's warm start (``None``: off;
            measured on these problems it saves iterations in some cases and
            costs them in others).
    """

    def __init__(
        self,
        k: int = 30,
        epsilon: float = 0.01,
        mode: Mode = "paper",
        max_iter: int = 1000,
        tol: float = 1e-5,
        scaling: float | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.k = k
        self.epsilon = epsilon
        self.mode = mode
        self.max_iter = max_iter
        self.tol = tol
        self.scaling = scaling

    def forward(self, z_teacher: Tensor, z_student: Tensor) -> Tensor:
        """Scalar loss for teacher ``(b, m_t)`` and student ``(b, m_s)`` embeddings."""
        x, y = anchored_similarities(z_teacher, z_student, self.k)
        return self.transport_loss(x, y)

    def transport_loss(self, x: Tensor, y: Tensor) -> Tensor:
        """OT part alone, for anchored similarities ``x`` (teacher) and ``y`` (student), ``b x k``."""
        options = SinkhornOptions(epsilon=self.epsilon, max_iter=self.max_iter, tol=self.tol, scaling=self.scaling)
        with full_precision(y.device):
            x, y = at_least_float32(x), at_least_float32(y)
            if self.mode == "paper":
                return sinkhorn_divergence(x, y, options=options)
            return sinkhorn_divergence(x.unsqueeze(-1), y.unsqueeze(-1), options=options).mean()

    def extra_repr(self) -> str:
        return f"k={self.k}, epsilon={self.epsilon}, mode={self.mode!r}, tol={self.tol}, max_iter={self.max_iter}"
