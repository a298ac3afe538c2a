"""Does the structural loss's Sinkhorn converge on the clouds it really sees? Which settings make it?

Usage: ``python benchmarks/ot_convergence.py [--folds 0,1,2,3,4] [--epochs E] [--quick] [--threads T]
[--clouds PATH] [--candidates I,J,...] [--repeats R] [--geomloss]``

Clouds: anchored similarity rows (k = 30) of teacher and student joint embeddings of the
embedded smartwatch data (accelerometer prevalent, gyroscope privileged), on every fold of
the demo's 5-fold subject split (``--folds``, default all five), trained with the demo's
config (``privkd demo``: model, batch 128, PKDOT with the paper-mode structural loss) for
``--epochs`` epochs (default 3, as ``privkd demo --quick``), seeded per fold as the runner
seeds it. Per fold, every training batch of 64 and of 128 samples (one shuffled pass, ragged
last batch dropped, as the training loader does), for the teacher (eval mode, as a frozen
teacher) against these students, in training mode (dropout on, as in a training step):

* ``init``: the PKDOT student as training starts, built from the teacher's weights
  (``student.init_from_teacher``, the default), with its fitted standardisation;
* ``scratch``: a student from random weights (``init_from_teacher: false``);
* ``epoch 1`` .. ``epoch E``: the PKDOT student (paper-mode loss, the demo's beta) after
  each epoch of its training, the points of training the loss is called at.

Each batch gives one loss call per OT mode: ``paper`` (rows of the matrices shifted to a zero
minimum, two clouds of ``b`` points in ``R^30``) and ``paired`` (``b`` problems between 1-D
clouds of 30 values, solved in one batched call). ``--clouds PATH`` saves the problems, with
their float64 references, there on the first run and reads them on later ones (training and
references are the slow part).

Reference: the same call in float64, solved to ``tol = 1e-9`` (epsilon-scaling 0.5, Newton
phases on), its value and its gradient with respect to the student rows ``y``. For every
candidate setting each call is made in float32 by :meth:`StructuralOTLoss.transport_loss`
(forward and backward to ``y``), the candidates in turn on each call (so a load change on a
shared CPU hits them alike). Reported per candidate, mode and batch size (over all folds):
the share of loss calls whose solves end at or above ``tol`` (paired: every row must
converge), the same share on the worst fold, the largest relative error of the loss value
and of its gradient (Frobenius norm) against the reference, the median and largest iteration
count, and the mean time of a loss call, with its ratio to the old defaults' (1000
iterations, tol 1e-5, no epsilon-scaling, no Newton) in the same run. Then, for the old and
the chosen defaults, the converged share per fold. Timings are on one intra-op thread by
default (steadier on a shared CPU); compare ratios within one run only. The last candidate
is :class:`StructuralOTLoss`'s defaults.

Then a check that the Newton phases leave the answer alone: float64, tol 1e-9, with and
without them, on the calls that iterations alone solve within 20 000 iterations. With
``--geomloss``, for the paper-mode problems in float64: geomloss ``SamplesLoss("sinkhorn", p=2,
blur=0.1)`` called as the authors call it (default ``scaling=0.5``) and at ``scaling=0.995``,
against the converged reference, and the converged loss of the same rows without the shift
(``S - S.min()``) against the shifted one. Results and the choice of defaults:
``docs/sinkhorn.md``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from torch import Tensor

from privkd.config.loading import load_config, packaged_config_path
from privkd.data import MultimodalDataset, embedded_dataset_path, read_info
from privkd.data.folds import make_folds
from privkd.data.loaders import modality_batches
from privkd.losses.ot import SinkhornConvergenceWarning, SinkhornOptions, sinkhorn_divergence
from privkd.losses.structural import StructuralOTLoss, cosine_similarity_matrix
from privkd.methods.registry import build_module
from privkd.training.fit import fit, seed_everything

K, EPSILON = 30, 0.01
BATCHES = (64, 128)
MODES = ("paper", "paired")
REFERENCE = SinkhornOptions(epsilon=EPSILON, tol=1e-9, max_iter=200_000, scaling=0.5)
GRADIENT_BOUND = 1e-3
"""Relative error of the loss value and of its gradient below which a setting cannot move training."""


@dataclass(frozen=True)
class Candidate:
    name: str
    max_iter: int
    tol: float = 1e-5
    scaling: float | str | None = None
    newton: int | None = None
    relaxation: float | str = "auto"

    def loss(self, mode: str) -> StructuralOTLoss:
        loss = _Loss(k=K, epsilon=EPSILON, mode=mode, max_iter=self.max_iter, tol=self.tol, scaling=self.scaling,
                     newton=self.newton)
        loss.relaxation = self.relaxation
        return loss


class _Loss(StructuralOTLoss):
    """:class:`StructuralOTLoss` with the solver's over-relaxation as a setting too."""

    relaxation: float | str = "auto"

    @property
    def options(self) -> SinkhornOptions:
        return dataclasses.replace(super().options, relaxation=self.relaxation)


