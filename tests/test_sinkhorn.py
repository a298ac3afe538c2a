"""Stabilised Sinkhorn and the Sinkhorn divergence against POT and geomloss, in float64 unless stated."""

from __future__ import annotations

import dataclasses
import math
import warnings

import ot
import pytest
import torch
from geomloss import SamplesLoss

from privkd.losses.ot import (
    SinkhornConvergenceWarning,
    SinkhornOptions,
    SinkhornWarmStart,
    sinkhorn_divergence,
    sinkhorn_stabilized,
    squared_euclidean_cost,
)

F64 = torch.float64


def tight(epsilon: float, **settings) -> SinkhornOptions:
    """Options that run the solver to round-off, so results compare with POT's at 1e-6 and below."""
    return SinkhornOptions(epsilon=epsilon, tol=1e-12, max_iter=100_000, **settings)


def random_simplex(n: int, generator: torch.Generator) -> torch.Tensor:
    """Non-uniform weights bounded away from zero."""
    w = torch.rand(n, dtype=F64, generator=generator) + 0.2
    return w / w.sum()


def random_problem(n: int, m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, m, dtype=F64, generator=gen), random_simplex(n, gen), random_simplex(m, gen)


@pytest.mark.parametrize(
    ("n", "m", "eps", "seed"),
    [(5, 7, 0.1, 0), (20, 13, 0.05, 1), (32, 32, 0.1, 2), (50, 9, 0.05, 3), (3, 40, 0.05, 4)],
)
def test_value_matches_pot_sinkhorn_log(n: int, m: int, eps: float, seed: int) -> None:
    cost, a, b = random_problem(n, m, seed)
    ours = sinkhorn_stabilized(cost, a, b, options=tight(eps))
    pot = ot.solve(cost, a, b, reg=eps, method="sinkhorn_log", tol=1e-12, max_iter=100_000)
    assert ours.value.item() == pytest.approx(pot.value.item(), rel=1e-6)
    assert ours.value_linear.item() == pytest.approx(pot.value_linear.item(), rel=1e-6)
    torch.testing.assert_close(ours.plan, pot.plan, rtol=1e-6, atol=1e-10)


def test_uniform_marginals_are_the_default() -> None:
    cost, _, _ = random_problem(11, 6, seed=5)
    ours = sinkhorn_stabilized(cost, options=tight(0.05))
    pot = ot.sinkhorn2(torch.full((11,), 1 / 11, dtype=F64), torch.full((6,), 1 / 6, dtype=F64), cost, 0.05,
                       method="sinkhorn_log", stopThr=1e-12, numItermax=100_000)
    # sinkhorn2 returns <P, C>; the entropic term is in ours.value only.
    assert ours.value_linear.item() == pytest.approx(pot.item(), rel=1e-6)


def test_envelope_gradient_wrt_cost_matches_finite_differences() -> None:
    cost, a, b = random_problem(6, 5, seed=6)
    eps, h = 0.1, 1e-6
    cost.requires_grad_(True)
    result = sinkhorn_stabilized(cost, a, b, options=tight(eps))
    (grad,) = torch.autograd.grad(result.value, cost)
    torch.testing.assert_close(grad, result.plan, rtol=0, atol=0)  # d value / d C is the plan, bit for bit

    def value(c: torch.Tensor) -> float:
        return sinkhorn_stabilized(c, a, b, options=tight(eps)).value.item()

    fd = torch.zeros_like(grad)
    base = cost.detach()
    for i in range(6):
        for j in range(5):
            step = torch.zeros_like(base)
            step[i, j] = h
            fd[i, j] = (value(base + step) - value(base - step)) / (2 * h)
    torch.testing.assert_close(grad, fd, rtol=1e-5, atol=1e-8)


def test_envelope_gradient_wrt_marginal_matches_finite_differences() -> None:
    """Along a mass-preserving direction (the simplex tangent) d value = <f, d a>."""
    cost, a, b = random_problem(6, 5, seed=7)
    eps, h = 0.05, 1e-6
    direction = torch.tensor([1.0, -1.0, 0.0, 0.5, 0.0, -0.5], dtype=F64)
    a.requires_grad_(True)
    (grad,) = torch.autograd.grad(sinkhorn_stabilized(cost, a, b, options=tight(eps)).value, a)
    a0 = a.detach()
    plus = sinkhorn_stabilized(cost, a0 + h * direction, b, options=tight(eps)).value.item()
    minus = sinkhorn_stabilized(cost, a0 - h * direction, b, options=tight(eps)).value.item()
    assert (grad @ direction).item() == pytest.approx((plus - minus) / (2 * h), rel=1e-5)


