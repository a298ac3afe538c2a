"""Newton phases of the alternating Sinkhorn solve (``SinkhornOptions.newton``).

Sinkhorn's iterations converge linearly, and on nearly uncoupled plans (two clusters of the
anchored similarity rows that a small epsilon barely connects) the error shrinks by about
``1 - 1e-6`` per iteration: thousands of iterations without reaching ``tol``. A Newton step
on the dual removes that slow mode in one step. The solver in :mod:`privkd.losses.ot.solver`
runs a phase of these steps every ``newton`` iterations; the fixed point, and so the
answer, is the same (see ``benchmarks/ot_convergence.py`` and ``docs/sinkhorn.md``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["l1_error", "newton_phase"]

def l1_error(scaling: Tensor, product: Tensor, weights: Tensor) -> Tensor:
    """``sum |scaling * product - weights|`` over the last axis: one fused op and a norm."""
    return torch.linalg.vector_norm(torch.addcmul(weights, scaling, product, value=-1.0), ord=1, dim=-1)


# Newton phase of the alternating solver (``SinkhornOptions.newton``): at most this many
# Newton steps per phase; the step lengths tried when the full step is not a clear win.
_NEWTON_STEPS = 8
_STEP_LENGTHS = tuple(2.0**k for k in range(-6, 7))
_TIKHONOV = 1e-9
_GOLDEN_STEPS = 10


def _row_error_exact_columns(kernel: Tensor, alpha: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """L1 row error of the pair ``(alpha, b / K^T alpha)``, shape ``(B,)``."""
    beta = b / torch.bmm(alpha, kernel)
    return l1_error(alpha, torch.bmm(beta, kernel.transpose(1, 2)), a).squeeze(1)


def _line_search(
    kernel: Tensor, alpha: Tensor, u: Tensor, a: Tensor, b: Tensor, error: Tensor
) -> tuple[Tensor, Tensor]:
    """The best of ``alpha * exp(t u)`` along a Newton direction ``u``, per problem: ``(alpha, error)``.

    The full step (``t = 1``) when it cuts the error tenfold. Otherwise steps whose largest
    entry ``max |t u|`` is ``2^-6 .. 2^6``, then a golden-section search between the
    neighbours of the best of them: where a nearly uncoupled block's mass must move, the
    error is exponential in the step, so a factor-2 grid brackets the step but is too coarse
    to take it.
    """

    def at(length: Tensor) -> tuple[Tensor, Tensor]:
        trial = alpha * torch.exp(u * (length / size))
        return trial, _row_error_exact_columns(kernel, trial, a, b)

    best = alpha * torch.exp(u)
    best_error = _row_error_exact_columns(kernel, best, a, b).nan_to_num(nan=math.inf)
    if bool((best_error < 0.1 * error).all()):
        return best, best_error

    def keep(trial: Tensor, trial_error: Tensor) -> None:
        nonlocal best, best_error
        better = trial_error < best_error  # NaN (a failed solve) is never better
        best = torch.where(better.view(-1, 1, 1), trial, best)
        best_error = torch.where(better, trial_error, best_error)

    size = u.abs().amax(2, keepdim=True).nan_to_num(nan=1.0).clamp_min(torch.finfo(u.dtype).tiny)
    lengths = torch.tensor(_STEP_LENGTHS, dtype=u.dtype, device=u.device)
    errors = []
    for length in lengths:
        trial, trial_error = at(length.expand_as(size))
        keep(trial, trial_error)
        errors.append(trial_error.nan_to_num(nan=math.inf))
    index = torch.stack(errors, 1).argmin(1)
    lo = torch.where(index > 0, lengths[(index - 1).clamp_min(0)], lengths[0] / 2).view(-1, 1, 1)
    hi = torch.where(index < len(lengths) - 1, lengths[(index + 1).clamp_max(len(lengths) - 1)],
                     lengths[-1] * 2).view(-1, 1, 1)
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    (trial_c, error_c), (trial_d, error_d) = at(c), at(d)
    keep(trial_c, error_c)
    keep(trial_d, error_d)
    for _ in range(_GOLDEN_STEPS):
        left = (error_c.nan_to_num(nan=math.inf) < error_d.nan_to_num(nan=math.inf)).view(-1, 1, 1)
        # Left: the minimum is in [lo, d], d <- c and a new c; right: in [c, hi], c <- d and a new d.
        lo, hi = torch.where(left, lo, c), torch.where(left, d, hi)
        shared, shared_error = torch.where(left, c, d), torch.where(left.view(-1), error_c, error_d)
        new = torch.where(left, hi - ratio * (hi - lo), lo + ratio * (hi - lo))
        trial, trial_error = at(new)
        keep(trial, trial_error)
        c, error_c = torch.where(left, new, shared), torch.where(left.view(-1), trial_error, shared_error)
        d, error_d = torch.where(left, shared, new), torch.where(left.view(-1), shared_error, trial_error)
    return best, best_error


def newton_phase(kernel: Tensor, alpha: Tensor, a: Tensor, b: Tensor, tol: float) -> Tensor:
    r"""Newton steps on the row scalings, in float64; returns the new ``alpha`` (``(B, 1, n)``, float64).

    Sinkhorn-Newton (Brauer, Clason, Lorenz and Wirth 2017) on the dual, eliminated to the
    rows. With exact columns ``beta = b / K^T alpha`` and the plan ``P``, a step ``u`` of
    ``log alpha`` (and ``v`` of ``log beta``) that makes both marginals exact to first order
    solves ``diag(P 1) u + P v = a - P 1``, ``P^T u + diag(b) v = 0``; eliminating
    ``v = -diag(1/b) P^T u`` leaves

    .. math::  (\operatorname{diag}(P 1) - P \operatorname{diag}(1/b) P^\top)\, u = a - P 1,

    positive semi-definite with null vector ``1`` (a constant moved from ``f`` to ``g``
    changes nothing), to which the right-hand side is orthogonal (``sum P = sum b = 1``), so
    adding ``c 11^T`` makes it definite with the same solution. Its smallest eigenvalues are
    the slow modes of Sinkhorn, which Newton removes in one step where the iterations need
    ``1 / (1 - eta^2)``. Far from the solution the linear model overshoots (a nearly
    uncoupled block of the plan needs its mass moved through exponentially small entries),
    so the full step is kept only when it cuts the error tenfold; otherwise the best of the
    step lengths ``2^-6 .. 2^6`` (refined by a golden-section search) is taken, per problem, and a problem no length improves
    keeps its ``alpha``. The phase ends after ``_NEWTON_STEPS`` steps, below ``tol``, or
    when a step no longer halves the error. Cost: one ``(n, n)`` solve and an ``n^2 m``
    product per step, which is why the iterations run first and Newton only every
    ``newton`` of them.
    """
    k, al, a64, b64 = kernel.double(), alpha.double(), a.double(), b.double()
    error = _row_error_exact_columns(k, al, a64, b64)
    n = al.shape[2]
    for _ in range(_NEWTON_STEPS):
        if bool((error < tol).all()):
            break
        beta = b64 / torch.bmm(al, k)
        plan = al.transpose(1, 2) * k * beta
        row = plan.sum(2)
        schur = torch.diag_embed(row) - torch.bmm(plan / b64, plan.transpose(1, 2))
        scale = row.mean(1).view(-1, 1, 1)
        schur = schur + scale / n + _TIKHONOV * scale * torch.eye(n, dtype=schur.dtype, device=schur.device)
        u = torch.linalg.solve_ex(schur, (a64.squeeze(1) - row).unsqueeze(2))[0].transpose(1, 2)
        best, best_error = _line_search(k, al, u, a64, b64, error)
        improved = best_error < error
        al = torch.where(improved.view(-1, 1, 1), best, al)
        progress = bool((best_error < 0.5 * error).any())
        error = torch.where(improved, best_error, error)
        if not progress:
            break
    return al