OLD = Candidate("old: it 1000, no scaling", 1000)
CANDIDATES = (
    OLD,
    Candidate("previous: it 10000, scaling 'auto'", 10_000, scaling="auto"),
    Candidate("it 50000, scaling 'auto'", 50_000, scaling="auto"),
    Candidate("it 10000, tol 3e-5, scaling 'auto'", 10_000, tol=3e-5, scaling="auto"),
    Candidate("it 10000, tol 1e-4, scaling 'auto'", 10_000, tol=1e-4, scaling="auto"),
    Candidate("newton 25, no scaling", 10_000, newton=25),
    Candidate("newton 25, scaling 0.5", 10_000, scaling=0.5, newton=25),
    Candidate("newton 25, scaling 'auto', relaxation 1", 10_000, scaling="auto", newton=25, relaxation=1.0),
    Candidate("newton 10, scaling 'auto'", 10_000, scaling="auto", newton=10),
    Candidate("newton 50, scaling 'auto'", 10_000, scaling="auto", newton=50),
    Candidate("newton 25, scaling 'auto', tol 1e-6", 10_000, tol=1e-6, scaling="auto", newton=25),
    Candidate("new defaults: it 10000, scaling 'auto', newton 25", 10_000, scaling="auto", newton=25),
)
"""``scaling="auto"``: 0.25 in paper mode, off in paired mode (what :class:`StructuralOTLoss` defaults to)."""


@dataclass
class Problem:
    fold: int
    student: str
    b: int
    mode: str
    x: Tensor
    y: Tensor
    reference: float = math.nan
    reference_error: float = math.nan
    reference_grad: Tensor | None = field(default=None, repr=False)
    teacher_min: float = 0.0  # the global minima the paper-mode rows were shifted by
    student_min: float = 0.0


class Snapshots(L.Callback):
    """Copies of the student as training starts and after each training epoch."""

    def __init__(self) -> None:
        self.nets: dict[str, torch.nn.Module] = {}

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.nets["init"] = copy.deepcopy(module.net)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.nets[f"epoch {trainer.current_epoch + 1}"] = copy.deepcopy(module.net)


def train_networks(cfg, scratch_cfg, info, dataset, fold, out_dir: Path):
    """The fold's teacher and students (init, scratch, after each PKDOT epoch), and its training subset."""
    train, val = dataset.subset(fold.train), dataset.subset(fold.val)
    seed = cfg.seed + 1000 * fold.index  # as the experiment runner seeds a fold
    seed_everything(seed)
    teacher = fit(build_module("teacher", cfg, info), train, val, cfg.training, out_dir / "teacher", seed).module.net
    teacher.eval()
    seed_everything(seed + 1)
    scratch = build_module("pkdot", scratch_cfg, info, teacher=teacher).net
    scratch.fit_standardization(lambda name: modality_batches(train, name))
    seed_everything(seed)
    snapshots = Snapshots()
    fit(build_module("pkdot", cfg, info, teacher=teacher), train, val, cfg.training, out_dir / "pkdot", seed,
        callbacks=[snapshots])
    nets = snapshots.nets
    return teacher, {"init": nets.pop("init"), "scratch": scratch, **nets}, train


