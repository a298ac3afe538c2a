"""Where the time of a study and of a sweep goes, and what the frozen-output cache and row reuse save.

Usage: ``python benchmarks/study_time.py [--epochs E] [--folds F] [--threads T]``

Part 1: the shipped ``nested`` study (every method of the three papers and their search
candidates) on one seed and ``--folds`` outer folds, ``--epochs`` epochs per row, once with
the students recomputing their frozen teacher's outputs at every step
(``student.cache_teacher_outputs: false``) and once looking them up (the default). Printed:
wall time of each, their ratio, and the share of the time per row (from the runner's
progress lines, so a row's share includes its scoring and saving).

Part 1 trains the rows one after the other (``training.jobs: 1``, whatever the shipped config
says), so that the progress lines time each row. Part 3 times the same cached study with the
rows spread over worker processes (``training.jobs: auto``: one per core, one thread each).

Part 2: a two-point sweep of PKDOT's ``beta`` on the ``demo`` config: the sweep, whose
second point takes the fold's baseline and teacher over from the first
(:mod:`privkd.training.reuse`), against the same two points as separate runs that train
everything. Ratios are of times measured in the same run of this script; on a shared CPU
compare nothing across runs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import yaml

from privkd.config.loading import load_config, packaged_config_path
from privkd.config.parse import config_to_dict
from privkd.training.experiment import run_experiment
from privkd.training.study import run_study
from privkd.training.sweep import run_sweep
from privkd.training.workers import cpu_cores


class RowClock:
    """Seconds from each ``fold i/n: row`` progress line to the next, summed per row."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._row, self._since = None, time.perf_counter()

    def __call__(self, line: str) -> None:
        self.stop()
        self._row = line.split(": ", 1)[1] if line.startswith("fold ") and ": " in line else None
        self._since = time.perf_counter()

    def stop(self) -> None:
        if self._row is not None:
            self.seconds[self._row.split(" reused")[0]] += time.perf_counter() - self._since
        self._row = None


def timed_study(overrides: list[str], out: Path) -> tuple[float, dict[str, float]]:
    cfg = load_config(packaged_config_path("nested"), overrides)
    clock = RowClock()
    start = time.perf_counter()
    run_study(cfg, out, clock)
    clock.stop()
    return time.perf_counter() - start, dict(clock.seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--folds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    common = [f"training.epochs={args.epochs}", f"training.patience={args.epochs}", "training.progress_bar=false",
              f"evaluation.max_folds={args.folds}", "study.seeds=1", "training.jobs=1"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        recomputed, _ = timed_study([*common, "student.cache_teacher_outputs=false"], root / "recomputed")
        cached, rows = timed_study(common, root / "cached")
        print(f"Part 1: study nested, 1 seed, {args.folds} fold(s), {args.epochs} epochs, {torch.get_num_threads()} threads")
        print(f"  teacher outputs recomputed every step: {recomputed:7.1f} s")
        print(f"  teacher outputs cached (default):      {cached:7.1f} s   ratio {cached / recomputed:.2f}")
        total = sum(rows.values())
        print("  share of the cached study's time per row:")
        for row, seconds in sorted(rows.items(), key=lambda item: -item[1]):
            print(f"    {row:32s} {seconds:7.1f} s  {seconds / total:6.1%}")

        demo = [f"training.epochs={args.epochs}", f"training.patience={args.epochs}", "training.progress_bar=false",
                f"evaluation.max_folds={args.folds}"]
        config = root / "demo.yaml"
        config.write_text(yaml.safe_dump(config_to_dict(load_config(packaged_config_path("demo"), demo))))
        start = time.perf_counter()
        run_sweep(config, [], {"pkdot.beta": [0.6, 2.0]}, root / "sweep", row="pkdot")
        swept = time.perf_counter() - start
        start = time.perf_counter()
        for beta in (0.6, 2.0):
            run_experiment(load_config(config, [f"pkdot.beta={beta}"]), root / "separate")
        separate = time.perf_counter() - start
        print(f"\nPart 2: sweep of pkdot.beta over 2 points, demo config, {args.folds} fold(s), {args.epochs} epochs")
        print(f"  two separate runs (everything trained twice): {separate:7.1f} s")
        print(f"  sweep (baseline and teacher reused):          {swept:7.1f} s   ratio {swept / separate:.2f}")

        spread, _ = timed_study([*common, "training.jobs=auto"], root / "spread")
        print(f"\nPart 3: the cached study with training.jobs=auto ({cpu_cores()} cores, one thread per worker)")
        print(f"  rows one after the other ({torch.get_num_threads()} threads): {cached:7.1f} s")
        print(f"  rows spread over worker processes:          {spread:7.1f} s   ratio {spread / cached:.2f}")


if __name__ == "__main__":
    main()
