"""Training-step throughput of every student method, and where the structural loss spends its time.

Usage: ``python benchmarks/train_step.py [--steps N] [--batch B] [--threads T] [--quick]``

Part 1: steps per second of one optimisation step (forward, backward, AdamW) of the
baseline, PKDOT, MT-PKDOT and AMID students on the same network and the same batch of the
embedded smartwatch data (the demo's model), each method's step time printed as a ratio to
the baseline step measured in the same run, and for PKDOT and MT-PKDOT also to their own
student network (frozen T-Net and hallucinated features included) on the task loss alone:
the step a distillation loss is added to. PKDOT also runs with its structural loss replaced
by a zero (``OT term zeroed``): what the step costs besides that loss. PKDOT and MT-PKDOT
run twice: recomputing their frozen teacher's outputs (PKDOT's plain teacher, MT-PKDOT's pool
of the self-distilled teacher) at every step, and looking them up
(``student.cache_teacher_outputs``, the default). AMID trains its teacher online, so it has
no frozen outputs to cache.

Part 2: the structural loss alone (PKDOT's, k = 30 anchors, epsilon = 0.01) for batch sizes
64 to 4096, forward + backward, split into cosine-similarity matrices, anchor selection and
the Sinkhorn OT, for both OT modes.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from privkd.config.loading import config_from_dict
from privkd.data import MultimodalDataset, embedded_dataset_path, read_info
from privkd.data.dataset import Batch
from privkd.losses.structural import (
    StructuralOTLoss,
    cosine_similarity_matrix,
    select_anchors,
)
from privkd.methods.registry import build_module, method_spec
from privkd.training.auto import resolve_training

METHODS = ("baseline", "pkdot", "mtpkdot", "amid")
CFG = config_from_dict({})


def median_seconds(step: Callable[[], None], repeats: int) -> float:
    step()  # warm-up (allocations, first-call dispatch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def method_steps(batch_size: int, steps: int) -> dict[str, float]:
    """Median seconds of one step per method; students with and without their teacher's cached outputs."""
    path = embedded_dataset_path()
    info = read_info(path)
    data = MultimodalDataset(path, ["accelerometer", "gyroscope"], indices=range(batch_size), in_memory=True)
    batch = Batch({m: torch.stack([data[i].inputs[m] for i in range(batch_size)]) for m in ("accelerometer", "gyroscope")},
                  torch.as_tensor(data.labels), index=torch.arange(batch_size))
    steppers: dict[str, Callable[[], None]] = {}
    for method in METHODS:
        for cached in (False, True) if method_spec(method).teacher_for(CFG) else (None,):
            cfg = config_from_dict({"amid": {"warmup_epochs": 0}, "training": {"batch_size": batch_size},
                                    "student": {"cache_teacher_outputs": bool(cached)}})
            cfg, _ = resolve_training(cfg, 30 * batch_size)  # a fold of the demo's size: 30 anchors
            teacher = None
            if (role := method_spec(method).teacher_for(cfg)) is not None:
                torch.manual_seed(0)
                teacher = build_module(role, cfg, info).net.eval()
            name = method if cached is None else f"{method} ({'cached' if cached else 'recomputed'} teacher)"
            steppers[name] = full_step(method, cfg, info, teacher, batch)
            if cached:  # the same student network trained on its task loss alone: what distillation adds to
                steppers[f"{method} net, task loss only"] = task_only_step(method, cfg, info, teacher, batch)
            if cached and method == "pkdot":  # everything of the step but the structural loss itself
                steppers[f"{method} (cached), OT term zeroed"] = full_step(method, cfg, info, teacher, batch,
                                                                           zero_structure=True)
    return interleaved_medians(steppers, steps)


def module_and_optimizer(method: str, cfg, info, teacher):
    """``method``'s module in train mode, seeded alike for every stepper, and its (first) optimiser."""
    torch.manual_seed(0)
    module = build_module(method, cfg, info, teacher=teacher)
    module.train()
    optimizers = module.configure_optimizers()
    return module, optimizers[0] if isinstance(optimizers, list) else optimizers