@pytest.mark.parametrize(
    ("dtype", "eps", "tol"),
    # float32 resolves potentials to ~1e-7 * |C| / eps: at eps = 1e-3 its marginal error floors near 1e-5.
    [(torch.float32, 1e-2, 1e-6), (F64, 1e-2, 1e-6), (torch.float32, 1e-3, 1e-4), (F64, 1e-3, 1e-6)],
)
def test_small_epsilon_is_finite_and_satisfies_marginals(dtype: torch.dtype, eps: float, tol: float) -> None:
    """Costs in [0, 1] at eps = 1e-3 put exp(-C / eps) down to e^-880: standard Sinkhorn underflows here."""
    gen = torch.Generator().manual_seed(8)
    x, y = torch.rand(40, 2, dtype=dtype, generator=gen), torch.rand(30, 2, dtype=dtype, generator=gen)
    cost = squared_euclidean_cost(x, y)
    assert 0 <= cost.min() and cost.max() <= 1
    result = sinkhorn_stabilized(cost, options=SinkhornOptions(epsilon=eps, tol=tol, max_iter=20_000))
    assert result.n_iter < 20_000
    assert torch.isfinite(result.plan).all() and torch.isfinite(result.value)
    assert torch.isfinite(result.f).all() and torch.isfinite(result.g).all()
    assert result.marginal_error.item() < tol
    assert (result.plan.sum(1) - 1 / 40).abs().sum().item() < 2 * tol  # re-summed in working precision
    torch.testing.assert_close(result.plan.sum(0), torch.full((30,), 1 / 30, dtype=dtype), rtol=0, atol=1e-6)
    # The entropic value lies between the linear cost and the cost of the independent coupling a ⊗ b.
    assert 0 < result.value_linear.item() <= result.value.item() <= cost.mean().item()


@pytest.mark.parametrize("symmetric", [False, True])
def test_epsilon_scaling_gives_the_same_answer(symmetric: bool) -> None:
    gen = torch.Generator().manual_seed(9)
    x = torch.rand(30, 2, dtype=F64, generator=gen)
    y = x if symmetric else torch.rand(25, 2, dtype=F64, generator=gen)
    cost = squared_euclidean_cost(x, y)
    plain = sinkhorn_stabilized(cost, options=tight(1e-2), symmetric=symmetric)
    annealed = sinkhorn_stabilized(cost, options=tight(1e-2, scaling=0.7), symmetric=symmetric)
    assert annealed.value.item() == pytest.approx(plain.value.item(), rel=1e-10)


def test_symmetric_self_transport_matches_pot_and_converges_fast() -> None:
    """Alternating updates stall near 1e-7 marginal error after 1e5 iterations on this self-transport
    (POT's too, hence its looser tol); the averaged update reaches 1e-12 in tens."""
    gen = torch.Generator().manual_seed(15)
    x = torch.rand(40, 5, dtype=F64, generator=gen) * 2 - 1
    cost = squared_euclidean_cost(x, x)
    ours = sinkhorn_stabilized(cost, options=tight(0.05), symmetric=True)
    pot = ot.solve(cost, reg=0.05, method="sinkhorn_log", tol=1e-7, max_iter=100_000)
    assert ours.n_iter <= 100
    assert ours.value.item() == pytest.approx(pot.value.item(), rel=1e-7)
    torch.testing.assert_close(ours.f, ours.g)
    with pytest.raises(ValueError, match="symmetric"):
        sinkhorn_stabilized(cost, b=torch.full((40,), 1 / 40, dtype=F64), options=tight(0.05), symmetric=True)


def test_batched_call_equals_per_problem_calls() -> None:
    gen = torch.Generator().manual_seed(10)
    cost = torch.rand(4, 9, 7, dtype=F64, generator=gen)
    a = torch.stack([random_simplex(9, gen) for _ in range(4)])
    b = torch.stack([random_simplex(7, gen) for _ in range(4)])
    batched = sinkhorn_stabilized(cost, a, b, options=tight(0.05))
    assert batched.value.shape == (4,) and batched.plan.shape == (4, 9, 7)
    for i in range(4):
        single = sinkhorn_stabilized(cost[i], a[i], b[i], options=tight(0.05))
        assert batched.value[i].item() == pytest.approx(single.value.item(), rel=1e-10)
        torch.testing.assert_close(batched.plan[i], single.plan, rtol=1e-8, atol=1e-12)
    assert (batched.marginal_error < 1e-12).all()


