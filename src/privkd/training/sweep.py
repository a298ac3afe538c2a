"""``privkd sweep``: a grid (or an Optuna search) over config keys, chosen on validation subjects.

Every point is a full run (its own run directory, same folds, same seed) with some keys
overridden; rows a point does not change are taken over from earlier points
(:mod:`privkd.training.reuse`), not retrained. The objective is the mean over folds of one row's *validation* score (macro-F1
or CCC on the validation subjects, the score the run already selects epochs on), never a
test score: test scores are recorded beside it for the table and the batch-size/anchor
figure, but the best point is picked without them.
"""

from __future__ import annotations

import copy
import itertools
import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from privkd.config.loading import config_from_dict, load_config
from privkd.config.parse import config_to_dict
from privkd.config.rows import set_key
from privkd.config.schema import RunConfig
from privkd.errors import ConfigError
from privkd.evaluation.metrics import resolve_metric
from privkd.evaluation.summary import metric_label
from privkd.optional import require
from privkd.training.experiment import (
    check_before_run,
    row_spec,
    rows_to_train,
    run_experiment,
)
from privkd.training.run_dir import create_run_dir, write_json_atomic, write_text_atomic

ProgressCallback = Callable[[str], None]


@dataclass
class SweepPoint:
    """One evaluated setting: its overrides, run directory, validation objective and test means."""

    params: dict[str, Any]
    run_dir: str
    objective: float
    test: dict[str, dict[str, float]]


def _scalar(text: str) -> Any:
    """A YAML scalar, with ``1e-3`` read as the number YAML 1.1 would leave as a string."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["structural.k=10,30", ...]`` → ``{"structural.k": [10, 30]}``."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        values = [_scalar(v.strip()) for v in raw.split(",") if v.strip()]
        if not sep or not key.strip() or not values:
            raise ConfigError(item, "not KEY=V1,V2,...", "write e.g. --grid structural.k=10,30")
        grid[key.strip()] = values
    if not grid:
        raise ConfigError("--grid", "no parameter to sweep", "give at least one --grid key=v1,v2")
    return grid


def objective_row(cfg: RunConfig, row: str | None) -> str:
    """The row whose validation score is optimised: ``row``, or the only distilled row."""
    rows = rows_to_train(cfg)
    if row is not None:
        if row not in rows:
            raise ConfigError("--row", f"{row!r} is not a row of this config", f"use one of {rows}")
        return row
    candidates = [r for r in rows if row_spec(cfg, r).bound is None] or rows
    if len(candidates) > 1:
        raise ConfigError("--row", f"several rows could be the objective: {candidates}", "name one with --row")
    return candidates[0]


def validation_objective(run_dir: Path, row: str, metric: str) -> float:
    """Mean over folds of ``row``'s validation score on the run's selection metric."""
    key = f"val/{metric}"
    scores = [json.loads(p.read_text())["validation"][key] for p in sorted(run_dir.glob(f"fold_*/{row}/metrics.json"))]
    return statistics.fmean(scores)


def point_config(base: Mapping[str, Any], params: Mapping[str, Any]) -> RunConfig:
    """The validated config of one grid point: ``base`` with the point's ``params`` set as the
    typed values they are. Printed as ``--set`` text and parsed again, some came back as other
    types (JSON writes 1e-05 as ``1e-05``, which YAML 1.1 reads as a string, left for the
    schema to turn back) and values JSON cannot write (NumPy integers) failed the sweep."""
    values = copy.deepcopy(dict(base))
    for key, value in params.items():
        set_key(values, key.split("."), value)
    return config_from_dict(values)


def plain_grid(grid: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """``grid`` with NumPy scalars (``np.arange``, ``np.logspace`` from the Python API) as the
    Python numbers they hold, so that every point's config, Optuna's choices and ``sweep.json``
    take them as they are."""
    return {key: [value.item() if isinstance(value, np.generic) else value for value in values]
            for key, values in grid.items()}


def check_grid(cfg: RunConfig, grid: Mapping[str, Sequence[Any]]) -> None:
    """Every point of the grid is a valid config, and every value of each key passes the checks
    against the dataset, before the sweep directory exists: only the first value of each key
    used to be checked, so a bad later value failed mid-sweep, after the earlier points trained.

    The configs of all points are checked (values of two keys may conflict, e.g. anchors and
    batch size); the dataset checks (which build the backbones) once per value of each key, the
    other keys at their first value, so that they grow with the number of values, not points."""
    base = config_to_dict(cfg)
    for values in itertools.product(*grid.values()):
        point_config(base, dict(zip(grid, values, strict=True)))
    first = {key: values[0] for key, values in grid.items()}
    for key, values in grid.items():
        for value in values:
            check_before_run(point_config(base, {**first, key: value}))


def evaluate_point(base: Mapping[str, Any], params: Mapping[str, Any], out: Path, row: str,
                   progress: ProgressCallback, earlier: Sequence[SweepPoint] = ()) -> SweepPoint:
    """One point's run; the rows it does not change (the baseline and teacher of a point that
    changes only a student key) are taken over from the ``earlier`` points' runs."""
    cfg = point_config(base, params)
    progress(f"sweep point {dict(params)}")
    result = run_experiment(cfg, out, progress, reuse=[Path(point.run_dir) for point in earlier])
    test = {name: {metric: values["mean"] for metric, values in metrics.items()}
            for name, metrics in result.summary["methods"].items()}
    return SweepPoint(dict(params), str(result.run_dir), validation_objective(result.run_dir, row, result.summary["metric"]), test)


