"""What the report reads from disk: a run's ``summary.json``, a sweep's ``sweep.json``, the
run's name and dataset names, and the per-epoch logs.

A missing or broken ``summary.json`` / ``sweep.json`` is the user's to fix, so it raises a
:class:`~privkd.errors.PrivkdError` saying what to do; everything else is a nicety and
falls back quietly (no names → class ids, no config → the directory name).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from privkd.config.validation import check_plain_name
from privkd.errors import ConfigError, PrivkdError
from privkd.evaluation.artifacts import fold_dirs
from privkd.evaluation.metrics import SELECTION_METRIC

__all__ = ["dataset_names", "figure_run", "load_summary", "load_sweep", "read_epoch_log", "run_name"]

"""The validation metric the best epoch is selected on, per task."""


def _read_json(path: Path, fix: str) -> object:
    if not path.is_file():
        raise PrivkdError(f"{path} is missing", fix)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise PrivkdError(f"{path} is unreadable or not valid JSON ({err})", fix) from err


def figure_run(run_dir: Path) -> Path:
    """The run whose folds the figures and diagnostics come from: the run itself or, for a
    ``privkd study`` directory (folds under ``seed_<s>/<run>/``), its first seed's run."""
    if fold_dirs(run_dir):
        return run_dir
    runs = sorted((int(p.parent.parent.name.split("_")[1]), p.parent) for p in run_dir.glob("seed_*/*/fold_0")
                  if p.parent.parent.name.split("_")[1].isdigit())
    return runs[0][1] if runs else run_dir


def load_summary(run_dir: Path) -> dict:
    """``summary.json`` of a finished run, or a :class:`PrivkdError` saying what is missing and what to do."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PrivkdError(f"{run_dir}: run directory not found", "pass a directory written by `privkd run` (it holds summary.json)")
    path = run_dir / "summary.json"
    if not path.is_file():
        finished = len(list(run_dir.glob("fold_*/*/metrics.json")))
        state = (f"the run is incomplete ({finished} finished (fold, method) result(s) but no summary)" if finished
                 else "this is not a finished privkd run directory")
        raise PrivkdError(f"{path} is missing: {state}",
                          "let `privkd run` finish (or rerun it), then pass the run directory it prints")
    summary = _read_json(path, "rerun `privkd run`; summary.json is rewritten at the end of a run")
    if not isinstance(summary, dict) or not isinstance(summary.get("methods"), dict) or not summary["methods"]:
        raise PrivkdError(f"{path} has no 'methods' results", "rerun `privkd run`; summary.json is rewritten at the end of a run")
    for row in summary["methods"]:  # row names become the names of files read and written (figures)
        try:
            check_plain_name("methods", row)
        except ConfigError:
            raise PrivkdError(f"{path} names a row {row!r}, which is not a plain name: the report reads the row's "
                              "files and names its figures after it, and would reach outside the run directory",
                              "restore summary.json (privkd run --resume RUN_DIR writes it again from the rows' "
                              "metrics.json files)") from None
    return summary


def load_sweep(sweep_dir: Path) -> dict:
    """``sweep.json`` of a finished sweep, or a :class:`PrivkdError` saying what to pass instead."""
    path = Path(sweep_dir) / "sweep.json"
    sweep = _read_json(path, "pass --sweep a directory written by `privkd sweep` (it holds sweep.json)")
    if not isinstance(sweep, dict) or not isinstance(sweep.get("points"), list):
        raise PrivkdError(f"{path} has no 'points' list", "pass --sweep a directory written by `privkd sweep`")
    return sweep


def dataset_names(run_dir: Path) -> tuple[list[str] | None, list[str] | None]:
    """Class names and target names of the run's dataset, as its ``summary.json`` keeps them;
    for a run made before summaries kept them, from the dataset file when it is still where
    the run read it."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        if isinstance(summary, dict) and "class_names" in summary:
            return summary["class_names"], summary.get("target_names")
        env = json.loads((run_dir / "environment.json").read_text())
        path = Path(env["data_path"])
        if not path.is_file():
            return None, None
        from privkd.data import read_info

        info = read_info(path)
        return (list(info.class_names) if info.class_names else None,
                list(info.target_names) if info.target_names else None)
    except Exception:  # noqa: BLE001 - names are a nicety: any problem → class ids
        return None, None


def run_name(run_dir: Path) -> str:
    """The ``name`` of the run's config, or the directory name when it cannot be read."""
    try:
        import yaml

        return str(yaml.safe_load((run_dir / "config.yaml").read_text())["name"])
    except Exception:  # noqa: BLE001 - no readable name → the directory name
        return run_dir.name


def read_epoch_log(path: Path, task: str) -> dict[str, list[float]]:
    """Per-epoch means of ``train/loss`` and the validation selection metric from a Lightning
    CSV log (train and validation values sit on different lines of the same epoch)."""
    sums: dict[int, dict[str, list[float]]] = {}
    with path.open(newline="") as handle:
        for line in csv.DictReader(handle):
            try:
                epoch = int(float(line.get("epoch") or "nan"))
            except ValueError:
                continue
            bucket = sums.setdefault(epoch, {})
            for column, value in line.items():
                if column and value not in (None, ""):
                    try:
                        bucket.setdefault(column, []).append(float(value))
                    except ValueError:
                        pass
    selection = f"val/{SELECTION_METRIC.get(task, 'f1')}"
    out: dict[str, list[float]] = {"epoch": [], "train/loss": [], "val/loss": [], "val/selection": []}
    for epoch in sorted(sums):
        bucket = sums[epoch]

        def mean(*names: str, _bucket: dict = bucket) -> float:
            for name in names:
                if name in _bucket:
                    return float(np.mean(_bucket[name]))
            return math.nan

        out["epoch"].append(epoch)
        out["train/loss"].append(mean("train/loss", "train/loss_epoch"))
        out["val/loss"].append(mean("val/loss"))
        out["val/selection"].append(mean("val/selection", selection))
    return out