def test_unrolled_and_envelope_gradients_agree_at_convergence() -> None:
    cost, a, b = random_problem(8, 6, seed=11)
    grads = {}
    for mode in ("envelope", "unrolled"):
        c = cost.clone().requires_grad_(True)
        value = sinkhorn_stabilized(c, a, b, options=tight(0.1, grad=mode)).value
        (grads[mode],) = torch.autograd.grad(value, c)
    torch.testing.assert_close(grads["unrolled"], grads["envelope"], rtol=1e-6, atol=1e-10)


def test_divergence_gradients_agree_between_modes() -> None:
    gen = torch.Generator().manual_seed(12)
    x0 = torch.randn(10, 3, dtype=F64, generator=gen)
    y = torch.randn(12, 3, dtype=F64, generator=gen)
    grads = {}
    for mode in ("envelope", "unrolled"):
        x = x0.clone().requires_grad_(True)
        (grads[mode],) = torch.autograd.grad(sinkhorn_divergence(x, y, options=tight(0.1, grad=mode)), x)
    torch.testing.assert_close(grads["unrolled"], grads["envelope"], rtol=1e-6, atol=1e-10)


def test_squared_euclidean_cost_is_half_squared_distance() -> None:
    x = torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=F64)
    y = torch.tensor([[3.0, 4.0]], dtype=F64)
    torch.testing.assert_close(squared_euclidean_cost(x, y), torch.tensor([[12.5], [4.0]], dtype=F64))


@pytest.mark.parametrize("eps", [0.1, 0.05])
def test_divergence_matches_geomloss(eps: float) -> None:
    """geomloss anneals epsilon with one update per step and stops at the target, so it lags the
    fixed point by an amount that shrinks with (1 - scaling): measured ~1e-3 relative at scaling 0.99
    and ~1e-5 at 0.999 on this problem. At 0.999 a 1e-4 relative tolerance separates that lag from any
    real disagreement (a wrong cost factor or missing debias term is off by > 10%)."""
    gen = torch.Generator().manual_seed(13)
    x = torch.rand(3, 40, 5, dtype=F64, generator=gen) * 2 - 1
    y = torch.rand(3, 50, 5, dtype=F64, generator=gen) * 2 - 1
    ours = sinkhorn_divergence(x, y, options=tight(eps))
    loss = SamplesLoss("sinkhorn", p=2, blur=math.sqrt(eps), scaling=0.999, debias=True, backend="tensorized")
    torch.testing.assert_close(ours, loss(x, y), rtol=1e-4, atol=0)


def test_divergence_is_zero_on_identical_clouds_and_positive_otherwise() -> None:
    gen = torch.Generator().manual_seed(14)
    x = torch.randn(2, 16, 4, generator=gen)
    assert torch.equal(sinkhorn_divergence(x, x.clone(), options=SinkhornOptions(epsilon=0.01)), torch.zeros(2))
    # A cloud against its translate is weakly coupled at eps 0.01 (a near-permutation plan): plain
    # Sinkhorn is still at 7e-7 after 1e5 iterations; after epsilon-scaling one iteration suffices.
    shifted = sinkhorn_divergence(x, x + 0.5, options=SinkhornOptions(epsilon=0.01, scaling=0.5))
    # A translation by t costs |t|^2 / 2 = 4 * 0.25 / 2 = 0.5 in the unregularised limit.
    assert (shifted > 0.4).all() and (shifted < 0.55).all()


