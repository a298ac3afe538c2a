"""One command to run the day a GPU is at hand: does privkd compute the same things on it, and how fast?

Usage: ``python benchmarks/gpu_check.py [--device auto|cuda|cpu] [--quick] [--tolerance T]
[--checks NAME,...] [--workdir DIR]``

privkd's tests run on CPUs only, so nothing else says whether its numerics hold on CUDA. Checks,
each a row of one table (``ok`` / ``FAIL`` against the tolerance stated in the row, or ``info``):

* ``cuda``: whether CUDA is available, the device's name and memory.
* ``sinkhorn``: :func:`privkd.losses.ot.sinkhorn_divergence` on the device against the CPU, in
  float32 and float64 (relative difference of the divergence).
* ``structural``: :class:`privkd.losses.structural.StructuralOTLoss` on embeddings produced under
  bf16 autocast on the device against the same computation in float32 (relative difference).
* ``demo``: one epoch (a few batches) of the demo config with each method on the device against
  the same run on the CPU, through :func:`privkd.run` (validation loss: relative difference;
  test metrics: absolute difference). Dropout is off, so only the arithmetic differs.
* ``ddp``: the demo with ``training.strategy=ddp`` on one device completes every row.
* ``r3d``: R3D-18 training steps per second at batch 32 on 16 × 112 × 112 clips written by
  ``privkd data synth biovid`` (:mod:`privkd.data.synth_biovid`).
* peak memory: the device's peak allocated memory (CUDA), or this process's peak resident memory.

Without CUDA (or with ``--device cpu``) every check runs with the CPU as the device, so CI runs
this code; the comparisons are then CPU against CPU, and the output says what they compare on a
GPU. ``--quick`` shrinks the sizes (fewer methods, small clips, batch 4). The exit status is 1
when any row fails, 0 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from privkd.losses.ot import SinkhornOptions, sinkhorn_divergence
from privkd.losses.structural import StructuralOTLoss

CHECKS = ("cuda", "sinkhorn", "structural", "demo", "ddp", "r3d")
ALL_METHODS = ("baseline", "teacher", "mt_teacher", "pkdot", "mtpkdot", "p2p_cosine", "amid_teacher", "amid")
QUICK_METHODS = ("baseline",)
DDP_METHODS = ("baseline", "teacher", "pkdot")  # PKDOT's structural loss gathers its batch across processes
# Default tolerances: float64 agrees to round-off; float32 within the solver's own tolerance
# relative to the value; bf16 inputs keep about three significant digits; a few optimiser steps
# on another device's kernels (cuDNN, TF32 convolutions) move the losses a little and may flip
# the predictions of a few test samples.
TOLERANCES = {"float64": 1e-6, "float32": 1e-3, "bf16": 5e-2, "val_loss": 2e-2, "metric": 3e-2}
ON_A_GPU = ("On a GPU these rows compare: the Sinkhorn divergence on CUDA against the CPU (float32, float64); "
            "the structural loss under bf16 autocast on CUDA against float32; one demo epoch per method on CUDA "
            "against the same epoch on the CPU; a DDP run on one GPU; R3D-18 steps per second at batch 32 on "
            "16 x 112 x 112 clips; the peak GPU memory.")


@dataclass(frozen=True)
class Row:
    """One line of the table: a measured value, what it is compared with, and whether it passed."""

    check: str
    value: str
    reference: str = ""
    difference: float | None = None
    tolerance: float | None = None

    @property
    def status(self) -> str:
        """``info`` for rows that only report; otherwise ``ok`` or ``FAIL`` against the tolerance."""
        if self.tolerance is None:
            return "info"
        return "ok" if self.difference is not None and self.difference <= self.tolerance else "FAIL"


@dataclass(frozen=True)
class Setup:
    """What every check needs: the device, the sizes, and where runs and files go."""

    device: torch.device
    quick: bool
    workdir: Path
    tolerance: float | None  # overrides every row's tolerance when given

    def tol(self, kind: str) -> float:
        """The tolerance of a kind of comparison (``--tolerance`` wins)."""
        return TOLERANCES[kind] if self.tolerance is None else self.tolerance


def relative(value: float, reference: float) -> float:
    """|value - reference| relative to the reference (absolute below 1e-12); NaN compares as inf."""
    if not (math.isfinite(value) and math.isfinite(reference)):
        return math.inf
    return abs(value - reference) / max(abs(reference), 1e-12)


def compared(check: str, value: float, reference: float, tolerance: float, absolute: bool = False) -> Row:
    """A row comparing two numbers (relative difference unless ``absolute``)."""
    difference = abs(value - reference) if absolute and math.isfinite(value - reference) else relative(value, reference)
    return Row(check, f"{value:.6g}", f"{reference:.6g}", difference, tolerance)


def check_cuda(setup: Setup) -> list[Row]:
    """Availability, name and memory of the CUDA device."""
    if not torch.cuda.is_available():
        return [Row("cuda available", "no (the checks below use the CPU as the device)")]
    props = torch.cuda.get_device_properties(setup.device)
    return [Row("cuda available", f"yes, torch {torch.__version__}, CUDA {torch.version.cuda}"),
            Row("cuda device", f"{props.name}, {props.total_memory / 2**30:.1f} GiB")]


def check_sinkhorn(setup: Setup) -> list[Row]:
    """The debiased divergence of two anchored-similarity-like clouds, device against CPU."""
    n, k = (32, 8) if setup.quick else (128, 30)
    generator = torch.Generator().manual_seed(0)
    x, y = torch.rand(n, k, generator=generator, dtype=torch.float64), torch.rand(n, k, generator=generator,
                                                                                     dtype=torch.float64)
    options = SinkhornOptions(epsilon=0.01, max_iter=10_000, tol=1e-5, scaling=0.25)
    rows = []
    for dtype, kind in ((torch.float32, "float32"), (torch.float64, "float64")):
        reference = float(sinkhorn_divergence(x.to(dtype), y.to(dtype), options=options))
        value = float(sinkhorn_divergence(x.to(setup.device, dtype), y.to(setup.device, dtype), options=options))
        rows.append(compared(f"sinkhorn {kind} (b={n}, k={k}) vs cpu", value, reference, setup.tol(kind)))
    return rows


def check_structural(setup: Setup) -> list[Row]:
    """PKDOT's structural loss on embeddings from a linear layer run under bf16 autocast, against float32."""
    batch, width = (32, 16) if setup.quick else (128, 512)
    torch.manual_seed(0)
    layer = torch.nn.Linear(width, width).to(setup.device)
    h_teacher, h_student = (torch.randn(batch, width, device=setup.device) for _ in range(2))
    loss = StructuralOTLoss(k=min(30, batch - 1), epsilon=0.01, mode="paper")

    @torch.no_grad()
    def value(autocast: bool) -> float:
        with torch.autocast(setup.device.type, dtype=torch.bfloat16, enabled=autocast):
            return float(loss(layer(h_teacher), layer(h_student)))

    return [compared(f"structural loss bf16 autocast vs float32 (b={batch})", value(True), value(False),
                     setup.tol("bf16"))]


