r"""Entropic optimal transport by absorption-stabilised Sinkhorn, batched, in torch.

Solves (Eq. 6-7 of MT-PKDOT)

.. math::

    \mathrm{OT}_\varepsilon(a, b; C) = \min_{P \in \Pi(a, b)}
        \langle P, C \rangle + \varepsilon\, \mathrm{KL}(P \,\|\, a \otimes b)

with Sinkhorn's iterations (Cuturi 2013) on the dual potentials ``f``, ``g``, in units of
the cost (Feydy et al. 2019); the plan is ``P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)``.
The iterations update scalings of the stabilised kernel ``K = exp((f0 + g0 - C) / eps)``
and absorb them into ``f0``, ``g0`` when they grow (Schmitzer 2019, POT's
``sinkhorn_stabilized``), over-relaxed (Thibault et al. 2021, Lehmann et al. 2021), with
Newton phases against slow tails (:mod:`privkd.losses.ot.newton`). Why: each half-step is then a matrix-vector product instead of a ``logsumexp`` pass over
``C``, with the log-domain answer. Design and measurements: ``docs/sinkhorn.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from privkd.losses.ot.newton import l1_error, newton_phase
from privkd.losses.ot.options import Relaxation, SinkhornOptions

__all__ = ["SinkhornResult", "sinkhorn_stabilized"]

# Largest over-relaxation used by ``relaxation="auto"``: the optimum tends to 2
# as eta -> 1 but the error then oscillates with modulus w - 1 and the
# estimate of eta is noisy, so it is capped.
_MAX_OMEGA = 1.8


@dataclass
class SinkhornResult:
    r"""Output of :func:`sinkhorn_stabilized`; batched fields have a leading batch axis.

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


def sinkhorn_stabilized(
    cost: Tensor,
    a: Tensor | None = None,
    b: Tensor | None = None,
    *,
    options: SinkhornOptions,
    symmetric: bool = False,
    init: Tensor | None = None,
) -> SinkhornResult:
    r"""Solve entropic OT (Eq. 6-7 of MT-PKDOT) with absorption-stabilised Sinkhorn.

    Args:
        cost: cost matrix ``(n, m)`` or a batch of them ``(B, n, m)``.
        a: row marginal ``(n,)`` / ``(B, n)``, non-negative, summing to 1;
            uniform when omitted.
        b: column marginal ``(m,)`` / ``(B, m)``; uniform when omitted.
        options: epsilon, stopping rule, gradient mode, epsilon-scaling and
            over-relaxation; see :class:`SinkhornOptions`.
        symmetric: the problem is a self-transport (``cost`` symmetric, ``b``
            omitted so ``b = a``), as in the debiasing terms of
            :func:`~privkd.losses.ot.sinkhorn_divergence`. Then ``f = g = h`` and
            the averaged update ``h <- (h + T(h)) / 2`` of Feydy et al. 2019 is
            used, which contracts by at least 1/2 per step near the fixed point
            for the squared-distance cost, where the alternating one crawls.
        init: starting row potential ``f`` (``(n,)`` / ``(B, n)``), e.g. the
            ``f`` of a previous solve of a nearby problem (warm start); zero
            potentials (hard c-transforms for the alternating problem) when
            omitted. The answer does not depend on it, only the iterations do.

    Returns:
        A :class:`SinkhornResult`.
    """
    eps = options.epsilon
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
    unrolled = options.grad == "unrolled" and torch.is_grad_enabled()
    with torch.set_grad_enabled(unrolled):
        init = _anneal(cost_b, log_a, log_b, options, init, symmetric)
        if symmetric:
            state = _solve_symmetric(cost_b, log_a, options, init)
        else:
            state = _solve_alternating(cost_b, log_a, log_b, options, init)
        f, g = state.potentials(log_a, log_b, eps)
        if unrolled:
            plan, log_ratio = _plan(cost_b, f, g, log_a, log_b, eps)
    if unrolled:
        value_linear = (plan * cost_b).sum((1, 2))
        value = value_linear + eps * (plan * log_ratio).sum((1, 2))
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
    cost: Tensor, log_a: Tensor, log_b: Tensor, options: SinkhornOptions, f: Tensor | None, symmetric: bool
) -> Tensor | None:
    """Epsilon-scaling warm start: one log-domain iteration per epsilon of the schedule; returns ``f``."""
    schedule = _epsilon_schedule(cost, options.epsilon, options.scaling)
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

    def restart(self) -> None:
        """Forget the error history (the iterate jumped, e.g. by a Newton step); a fixed ``w`` stays."""
        self.last, self.ratio = None, None

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