def run_sweep(
    config: str | Path,
    overrides: Sequence[str],
    grid: Mapping[str, Sequence[Any]],
    out_root: str | Path,
    *,
    row: str | None = None,
    trials: int | None = None,
    progress: ProgressCallback = lambda _: None,
) -> Path:
    """Evaluate the grid (or ``trials`` Optuna TPE samples of it) and write ``sweep.json`` / ``sweep.md``."""
    optuna = require("optuna", "sweep", "privkd sweep --trials") if trials is not None else None
    grid = plain_grid(grid)
    cfg = load_config(config, list(overrides))
    check_grid(cfg, grid)  # every point, before anything trains
    row = objective_row(cfg, row)
    task = check_before_run(cfg).info.task  # what the dataset reveals, before the sweep directory exists
    base = config_to_dict(cfg)
    sweep_dir = create_run_dir(out_root, f"{cfg.name}-sweep")
    points_dir = sweep_dir / "points"
    points: list[SweepPoint] = []

    def record(point: SweepPoint) -> None:
        points.append(point)
        write_sweep(sweep_dir, config, grid, row, cfg, task, points)

    if trials is None:
        for values in itertools.product(*grid.values()):
            record(evaluate_point(base, dict(zip(grid, values)), points_dir, row, progress, points))
    else:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg.seed))

        def objective(trial: optuna.Trial) -> float:
            params = {key: trial.suggest_categorical(key, list(values)) for key, values in grid.items()}
            point = evaluate_point(base, params, points_dir, row, progress, points)
            record(point)
            return point.objective

        study.optimize(objective, n_trials=trials)
    return sweep_dir


def write_sweep(sweep_dir: Path, config: str | Path, grid: Mapping[str, Sequence[Any]], row: str, cfg: RunConfig,
                task: str, points: list[SweepPoint]) -> None:
    """Rewrite ``sweep.json`` and ``sweep.md`` after every point, so an interrupted sweep keeps its results."""
    task_metric = headline = resolve_metric(cfg.evaluation.metric, task)
    best = max(points, key=lambda p: p.objective)
    write_json_atomic(sweep_dir / "sweep.json", {
        "config": str(config), "objective": f"val/{task_metric}", "row": row, "parameters": list(grid),
        "points": [asdict(p) for p in points], "best": asdict(best),
    })
    keys = list(grid)
    lines = [f"# Sweep of {cfg.name}: {row}", "",
             (f"Objective: mean validation {metric_label(task_metric)} of `{row}` over folds (validation subjects only); "
              f"test {metric_label(headline)} shown for reference, never used to choose."), "",
             "| " + " | ".join([*keys, f"val {metric_label(task_metric)}", f"test {metric_label(headline)}", ""]) + " |",
             "|" + "---|" * (len(keys) + 3)]
    for p in points:
        mark = "best" if p is best else ""
        lines.append("| " + " | ".join([*(str(p.params[k]) for k in keys), f"{p.objective:.4f}",
                                        f"{p.test[row][headline]:.4f}", mark]) + " |")
    write_text_atomic(sweep_dir / "sweep.md", "\n".join(lines) + "\n")
