"""Training one (fold, row): the row's method and teacher as the registry declares them, its
network built, seeded by the fold and fitted on the fold's training subjects with the epoch
selected on its validation subjects. Cross-validation folds and the final all-subject split
(:mod:`privkd.training.final`) train their rows through :func:`fit_row`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import Logger

from privkd.config.loading import variant_config
from privkd.config.parse import config_to_dict
from privkd.config.rows import row_method
from privkd.config.schema import RunConfig, TrainingConfig
from privkd.config.validation import FOLD_SEED_STRIDE
from privkd.data import Fold, MultimodalDataset
from privkd.data.h5format import DatasetInfo
from privkd.errors import PrivkdError
from privkd.evaluation.sanity import collapse, collapse_hint
from privkd.losses.task import balanced_class_weights
from privkd.methods.base import FoldData, PrivkdModule
from privkd.methods.registry import MethodSpec, build_module, method_names, method_spec
from privkd.models.build import build_net
from privkd.models.inference import Predictions
from privkd.models.network import PrivilegedNet
from privkd.training.auto import steps_per_epoch
from privkd.training.fit import fit, seed_everything
from privkd.training.initial import warn_if_leaning
from privkd.training.loggers import row_loggers
from privkd.training.run_dir import is_primary_process

__all__ = ["FittedRow", "Tracking", "class_weights", "degenerate_parts", "fit_row", "load_finished_teacher", "row_spec",
           "teacher_of"]

def row_spec(cfg: RunConfig, row: str) -> MethodSpec:
    return method_spec(row_method(cfg, row))


def teacher_of(cfg: RunConfig, row: str) -> str | None:
    """The method whose fold network ``row`` distils from, if any."""
    return row_spec(cfg, row).teacher_for(variant_config(cfg, row))


def rows_to_train(cfg: RunConfig) -> list[str]:
    """Results rows in training order: the methods (with the teachers their rows need, in the
    registry's order), then the variants."""
    wanted = set(cfg.methods) | {teacher for row in (*cfg.methods, *cfg.variants) if (teacher := teacher_of(cfg, row))}
    return [m for m in method_names() if m in wanted] + list(cfg.variants)


def class_weights(setting: str | tuple[float, ...], train: MultimodalDataset, info: DatasetInfo) -> torch.Tensor | None:
    """The task loss's class weights for ``training.class_weights`` on this fold's training subjects."""
    if info.task != "classification" or setting == "none":
        return None
    if setting == "balanced":
        return balanced_class_weights(torch.as_tensor(train.labels), info.n_outputs)
    return torch.tensor(setting, dtype=torch.float32)


def load_finished_teacher(directory: Path, spec: MethodSpec, cfg: RunConfig, info: DatasetInfo) -> PrivilegedNet:
    """A fold's teacher (T-Net refit included) as a finished earlier attempt saved it."""
    net = build_net(spec.role, cfg, info)
    path = directory / "model.pt"
    try:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, KeyError) as err:
        raise PrivkdError(f"{path}: not this run's {spec.name} ({str(err).splitlines()[0]})",
                          f"delete {directory} so that the {spec.name} of this fold is trained again") from err
    return net.eval()


@dataclass(frozen=True)
class Tracking:
    """Lightning loggers and callbacks a caller adds to every (fold, row) trained by gradient
    descent, beside the configured ones (``training.loggers``) and privkd's own."""

    loggers: Sequence[Logger] = ()
    callbacks: Sequence[L.Callback] = ()


@dataclass
class FittedRow:
    """One (fold, row) trained on its training subjects and selected on its validation ones."""

    module: PrivkdModule
    validation: dict[str, float]
    recorders: dict[str, L.Callback]
    initial: dict[str, float] | None = None
    """Its score before its first step (training, validation, gap); ``None`` for a row fitted
    without gradient descent (:meth:`~privkd.methods.base.PrivkdModule.fit_directly`)."""


def fit_row(row: str, cfg: RunConfig, fold: Fold, data: FoldData, info: DatasetInfo, teacher: PrivilegedNet | None,
            directory: Path, tracking: Tracking = Tracking()) -> FittedRow:
    """Build and train one (fold, row): seeded by the fold, selected on validation subjects."""
    row_cfg = variant_config(cfg, row)
    spec = row_spec(cfg, row)
    seed = cfg.seed + FOLD_SEED_STRIDE * fold.index
    seed_everything(seed)
    module = build_module(spec.name, row_cfg, info, teacher=teacher)
    module.class_weights = class_weights(row_cfg.training.class_weights, data.train, info)
    if cfg.evaluation.group_average and data.val.groups is not None:  # select on the aggregation that is reported
        module.validation_groups = dict(zip(data.val.rows.tolist(), data.val.groups.tolist()))
    recorders = module.probe_recorders(data.val)
    module.prepare_fold(data)
    validation = module.fit_directly(data)
    initial = None
    if validation is None:
        run_dir = directory.parents[1]  # directory is row_dir(run_dir, fold, row) or final_dir(run_dir, row)
        configured = row_loggers(row_cfg.training, directory, run_dir, experiment=cfg.name,
                                 run_name=f"{directory.parent.name}/{row}", params=config_to_dict(row_cfg),
                                 tags={"fold": str(fold.index), "row": row, "method": spec.name, "run_dir": run_dir.name})
        fitted = fit(module, data.train, data.val, row_cfg.training, directory, seed,
                     callbacks=[*recorders.values(), *tracking.callbacks], loggers=[*configured, *tracking.loggers])
        module, validation, initial = fitted.module, fitted.validation, fitted.initial
        if is_primary_process():  # once per row, not once per data-parallel rank
            warn_if_leaning(row, directory.parent.name, initial, info.task, module.selection_metric)
    return FittedRow(module, validation, recorders, initial)


def degenerate_parts(parts: Mapping[str, Predictions], info: DatasetInfo, training: TrainingConfig, n_train: int,
                     epochs_trained: int) -> dict | None:
    """Where (``parts``: validation, test) a row's selected epoch collapsed to one class or a
    constant, with the hint that names its optimiser steps; None when it collapsed nowhere."""
    found = {where: reason for where, predictions in parts.items()
             if (reason := collapse(info.task, predictions.outputs, predictions.labels, info.class_names))}
    if not found:
        return None
    return {**found, "hint": collapse_hint(steps_per_epoch(n_train, training), epochs_trained)}
