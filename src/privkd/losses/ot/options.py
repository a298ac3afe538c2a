"""Settings of the Sinkhorn solver, shared by every entry point of :mod:`privkd.losses.ot`.

One frozen, validated object instead of the same seven keyword arguments on every
function: a value that reaches the solver has been checked once, at construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["GradMode", "Relaxation", "SinkhornOptions"]

GradMode = Literal["envelope", "unrolled"]
Relaxation = float | Literal["auto"]


@dataclass(frozen=True)
class SinkhornOptions:
    r"""How to run Sinkhorn's iterations; invalid values raise ``ValueError`` on construction.

    Attributes:
        epsilon: entropic regularisation, in units of the cost.
        max_iter: most Sinkhorn iterations at the target epsilon. A solve that
            stops here with its error at or above ``tol`` is reported (the
            solver's ``marginal_error``, the divergence's
            :class:`~privkd.losses.ot.SinkhornReport`) and, in
            :func:`~privkd.losses.ot.sinkhorn_divergence`, warned about once per
            process (:class:`~privkd.losses.ot.SinkhornConvergenceWarning`).
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
            target epsilon). The ratio applies to epsilon, geomloss's to blur
            (``epsilon = blur^2``): geomloss's default 0.5 is 0.25 here. It
            rescues weakly coupled problems (near-permutation plans: a handful
            of points, a cloud against its translate) that plain Sinkhorn barely
            solves at all; on realistic structural-loss clouds it
            saves few iterations (their slow phase is the linear tail at the
            target epsilon), so it is off by default here;
            :class:`~privkd.losses.structural.StructuralOTLoss` turns it on in
            paper mode (``docs/sinkhorn.md``).
        relaxation: over-relaxation ``w`` of the alternating updates (ignored
            by symmetric solves): ``"auto"`` (default) starts at 1 and switches
            to ``2 / (1 + sqrt(1 - r))`` once the per-iteration error ratio
            ``r`` has settled (falling back to 1 if the error then grows); a
            number in (0, 2) fixes it; 1 is plain Sinkhorn.
        newton: every this many iterations of the alternating (``xy``) solve that
            have not reached ``tol``, a Newton phase on the dual (Sinkhorn-Newton,
            float64, with a line search; see :func:`~privkd.losses.ot.newton.newton_phase`);
            ``None``: iterations only. The fixed
            point and the stopping test are unchanged, so is the answer; what it
            removes is Sinkhorn's slow tail on nearly uncoupled plans, where the
            error shrinks by ``1 - 1e-6`` per iteration. Not used by symmetric
            solves (they converge in tens of iterations) nor in unrolled mode.
    """

    epsilon: float
    max_iter: int = 1000
    tol: float = 1e-6
    check_every: int = 1
    grad: GradMode = "envelope"
    scaling: float | None = None
    relaxation: Relaxation = "auto"
    newton: int | None = 25

    def __post_init__(self) -> None:
        _check_arguments(self)


def _check_arguments(options: SinkhornOptions) -> None:
    if not options.epsilon > 0:
        raise ValueError(f"epsilon must be positive, got {options.epsilon}")
    if options.max_iter < 1 or options.check_every < 1 or options.tol < 0:
        raise ValueError(
            "need max_iter >= 1, check_every >= 1, tol >= 0; "
            f"got {options.max_iter}, {options.check_every}, {options.tol}"
        )
    if options.grad not in ("envelope", "unrolled"):
        raise ValueError(f"grad must be 'envelope' or 'unrolled', got {options.grad!r}")
    if options.scaling is not None and not 0 < options.scaling < 1:
        raise ValueError(f"scaling must lie in (0, 1), got {options.scaling}")
    if options.newton is not None and not (isinstance(options.newton, int) and options.newton >= 1):
        raise ValueError(f"newton must be None or an integer >= 1, got {options.newton!r}")
    relaxation = options.relaxation
    if relaxation != "auto" and not (isinstance(relaxation, (int, float)) and 0 < relaxation < 2):
        raise ValueError(f"relaxation must be 'auto' or lie in (0, 2), got {relaxation!r}")