def test_divergence_handles_unbatched_clouds_and_checks_shapes() -> None:
    x = torch.zeros(5, 2, dtype=F64)
    y = torch.ones(7, 2, dtype=F64)
    options = SinkhornOptions(epsilon=0.1)
    assert sinkhorn_divergence(x, y, options=options).shape == ()
    assert sinkhorn_divergence(x, y, options=options).item() == pytest.approx(1.0, rel=1e-6)  # |(1,1)|^2 / 2
    with pytest.raises(ValueError, match="same batch axes"):
        sinkhorn_divergence(x, torch.ones(7, 3, dtype=F64), options=options)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"epsilon": 0.0}, "epsilon"), ({"epsilon": 0.1, "grad": "implicit"}, "grad"),
     ({"epsilon": 0.1, "scaling": 1.5}, "scaling"), ({"epsilon": 0.1, "max_iter": 0}, "max_iter"),
     ({"epsilon": 0.1, "relaxation": 2.0}, "relaxation"), ({"epsilon": 0.1, "newton": 0}, "newton"),
     ({"epsilon": 0.1, "newton": 2.5}, "newton")],
)
def test_invalid_options_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SinkhornOptions(**kwargs)


@pytest.mark.parametrize("relaxation", [1.0, 1.5, "auto"])
def test_over_relaxation_gives_the_same_answer(relaxation: float | str) -> None:
    """The over-relaxed iteration has the same fixed point; the returned plan still has exact columns."""
    cost, a, b = random_problem(30, 20, seed=16)
    plain = sinkhorn_stabilized(cost, a, b, options=tight(0.01, relaxation=1.0))
    relaxed = sinkhorn_stabilized(cost, a, b, options=tight(0.01, relaxation=relaxation))
    assert relaxed.value.item() == pytest.approx(plain.value.item(), rel=1e-10)
    torch.testing.assert_close(relaxed.plan.sum(0), b, rtol=0, atol=1e-14)
    assert relaxed.marginal_error.item() < 1e-12


def test_auto_relaxation_saves_iterations_on_a_slow_problem() -> None:
    gen = torch.Generator().manual_seed(17)
    x = torch.randn(60, 3, dtype=F64, generator=gen) * 0.3
    y = torch.randn(50, 3, dtype=F64, generator=gen) * 0.3 + 0.2
    cost = squared_euclidean_cost(x, y)
    options = SinkhornOptions(epsilon=0.005, tol=1e-9, max_iter=10_000)  # relaxation="auto"
    plain = sinkhorn_stabilized(cost, options=dataclasses.replace(options, relaxation=1.0))
    auto = sinkhorn_stabilized(cost, options=options)
    assert auto.n_iter < plain.n_iter
    assert auto.value.item() == pytest.approx(plain.value.item(), rel=1e-8)


def two_clusters(separation: float, excess: float, dtype: torch.dtype = F64) -> tuple[torch.Tensor, torch.Tensor]:
    """Cost and column marginal of two clusters of 16 points against two of 16, the left column cluster
    heavier by ``excess``: at eps = 0.01 the plan is nearly block-diagonal and ``excess`` must cross
    between the blocks through exponentially small entries, Sinkhorn's slow mode (1 - eta^2 ~ 1e-6)."""
    gen = torch.Generator().manual_seed(24)
    offset = torch.tensor([separation, 0.0], dtype=F64)
    x = torch.cat([torch.randn(16, 2, dtype=F64, generator=gen) * 0.05,
                   torch.randn(16, 2, dtype=F64, generator=gen) * 0.05 + offset])
    y = torch.cat([torch.randn(16, 2, dtype=F64, generator=gen) * 0.05,
                   torch.randn(16, 2, dtype=F64, generator=gen) * 0.05 + offset])
    b = torch.cat([torch.full((16,), (0.5 + excess) / 16, dtype=F64), torch.full((16,), (0.5 - excess) / 16, dtype=F64)])
    return squared_euclidean_cost(x, y).to(dtype), b.to(dtype)


@pytest.mark.parametrize("separation", [0.6, 1.0])
def test_newton_phases_remove_the_slow_tail_and_keep_the_answer(separation: float) -> None:
    """Iterations alone need thousands of iterations; with a Newton phase every 25 the solve ends within a few
    phases, at the same fixed point (value and plan to round-off of the tolerance)."""
    cost, b = two_clusters(separation, excess=1e-3)
    plain = sinkhorn_stabilized(cost, b=b, options=tight(0.01, newton=None))
    newton = sinkhorn_stabilized(cost, b=b, options=tight(0.01, newton=25))
    assert plain.n_iter > 4000 and newton.n_iter <= 100
    assert newton.marginal_error.item() < 1e-12
    assert newton.value.item() == pytest.approx(plain.value.item(), rel=1e-10)
    torch.testing.assert_close(newton.plan, plain.plan, rtol=0, atol=1e-12)
    # Potentials are defined up to f + c, g - c: compare them centred.
    torch.testing.assert_close(newton.f - newton.f.mean(), plain.f - plain.f.mean(), rtol=0, atol=1e-8)
    torch.testing.assert_close(newton.f[:, None] + newton.g, plain.f[:, None] + plain.g, rtol=0, atol=1e-8)