def build_problems(folds: list[int], epochs: int) -> list[Problem]:
    overrides = [f"training.epochs={epochs}", f"training.patience={epochs}", "training.progress_bar=false"]
    cfg = load_config(packaged_config_path("demo"), overrides)
    scratch_cfg = load_config(packaged_config_path("demo"), [*overrides, "student.init_from_teacher=false"])
    assert cfg.structural.ot_mode == "paper" and cfg.structural.k == K and cfg.structural.epsilon == EPSILON
    path = embedded_dataset_path()
    info = read_info(path)
    dataset = MultimodalDataset(path, modalities=[*cfg.data.prevalent, *cfg.data.privileged], in_memory=True)
    modalities = [*cfg.data.prevalent, *cfg.data.privileged]
    problems = []
    for fold in [f for f in make_folds(cfg.evaluation, dataset, cfg.seed) if f.index in folds]:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # training logs and the solver's own warnings
            teacher, students, train = train_networks(cfg, scratch_cfg, info, dataset, fold, Path(tmp))
        for b in BATCHES:
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(b + fold.index)).tolist()
            for begin in range(0, len(order) - b + 1, b):
                samples = [train[i] for i in order[begin:begin + b]]
                inputs = {m: torch.stack([s.inputs[m] for s in samples]) for m in modalities}
                with torch.no_grad():
                    z_teacher = teacher(inputs).embedding
                    for name, student in students.items():
                        student.train()
                        z_student = student(inputs).embedding
                        minima = {"teacher_min": float(cosine_similarity_matrix(z_teacher).min()),
                                  "student_min": float(cosine_similarity_matrix(z_student).min())}
                        for mode in MODES:
                            x, y = StructuralOTLoss(k=K, epsilon=EPSILON, mode=mode).anchored(z_teacher, z_student)
                            shifts = minima if mode == "paper" else {}
                            problems.append(Problem(fold.index, name, b, mode, x.float().contiguous(),
                                                    y.float().contiguous(), **shifts))
        print(f"fold {fold.index}: students {', '.join(students)}; {time.perf_counter() - start:.0f} s", flush=True)
    return problems


def divergence64(p: Problem, options: SinkhornOptions) -> tuple[float, Tensor, float]:
    """The float64 loss of ``p`` under ``options``: value, gradient w.r.t. ``y``, largest marginal error."""
    x, y = p.x.double(), p.y.double().requires_grad_(True)
    if p.mode == "paper":
        value, report = sinkhorn_divergence(x, y, options=options, return_report=True)
    else:
        values, report = sinkhorn_divergence(x.unsqueeze(-1), y.unsqueeze(-1), options=options, return_report=True)
        value = values.mean()
    (grad,) = torch.autograd.grad(value, y)
    return float(value.detach()), grad, float(report.worst)


