"""Config checks only the dataset and this machine can make, run before a run directory exists.

:func:`check_against_dataset` refuses what the schema alone cannot see (modalities the file
lacks, a one-class dataset, a metric or method of the other task, backbones that do not take a
modality's samples, ``group_average`` without ``/groups``, a constant regression target);
:func:`check_accelerator` an accelerator this machine does not have. Both raise
:class:`~privkd.errors.ConfigError` naming the key and the fix.
"""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import torch
from lightning.pytorch.accelerators import AcceleratorRegistry

from privkd.config.schema import RunConfig, TrainingConfig
from privkd.config.validation import ATTENTION_FUSIONS
from privkd.data.h5format import DatasetInfo
from privkd.errors import ConfigError
from privkd.evaluation.metrics import available_metrics, resolve_metric
from privkd.methods.registry import method_names, method_spec
from privkd.models.backbones import (
    DEFAULT_BACKBONE_FOR_KIND,
    build_backbone,
    load_backbone_weights,
    token_count,
)
from privkd.models.build import modality_specs
from privkd.training.row import row_spec, rows_to_train


def check_against_dataset(cfg: RunConfig, info: DatasetInfo) -> None:
    """Config errors only the dataset reveals, raised before anything is trained or written."""
    available = list(info.modalities)
    for key, names in (("data.prevalent", cfg.data.prevalent), ("data.privileged", cfg.data.privileged)):
        unknown = [n for n in names if n not in available]
        if unknown:
            raise ConfigError(key, f"modality {unknown[0]!r} is not in the dataset", f"use some of {available}")
    _check_modality_names(cfg)
    classes = info.class_names or []
    if info.task == "classification" and len(classes) < 2:
        raise ConfigError("data.path", f"{info.path} holds {len(classes)} class{'' if len(classes) == 1 else 'es'} "
                          f"({', '.join(classes)}), and a classifier needs at least 2 to tell apart",
                          "use a dataset with two or more classes (import the other classes' samples too)")
    metric = resolve_metric(cfg.evaluation.metric, info.task)
    allowed = available_metrics(info.task, info.n_outputs)
    if metric not in allowed:
        raise ConfigError("evaluation.metric", f"{metric} is not a metric of this {info.task} task "
                          f"({info.n_outputs} outputs)", f"use auto or one of {allowed}")
    weights = cfg.training.class_weights
    if isinstance(weights, tuple) and (info.task != "classification" or len(weights) != info.n_outputs):
        raise ConfigError("training.class_weights", f"{len(weights)} weights for a {info.task} task with "
                          f"{info.n_outputs} outputs", "give one weight per class, or balanced / none")
    for row in rows_to_train(cfg):
        spec = row_spec(cfg, row)
        if info.task not in spec.tasks:
            supported = [m for m in method_names() if info.task in method_spec(m).tasks]
            raise ConfigError("methods", f"{spec.name} supports {' and '.join(spec.tasks)} tasks; this dataset is a "
                              f"{info.task} task", f"use some of {supported}")
    _check_backbones(cfg, info)
    _check_labels_and_groups(cfg, info)


def _check_labels_and_groups(cfg: RunConfig, info: DatasetInfo) -> None:
    """What the description of a dataset does not hold: ``evaluation.group_average`` needs a
    ``/groups`` column (without it the scores were pooled over samples without a word), and a
    regression target must vary (a constant one gives every row a CCC of 0: nothing is learnt
    and nothing compared)."""
    with h5py.File(info.path, "r") as h5:  # read_info checked that both stay inside the file
        if cfg.evaluation.group_average and "groups" not in h5:
            raise ConfigError("evaluation.group_average", f"{info.path} has no /groups column, so there are no "
                              "recordings to average the predictions over",
                              "set evaluation.group_average: false, or write each sample's recording id to /groups "
                              "(groups= in privkd.data.write_dataset)")
        if info.task != "regression":
            return
        labels = np.asarray(h5["labels"][()], dtype=np.float64).reshape(info.n_samples, -1)
    constant = [name for name, column in zip(info.target_names or [], labels.T, strict=True)
                if column.max() == column.min()]
    if constant:
        raise ConfigError("data.path", f"the regression target{'s' if len(constant) > 1 else ''} {constant} of "
                          f"{info.path} take{'' if len(constant) > 1 else 's'} one value in every sample: there is "
                          "nothing to learn, and every row would score a CCC of 0",
                          "use a dataset whose targets vary (check the label column that was imported)")