def test_newton_phases_in_float32_reach_the_loss_tolerance() -> None:
    cost, b = two_clusters(0.6, excess=1e-3, dtype=torch.float32)
    options = SinkhornOptions(epsilon=0.01, tol=1e-5, max_iter=10_000)  # newton=25
    result = sinkhorn_stabilized(cost, b=b, options=options)
    plain = sinkhorn_stabilized(cost, b=b, options=dataclasses.replace(options, newton=None))
    assert result.n_iter <= 100 < plain.n_iter and result.marginal_error.item() < 1e-5
    reference = sinkhorn_stabilized(cost.double(), b=b.double(), options=tight(0.01))
    assert result.value.item() == pytest.approx(reference.value.item(), rel=1e-5)


def test_newton_phases_leave_batched_problems_independent() -> None:
    """A batch mixing the slow two-cluster problem with easy random ones: each answer equals its own solve."""
    cost, b = two_clusters(0.6, excess=1e-3)
    gen = torch.Generator().manual_seed(25)
    costs = torch.stack([cost, torch.rand(32, 32, dtype=F64, generator=gen), torch.rand(32, 32, dtype=F64, generator=gen)])
    marginals = torch.stack([b, torch.full((32,), 1 / 32, dtype=F64), torch.full((32,), 1 / 32, dtype=F64)])
    batched = sinkhorn_stabilized(costs, b=marginals, options=tight(0.01))
    assert (batched.marginal_error < 1e-12).all()
    for i in range(3):
        single = sinkhorn_stabilized(costs[i], b=marginals[i], options=tight(0.01))
        assert batched.value[i].item() == pytest.approx(single.value.item(), rel=1e-10)


def test_init_potential_gives_the_same_answer() -> None:
    cost, a, b = random_problem(25, 15, seed=18)
    cold = sinkhorn_stabilized(cost, a, b, options=tight(0.02))
    warm = sinkhorn_stabilized(cost * 1.01, a, b, options=tight(0.02))
    restarted = sinkhorn_stabilized(cost * 1.01, a, b, options=tight(0.02), init=cold.f)
    assert restarted.value.item() == pytest.approx(warm.value.item(), rel=1e-10)
    assert restarted.n_iter <= warm.n_iter


def test_float32_absorption_at_tiny_epsilon_matches_float64() -> None:
    """Costs up to ~8 at eps = 1e-3: C / eps reaches 8000, far past float32's exp range, so the
    scalings must be absorbed (and rows re-stabilised) many times; the value must still agree."""
    gen = torch.Generator().manual_seed(19)
    x, y = torch.rand(50, 2, generator=gen) * 4, torch.rand(40, 2, generator=gen) * 4
    options32 = SinkhornOptions(epsilon=1e-3, tol=1e-4, max_iter=20_000)
    options64 = SinkhornOptions(epsilon=1e-3, tol=1e-10, max_iter=100_000)
    r32 = sinkhorn_stabilized(squared_euclidean_cost(x, y), options=options32)
    r64 = sinkhorn_stabilized(squared_euclidean_cost(x.double(), y.double()), options=options64)
    assert torch.isfinite(r32.plan).all() and r32.marginal_error.item() < 1e-4
    assert r32.value.item() == pytest.approx(r64.value.item(), rel=1e-4)


@pytest.mark.parametrize(("n", "m"), [(12, 12), (10, 12)])
def test_divergence_closed_form_gradient_matches_unrolled_for_both_clouds(n: int, m: int) -> None:
    """n == m takes the stacked self-transport path, n != m the separate one; both gradients checked."""
    gen = torch.Generator().manual_seed(20)
    x0 = torch.randn(3, n, 2, dtype=F64, generator=gen)
    y0 = torch.randn(3, m, 2, dtype=F64, generator=gen)
    grads = {}
    for mode in ("envelope", "unrolled"):
        x, y = x0.clone().requires_grad_(True), y0.clone().requires_grad_(True)
        value = sinkhorn_divergence(x, y, options=tight(0.1, grad=mode))
        grads[mode] = torch.autograd.grad((value * torch.tensor([1.0, 2.0, -0.5], dtype=F64)).sum(), (x, y))
    for unrolled, envelope in zip(grads["unrolled"], grads["envelope"]):
        torch.testing.assert_close(envelope, unrolled, rtol=1e-6, atol=1e-10)