def _demo_scores(setup: Setup, device: torch.device, methods: tuple[str, ...], extra: list[str],
                 name: str) -> dict[str, dict[str, float]]:
    """Train one demo epoch of ``methods`` on ``device``; each row's last validation loss and test metrics."""
    import privkd

    overrides = [f"methods=[{','.join(methods)}]", "training.epochs=1",
                 f"training.limit_train_batches={1 if setup.quick else 3}", "evaluation.max_folds=1",
                 "training.jobs=1", "training.progress_bar=false", "model.dropout=0.0",
                 f"training.accelerator={'cuda' if device.type == 'cuda' else 'cpu'}", *extra]
    run = privkd.run("demo", out=setup.workdir / name, overrides=overrides)
    if run.failures:  # a row that fails is left out of the summary: name it rather than compare around it
        raise RuntimeError(f"{name}: rows failed: {run.failures}")
    scores: dict[str, dict[str, float]] = {}
    for row in run.summary["methods"]:
        with (run.dir / "fold_0" / row / "logs" / "metrics.csv").open() as f:
            losses = [float(line["val/loss"]) for line in csv.DictReader(f) if line.get("val/loss")]
        scores[row] = {"val/loss": losses[-1] if losses else math.nan, **run.metrics(row)}
    return scores


def check_demo(setup: Setup) -> list[Row]:
    """Each method's demo epoch on the device against the same epoch on the CPU."""
    methods = QUICK_METHODS if setup.quick else ALL_METHODS
    reference = _demo_scores(setup, torch.device("cpu"), methods, [], "demo-cpu")
    on_device = _demo_scores(setup, setup.device, methods, [], "demo-device")
    rows = []
    for row, scores in reference.items():
        theirs = on_device.get(row, {})
        for metric, expected in scores.items():
            kind, absolute = ("val_loss", False) if metric == "val/loss" else ("metric", True)
            rows.append(compared(f"demo {row} {metric} vs cpu", theirs.get(metric, math.nan), expected,
                                 setup.tol(kind), absolute))
    return rows


def check_ddp(setup: Setup) -> list[Row]:
    """The demo under Lightning's DDP strategy on one device: every row trains and is scored (PKDOT's
    structural loss then gathers its batch across processes); the baseline alone under ``--quick``."""
    methods = QUICK_METHODS if setup.quick else DDP_METHODS
    scores = _demo_scores(setup, setup.device, methods, ["training.strategy=ddp", "training.devices=1"], "ddp")
    done = [row for row in methods if math.isfinite(scores.get(row, {}).get("val/loss", math.nan))]
    return [Row(f"ddp, 1 device ({', '.join(methods)})", f"{len(done)}/{len(methods)} rows trained",
                f"{len(methods)}/{len(methods)}", float(len(methods) - len(done)), 0.0)]