def _check_modality_names(cfg: RunConfig) -> None:
    """A modality's name keys its encoder in the network (a ``torch.nn.ModuleDict``), which takes
    none of a module's own attributes (``training``, ``forward``...); names with a ``.`` the
    dataset format refuses already."""
    for key, names in (("data.prevalent", cfg.data.prevalent), ("data.privileged", cfg.data.privileged)):
        for name in names:
            try:
                torch.nn.ModuleDict({name: torch.nn.Identity()})
            except (KeyError, TypeError) as err:
                new = f"{name}_data"
                raise ConfigError(key, f"modality {name!r} cannot name a network module ({err.args[0]})",
                                  f"rename it in the dataset file, e.g. with h5py: file.move('modalities/{name}', "
                                  f"'modalities/{new}'), and list the new name here") from None


def _check_backbones(cfg: RunConfig, info: DatasetInfo) -> None:
    """Every modality's backbone exists, takes the modality's samples, and takes its weights file:
    build each once (leaving the global random state as it was) and load its weights."""
    names = [*cfg.data.prevalent, *cfg.data.privileged]
    for spec in modality_specs(cfg, info, names):  # refuses an unknown backbone, or a kind without a default
        kind = info.modalities[spec.name].kind
        with torch.random.fork_rng(devices=[]):
            try:
                backbone = build_backbone(spec.backbone, spec.sample_shape)
            except ValueError as err:
                raise ConfigError(f"model.backbones.{spec.name}", f"{spec.backbone} does not take modality "
                                  f"{spec.name!r} ({kind}, samples shaped {spec.sample_shape}): {err}",
                                  f"use a backbone for {kind} data ({DEFAULT_BACKBONE_FOR_KIND.get(kind)} when "
                                  "model.backbones does not name one)") from None
        if spec.name in cfg.model.backbone_weights:
            load_backbone_weights(backbone, cfg.model.backbone_weights[spec.name], f"model.backbone_weights.{spec.name}")
        if cfg.model.fusion in ATTENTION_FUSIONS:
            _check_attention_tokens(cfg, spec.name, spec.backbone, kind, token_count(backbone, spec.sample_shape))


class FusionWarning(UserWarning):
    """Attention fusion over a modality whose backbone gives one token at this sample length."""


def _check_attention_tokens(cfg: RunConfig, name: str, backbone: str, kind: str, tokens: int) -> None:
    """Attention fusion attends over each modality's tokens; a backbone that gives one token is
    copied up to ``model.tokens`` identical ones, over which attention weights are uniform (the
    fusion reduces to a linear map). A feature vector is one token by construction: refused. A
    sequence too short for its backbone's striding (R3D clips under 16 frames) is warned about."""
    if tokens > 1:
        return
    what = (f"{cfg.model.fusion} attends over the tokens of each modality, but backbone {backbone} gives modality "
            f"{name!r} ({kind}) one token, copied to {cfg.model.tokens} identical ones: every attention weight over them "
            "is the same, so the fusion is a linear map of the modality")
    if kind == "features":
        raise ConfigError("model.fusion", what, "use fusion: concat for feature-vector modalities (the papers' attention "
                          "fusions take video and spectrogram sequences)")
    warnings.warn(FusionWarning(f"model.fusion: {what}; give it longer samples (more frames or time steps), or use "
                                "fusion: concat"), stacklevel=3)


def check_accelerator(training: TrainingConfig) -> None:
    """The accelerator must be on this machine: Lightning refuses it only once a row's trainer is built."""
    wanted = {"auto": [], "gpu": ["cuda", "mps"]}.get(training.accelerator, [training.accelerator])
    if wanted and not any(AcceleratorRegistry[name]["accelerator"].is_available() for name in wanted):
        here = [name for name in sorted(AcceleratorRegistry.available_accelerators())
                if AcceleratorRegistry[name]["accelerator"].is_available()]
        raise ConfigError("training.accelerator", f"{training.accelerator!r} is not available on this machine",
                          f"use auto or one of {here}")