def test_warm_start_reuses_potentials_and_keeps_the_answer() -> None:
    gen = torch.Generator().manual_seed(21)
    x = torch.randn(40, 5, dtype=F64, generator=gen)
    y = torch.randn(40, 5, dtype=F64, generator=gen) + 0.5
    # Newton phases off: they finish both solves at their first phase, which would hide what the warm start saves.
    cache, options = SinkhornWarmStart(), SinkhornOptions(epsilon=0.5, tol=1e-10, newton=None)
    sinkhorn_divergence(x, y, options=options, warm_start=cache)
    cold_iters = cache.n_iter
    assert cold_iters < 1000  # converged, so both answers below are at tolerance
    assert cache.potentials is not None
    moved = y + 1e-3 * torch.randn(40, 5, dtype=F64, generator=gen)
    warm = sinkhorn_divergence(x, moved, options=options, warm_start=cache)
    cold = sinkhorn_divergence(x, moved, options=options)
    assert warm.item() == pytest.approx(cold.item(), rel=1e-8)
    assert cache.n_iter < cold_iters
    # A different shape ignores the stored potentials instead of failing.
    sinkhorn_divergence(x[:30], y[:30], options=SinkhornOptions(epsilon=0.5), warm_start=cache)


@pytest.mark.parametrize("grad", ["envelope", "unrolled"])
@pytest.mark.parametrize(("n", "m"), [(12, 12), (10, 12)])
def test_divergence_reports_the_worst_marginal_error_of_its_three_solves(grad: str, n: int, m: int) -> None:
    """Per divergence of the batch, the largest of the xy, xx and yy row errors the solver returns; unconverged
    (max_iter 3) it warns, converged it does not. n == m stacks the self-transports, n != m solves them apart."""
    gen = torch.Generator().manual_seed(22)
    x, y = torch.randn(3, n, 2, dtype=F64, generator=gen), torch.randn(3, m, 2, dtype=F64, generator=gen)
    short = SinkhornOptions(epsilon=0.05, max_iter=3, tol=1e-9, grad=grad)
    with pytest.warns(SinkhornConvergenceWarning, match="max_iter"):
        value, report = sinkhorn_divergence(x, y, options=short, return_report=True)
    assert value.shape == report.marginal_error.shape == (3,) and report.marginal_error.dtype == torch.float32
    assert report.n_iter == 3 and report.tol == 1e-9 and not report.converged
    solves = [sinkhorn_stabilized(squared_euclidean_cost(x, y), options=short),
              sinkhorn_stabilized(squared_euclidean_cost(x, x), options=short, symmetric=True),
              sinkhorn_stabilized(squared_euclidean_cost(y, y), options=short, symmetric=True)]
    expected = torch.stack([s.marginal_error for s in solves]).amax(0).float()
    torch.testing.assert_close(report.marginal_error, expected, rtol=1e-6, atol=0)
    assert report.worst.item() == pytest.approx(expected.max().item(), rel=1e-6)

    with warnings.catch_warnings():
        warnings.simplefilter("error", SinkhornConvergenceWarning)
        _, report = sinkhorn_divergence(x, y, options=tight(0.05, grad=grad), return_report=True)
    assert report.converged and (report.marginal_error < 1e-12).all() and report.n_iter < 100_000


def test_divergence_warning_is_shown_once_under_the_default_filter() -> None:
    gen = torch.Generator().manual_seed(23)
    x, y = torch.randn(8, 2, generator=gen), torch.randn(8, 2, generator=gen)
    short = SinkhornOptions(epsilon=0.05, max_iter=2, tol=1e-9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for shift in (0.0, 0.1, 0.2):
            sinkhorn_divergence(x, y + shift, options=short)
            sinkhorn_divergence(x.unsqueeze(0), y.unsqueeze(0) + shift, options=dataclasses.replace(short, grad="unrolled"))
    assert [w.category for w in caught] == [SinkhornConvergenceWarning]
