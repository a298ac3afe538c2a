r"""Entropic optimal transport by Sinkhorn's algorithm, batched, in torch.

The structural distillation loss of PKDOT / MT-PKDOT (Eq. 6-7 of MT-PKDOT) is an
entropy-regularised optimal transport problem between teacher and student
similarity structures. This module solves

.. math::

    \mathrm{OT}_\varepsilon(a, b; C) = \min_{P \in \Pi(a, b)}
        \langle P, C \rangle + \varepsilon\, \mathrm{KL}(P \,\|\, a \otimes b)

with Sinkhorn's fixed-point iterations (Cuturi 2013, "Sinkhorn distances:
lightspeed computation of optimal transport") on the dual potentials ``f``,
``g`` (in units of the cost), as in Feydy et al. 2019 ("Interpolating between
optimal transport and MMD using Sinkhorn divergences"). The optimal plan is
``P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)``.

How the iterations are run: stabilised scaling domain ("absorption").
    The textbook log-domain iteration evaluates a ``logsumexp`` over the whole
    ``n x m`` matrix per half-step: an ``exp`` per entry, 100-200 times per
    solve at eps = 0.01. Here the potentials are split as
    ``f = f0 + eps log(u)``, ``g = g0 + eps log(v)``: the stabilised kernel
    ``K = exp((f0 + g0 - C) / eps)`` is formed once (one ``exp`` pass) and
    each half-step is then a matrix-vector product ``K v`` (BLAS, ~50x cheaper
    than a ``logsumexp`` pass on CPU) and a division. When the scalings ``u``,
    ``v`` leave ``[e^-tau, e^tau]`` they are absorbed into ``f0``, ``g0`` and
    ``K`` is rebuilt (Schmitzer 2019, "Stabilized sparse scaling algorithms for
    entropy regularized transport problems"); ``tau`` is chosen so that the
    kernel entries that underflow to 0 in the working precision would carry a
    plan mass below ``e^-35`` relative, so the answer is that of the log-domain
    iteration to round-off. If a row or column of ``K`` does underflow
    entirely (a non-finite scaling), the solver steps back, runs one exact
    log-domain update and rebuilds ``K``, so it can never do worse than the
    log-domain iteration.

Why not the standard domain: the unstabilised kernel ``exp(-C / eps)``
underflows to zero once ``C / eps`` exceeds ~745 (float64) or ~104 (float32).
At the epsilon the authors ran (0.01, with costs ``1/2 |x - y|^2`` of order 1-10
between similarity rows) most of it is zero and the standard iteration silently
returns wrong values or NaN; the absorbed kernel has entries of order one where
the plan has mass.

Why over-relaxation: near the solution the alternating iteration contracts by
``eta^2`` per sweep (``eta`` the second singular value of the normalised plan),
0.9 and above on the clustered clouds of the loss at eps = 0.01, so it crawls.
The over-relaxed update ``log u <- (1 - w) log u + w log(a / K v)`` with
``w = 2 / (1 + sqrt(1 - eta^2))`` contracts by ``w - 1`` (Young's SOR theory,
applied to Sinkhorn by Thibault et al. 2021 and Lehmann et al. 2021), e.g.
0.52 instead of 0.9. ``eta^2`` is read off the error decay while ``w = 1``;
the fixed point, hence the answer, does not depend on ``w``.

Why the envelope gradient: at the optimum, the derivative of the entropic OT
value with respect to the cost is the optimal plan, and with respect to the
marginals the dual potentials (envelope / Danskin theorem), so the iterations
need not be recorded by autograd. That saves the memory of every iterate and
makes the gradient independent of how many iterations were run. For the
divergence between point clouds the gradient with respect to the points,
``sum_j P_ij (x_i - y_j)``, is evaluated from ``K`` and the scalings by matrix
products, without forming ``P``. Back-propagating through the iterations
("unrolled") is available for comparison; both agree at convergence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "SinkhornResult",
    "SinkhornWarmStart",
    "sinkhorn_divergence",
    "sinkhorn_log",
    "squared_euclidean_cost",
]

GradMode = Literal["envelope", "unrolled"]
Relaxation = float | Literal["auto"]

# Largest over-relaxation used by ``relaxation="auto"``: the optimum tends to 2
# as eta -> 1 but the error then oscillates with modulus w - 1 and the
# estimate of eta is noisy, so it is capped.
_MAX_OMEGA = 1.8


@dataclass
class SinkhornResult:
    r"""Output of :func:`sinkhorn_log`; batched fields have a leading batch axis.

    Attributes:
        value: entropic OT cost ``<P, C> + epsilon * KL(P || a ⊗ b)`` of the
            returned plan, the quantity POT's ``ot.solve(M, a, b, reg=eps,
            method="sinkhorn_log").value`` reports (its default ``reg_type="KL"``).
            At convergence it equals the dual value ``<f, a> + <g, b>``, which is
            what geomloss calls ``OT_eps``. Shape ``(B,)`` or scalar.
        value_linear: transport part ``<P, C>``. In envelope mode its gradient
            treats the plan as a constant.
        plan: transport plan ``P``, shape ``(B, n, m)`` or ``(n, m)``; detached in
            envelope mode.
        f: row potential, shape ``(B, n)`` or ``(n,)``, in units of the cost.
        g: column potential, shape ``(B, m)`` or ``(m,)``, in units of the cost.
        n_iter: Sinkhorn iterations run at the target epsilon (a column and a
            row update each; one averaged update when ``symmetric``).
        marginal_error: L1 violation of the row marginal, ``sum_i |P 1 - a|_i``,
            per problem. The column marginal is exact by construction (for
            ``symmetric=True`` the plan is symmetric and both errors are equal).
    """

    value: Tensor
    value_linear: Tensor
    plan: Tensor
    f: Tensor
    g: Tensor
    n_iter: int
    marginal_error: Tensor


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


def sinkhorn_log(
    cost: Tensor,
    a: Tensor | None = None,
    b: Tensor | None = None,
    *,
    epsilon: float,
    max_iter: int = 1000,
    tol: float = 1e-6,
    check_every: int = 1,
    grad: GradMode = "envelope",
    scaling: float | None = None,
    symmetric: bool = False,
    relaxation: Relaxation = "auto",
    init: Tensor | None = None,
) -> SinkhornResult:
    r"""Solve entropic OT (Eq. 6-7 of MT-PKDOT) with stabilised Sinkhorn.

    Args:
        cost: cost matrix ``(n, m)`` or a batch of them ``(B, n, m)``.
        a: row marginal ``(n,)`` / ``(B, n)``, non-negative, summing to 1;
            uniform when omitted.
        b: column marginal ``(m,)`` / ``(B, m)``; uniform when omitted.
        epsilon: entropic regularisation, in units of the cost.
        max_iter: most Sinkhorn iterations at the target epsilon.
        tol: stop when the L1 row-marginal violation is below ``tol`` for every
            problem of the batch.
        check_every: test the stopping rule every this many iterations. The
            test costs a few vector operations next to two matrix-vector
            products, so the default tests every iteration.
        grad: ``"envelope"`` (default): potentials and plan are computed
            without autograd; ``d value / d cost`` is exactly the returned plan
            and ``d value / d a`` the row potential ``f`` (``g`` for ``b``);
            ``"unrolled"``: autograd records every iteration.
        scaling: epsilon-scaling ratio in (0, 1). When given, one warm-start
            log-domain iteration is run at each epsilon of the geometric
            schedule ``range(C), range(C) * scaling, ...`` down to ``epsilon``
            (as in geomloss), then the usual iterations at ``epsilon`` until
            ``tol``. The answer is unchanged (convergence is still tested at the
            target epsilon). On the loss's problems it saves few iterations
            (the slow phase is the linear one, which over-relaxation handles),
            so it is off by default.
        symmetric: the problem is a self-transport (``cost`` symmetric, ``b``
            omitted so ``b = a``), as in the debiasing terms of
            :func:`sinkhorn_divergence`. Then ``f = g = h`` and the averaged
            update ``h <- (h + T(h)) / 2`` of Feydy et al. 2019 is used. The
            alternating update crawls here: its linearisation ``P~^2``
            (``P~ = diag(1/a) P``) has eigenvalues near 1 when the plan is
            nearly diagonal. The averaged one has linearisation
            ``(I - P~) / 2``; for the squared-distance cost, whose Gibbs kernel
            is positive definite, ``P~`` has eigenvalues in [0, 1], so it
            contracts by at least 1/2 per step near the fixed point.
        relaxation: over-relaxation ``w`` of the alternating updates (ignored
            when ``symmetric``): ``"auto"`` (default) starts at 1 and switches
            to ``2 / (1 + sqrt(1 - r))`` once the per-iteration error ratio
            ``r`` has settled (falling back to 1 if the error then grows); a
            number in (0, 2) fixes it; 1 is plain Sinkhorn.
        init: starting row potential ``f`` (``(n,)`` / ``(B, n)``), e.g. the
            ``f`` of a previous solve of a nearby problem (warm start); zero
            potentials (hard c-transforms for the alternating problem) when
            omitted. The answer does not depend on it, only the iterations do.

    Returns:
        A :class:`SinkhornResult`.
    """
    _check_arguments(epsilon, max_iter, tol, check_every, grad, scaling, relaxation)
    batched = cost.dim() == 3
    cost_b = cost if batched else cost.unsqueeze(0)
    if symmetric and (b is not None or cost_b.shape[1] != cost_b.shape[2]):
        raise ValueError("symmetric=True needs a square cost and b omitted (b = a)")
    log_a = _log_marginal(a, cost_b.shape[0], cost_b.shape[1], cost_b)
    log_b = log_a if symmetric else _log_marginal(b, cost_b.shape[0], cost_b.shape[2], cost_b)
    if init is not None:
        init = init.to(cost_b).expand_as(log_a)

    # Envelope mode: potentials, plan and log-ratio carry no graph, so only the
    # explicit C in value = <P, C> + eps <P, log(P / a⊗b)> is differentiated: d value / d C = P.
    unrolled = grad == "unrolled" and torch.is_grad_enabled()
    with torch.set_grad_enabled(unrolled):
        init = _anneal(cost_b, log_a, log_b, epsilon, scaling, init, symmetric)
        state = _solve(cost_b, log_a, log_b, epsilon, max_iter, tol, check_every, symmetric, relaxation, init)
        f, g = state.potentials(log_a, log_b, epsilon)
        if unrolled:
            plan, log_ratio = _plan(cost_b, f, g, log_a, log_b, epsilon)
    if unrolled:
        value_linear = (plan * cost_b).sum((1, 2))
        value = value_linear + epsilon * (plan * log_ratio).sum((1, 2))
    else:
        plan = state.plan()
        value_linear = (plan * cost_b).sum((1, 2))
        # <P, C> + eps <P, (f + g - C) / eps> = <f, P 1> + <g, P^T 1>: the entropic
        # value from the marginals, without a second n x m pass; its gradient is
        # that of <P, C>, i.e. the plan, bit for bit.
        entropic = (f * plan.sum(2)).sum(1) + (g * plan.sum(1)).sum(1)
        value = value_linear + (entropic - value_linear).detach()
        value = value + _marginal_gradient(f, log_a) + _marginal_gradient(g, log_b)
    result = SinkhornResult(value, value_linear, plan, f, g, state.n_iter, state.error.detach())
    return result if batched else _unbatch(result)


def squared_euclidean_cost(x: Tensor, y: Tensor) -> Tensor:
    r"""Cost ``C_ij = 1/2 |x_i - y_j|^2`` for ``x (..., n, d)``, ``y (..., m, d)``.

    Expanded as ``(|x|^2 + |y|^2) / 2 - x.y`` so memory is ``n * m`` rather than
    ``n * m * d``; clamped at 0 against round-off. The 1/2 is geomloss's
    convention for ``p=2``, so ``blur = sqrt(epsilon)`` there.
    """
    x_sq = (x * x).sum(-1, keepdim=True)
    y_sq = (y * y).sum(-1, keepdim=True).transpose(-1, -2)
    return (0.5 * (x_sq + y_sq) - x @ y.transpose(-1, -2)).clamp_min(0.0)


def sinkhorn_divergence(
    x: Tensor,
    y: Tensor,
    *,
    epsilon: float,
    max_iter: int = 1000,
    tol: float = 1e-6,
    check_every: int = 1,
    grad: GradMode = "envelope",
    scaling: float | None = None,
    relaxation: Relaxation = "auto",
    warm_start: SinkhornWarmStart | None = None,
) -> Tensor:
    r"""Debiased Sinkhorn divergence between uniform point clouds (Feydy et al. 2019).

    .. math::

        S_\varepsilon(x, y) = \mathrm{OT}_\varepsilon(x, y)
            - \tfrac12 \mathrm{OT}_\varepsilon(x, x) - \tfrac12 \mathrm{OT}_\varepsilon(y, y)

    with cost ``1/2 |x - y|^2`` (geomloss ``SamplesLoss("sinkhorn", p=2,
    blur=sqrt(epsilon))``, the solver the PKDOT authors ran). Debiasing removes
    the entropic bias: ``OT_eps(x, x) > 0``, whereas ``S_eps(x, x) = 0`` and
    ``S_eps >= 0``, so the loss is minimal exactly when the clouds coincide.
    The two self-transport terms use the averaged symmetric update (see
    ``symmetric`` in :func:`sinkhorn_log`), which converges in tens of
    iterations where alternating updates take thousands; they are solved in
    one batched call (``x`` and ``y`` stacked along the batch axis) when the
    clouds have the same size, so each iteration is one batched product.

    In envelope mode the gradient with respect to the points is computed in
    closed form by a custom autograd function: for ``OT(x, y)`` it is
    ``(P 1) * x - P y`` for ``x`` and ``(P^T 1) * y - P^T x`` for ``y``, with
    ``P = diag(alpha) K diag(beta)`` applied by matrix products, so neither the
    plan nor the cost's autograd graph is formed (no ``n x m`` work in backward
    besides two batched products per problem).

    Args:
        x: points ``(..., n, d)``; leading axes are a batch.
        y: points ``(..., m, d)`` with the same leading axes and ``d``.
        epsilon, max_iter, tol, check_every, grad, scaling, relaxation: as in
            :func:`sinkhorn_log`.
        warm_start: a :class:`SinkhornWarmStart` reused across calls to start
            from the previous call's potentials (envelope mode only); see there.

    Returns:
        Divergence of shape ``x.shape[:-2]`` (a scalar for single clouds).
        Values below zero can only be solver round-off and are clamped to 0.
    """
    if x.shape[:-2] != y.shape[:-2] or x.shape[-1] != y.shape[-1]:
        raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} need the same batch axes and dimension")
    lead = x.shape[:-2]
    x_b = x.reshape(-1, *x.shape[-2:])
    y_b = y.reshape(-1, *y.shape[-2:])
    _check_arguments(epsilon, max_iter, tol, check_every, grad, scaling, relaxation)
    if grad == "unrolled":
        options = dict(epsilon=epsilon, max_iter=max_iter, tol=tol, check_every=check_every, grad=grad,
                       scaling=scaling, relaxation=relaxation)

        def ot(p: Tensor, q: Tensor, symmetric: bool) -> Tensor:
            return sinkhorn_log(squared_euclidean_cost(p, q), symmetric=symmetric, **options).value

        divergence = ot(x_b, y_b, False) - 0.5 * (ot(x_b, x_b, True) + ot(y_b, y_b, True))
    else:
        settings = _Settings(epsilon, max_iter, tol, check_every, scaling, relaxation, warm_start)
        divergence = _EnvelopeDivergence.apply(x_b, y_b, settings)
    return divergence.clamp_min(0.0).reshape(lead)


# --------------------------------------------------------------------------- checks


def _check_arguments(
    epsilon: float, max_iter: int, tol: float, check_every: int, grad: str, scaling: float | None,
    relaxation: Relaxation = "auto",
) -> None:
    if not epsilon > 0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")
    if max_iter < 1 or check_every < 1 or tol < 0:
        raise ValueError(f"need max_iter >= 1, check_every >= 1, tol >= 0; got {max_iter}, {check_every}, {tol}")
    if grad not in ("envelope", "unrolled"):
        raise ValueError(f"grad must be 'envelope' or 'unrolled', got {grad!r}")
    if scaling is not None and not 0 < scaling < 1:
        raise ValueError(f"scaling must lie in (0, 1), got {scaling}")
    if relaxation != "auto" and not (isinstance(relaxation, (int, float)) and 0 < relaxation < 2):
        raise ValueError(f"relaxation must be 'auto' or lie in (0, 2), got {relaxation!r}")


def _log_marginal(weights: Tensor | None, batch: int, size: int, like: Tensor) -> Tensor:
    """Log of a marginal, broadcast to ``(batch, size)``; uniform when ``weights`` is None."""
    if weights is None:
        return torch.full((batch, size), -math.log(size), dtype=like.dtype, device=like.device)
    return torch.log(weights.to(like)).expand(batch, size)


# --------------------------------------------------------------------------- log-domain pieces


def _update_f(g: Tensor, log_b: Tensor, cost: Tensor, eps: float) -> Tensor:
    """Row update ``f_i = -eps log sum_j b_j exp((g_j - C_ij) / eps)``: makes ``P 1 = a`` exact."""
    return -eps * torch.logsumexp((log_b + g / eps).unsqueeze(1) - cost / eps, dim=2)


def _update_g(f: Tensor, log_a: Tensor, cost: Tensor, eps: float) -> Tensor:
    """Column update ``g_j = -eps log sum_i a_i exp((f_i - C_ij) / eps)``: makes ``P^T 1 = b`` exact."""
    return -eps * torch.logsumexp((log_a + f / eps).unsqueeze(2) - cost / eps, dim=1)


def _epsilon_schedule(cost: Tensor, epsilon: float, scaling: float | None) -> list[float]:
    """Geometric warm-start schedule from the cost range down to (excluding) ``epsilon``."""
    if scaling is None:
        return []
    eps_max = float((cost.amax() - cost.amin()).detach())
    if eps_max <= epsilon:
        return []
    steps = math.ceil(math.log(eps_max / epsilon) / -math.log(scaling))
    return [eps_max * scaling**k for k in range(steps)]


def _anneal(
    cost: Tensor, log_a: Tensor, log_b: Tensor, eps: float, scaling: float | None, f: Tensor | None, symmetric: bool
) -> Tensor | None:
    """Epsilon-scaling warm start: one log-domain iteration per epsilon of the schedule; returns ``f``."""
    schedule = _epsilon_schedule(cost, eps, scaling)
    if not schedule:
        return f
    f = torch.zeros_like(log_a) if f is None else f
    for eps_k in schedule:
        if symmetric:
            f = 0.5 * (f + _update_f(f, log_b, cost, eps_k))
        else:
            f = _update_f(_update_g(f, log_a, cost, eps_k), log_b, cost, eps_k)
    return f


def _plan(cost: Tensor, f: Tensor, g: Tensor, log_a: Tensor, log_b: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    r"""Plan ``P`` and ``log(P / a⊗b) = (f + g - C) / eps`` (unrolled mode).

    The log-ratio is taken from the potentials rather than from ``log P`` so
    that ``KL(P || a⊗b) = <P, log-ratio>`` stays finite where ``P`` underflows
    to zero (``0 * log 0`` would be NaN).
    """
    log_ratio = (f.unsqueeze(2) + g.unsqueeze(1) - cost) / eps
    return torch.exp(log_a.unsqueeze(2) + log_b.unsqueeze(1) + log_ratio), log_ratio


def _marginal_gradient(potential: Tensor, log_weights: Tensor) -> Tensor:
    """Zero-valued term whose gradient w.r.t. the marginal is the (detached) potential.

    By the envelope theorem ``d OT / d a = f`` at convergence (``g`` for ``b``);
    ``x - x.detach()`` is exactly 0, so the value is untouched.
    """
    inner = (potential.detach() * log_weights.exp()).sum(1)
    return inner - inner.detach()


# --------------------------------------------------------------------------- scaling-domain solver


def _tau(dtype: torch.dtype) -> float:
    """Absorption threshold on ``|log u|``, ``|log v|``.

    Kernel entries below the smallest subnormal (``e^-103`` in float32,
    ``e^-744`` in float64) are lost; with both scalings within ``e^tau`` they
    would carry a plan mass below ``e^(2 tau - 103)`` relative to ``a_i b_j``,
    i.e. ``e^-53`` for float32 with ``tau = 25``.
    """
    return 25.0 if torch.finfo(dtype).bits <= 32 else 200.0


def _kernel(cost: Tensor, f: Tensor, g: Tensor, eps: float) -> Tensor:
    """Stabilised kernel ``exp((f_i + g_j - C_ij) / eps)``: one temporary, one ``exp`` pass."""
    k = f.unsqueeze(2) + g.unsqueeze(1)
    if torch.is_grad_enabled():
        return torch.exp((k - cost) / eps)
    return k.sub_(cost).div_(eps).exp_()


@dataclass
class _State:
    """Converged scalings: ``P = diag(alpha) K diag(beta)``, ``K = exp((f0 + g0 - C) / eps)``."""

    f0: Tensor
    g0: Tensor
    kernel: Tensor
    alpha: Tensor
    beta: Tensor
    n_iter: int
    error: Tensor
    symmetric: bool

    def potentials(self, log_a: Tensor, log_b: Tensor, eps: float) -> tuple[Tensor, Tensor]:
        f = self.f0 + eps * (torch.log(self.alpha) - log_a)
        g = f if self.symmetric else self.g0 + eps * (torch.log(self.beta) - log_b)
        return f, g

    def plan(self) -> Tensor:
        return self.alpha.unsqueeze(2) * self.kernel * self.beta.unsqueeze(1)

    def row_sums(self) -> Tensor:
        """``P 1``."""
        return self.alpha * _matvec(self.kernel, self.beta)

    def col_sums(self) -> Tensor:
        """``P^T 1``."""
        return self.beta * _vecmat(self.alpha, self.kernel)


def _matvec(k: Tensor, v: Tensor) -> Tensor:
    """``K v`` for ``K (B, n, m)``, ``v (B, m)``.

    Written as the row-vector product ``v^T K^T`` on a transposed view: on CPU,
    ``bmm(K, v[..., None])`` with a batch of more than one matrix takes a slow
    path (10x slower at 2 x 512 x 512, 7x at 512 x 30 x 30), the row form does not.
    """
    return torch.bmm(v.unsqueeze(1), k.transpose(1, 2)).squeeze(1)


def _vecmat(u: Tensor, k: Tensor) -> Tensor:
    """``K^T u`` for ``K (B, n, m)``, ``u (B, n)``, as a row-vector product (no transposed copy)."""
    return torch.bmm(u.unsqueeze(1), k).squeeze(1)


def _solve(
    cost: Tensor,
    log_a: Tensor,
    log_b: Tensor,
    eps: float,
    max_iter: int,
    tol: float,
    check_every: int,
    symmetric: bool,
    relaxation: Relaxation,
    init: Tensor | None,
) -> _State:
    if symmetric:
        return _solve_symmetric(cost, log_a, eps, max_iter, tol, check_every, init)
    return _solve_alternating(cost, log_a, log_b, eps, max_iter, tol, check_every, relaxation, init)


class _Relaxer:
    """Chooses the over-relaxation ``w`` from the observed error decay (``relaxation="auto"``).

    While ``w = 1`` the error of a linearly converging Sinkhorn shrinks by
    ``r = eta^2`` per iteration. Once two consecutive per-iteration ratios agree
    (the linear regime), ``w = 2 / (1 + sqrt(1 - r))`` is fixed. If the error
    then explodes (100x), or is still above its value at the switch 10
    iterations later, the estimate was wrong (still nonlinear, or round-off):
    ``w`` returns to 1 for good.
    """

    def __init__(self, relaxation: Relaxation) -> None:
        self.auto = relaxation == "auto"
        self.omega = 1.0 if self.auto else float(relaxation)
        self.last: tuple[int, float] | None = None
        self.ratio: float | None = None
        self.switched_at: tuple[int, float] | None = None

    def observe(self, n_iter: int, error: float) -> None:
        if not self.auto or not math.isfinite(error):
            return
        if self.switched_at is not None:
            since, reference = self.switched_at
            # SOR's error is not monotone: a transient growth after the switch is
            # normal. Fall back when it explodes, or has not gone below its value
            # at the switch after a grace period.
            if error > 100.0 * reference or (n_iter - since >= 10 and error > reference):
                self.omega, self.auto = 1.0, False
            return
        if self.last is not None and self.last[1] > 0 and error > 0:
            ratio = (error / self.last[1]) ** (1.0 / (n_iter - self.last[0]))
            if self.ratio is not None and 0.2 < ratio < 1 and abs(ratio - self.ratio) < 0.25 * (1 - ratio):
                self.omega = min(_MAX_OMEGA, 2.0 / (1.0 + math.sqrt(1.0 - ratio)))
                self.switched_at = (n_iter, error)
            self.ratio = ratio
        self.last = (n_iter, error)


def _relax(old: Tensor, exact: Tensor, omega: float) -> Tensor:
    """``old^(1 - w) exact^w``, i.e. ``log`` of the scaling moved ``w`` times the exact step."""
    if omega == 1.0:
        return exact
    if torch.is_grad_enabled():  # unrolled mode: no in-place ops on recorded tensors
        return old.pow(1.0 - omega) * exact.pow(omega)
    return old.pow(1.0 - omega).mul_(exact.pow_(omega))


def _l1_error(scaling: Tensor, product: Tensor, weights: Tensor) -> Tensor:
    """``sum |scaling * product - weights|`` over the last axis: one fused op and a norm."""
    return torch.linalg.vector_norm(torch.addcmul(weights, scaling, product, value=-1.0), ord=1, dim=-1)


def _solve_alternating(
    cost: Tensor,
    log_a: Tensor,
    log_b: Tensor,
    eps: float,
    max_iter: int,
    tol: float,
    check_every: int,
    relaxation: Relaxation,
    init: Tensor | None,
) -> _State:
    """Alternating (optionally over-relaxed) Sinkhorn on scalings of an absorbed kernel.

    Each iteration: column update ``beta = b / K^T alpha`` (relaxed), then row
    update ``alpha = a / K beta`` (relaxed). The test of iteration ``k`` is on
    the pair ``(alpha_k, beta_{k+1})``: its row marginal ``alpha * K beta`` and
    column marginal ``beta * K^T alpha`` come from the two products the updates
    need anyway, so the test costs no extra product. With ``w = 1`` the columns
    are exact and the test is the row error, as in the log-domain solver;
    otherwise the L1 errors of both are added, and on success one exact column
    update is made and the row error re-tested, so the returned pair always has
    exact columns.

    Scalings are kept as ``(B, 1, n)`` row vectors so both products are
    ``bmm(row, K)`` / ``bmm(row, K^T)`` without reshaping, and the absorption
    test reads ``min``/``max`` of the scalings against bounds on ``a``, ``b``
    (conservative by ``max(a) / min(a)``): the loop is ~15 small operations
    and one host sync per iteration, which is what bounds small problems.
    """
    a, b = log_a.exp().unsqueeze(1), log_b.exp().unsqueeze(1)
    tau = _tau(cost.dtype)
    a_lo, a_hi = math.exp(-tau) * float(a.amax()), math.exp(tau) * float(a.amin())
    b_lo, b_hi = math.exp(-tau) * float(b.amax()), math.exp(tau) * float(b.amin())
    if init is None:
        # Hard c-transforms: g_j = min_i C_ij, f_i = min_j (C_ij - g_j). Then
        # K <= 1 with a 1 in every row and column: no underflow, and no
        # logsumexp pass (two min-reductions instead).
        g0 = cost.amin(1)
        f0 = (cost - g0.unsqueeze(1)).amin(2)
    else:
        f0 = init
        g0 = _update_g(f0, log_a, cost, eps)
    kernel = _kernel(cost, f0, g0, eps)
    kernel_t = kernel.transpose(1, 2)
    alpha, beta = a, b
    relaxer = _Relaxer(relaxation)
    n_iter = 0
    while True:
        t = torch.bmm(alpha, kernel)
        beta_next = _relax(beta, b / t, relaxer.omega)
        s = torch.bmm(beta_next, kernel_t)
        testing = n_iter % check_every == 0 or n_iter == max_iter
        if testing:
            error = _l1_error(alpha, s, a)
            if relaxer.omega != 1.0:
                error = error + _l1_error(beta_next, t, b)
        alpha_next = _relax(alpha, a / s, relaxer.omega)
        stats = [*torch.aminmax(alpha_next), *torch.aminmax(beta_next)]
        if testing:
            stats.append(error.amax())
        stats = torch.stack(stats).tolist()
        if testing:
            worst = stats[4]
            if worst < tol or n_iter == max_iter:
                if relaxer.omega != 1.0:  # exact columns, re-test the rows
                    beta_next = b / t
                    error = _l1_error(alpha, torch.bmm(beta_next, kernel_t), a)
                    if float(error.detach().amax()) >= tol and n_iter < max_iter:
                        beta = beta_next
                        alpha = a / torch.bmm(beta, kernel_t)
                        n_iter += 1
                        continue
                return _State(f0, g0, kernel, alpha.squeeze(1), beta_next.squeeze(1), n_iter, error.squeeze(1), False)
            relaxer.observe(n_iter, worst)
        if not all(map(math.isfinite, stats)):
            # A row or column of K underflowed: one exact log-domain sweep from the last good state.
            f = f0 + eps * (torch.log(alpha.squeeze(1)) - log_a)
            g0 = _update_g(f, log_a, cost, eps)
            f0 = _update_f(g0, log_b, cost, eps)
            kernel = _kernel(cost, f0, g0, eps)
            kernel_t = kernel.transpose(1, 2)
            alpha, beta = a, b
        elif stats[0] < a_lo or stats[1] > a_hi or stats[2] < b_lo or stats[3] > b_hi:
            f0 = f0 + eps * (torch.log(alpha_next.squeeze(1)) - log_a)
            g0 = g0 + eps * (torch.log(beta_next.squeeze(1)) - log_b)
            kernel = _kernel(cost, f0, g0, eps)
            kernel_t = kernel.transpose(1, 2)
            alpha, beta = a, b
        else:
            alpha, beta = alpha_next, beta_next
        n_iter += 1


def _solve_symmetric(
    cost: Tensor, log_a: Tensor, eps: float, max_iter: int, tol: float, check_every: int, init: Tensor | None
) -> _State:
    """Averaged symmetric update ``h <- (h + T(h)) / 2`` in the scaling domain.

    With ``P = diag(z) K diag(z)``, ``K = exp((h0_i + h0_j - C_ij) / eps)``,
    the update reads ``z <- sqrt(z * a / K z)``; the row error of ``P(z, z)`` is
    ``|z * K z - a|``, from the same product. Starting from ``h0 = 0`` the
    kernel's diagonal is ``exp(-C_ii / eps) = 1`` for a distance-like cost, so
    no row can underflow. ``K`` is symmetric, so ``K z`` is the row product
    ``bmm(z, K)`` with ``z`` kept as ``(B, 1, n)``.
    """
    a = log_a.exp().unsqueeze(1)
    tau = _tau(cost.dtype)
    lo, hi = math.exp(-tau) * float(a.amax()), math.exp(tau) * float(a.amin())
    h0 = torch.zeros_like(log_a) if init is None else init
    kernel = _kernel(cost, h0, h0, eps)
    z = a
    n_iter = 0
    while True:
        s = torch.bmm(z, kernel)
        testing = n_iter % check_every == 0 or n_iter == max_iter
        z_next = torch.div(z, s).mul_(a).sqrt_()
        stats = list(torch.aminmax(z_next))
        if testing:
            error = _l1_error(z, s, a)
            stats.append(error.amax())
        stats = torch.stack(stats).tolist()
        if testing and (stats[2] < tol or n_iter == max_iter):
            z = z.squeeze(1)
            return _State(h0, h0, kernel, z, z, n_iter, error.squeeze(1), True)
        if not all(map(math.isfinite, stats)):
            h = h0 + eps * (torch.log(z.squeeze(1)) - log_a)
            h0 = 0.5 * (h + _update_f(h, log_a, cost, eps))
            kernel = _kernel(cost, h0, h0, eps)
            z = a
        elif stats[0] < lo or stats[1] > hi:
            h0 = h0 + eps * (torch.log(z_next.squeeze(1)) - log_a)
            kernel = _kernel(cost, h0, h0, eps)
            z = a
        else:
            z = z_next
        n_iter += 1


# --------------------------------------------------------------------------- envelope divergence


@dataclass
class _Settings:
    epsilon: float
    max_iter: int
    tol: float
    check_every: int
    scaling: float | None
    relaxation: Relaxation
    warm_start: SinkhornWarmStart | None


def _ot_value(state: _State, log_a: Tensor, log_b: Tensor, eps: float) -> Tensor:
    """``<f, P 1> + <g, P^T 1>``, the entropic value ``<P, C> + eps KL(P || a⊗b)`` of the plan."""
    f, g = state.potentials(log_a, log_b, eps)
    row = state.row_sums()
    if state.symmetric:
        return 2.0 * (f * row).sum(1)
    return (f * row).sum(1) + (g * state.col_sums()).sum(1)


def _transport_gradient(state: _State, x: Tensor, y: Tensor, transpose: bool) -> Tensor:
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
    def forward(ctx, x: Tensor, y: Tensor, settings: _Settings) -> Tensor:  # type: ignore[override]
        eps = settings.epsilon
        batch, n, m = x.shape[0], x.shape[1], y.shape[1]
        log_a = torch.full((batch, n), -math.log(n), dtype=x.dtype, device=x.device)
        log_b = torch.full((batch, m), -math.log(m), dtype=x.dtype, device=x.device)
        key = (tuple(x.shape), tuple(y.shape), x.dtype, x.device, eps)
        warm = settings.warm_start.get(key) if settings.warm_start is not None else None
        options = (settings.max_iter, settings.tol, settings.check_every)

        cost_xy = squared_euclidean_cost(x, y)
        f_xy = _anneal(cost_xy, log_a, log_b, eps, settings.scaling, warm[0] if warm else None, False)
        xy = _solve_alternating(cost_xy, log_a, log_b, eps, *options, settings.relaxation, f_xy)
        if n == m:  # both self-transports in one batched solve
            points = torch.cat([x, y])
            cost = squared_euclidean_cost(points, points)
            log_w = torch.cat([log_a, log_b])
            h = torch.cat([warm[1], warm[2]]) if warm else None
            h = _anneal(cost, log_w, log_w, eps, settings.scaling, h, True)
            both = _solve_symmetric(cost, log_w, eps, *options, h)
            value_xx, value_yy = _ot_value(both, log_w, log_w, eps).split(batch)
            xx = yy = both
        else:
            cost_xx, cost_yy = squared_euclidean_cost(x, x), squared_euclidean_cost(y, y)
            h_x = _anneal(cost_xx, log_a, log_a, eps, settings.scaling, warm[1] if warm else None, True)
            h_y = _anneal(cost_yy, log_b, log_b, eps, settings.scaling, warm[2] if warm else None, True)
            xx = _solve_symmetric(cost_xx, log_a, eps, *options, h_x)
            yy = _solve_symmetric(cost_yy, log_b, eps, *options, h_y)
            value_xx, value_yy = _ot_value(xx, log_a, log_a, eps), _ot_value(yy, log_b, log_b, eps)
        divergence = _ot_value(xy, log_a, log_b, eps) - 0.5 * (value_xx + value_yy)
        if settings.warm_start is not None:
            f_xy, _ = xy.potentials(log_a, log_b, eps)
            if xx is yy:
                h_all, _ = both.potentials(log_w, log_w, eps)
                h_x, h_y = h_all.split(batch)
            else:
                h_x, _ = xx.potentials(log_a, log_a, eps)
                h_y, _ = yy.potentials(log_b, log_b, eps)
            settings.warm_start.put(key, (f_xy, h_x, h_y), max(xy.n_iter, xx.n_iter, yy.n_iter))
        ctx.states = (xy, xx, yy)
        ctx.batch = batch
        ctx.save_for_backward(x, y)
        return divergence

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # type: ignore[override]
        x, y = ctx.saved_tensors
        xy, xx, yy = ctx.states
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
        ctx.states = None
        return grad_x, grad_y, None


def _unbatch(result: SinkhornResult) -> SinkhornResult:
    """Drop the batch axis added for a single ``(n, m)`` problem."""
    return SinkhornResult(
        value=result.value.squeeze(0),
        value_linear=result.value_linear.squeeze(0),
        plan=result.plan.squeeze(0),
        f=result.f.squeeze(0),
        g=result.g.squeeze(0),
        n_iter=result.n_iter,
        marginal_error=result.marginal_error.squeeze(0),
    )