def _solve_alternating(
    cost: Tensor, log_a: Tensor, log_b: Tensor, options: SinkhornOptions, init: Tensor | None
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

    Scalings are ``(B, 1, n)`` row vectors so both products are ``bmm(row, K)``
    / ``bmm(row, K^T)`` without reshaping, and the absorption test reads the
    scalings' ``min``/``max`` against bounds on ``a``, ``b`` (conservative by
    ``max(a) / min(a)``): ~15 small operations and one host sync per iteration.
    """
    eps, max_iter, tol, check_every = options.epsilon, options.max_iter, options.tol, options.check_every
    # Newton's steps are not recorded by autograd: in unrolled mode only the iterations are.
    newton = None if torch.is_grad_enabled() else options.newton
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
    relaxer = _Relaxer(options.relaxation)
    n_iter = 0
    while True:
        t = torch.bmm(alpha, kernel)
        beta_next = _relax(beta, b / t, relaxer.omega)
        s = torch.bmm(beta_next, kernel_t)
        testing = n_iter % check_every == 0 or n_iter == max_iter
        if testing:
            error = l1_error(alpha, s, a)
            if relaxer.omega != 1.0:
                error = error + l1_error(beta_next, t, b)
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
                    error = l1_error(alpha, torch.bmm(beta_next, kernel_t), a)
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
            if newton and (n_iter + 1) % newton == 0:
                alpha64 = newton_phase(kernel, alpha, a, b, tol)
                beta64 = b.double() / torch.bmm(alpha64, kernel.double())  # exact columns: the next test sees Newton's error
                lo, hi, beta_lo, beta_hi = torch.stack([*torch.aminmax(alpha64), *torch.aminmax(beta64)]).tolist()
                if a_lo <= lo and hi <= a_hi and b_lo <= beta_lo and beta_hi <= b_hi:
                    alpha, beta = alpha64.to(alpha.dtype), beta64.to(beta.dtype)
                else:  # the step left the range the scalings may have: absorb it into the potentials
                    f0 = f0 + (eps * (torch.log(alpha64.squeeze(1)) - log_a.double())).to(f0.dtype)
                    g0 = g0 + (eps * (torch.log(beta64.squeeze(1)) - log_b.double())).to(g0.dtype)
                    kernel = _kernel(cost, f0, g0, eps)
                    kernel_t = kernel.transpose(1, 2)
                    alpha, beta = a, b
                relaxer.restart()
        n_iter += 1


def _solve_symmetric(cost: Tensor, log_a: Tensor, options: SinkhornOptions, init: Tensor | None) -> _State:
    """Averaged symmetric update ``h <- (h + T(h)) / 2`` in the scaling domain.

    With ``P = diag(z) K diag(z)``, ``K = exp((h0_i + h0_j - C_ij) / eps)``,
    the update reads ``z <- sqrt(z * a / K z)``; the row error of ``P(z, z)`` is
    ``|z * K z - a|``, from the same product. Starting from ``h0 = 0`` the
    kernel's diagonal is ``exp(-C_ii / eps) = 1`` for a distance-like cost, so
    no row can underflow. ``K`` is symmetric, so ``K z`` is the row product
    ``bmm(z, K)`` with ``z`` kept as ``(B, 1, n)``.
    """
    eps, max_iter, tol, check_every = options.epsilon, options.max_iter, options.tol, options.check_every
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
            error = l1_error(z, s, a)
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


def _unbatch(result: SinkhornResult) -> SinkhornResult:
    """Drop the batch axis added for a single ``(n, m)`` problem."""
    names = ("value", "value_linear", "plan", "f", "g", "marginal_error")
    return SinkhornResult(n_iter=result.n_iter, **{name: getattr(result, name).squeeze(0) for name in names})