def _clips(setup: Setup, batch: int, frames: int, size: int) -> torch.Tensor:
    """``batch`` clips written by the synthetic BioVid generator and read back as privkd reads video."""
    import h5py

    from privkd.data.dataset import as_float
    from privkd.data.synth_biovid import write_synthetic_biovid

    path = write_synthetic_biovid(setup.workdir / "clips.h5", subjects=1, clips=batch, frames=frames, size=size,
                                  signals=("eda",), progress=False).path
    with h5py.File(path, "r") as h5:
        return torch.from_numpy(as_float(h5["modalities/video"][:batch]))


def check_r3d(setup: Setup) -> list[Row]:
    """Training steps per second of R3D-18 (forward, backward, AdamW) on synthetic BioVid clips."""
    from privkd.models.backbones import build_backbone

    batch, frames, size, steps = (2, 4, 16, 1) if setup.quick else (32, 16, 112, 10)
    clips = _clips(setup, batch, frames, size).to(setup.device)
    labels = torch.arange(batch, device=setup.device) % 2
    torch.manual_seed(0)
    backbone = build_backbone("r3d_18", clips.shape[1:])
    model = torch.nn.Sequential(backbone, torch.nn.Flatten(), torch.nn.LazyLinear(2)).to(setup.device)
    model(clips)  # materialises the lazy head before the optimiser sees the parameters
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(clips), labels).backward()
        optimizer.step()

    step()  # warm-up: cuDNN algorithm choice, allocations
    _synchronize(setup.device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronize(setup.device)
    seconds = (time.perf_counter() - started) / steps
    return [Row(f"r3d_18 train step, batch {batch} x {frames} x {size} x {size}",
                f"{1 / seconds:.2f} steps/s, {batch / seconds:.1f} clips/s")]


def _synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so that timings include it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(device: torch.device) -> Row:
    """The device's peak allocated memory, or this process's peak resident memory on the CPU."""
    if device.type == "cuda":
        return Row("peak gpu memory", f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return Row("peak resident memory (cpu)", f"{kib / 2**20:.2f} GiB")


RUNNERS: dict[str, Callable[[Setup], list[Row]]] = {
    "cuda": check_cuda, "sinkhorn": check_sinkhorn, "structural": check_structural, "demo": check_demo,
    "ddp": check_ddp, "r3d": check_r3d,
}


def run_checks(setup: Setup, names: list[str], seconds: dict[str, float]) -> Iterator[Row]:
    """Every selected check's rows (its duration into ``seconds``); a check that raises becomes one
    failing row naming the error, and the others still run."""
    for name in names:
        started = time.perf_counter()
        try:
            yield from RUNNERS[name](setup)
        except Exception as err:  # noqa: BLE001 - the table reports every failure, the run goes on
            yield Row(f"{name} raised", f"{type(err).__name__}: {err}"[:200], "no error", math.inf, 0.0)
        seconds[name] = time.perf_counter() - started
    yield peak_memory(setup.device)


def table(rows: list[Row]) -> str:
    """The rows as one fixed-width text table."""
    header = ("check", "device", "reference", "difference", "tolerance", "status")
    cells = [header] + [(r.check, r.value, r.reference, "" if r.difference is None else f"{r.difference:.3g}",
                         "" if r.tolerance is None else f"{r.tolerance:.3g}", r.status) for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
             for line in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def resolve_device(choice: str) -> torch.device:
    """``auto``: CUDA when available, else the CPU; ``cuda`` without CUDA is an error."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available here (use --device cpu or auto)")
    return torch.device("cuda" if choice != "cpu" and torch.cuda.is_available() else "cpu")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--quick", action="store_true", help="small sizes (what CI runs)")
    parser.add_argument("--tolerance", type=float, default=None, help="one tolerance for every comparison")
    parser.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated subset of {','.join(CHECKS)}")
    parser.add_argument("--workdir", type=Path, default=None, help="where runs and clips go (default: a temp dir)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.checks.split(",")) - set(CHECKS))
    if unknown:
        parser.error(f"unknown checks {unknown}; choose among {','.join(CHECKS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the checks, print the table (and, off CUDA, what a GPU run compares); 1 on any failure."""
    args = parse_args(argv)
    device = resolve_device(args.device)
    seconds: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="privkd-gpu-check-")))
        setup = Setup(device, args.quick, workdir, args.tolerance)
        rows = list(run_checks(setup, args.checks.split(","), seconds))
    failed = [row for row in rows if row.status == "FAIL"]
    print(table(rows))
    print(f"\ndevice: {device}{' (quick sizes)' if args.quick else ''}; {len(rows)} rows, {len(failed)} failed; "
          f"seconds: {', '.join(f'{name} {s:.0f}' for name, s in seconds.items())}")
    if device.type != "cuda":
        print(f"No CUDA device was used: every comparison above is CPU against CPU. {ON_A_GPU}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
