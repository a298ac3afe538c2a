"""The experiment trackers of ``training.loggers`` beside the CSV log every row keeps.

``logs/metrics.csv`` is always written (the report and a resumed training read it); the
others are extra copies of the same per-epoch metrics: TensorBoard event files under the
row's ``tensorboard/``, and one MLflow run per (fold, row) in a file store at the run
directory's ``mlruns/`` (``mlflow ui --backend-store-uri <run>/mlruns``; no server, nothing
leaves the machine). Their packages are optional, so a missing one is reported before
anything trains, with the command that installs it.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger

from privkd.config.schema import TrainingConfig
from privkd.errors import ConfigError

__all__ = ["LOGGER_PACKAGES", "MLFLOW_DIR", "TENSORBOARD_DIR", "check_logger_packages", "row_loggers"]

LOGGER_PACKAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "tensorboard": (("tensorboard", "tensorboardX"), "pip install tensorboard"),
    "mlflow": (("mlflow",), "pip install mlflow (or the lighter mlflow-skinny)"),
}
"""Logger name -> (modules of which one must be importable, how to install one)."""
TENSORBOARD_DIR = "tensorboard"
MLFLOW_DIR = "mlruns"


def check_logger_packages(training: TrainingConfig) -> None:
    """Raise a :class:`ConfigError` naming ``training.loggers`` and the install command when a
    chosen logger's package is missing, so that a run fails before its first epoch rather
    than after its first fold."""
    for name in training.loggers:
        modules, install = LOGGER_PACKAGES.get(name, ((), ""))
        if modules and not any(importlib.util.find_spec(module) for module in modules):
            raise ConfigError("training.loggers", f"{name} needs the {modules[0]} package, which is not installed",
                              f"{install}, or drop {name} from training.loggers")


def row_loggers(training: TrainingConfig, row_dir: Path, run_dir: Path, *, experiment: str, run_name: str,
                params: Mapping[str, Any], tags: Mapping[str, str]) -> list[Logger]:
    """The configured loggers of one (fold, row) other than CSV (which :func:`~privkd.training.fit.fit`
    always adds). ``params`` (the row's config as plain data) becomes the MLflow run's
    parameters (``training/lr``, ...), ``tags`` its tags; ``experiment`` names the MLflow experiment."""
    check_logger_packages(training)
    loggers: list[Logger] = []
    if "tensorboard" in training.loggers:
        loggers.append(TensorBoardLogger(row_dir, name=TENSORBOARD_DIR, version="", default_hp_metric=False))
    if "mlflow" in training.loggers:
        # MLflow 3 refuses its file store unless asked for it; a local file store is the point here
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow = MLFlowLogger(experiment_name=experiment, run_name=run_name, tags=dict(tags),
                              tracking_uri=(run_dir / MLFLOW_DIR).resolve().as_uri())
        mlflow.log_hyperparams(dict(params))
        loggers.append(mlflow)
    return loggers