def reference_values(problems: list[Problem]) -> None:
    """Float64 loss values and gradients, solved to tol 1e-9 (the largest marginal error reached is kept)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinkhornConvergenceWarning)
        for p in problems:
            p.reference, p.reference_grad, p.reference_error = divergence64(p, REFERENCE)


@dataclass
class Outcome:
    unconverged_call: bool
    problems: int
    unconverged_problems: int
    rel_error: float
    grad_error: float
    n_iter: int
    seconds: float


def solve(candidate: Candidate, loss: StructuralOTLoss, p: Problem, repeats: int) -> Outcome:
    times = []
    for _ in range(repeats):
        y = p.y.clone().requires_grad_(True)
        start = time.perf_counter()
        value = loss.transport_loss(p.x, y)
        value.backward()
        times.append(time.perf_counter() - start)
    report = loss.last_report
    errors = report.marginal_error.reshape(-1)
    grad = y.grad.double()
    return Outcome(
        unconverged_call=not report.converged,
        problems=errors.numel(),
        unconverged_problems=int((errors >= candidate.tol).sum()),
        rel_error=abs(float(value.detach()) - p.reference) / abs(p.reference) if p.reference else math.nan,
        grad_error=float((grad - p.reference_grad).norm() / p.reference_grad.norm()),
        n_iter=report.n_iter,
        seconds=min(times),
    )


def load_or_build(args: argparse.Namespace) -> list[Problem]:
    if args.clouds is not None and args.clouds.is_file():
        return [Problem(**row) for row in torch.load(args.clouds)]
    start = time.perf_counter()
    problems = build_problems(args.folds, args.epochs)
    built = time.perf_counter()
    reference_values(problems)
    print(f"built {len(problems)} problems in {built - start:.0f} s, their float64 references in "
          f"{time.perf_counter() - built:.0f} s", flush=True)
    if args.clouds is not None:
        torch.save([vars(p) for p in problems], args.clouds)
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folds", type=lambda s: [int(f) for f in s.split(",")], default=[0, 1, 2, 3, 4],
                        help="comma-separated folds of the 5-fold split (default: all five)")
    parser.add_argument("--epochs", type=int, default=3, help="teacher and PKDOT student epochs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="timed solves per problem (the fastest is kept)")
    parser.add_argument("--clouds", type=Path, default=None, help="save / reuse the problems here")
    parser.add_argument("--quick", action="store_true", help="every fourth loss call only")
    parser.add_argument("--candidates", type=str, default=None, help="comma-separated indices into CANDIDATES")
    parser.add_argument("--geomloss", action="store_true", help="also compare with the authors' geomloss call")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    problems = [p for p in load_or_build(args) if p.fold in args.folds]
    if args.quick:  # the calls of every fourth batch, both modes
        problems = [p for i, p in enumerate(problems) if (i // len(MODES)) % 4 == 0]
    worst_reference = max(p.reference_error for p in problems)
    students = sorted({p.student for p in problems})
    print(f"{len(problems)} loss calls (folds {sorted({p.fold for p in problems})}, students {', '.join(students)}); "
          f"float64 references' largest marginal error {worst_reference:.1e}", flush=True)
    candidates = CANDIDATES if args.candidates is None else [CANDIDATES[int(i)] for i in args.candidates.split(",")]
    if OLD not in candidates:
        candidates = [OLD, *candidates]
    losses = {(c.name, mode): c.loss(mode) for c in candidates for mode in MODES}

    outcomes: dict[str, list[tuple[Problem, Outcome]]] = {c.name: [] for c in candidates}
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinkhornConvergenceWarning)
        for c in candidates:
            for p in problems[:4]:
                solve(c, losses[(c.name, p.mode)], p, 1)  # warm-up
        for i, p in enumerate(problems):
            for c in candidates:
                outcomes[c.name].append((p, solve(c, losses[(c.name, p.mode)], p, args.repeats)))
            if (i + 1) % 500 == 0:
                print(f"  {i + 1} / {len(problems)} calls, {time.perf_counter() - start:.0f} s", flush=True)
    summary_table(outcomes)
    per_fold_table(outcomes, [OLD.name, candidates[-1].name])
    newton_check(problems)
    if args.geomloss:
        authors_comparison(problems)


def summary_table(outcomes: dict[str, list[tuple[Problem, Outcome]]]) -> None:
    groups = [(mode, b) for mode in MODES for b in BATCHES]
    header = ("| setting | mode | b | calls | calls > tol | worst fold: calls > tol | problems > tol | "
              "value rel. error: worst | gradient rel. error: worst | iterations median / max | ms per call | "
              "time / old |")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    old_ms = {}
    for name, rows in outcomes.items():
        for mode, b in [*groups, ("all", 0)]:
            chosen = [(p, o) for p, o in rows if (mode == "all" or (p.mode == mode and p.b == b))]
            outs = [o for _, o in chosen]
            calls = len(outs)
            if not calls:
                continue
            bad_calls = sum(o.unconverged_call for o in outs)
            folds = sorted({p.fold for p, _ in chosen})
            worst_fold = max(
                sum(o.unconverged_call for p, o in chosen if p.fold == f) / sum(p.fold == f for p, _ in chosen)
                for f in folds)
            n_prob = sum(o.problems for o in outs)
            bad_prob = sum(o.unconverged_problems for o in outs)
            iters = [o.n_iter for o in outs]
            ms = 1e3 * statistics.mean(o.seconds for o in outs)
            if name == OLD.name:
                old_ms[(mode, b)] = ms
            ratio = ms / old_ms[(mode, b)]
            print(f"| {name} | {mode} | {b or 'both'} | {calls} | {100 * bad_calls / calls:.1f} % | "
                  f"{100 * worst_fold:.1f} % | {100 * bad_prob / n_prob:.2f} % | "
                  f"{max(o.rel_error for o in outs):.1e} | {max(o.grad_error for o in outs):.1e} | "
                  f"{statistics.median(iters):.0f} / {max(iters)} | {ms:.1f} | {ratio:.2f} |", flush=True)


def per_fold_table(outcomes: dict[str, list[tuple[Problem, Outcome]]], names: list[str]) -> None:
    print("\nConverged share of loss calls per fold (calls below tol / calls):")
    groups = [(mode, b) for mode in MODES for b in BATCHES]
    print("| setting | fold | " + " | ".join(f"{mode} {b}" for mode, b in groups) + " |")
    print("|---|---|" + "---|" * len(groups))
    for name in names:
        rows = outcomes[name]
        for fold in sorted({p.fold for p, _ in rows}):
            cells = []
            for mode, b in groups:
                chosen = [o for p, o in rows if p.fold == fold and p.mode == mode and p.b == b]
                good = sum(not o.unconverged_call for o in chosen)
                cells.append(f"{good} / {len(chosen)}")
            print(f"| {name} | {fold} | " + " | ".join(cells) + " |")


def newton_check(problems: list[Problem], limit: int = 20_000) -> None:
    """Float64, tol 1e-9: the answer with and without the Newton phases, where iterations alone converge."""
    plain = dataclasses.replace(REFERENCE, newton=None, max_iter=limit)
    compared, value_diff, grad_diff = 0, 0.0, 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinkhornConvergenceWarning)
        for p in problems[::3]:
            value, grad, error = divergence64(p, plain)
            if error >= plain.tol:
                continue
            compared += 1
            value_diff = max(value_diff, abs(value - p.reference) / abs(p.reference))
            grad_diff = max(grad_diff, float((grad - p.reference_grad).norm() / p.reference_grad.norm()))
    print(f"\nNewton phases on vs off, float64, tol 1e-9, on {compared} of {len(problems[::3])} calls (every third) "
          f"that iterations alone solve within {limit} iterations: largest relative difference of the value "
          f"{value_diff:.1e}, of the gradient {grad_diff:.1e}")


def authors_comparison(problems: list[Problem]) -> None:
    """Paper mode: the converged loss against geomloss as the authors call it, and without the shift."""
    from geomloss import SamplesLoss

    print("\nPaper mode, float64: geomloss SamplesLoss('sinkhorn', p=2, blur=0.1) at its default scaling 0.5 "
          "and at 0.995 against the converged reference; the reference on rows without the shift.")
    print("| b | calls | geomloss 0.5 - converged, relative: median [min, max] | geomloss 0.995: largest |"
          " unshifted / shifted: median [min, max] |")
    print("|---|---|---|---|---|")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinkhornConvergenceWarning)
        for b in BATCHES:
            chosen = [p for p in problems if p.mode == "paper" and p.b == b]
            default, slow, unshifted = [], [], []
            for p in chosen:
                x, y = p.x.double(), p.y.double()
                default.append(float(SamplesLoss("sinkhorn", p=2, blur=0.1)(x, y)) / p.reference - 1)
                slow.append(abs(float(SamplesLoss("sinkhorn", p=2, blur=0.1, scaling=0.995)(x, y)) / p.reference - 1))
                plain = sinkhorn_divergence(x + p.teacher_min, y + p.student_min, options=REFERENCE)
                unshifted.append(float(plain) / p.reference)
            print(f"| {b} | {len(chosen)} | {statistics.median(default):+.1e} [{min(default):+.1e}, {max(default):+.1e}] | "
                  f"{max(slow):.1e} | {statistics.median(unshifted):.2f} [{min(unshifted):.2f}, {max(unshifted):.2f}] |")


if __name__ == "__main__":
    main()
