r"""Debiased Sinkhorn divergence between point clouds, with a closed-form gradient.

.. math::

    S_\varepsilon(x, y) = \mathrm{OT}_\varepsilon(x, y)
        - \tfrac12 \mathrm{OT}_\varepsilon(x, x) - \tfrac12 \mathrm{OT}_\varepsilon(y, y)

(Feydy et al. 2019, "Interpolating between optimal transport and MMD using Sinkhorn
divergences"), with cost ``1/2 |x - y|^2`` and each ``OT_eps`` solved by
:func:`~privkd.losses.ot.solver.sinkhorn_stabilized`. The gradient with respect to the
points is the envelope (Danskin) gradient ``sum_j P_ij (x_i - y_j)``, applied by matrix
products: autograd records no iteration, so memory and gradient do not depend on how
many were run. Rationale in ``docs/sinkhorn.md``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, overload

import torch
from torch import Tensor

from privkd.losses.ot.options import SinkhornOptions
from privkd.losses.ot.solver import (
    _anneal,
    _solve_alternating,
    _solve_symmetric,
    _State,
    sinkhorn_stabilized,
)

__all__ = [
    "SinkhornConvergenceWarning",
    "SinkhornReport",
    "SinkhornWarmStart",
    "sinkhorn_divergence",
    "squared_euclidean_cost",
]


class SinkhornConvergenceWarning(RuntimeWarning):
    """A Sinkhorn solve of :func:`sinkhorn_divergence` stopped at ``max_iter`` above ``tol``.

    Issued with one fixed message from one place, so Python's default filter shows it once
    per process; ``warnings.simplefilter("error", SinkhornConvergenceWarning)`` turns it into
    an exception, ``"always"`` shows every occurrence.
    """


UNCONVERGED_MESSAGE = (
    "Sinkhorn stopped at max_iter with its L1 marginal error above tol, so the structural OT loss "
    "and its gradient are inexact (shown once per process). Raise max_iter or enable epsilon-scaling "
    "(StructuralOTLoss(max_iter=..., scaling=...), or the same fields of SinkhornOptions); a larger "
    "epsilon converges faster but changes the loss. StructuralOTLoss.last_marginal_error and "
    "solver_metrics() give the error of every call; docs/sinkhorn.md has measured settings."
)


@dataclass(frozen=True)
class SinkhornReport:
    """How the OT problems of one :func:`sinkhorn_divergence` call ended.

    Attributes:
        marginal_error: per divergence (shape ``x.shape[:-2]``), the largest L1 marginal
            error ``sum_i |P 1 - a|_i`` of its three OT problems (``xy``, ``xx``, ``yy``) as
            the solver returned them (the ``marginal_error`` of
            :func:`~privkd.losses.ot.solver.sinkhorn_stabilized`); detached, float32.
        n_iter: iterations of the longest of the solves (at the target epsilon).
        tol: the tolerance the solves were run to.
        converged: every problem ended below ``tol``.
    """

    marginal_error: Tensor
    n_iter: int
    tol: float
    converged: bool

    @property
    def worst(self) -> Tensor:
        """Largest marginal error of the call, a detached float32 scalar."""
        return self.marginal_error.amax() if self.marginal_error.numel() else self.marginal_error.sum()


@dataclass
class SinkhornWarmStart:
    r"""Potentials carried from one :func:`sinkhorn_divergence` call to the next.

    Pass the same object as ``warm_start=`` on consecutive calls (e.g. one per
    loss module, across training steps): each call starts from the potentials
    the previous call converged to, when the shapes, dtype and device match,
    and stores its own. Sinkhorn's answer does not depend on the starting point
    (the tolerance test is unchanged), only the iteration count does, so this
    pays off when consecutive problems are close (the same clouds moved by a
    small optimiser step); on unrelated batches it neither helps nor hurts much.

    Attributes:
        potentials: ``(f_xy, h_xx, h_yy)`` row potentials of the three problems
            of the last call, detached; ``None`` before the first call.
        n_iter: iterations the last call needed (largest of the three problems).
    """

    potentials: tuple[Tensor, Tensor, Tensor] | None = None
    n_iter: int = 0
    _key: tuple = field(default=(), repr=False)

    def get(self, key: tuple) -> tuple[Tensor, Tensor, Tensor] | None:
        return self.potentials if self.potentials is not None and key == self._key else None

    def put(self, key: tuple, potentials: tuple[Tensor, Tensor, Tensor], n_iter: int) -> None:
        self._key, self.potentials, self.n_iter = key, tuple(p.detach() for p in potentials), n_iter


def squared_euclidean_cost(x: Tensor, y: Tensor) -> Tensor:
    r"""Cost ``C_ij = 1/2 |x_i - y_j|^2`` for ``x (..., n, d)``, ``y (..., m, d)``.

    Expanded as ``(|x|^2 + |y|^2) / 2 - x.y`` so memory is ``n * m`` rather than
    ``n * m * d``; clamped at 0 against round-off. The 1/2 is geomloss's
    convention for ``p=2``, so ``blur = sqrt(epsilon)`` there.
    """
    x_sq = (x * x).sum(-1, keepdim=True)
    y_sq = (y * y).sum(-1, keepdim=True).transpose(-1, -2)
    return (0.5 * (x_sq + y_sq) - x @ y.transpose(-1, -2)).clamp_min(0.0)


@overload
def sinkhorn_divergence(
    x: Tensor, y: Tensor, *, options: SinkhornOptions, warm_start: SinkhornWarmStart | None = None,
    return_report: Literal[False] = False,
) -> Tensor: ...


@overload
def sinkhorn_divergence(
    x: Tensor, y: Tensor, *, options: SinkhornOptions, warm_start: SinkhornWarmStart | None = None,
    return_report: Literal[True],
) -> tuple[Tensor, SinkhornReport]: ...


def sinkhorn_divergence(
    x: Tensor, y: Tensor, *, options: SinkhornOptions, warm_start: SinkhornWarmStart | None = None,
    return_report: bool = False,
) -> Tensor | tuple[Tensor, SinkhornReport]:
    r"""Debiased Sinkhorn divergence between uniform point clouds (Feydy et al. 2019).

    .. math::

        S_\varepsilon(x, y) = \mathrm{OT}_\varepsilon(x, y)
            - \tfrac12 \mathrm{OT}_\varepsilon(x, x) - \tfrac12 \mathrm{OT}_\varepsilon(y, y)

    with cost ``1/2 |x - y|^2`` (geomloss ``SamplesLoss("sinkhorn", p=2,
    blur=sqrt(epsilon))``, the solver the PKDOT authors ran). Debiasing removes
    the entropic bias: ``OT_eps(x, x) > 0``, whereas ``S_eps(x, x) = 0`` and
    ``S_eps >= 0``, so the loss is minimal exactly when the clouds coincide.
    The two self-transport terms use the averaged symmetric update (see
    ``symmetric`` in :func:`~privkd.losses.ot.solver.sinkhorn_stabilized`), which
    converges in tens of iterations where alternating updates take thousands;
    they are solved in one batched call (``x`` and ``y`` stacked along the batch
    axis) when the clouds have the same size, so each iteration is one batched product.

    In envelope mode the gradient with respect to the points is computed in
    closed form by a custom autograd function: for ``OT(x, y)`` it is
    ``(P 1) * x - P y`` for ``x`` and ``(P^T 1) * y - P^T x`` for ``y``, with
    ``P = diag(alpha) K diag(beta)`` applied by matrix products, so neither the
    plan nor the cost's autograd graph is formed (no ``n x m`` work in backward
    besides two batched products per problem).

    Args:
        x: points ``(..., n, d)``; leading axes are a batch.
        y: points ``(..., m, d)`` with the same leading axes and ``d``.
        options: solver settings, shared by the three OT problems; see
            :class:`~privkd.losses.ot.options.SinkhornOptions`.
        warm_start: a :class:`SinkhornWarmStart` reused across calls to start
            from the previous call's potentials (envelope mode only); see there.
        return_report: also return a :class:`SinkhornReport` (marginal errors,
            iterations, convergence) of the call.

    Returns:
        Divergence of shape ``x.shape[:-2]`` (a scalar for single clouds).
        Values below zero can only be solver round-off and are clamped to 0.
        With ``return_report``, the pair ``(divergence, report)``.

    Warns:
        SinkhornConvergenceWarning: once per process, the first time a problem
            ends at ``max_iter`` with its marginal error at or above ``tol``.
    """
    if x.shape[:-2] != y.shape[:-2] or x.shape[-1] != y.shape[-1]:
        raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} need the same batch axes and dimension")
    lead = x.shape[:-2]
    x_b = x.reshape(-1, *x.shape[-2:])
    y_b = y.reshape(-1, *y.shape[-2:])
    record = _Record()
    if options.grad == "unrolled":

        def ot(p: Tensor, q: Tensor, symmetric: bool) -> Tensor:
            result = sinkhorn_stabilized(squared_euclidean_cost(p, q), options=options, symmetric=symmetric)
            record.add(result.marginal_error, result.n_iter)
            return result.value

        divergence = ot(x_b, y_b, False) - 0.5 * (ot(x_b, x_b, True) + ot(y_b, y_b, True))
    else:
        divergence = _EnvelopeDivergence.apply(x_b, y_b, options, warm_start, record)
    report = record.report(options.tol, lead)
    if not report.converged:
        # One call site, one fixed message: the default filter shows it once per process.
        warnings.warn(UNCONVERGED_MESSAGE, SinkhornConvergenceWarning, stacklevel=1)
    divergence = divergence.clamp_min(0.0).reshape(lead)
    return (divergence, report) if return_report else divergence


class _Record:
    """Collects the per-problem marginal errors ``(B,)`` and iterations of the solves of one call."""

    def __init__(self) -> None:
        self.errors: list[Tensor] = []
        self.n_iter = 0

    def add(self, error: Tensor, n_iter: int) -> None:
        self.errors.append(error.detach().reshape(-1))
        self.n_iter = max(self.n_iter, n_iter)

    def report(self, tol: float, lead: torch.Size) -> SinkhornReport:
        worst = torch.stack(self.errors).amax(0)  # (B,): the worst of each divergence's problems
        # Tested in the working precision before the float32 copy; NaN counts as unconverged.
        converged = bool((worst < tol).all())
        return SinkhornReport(worst.float().reshape(lead), self.n_iter, tol, converged)


def _matvec(k: Tensor, v: Tensor) -> Tensor:
    """``K v`` for ``K (B, n, m)``, ``v (B, m)``.

    Written as the row-vector product ``v^T K^T`` on a transposed view: on CPU,
    ``bmm(K, v[..., None])`` with a batch of more than one matrix takes a slow
    path (several times slower; ``docs/sinkhorn.md``, "Smaller choices"), the row form does not.
    """
    return torch.bmm(v.unsqueeze(1), k.transpose(1, 2)).squeeze(1)


def _vecmat(u: Tensor, k: Tensor) -> Tensor:
    """``K^T u`` for ``K (B, n, m)``, ``u (B, n)``, as a row-vector product (no transposed copy)."""
    return torch.bmm(u.unsqueeze(1), k).squeeze(1)


def _ot_value(state: _State, log_a: Tensor, log_b: Tensor, eps: float) -> Tensor:
    """``<f, P 1> + <g, P^T 1>``, the entropic value ``<P, C> + eps KL(P || a⊗b)`` of the plan."""
    f, g = state.potentials(log_a, log_b, eps)
    row = state.alpha * _matvec(state.kernel, state.beta)  # P 1
    if state.symmetric:
        return 2.0 * (f * row).sum(1)
    col = state.beta * _vecmat(state.alpha, state.kernel)  # P^T 1
    return (f * row).sum(1) + (g * col).sum(1)


class _Scalings(NamedTuple):
    """What the gradient needs of a solve: ``P = diag(alpha) K diag(beta)``."""

    kernel: Tensor
    alpha: Tensor
    beta: Tensor


def _transport_gradient(state: _State | _Scalings, x: Tensor, y: Tensor, transpose: bool) -> Tensor:
    """``sum_j P_ij (x_i - y_j)`` per ``i`` (``P^T`` when ``transpose``), by two batched products."""
    if transpose:
        outer, inner, k = state.beta, state.alpha, state.kernel.transpose(1, 2)
    else:
        outer, inner, k = state.alpha, state.beta, state.kernel
    both = torch.bmm(k, torch.cat([inner.unsqueeze(2), inner.unsqueeze(2) * y], dim=2))
    return outer.unsqueeze(2) * (both[..., :1] * x - both[..., 1:])


class _EnvelopeDivergence(torch.autograd.Function):
    """Debiased divergence with the closed-form envelope gradient with respect to the points."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, x: Tensor, y: Tensor, options: SinkhornOptions, warm_start: SinkhornWarmStart | None, record: _Record
    ) -> Tensor:
        eps = options.epsilon
        batch, n, m = x.shape[0], x.shape[1], y.shape[1]
        log_a = torch.full((batch, n), -math.log(n), dtype=x.dtype, device=x.device)
        log_b = torch.full((batch, m), -math.log(m), dtype=x.dtype, device=x.device)
        key = (tuple(x.shape), tuple(y.shape), x.dtype, x.device, eps)
        warm = warm_start.get(key) if warm_start is not None else None

        cost_xy = squared_euclidean_cost(x, y)
        f_xy = _anneal(cost_xy, log_a, log_b, options, warm[0] if warm else None, False)
        xy = _solve_alternating(cost_xy, log_a, log_b, options, f_xy)
        if n == m:  # both self-transports in one batched solve
            points = torch.cat([x, y])
            cost = squared_euclidean_cost(points, points)
            log_w = torch.cat([log_a, log_b])
            h = torch.cat([warm[1], warm[2]]) if warm else None
            h = _anneal(cost, log_w, log_w, options, h, True)
            both = _solve_symmetric(cost, log_w, options, h)
            value_xx, value_yy = _ot_value(both, log_w, log_w, eps).split(batch)
            xx = yy = both
        else:
            cost_xx, cost_yy = squared_euclidean_cost(x, x), squared_euclidean_cost(y, y)
            h_x = _anneal(cost_xx, log_a, log_a, options, warm[1] if warm else None, True)
            h_y = _anneal(cost_yy, log_b, log_b, options, warm[2] if warm else None, True)
            xx = _solve_symmetric(cost_xx, log_a, options, h_x)
            yy = _solve_symmetric(cost_yy, log_b, options, h_y)
            value_xx, value_yy = _ot_value(xx, log_a, log_a, eps), _ot_value(yy, log_b, log_b, eps)
        divergence = _ot_value(xy, log_a, log_b, eps) - 0.5 * (value_xx + value_yy)
        record.add(xy.error, xy.n_iter)
        if xx is yy:
            error_xx, error_yy = both.error.split(batch)
            record.add(error_xx, both.n_iter)
            record.add(error_yy, both.n_iter)
        else:
            record.add(xx.error, xx.n_iter)
            record.add(yy.error, yy.n_iter)
        if warm_start is not None:
            f_xy, _ = xy.potentials(log_a, log_b, eps)
            if xx is yy:
                h_all, _ = both.potentials(log_w, log_w, eps)
                h_x, h_y = h_all.split(batch)
            else:
                h_x, _ = xx.potentials(log_a, log_a, eps)
                h_y, _ = yy.potentials(log_b, log_b, eps)
            warm_start.put(key, (f_xy, h_x, h_y), max(xy.n_iter, xx.n_iter, yy.n_iter))
        # Saved as tensors, not ctx attributes, so autograd frees them after backward
        # (and keeps them for a second backward only under retain_graph=True).
        ctx.batch, ctx.stacked = batch, xx is yy
        solves = (xy, xx) if xx is yy else (xy, xx, yy)
        ctx.save_for_backward(x, y, *(t for state in solves for t in (state.kernel, state.alpha, state.beta)))
        return divergence

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(  # type: ignore[override]
        ctx, grad_output: Tensor
    ) -> tuple[Tensor | None, Tensor | None, None, None, None]:
        x, y, *saved = ctx.saved_tensors
        solves = [_Scalings(*saved[i:i + 3]) for i in range(0, len(saved), 3)]
        xy, xx, yy = (*solves, solves[1]) if ctx.stacked else solves
        batch = ctx.batch
        weight = grad_output.reshape(-1, 1, 1)
        grad_x = grad_y = None
        if xx is yy:  # stacked self-transports: d OT(p, p) / dp = 2 sum_j P_ij (p_i - p_j)
            points = torch.cat([x, y])
            self_x, self_y = _transport_gradient(xx, points, points, False).split(batch)
        if ctx.needs_input_grad[0]:
            if xx is not yy:
                self_x = _transport_gradient(xx, x, x, False)
            grad_x = weight * (_transport_gradient(xy, x, y, False) - self_x)
        if ctx.needs_input_grad[1]:
            if xx is not yy:
                self_y = _transport_gradient(yy, y, y, False)
            grad_y = weight * (_transport_gradient(xy, y, x, True) - self_y)
        return grad_x, grad_y, None, None, None
