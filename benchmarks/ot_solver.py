"""Time and accuracy of the paper-mode Sinkhorn divergence: ours vs geomloss vs POT.

Usage: ``python benchmarks/ot_solver.py [--quick] [--repeats N] [--threads T]``

On a shared CPU, ``--threads 1`` gives far steadier timings: with more intra-op
threads than free cores, OpenMP barriers stall for milliseconds and every
solver's time becomes noise. Compare ratios within one run only.

For each batch size ``b`` and epsilon, a realistic paper-mode problem is built
the way :class:`privkd.losses.structural.StructuralOTLoss` builds it: clustered
teacher embeddings, a noisy student, cosine similarities read at the ``k``
most dissimilar teacher anchors, giving two clouds of ``b`` points in ``R^k``.
Each solver computes the debiased divergence
``OT(x, y) - (OT(x, x) + OT(y, y)) / 2`` with cost ``|x - y|^2 / 2`` in float32
and back-propagates to the student cloud; the median wall time of a few
repeats is reported (after one warm-up call), with each value's relative error
against a float64 reference from our solver run to a tight tolerance.

Solvers:
* ours: :func:`privkd.losses.ot.sinkhorn_divergence` with the loss
  defaults (tol 1e-5 on the L1 marginal error, max_iter 1000, envelope gradient;
  stabilised scaling-domain iterations with automatic over-relaxation, the two
  self-transports batched, closed-form gradient to the points);
* geomloss: ``SamplesLoss("sinkhorn", p=2, blur=sqrt(eps))`` as the authors ran
  it (epsilon-scaling 0.5, a fixed number of annealed iterations, no tolerance),
  tensorized backend (a dense b x b cost is small enough even at 2048, and the
  other backends need KeOps);
* POT: three ``ot.solve(M, reg=eps, method="sinkhorn_log", grad="envelope")``
  calls with tol 1e-5 (POT's tolerance is the L2 norm of the marginal
  violation, a looser test than our L1) and max_iter 1000.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import ot
import torch
from geomloss import SamplesLoss
from torch import Tensor

from privkd.losses.ot import (
    SinkhornOptions,
    sinkhorn_divergence,
    sinkhorn_stabilized,
    squared_euclidean_cost,
)
from privkd.losses.structural import anchored_similarities

TOL, MAX_ITER = 1e-5, 1000
REFERENCE_TOL, REFERENCE_MAX_ITER = 1e-9, 20_000
Divergence = Callable[[Tensor, Tensor, float], Tensor]


@dataclass
class Row:
    b: int
    eps: float
    seconds: dict[str, float]
    rel_error: dict[str, float]
    reference_marginal_error: float


def make_problem(b: int, device: torch.device, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Anchored teacher / student similarity rows (b x k, k = min(30, b - 1)), float32."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(8, 64, generator=gen)
    teacher = centres[torch.randint(0, 8, (b,), generator=gen)] + 0.6 * torch.randn(b, 64, generator=gen)
    student = teacher + 0.6 * torch.randn(b, 64, generator=gen)
    x, y = anchored_similarities(teacher, student, k=min(30, b - 1))
    return x.to(device), y.to(device)


def ours(x: Tensor, y: Tensor, eps: float) -> Tensor:
    return sinkhorn_divergence(x, y, options=SinkhornOptions(epsilon=eps, tol=TOL, max_iter=MAX_ITER))


def geomloss(x: Tensor, y: Tensor, eps: float) -> Tensor:
    return SamplesLoss("sinkhorn", p=2, blur=math.sqrt(eps), backend="tensorized")(x, y)


def pot(x: Tensor, y: Tensor, eps: float) -> Tensor:
    def ot_eps(p: Tensor, q: Tensor) -> Tensor:
        cost = ot.dist(p, q) / 2  # squared Euclidean / 2, geomloss's p=2 convention
        return ot.solve(cost, reg=eps, method="sinkhorn_log", tol=TOL, max_iter=MAX_ITER, grad="envelope").value

    return ot_eps(x, y) - 0.5 * (ot_eps(x, x) + ot_eps(y, y))


SOLVERS: dict[str, Divergence] = {"ours": ours, "geomloss": geomloss, "POT": pot}


def reference(x: Tensor, y: Tensor, eps: float) -> tuple[float, float]:
    """Float64 divergence run to a tight tolerance, and the largest marginal error it reached."""
    x64, y64 = x.double(), y.double()
    options = SinkhornOptions(epsilon=eps, tol=REFERENCE_TOL, max_iter=REFERENCE_MAX_ITER)
    terms = [
        sinkhorn_stabilized(squared_euclidean_cost(p, q), options=options, symmetric=symmetric)
        for p, q, symmetric in ((x64, y64, False), (x64, x64, True), (y64, y64, True))
    ]
    value = terms[0].value - 0.5 * (terms[1].value + terms[2].value)
    return value.item(), max(t.marginal_error.item() for t in terms)


def time_forward_backward(solver: Divergence, x: Tensor, y: Tensor, eps: float, repeats: int) -> tuple[float, float]:
    """Median seconds of value + backward to the student cloud ``y``, after one warm-up; and the value."""

    def run() -> float:
        student = y.detach().clone().requires_grad_(True)
        value = solver(x, student, eps)
        value.backward()
        return value.item()

    value = run()
    times = []
    for _ in range(repeats):
        if x.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def benchmark(b: int, eps: float, repeats: int, device: torch.device) -> Row:
    x, y = make_problem(b, device)
    ref, ref_error = reference(x, y, eps)
    seconds, rel_error = {}, {}
    for name, solver in SOLVERS.items():
        seconds[name], value = time_forward_backward(solver, x, y, eps, repeats)
        rel_error[name] = abs(value - ref) / abs(ref)
    return Row(b, eps, seconds, rel_error, ref_error)


def format_table(rows: list[Row]) -> str:
    names = list(SOLVERS)
    header = (
        f"{'b':>5} {'eps':>5} | " + " ".join(f"{n + ' ms':>11}" for n in names)
        + f" | {'ours/geoml':>10} {'ours/POT':>9} | " + " ".join(f"{'err ' + n:>12}" for n in names)
        + f" | {'ref marg err':>12}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.b:>5} {r.eps:>5g} | " + " ".join(f"{1e3 * r.seconds[n]:>11.1f}" for n in names)
            + f" | {r.seconds['ours'] / r.seconds['geomloss']:>10.2f} {r.seconds['ours'] / r.seconds['POT']:>9.2f} | "
            + " ".join(f"{r.rel_error[n]:>12.1e}" for n in names)
            + f" | {r.reference_marginal_error:>12.1e}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="b in {64, 128} only (under 30 s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per cell (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    x, y = make_problem(64, device)
    for solver in SOLVERS.values():  # one-off start-up costs (thread pools, imports) outside every cell
        time_forward_backward(solver, x, y, 0.1, repeats=1)
    sizes = (64, 128) if args.quick else (64, 128, 512, 2048)
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} float32, "
          f"forward+backward, median of {args.repeats}; errors relative to a float64 reference")
    rows = []
    for b in sizes:
        for eps in (0.1, 0.01):
            rows.append(benchmark(b, eps, args.repeats, device))
            print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(format_table(rows))


if __name__ == "__main__":
    main()