def full_step(method: str, cfg, info, teacher, batch: Batch, zero_structure: bool = False) -> Callable[[], None]:
    """One step of ``method`` on all its loss terms. With ``zero_structure`` the structural
    loss returns a zero of the student's embedding instead (teacher lookup, T-Net and loss
    bookkeeping kept): the step minus what the structural loss itself costs."""
    module, optimizer = module_and_optimizer(method, cfg, info, teacher)
    if zero_structure:
        module.structure.forward = lambda z_teacher, z_student: (z_student * 0).sum()

    def step() -> None:
        loss = module.weighted_total(module.loss_terms(batch))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return step


def task_only_step(method: str, cfg, info, teacher, batch: Batch) -> Callable[[], None]:
    """One step of ``method``'s student network (its frozen T-Net included) on the task loss
    alone: the reference a distillation step is compared with in the issue's target."""
    module, optimizer = module_and_optimizer(method, cfg, info, teacher)

    def step() -> None:
        loss = module.task_loss(module.net(batch.inputs).logits, batch.label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return step


def interleaved_medians(steppers: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds per stepper, timed in rounds (one step of each in turn), so that a load
    change on a shared CPU hits every method alike; one warm-up round first (it also fills the
    teacher caches)."""
    for step in steppers.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steppers}
    for _ in range(repeats):
        for name, step in steppers.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def structural_breakdown(batch_size: int, mode: str, repeats: int) -> dict[str, float]:
    """Seconds of each part of the structural loss, forward and backward."""
    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(batch_size, 128, generator=generator)
    student = torch.randn(batch_size, 128, generator=generator, requires_grad=True)
    loss = StructuralOTLoss(k=30, epsilon=0.01, mode=mode)
    parts = {}

    def similarity() -> None:
        cosine_similarity_matrix(student).sum().backward()
        cosine_similarity_matrix(teacher)

    s_teacher = cosine_similarity_matrix(teacher)
    parts["similarity"] = median_seconds(similarity, repeats)
    parts["anchors"] = median_seconds(lambda: select_anchors(s_teacher, 30), repeats)
    anchors = select_anchors(s_teacher, 30)
    x = s_teacher.gather(1, anchors)
    y = cosine_similarity_matrix(student).gather(1, anchors).detach().requires_grad_(True)
    parts["sinkhorn"] = median_seconds(lambda: loss.transport_loss(x, y).backward(), repeats)
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and batch sizes")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = 5 if args.quick else args.steps

    seconds = method_steps(args.batch, steps)
    print(f"Part 1: one training step, batch {args.batch}, demo model, {torch.get_num_threads()} threads, median of {steps}")
    print(f"{'method':>34} | {'ms/step':>8} {'steps/s':>8} | {'x baseline':>10} | {'x own net, task only':>20}")
    for method, value in seconds.items():
        own = seconds.get(f"{method.split(' ')[0]} net, task loss only")
        own_ratio = f"{value / own:20.2f}" if own and "task loss only" not in method else f"{'':>20}"
        print(f"{method:>34} | {1e3 * value:8.1f} {1 / value:8.1f} | {value / seconds['baseline']:10.2f} | {own_ratio}")

    sizes = (64, 256, 1024) if args.quick else (64, 128, 256, 512, 1024, 2048, 4096)
    print("\nPart 2: structural loss forward + backward, ms (k = 30, epsilon = 0.01)")
    print(f"{'b':>6} {'mode':>7} | {'similarity':>10} {'anchors':>8} {'sinkhorn':>9} | {'sinkhorn share':>14}")
    for mode in ("paper", "paired"):
        for b in sizes:
            parts = structural_breakdown(b, mode, repeats=3 if b >= 2048 or args.quick else 7)
            share = parts["sinkhorn"] / sum(parts.values())
            print(f"{b:>6} {mode:>7} | {1e3 * parts['similarity']:10.2f} {1e3 * parts['anchors']:8.2f} "
                  f"{1e3 * parts['sinkhorn']:9.2f} | {share:14.0%}")


if __name__ == "__main__":
    main()
