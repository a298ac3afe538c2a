"""The known-answer study: does each student learn what its teacher knows, where theory says it must?

Usage: ``python benchmarks/known_answer.py [--seeds N] [--setups relevant_features clean_labels clean_features] [--out DIR]``

Runs the shipped ``known_answer`` study (every method, the linear references and the
``teacher_init`` control; one data seed per study seed) on each synthetic setup of Lopez-Paz et
al. (ICLR 2016, Sec. 4.1) and prints each study's table: test accuracy (mean ± std over seeds),
the share of the teacher-baseline gap each row closes, and paired tests against the baseline
over the seeds; then the wall time of each study. On ``relevant_features`` and ``clean_labels``
privileged information provably helps 200 training samples, so every student should close a
clear share of the gap; ``clean_features`` is the negative control, where none should move far
from the baseline.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from privkd.config.loading import load_config
from privkd.training.study import run_study

SETUPS = ("relevant_features", "clean_labels", "clean_features")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--setups", nargs="+", choices=SETUPS, default=list(SETUPS))
    parser.add_argument("--out", type=Path, default=None, help="keep the study directories here (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        times = {}
        for setup in args.setups:
            cfg = load_config("known_answer", [f"data.path=synthetic:{setup}", f"study.seeds={args.seeds}",
                                               "training.progress_bar=false"])
            start = time.perf_counter()
            study_dir = run_study(cfg, out / setup)
            times[setup] = time.perf_counter() - start
            table = (study_dir / "study.md").read_text().split("## Every candidate")[0]
            print(f"\n## {setup}\n\n{table.strip()}\n")
        for setup, seconds in times.items():
            print(f"{setup}: {args.seeds} seeds in {seconds / 60:.1f} min")


if __name__ == "__main__":
    main()
