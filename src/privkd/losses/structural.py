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

* ``"paper"`` (what the authors ran): each similarity matrix is first shifted by
  one global scalar so that its minimum is 0 (``S - S.min()``, the teacher's
  and the student's each by its own; the anchor ranking is unchanged by it).
  The ``b`` rows of ``X`` and of ``Y`` are then two clouds of ``b`` points in
  ``R^k`` with uniform weights, compared with one Sinkhorn divergence (geomloss
  ``SamplesLoss("sinkhorn", p=2, blur=0.1)``, i.e. ``epsilon = 0.01``). The
  loss is invariant to permuting rows, so sample ``i`` of the student is never
  tied to sample ``i`` of the teacher. The shift moves each cloud by a constant
  vector, which the OT cost sees: the loss is not invariant to it.
* ``"paired"``: row ``i`` of ``Y`` is compared with row ``i`` of ``X`` only, as
  two clouds of ``k`` scalars; one batched Sinkhorn call over the ``b`` rows,
  averaged. It keeps sample identity that the paper mode discards. No shift.

:meth:`StructuralOTLoss.anchored` returns the rows its mode compares (shifted in
paper mode); code that needs the rows themselves (MT-PKDOT's centroid term,
diagnostics) should take them from there rather than rebuild them.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from privkd.losses.ot import (
    SinkhornConvergenceWarning,
    SinkhornOptions,
    SinkhornReport,
    sinkhorn_divergence,
)

__all__ = [
    "SinkhornConvergenceWarning",
    "StructuralOTLoss",
    "anchored_similarities",
    "cosine_similarity_matrix",
    "select_anchors",
    "shift_to_zero_minimum",
]

Mode = Literal["paper", "paired"]
MODES: tuple[str, ...] = ("paper", "paired")
AUTO_SCALING: dict[str, float | None] = {"paper": 0.25, "paired": None}
"""``scaling="auto"``: the epsilon-scaling ratio per mode (see :class:`StructuralOTLoss`)."""


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


def shift_to_zero_minimum(s: Tensor) -> Tensor:
    """``S - S.min()``: the whole matrix moved by one scalar so that its minimum is 0.

    What the PKDOT / MT-PKDOT authors apply to the teacher's and the student's
    similarity matrices before reading the anchors (paper mode). The gradient
    flows through the minimum too, as in their code.
    """
    return s - s.min()


def full_precision(device: torch.device) -> torch.autocast:
    """A region where mixed-precision autocast is off: similarity matrices, anchor ranking and
    the Sinkhorn solver run in float32 even under ``bf16-mixed`` / ``16-mixed`` training
    (exp/log of costs divided by epsilon = 0.01 is far outside what 16-bit floats resolve)."""
    return torch.autocast(device_type=device.type, enabled=False)


def at_least_float32(x: Tensor) -> Tensor:
    """Half-precision tensors as float32; float32 and float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def anchored_similarities(
    z_teacher: Tensor, z_student: Tensor, k: int, *, shift: bool = False
) -> tuple[Tensor, Tensor]:
    """``X = S_t[i, idx_i]`` and ``Y = S_s[i, idx_i]`` (each ``b x k'``), anchors from the teacher.

    The teacher is frozen, so its similarities are computed without gradient. Computed in
    float32 whatever the input precision (see :func:`full_precision`). With ``shift`` each
    matrix is first moved by its own global minimum (:func:`shift_to_zero_minimum`, the
    authors' paper mode); the anchors are the same either way. The rows a
    :class:`StructuralOTLoss` compares are :meth:`StructuralOTLoss.anchored`.
    """
    if z_teacher.shape[0] != z_student.shape[0]:
        raise ValueError(f"teacher and student batches differ: {z_teacher.shape[0]} vs {z_student.shape[0]}")
    with full_precision(z_student.device):
        return _anchored_similarities(at_least_float32(z_teacher), at_least_float32(z_student), k, shift)


def _anchored_similarities(z_teacher: Tensor, z_student: Tensor, k: int, shift: bool) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        s_teacher = cosine_similarity_matrix(z_teacher)
    anchors = select_anchors(s_teacher, k)
    s_student = cosine_similarity_matrix(z_student)
    if shift:
        s_teacher, s_student = shift_to_zero_minimum(s_teacher), shift_to_zero_minimum(s_student)
    return s_teacher.gather(1, anchors), s_student.gather(1, anchors)


class StructuralOTLoss(nn.Module):
    r"""Structural OT loss of PKDOT / MT-PKDOT (Eq. 2-7): Sinkhorn divergence of anchored similarities.

    Args:
        k: anchors per sample, clipped to ``b - 1``. 30, the papers' value at their batch
            of 128; the config's ``structural.k: auto`` gives the same 30 at batch 128 and
            scales it with the batch size (:mod:`privkd.training.auto`), whereas this class
            takes the number itself.
        epsilon: entropic regularisation in units of the cost ``1/2 |x - y|^2``
            (paper: 0.01, geomloss ``blur=0.1``); absolute, not relative to a
            cost scale, so that the paper mode is the authors' loss.
        mode: ``"paper"`` (similarity matrices shifted to a zero minimum, rows as
            one point cloud each, permutation invariant) or ``"paired"`` (row
            ``i`` against row ``i``, 1-D clouds of ``k`` values, averaged over rows).
            ``k``, ``epsilon`` and ``mode`` default to the config's ``structural`` section.
        max_iter: most Sinkhorn iterations per OT problem at the target epsilon:
            10000 leaves a margin over the slowest solve on the clouds of
            ``benchmarks/ot_convergence.py``, so that every loss call reaches ``tol``
            (measurements: ``docs/sinkhorn.md``).
        tol: L1 marginal-error tolerance of the Sinkhorn solver (1e-5: tight enough
            that the loss is the converged one for training; ``docs/sinkhorn.md``).
        scaling: epsilon-scaling ratio of the solver's warm start (``None``: off;
            see :class:`~privkd.losses.ot.SinkhornOptions`). ``"auto"`` (default):
            0.25 in paper mode, off in paired mode: in paper mode it costs nothing
            measurable and rescues weakly coupled clouds (a ragged last batch of a
            few samples) that plain Sinkhorn barely converges on; in paired mode,
            whose 1-D rows converge without it, it only costs time
            (``docs/sinkhorn.md``).

    The converged loss is not the number the authors' code computes. geomloss's
    ``SamplesLoss("sinkhorn", p=2, blur=0.1)`` anneals epsilon from the clouds'
    diameter down to 0.01 with ``scaling=0.5`` (blur halved, epsilon quartered, per
    step), one Sinkhorn update per epsilon, and stops at the target: it lags the
    fixed point, and the lag shrinks with ``1 - scaling`` (how far, measured:
    ``docs/sinkhorn.md``, "The converged loss and the authors' geomloss call"). privkd
    minimises the converged divergence; the gradient is the envelope gradient of that
    solution, whereas geomloss differentiates its last annealed iterate.

    After every call (``forward`` or :meth:`transport_loss`) :attr:`last_report`
    says how the solves ended: :attr:`last_marginal_error` is the largest L1
    marginal error of the problems solved (the ``xy`` problem and the two
    debiasing ones; of every row in paired mode), :attr:`last_converged` whether
    it is below ``tol``; :meth:`solver_metrics` gives both, with the iterations,
    as a dict to log. A solve that stops above ``tol`` also issues a
    :class:`~privkd.losses.ot.SinkhornConvergenceWarning`, once per process.
    """

    last_report: SinkhornReport | None

    def __init__(
        self,
        k: int = 30,
        epsilon: float = 0.01,
        mode: Mode = "paper",
        max_iter: int = 10_000,
        tol: float = 1e-5,
        scaling: float | Literal["auto"] | None = "auto",
        newton: int | None = 25,
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
        self.scaling = AUTO_SCALING[mode] if scaling == "auto" else scaling
        self.newton = newton
        _ = self.options  # validates the solver settings now rather than at the first call
        self.last_report = None

    @property
    def options(self) -> SinkhornOptions:
        """The solver settings of every OT problem of this loss (from its current attributes)."""
        return SinkhornOptions(epsilon=self.epsilon, max_iter=self.max_iter, tol=self.tol, scaling=self.scaling,
                               newton=self.newton)

    def forward(self, z_teacher: Tensor, z_student: Tensor) -> Tensor:
        """Scalar loss for teacher ``(b, m_t)`` and student ``(b, m_s)`` embeddings."""
        return self.transport_loss(*self.anchored(z_teacher, z_student))

    def anchored(self, z_teacher: Tensor, z_student: Tensor) -> tuple[Tensor, Tensor]:
        """The anchored similarity rows ``(X, Y)`` (teacher, student; each ``b x k'``) this loss compares.

        Paper mode: read from the similarity matrices shifted to a zero minimum
        (:func:`shift_to_zero_minimum`); paired mode: unshifted. ``Y`` carries the
        student's gradient, ``X`` none. ``transport_loss(*loss.anchored(zt, zs))`` is
        ``loss(zt, zs)``.
        """
        return anchored_similarities(z_teacher, z_student, self.k, shift=self.mode == "paper")

    def transport_loss(self, x: Tensor, y: Tensor) -> Tensor:
        """OT part alone, for anchored rows ``x`` (teacher) and ``y`` (student), ``b x k``, as
        :meth:`anchored` returns them (no shift is applied here)."""
        options = self.options
        with full_precision(y.device):
            x, y = at_least_float32(x), at_least_float32(y)
            if self.mode == "paper":
                value, report = sinkhorn_divergence(x, y, options=options, return_report=True)
            else:
                values, report = sinkhorn_divergence(x.unsqueeze(-1), y.unsqueeze(-1), options=options,
                                                     return_report=True)
                value = values.mean()
        self.last_report = report
        return value

    @property
    def last_marginal_error(self) -> Tensor | None:
        """Largest L1 marginal error of the last call's solves (detached float32 scalar), or None."""
        return None if self.last_report is None else self.last_report.worst

    @property
    def last_converged(self) -> bool | None:
        """Whether every solve of the last call ended below ``tol`` (None before the first call)."""
        return None if self.last_report is None else self.last_report.converged

    def solver_metrics(self, prefix: str = "sinkhorn/") -> dict[str, float]:
        """The last call's solver state, to log from a training step (``self.log_dict(...)``).

        Keys (after ``prefix``): ``marginal_error`` (largest L1 marginal error),
        ``converged`` (1.0 or 0.0), ``iterations`` (longest solve). Empty before
        the first call.
        """
        report = self.last_report
        if report is None:
            return {}
        return {f"{prefix}marginal_error": float(report.worst), f"{prefix}converged": float(report.converged),
                f"{prefix}iterations": float(report.n_iter)}

    def extra_repr(self) -> str:
        return (f"k={self.k}, epsilon={self.epsilon}, mode={self.mode!r}, tol={self.tol}, max_iter={self.max_iter}, "
                f"scaling={self.scaling}, newton={self.newton}")
