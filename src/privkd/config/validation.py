"""Rules that involve several config keys at once, checked before anything is trained.

The rules about methods ask the method registry (:mod:`privkd.methods.registry`) what each
method needs, so adding a method never means editing this file.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import PurePosixPath, PureWindowsPath

from privkd.config.fitted import AUTO
from privkd.config.parse import build_config, config_to_dict
from privkd.config.rows import row_method, set_key
from privkd.config.schema import (
    SHARED_SECTIONS,
    RunConfig,
    TrainingConfig,
    VariantConfig,
)
from privkd.errors import ConfigError
from privkd.methods.registry import method_names, method_spec

__all__ = ["ATTENTION_FUSIONS", "AUTO", "validate"]


ATTENTION_FUSIONS = ("joint_cross_attention", "multimodal_transformer")
"""Fusions that attend over the token axis, so need more than one token to attend at all."""


RUN_WIDE_KEYS = ("training.jobs", "training.threads")
"""Training keys a variant may not change: how the run's rows are spread over processes."""


def validate(cfg: RunConfig) -> RunConfig:
    """``cfg`` once every cross-key rule holds, else the :class:`ConfigError` of the first that fails."""
    unknown = [m for m in cfg.methods if m not in method_names()]
    if unknown:
        raise ConfigError("methods", f"unknown method(s) {unknown}", f"use some of {method_names()}")
    if not cfg.methods and not cfg.variants:
        raise ConfigError("methods", "no method selected", f"list at least one of {method_names()}")
    check_plain_name("name", cfg.name)
    _check_data(cfg)
    for name, variant in cfg.variants.items():
        _check_variant(name, variant, _variant_sections(cfg))
    specs = [method_spec(row_method(cfg, row)) for row in (*cfg.methods, *cfg.variants)]
    needing = [spec.name for spec in specs if spec.needs_privileged]
    if needing and not cfg.data.privileged:
        raise ConfigError("data.privileged", f"empty but {needing[0]} needs a privileged modality", "name one")
    _check_ranges(cfg)
    _check_model(cfg)
    k, batch = cfg.structural.k, cfg.training.batch_size
    if any(spec.uses_anchors for spec in specs) and AUTO not in (k, batch) and k >= batch:
        raise ConfigError("structural.k", f"{cfg.structural.k} anchors need batches of more than {cfg.structural.k} "
                          f"samples, but training.batch_size is {cfg.training.batch_size}",
                          "lower structural.k or raise training.batch_size (the papers: 30 anchors, batch 128)")
    if needing and batch != AUTO and batch < 2:
        raise ConfigError("training.batch_size", "structural distillation needs at least 2 samples per batch", "use >= 2")
    for name, variant in cfg.variants.items():
        _validate_variant_row(cfg, name, variant)
    return cfg


def check_plain_name(key: str, name: str) -> None:
    """A name that becomes a directory (the run's, a row's) must be one plain path component,
    so that no config can make privkd write outside ``--out`` or into another run."""
    parts = {PurePosixPath(name).name, PureWindowsPath(name).name}
    if not name.strip() or parts != {name} or name in (".", "..") or "\0" in name:
        raise ConfigError(key, f"{name!r} is not a plain name (it is used as a directory name, so it may not be "
                          "empty, '.', '..', an absolute path or contain '/' or '\\')",
                          "use letters, digits, '-', '_' or '.', e.g. my-run")


def _variant_sections(cfg: RunConfig) -> list[str]:
    """The sections a variant may override: every section that is not shared by the rows."""
    own = [f.name for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name))]
    return [name for name in (*own, *cfg.extensions) if name not in SHARED_SECTIONS]


def _validate_variant_row(cfg: RunConfig, name: str, variant: VariantConfig) -> None:
    """Build and validate the config ``variants.<name>`` trains with, as the runner will, so a
    bad key or value inside its ``set`` is refused before any row trains."""
    values = config_to_dict(cfg)
    values["variants"] = {}
    try:
        for key, value in variant.set.items():
            set_key(values, key.split("."), value)
        validate(build_config(values))
    except ConfigError as err:
        raise ConfigError(f"variants.{name}.set.{err.key}", err.problem, err.fix) from err


def _check_variant(name: str, variant: VariantConfig, sections: list[str]) -> None:
    check_plain_name(f"variants.{name}", name)
    if name in method_names():
        raise ConfigError(f"variants.{name}", "a variant may not reuse a method's name", "pick another row name")
    variable = [spec for spec in map(method_spec, method_names()) if not spec.provides_teacher]
    if variant.method not in [spec.name for spec in variable]:
        raise ConfigError(f"variants.{name}.method", f"{variant.method!r} cannot be varied",
                          f"use one of {[spec.name for spec in variable]}")
    for key in variant.set:
        if key in RUN_WIDE_KEYS:
            raise ConfigError(f"variants.{name}.set.{key}", "the run's processes and threads are the same for every "
                              "row (a row's result depends on its threads)", f"set {key} for the whole run")
        if key.split(".")[0] not in sections or "." not in key:
            raise ConfigError(
                f"variants.{name}.set.{key}",
                "a variant can only change keys of its own training, not the shared data, folds, model or "
                "teacher, nor the run's name, seed, methods or variants",
                f"override keys of {', '.join(sections)} (e.g. training.epochs)",
            )


def _check_data(cfg: RunConfig) -> None:
    if not cfg.data.prevalent:
        raise ConfigError("data.prevalent", "empty", "name at least one modality available at test time")
    overlap = set(cfg.data.prevalent) & set(cfg.data.privileged)
    if overlap:
        raise ConfigError(
            "data.privileged",
            f"{sorted(overlap)} listed as both prevalent and privileged",
            "a modality is either available at test time (prevalent) or not (privileged)",
        )
    if not 0 < cfg.data.train_fraction <= 1:
        raise ConfigError("data.train_fraction", f"must be in (0, 1], got {cfg.data.train_fraction}",
                          "use 1 to train on all of each training subject's samples, or e.g. 0.25 for a quarter")


def _check_ranges(cfg: RunConfig) -> None:
    positive = {
        "evaluation.n_folds": cfg.evaluation.n_folds,
        "evaluation.n_val_subjects": cfg.evaluation.n_val_subjects,
        "evaluation.min_val_samples": cfg.evaluation.min_val_samples,
        "training.epochs": cfg.training.epochs,
        "training.batch_size": cfg.training.batch_size,
        "training.min_steps": cfg.training.min_steps,
        "training.patience": cfg.training.patience,
        "training.jobs": cfg.training.jobs,
        "training.threads": cfg.training.threads,
        "model.embed_dim": cfg.model.embed_dim,
        "model.attention_heads": cfg.model.attention_heads,
        "structural.k": cfg.structural.k,
    }
    for key, value in positive.items():
        if value != AUTO and value < 1:
            raise ConfigError(key, f"must be >= 1, got {value}", "use a positive integer")
    if cfg.evaluation.max_folds is not None and cfg.evaluation.max_folds < 1:
        raise ConfigError("evaluation.max_folds", f"must be >= 1 or null, got {cfg.evaluation.max_folds}",
                          "use null to train every fold, or a positive number of folds")
    if cfg.training.lr <= 0:
        raise ConfigError("training.lr", f"must be > 0, got {cfg.training.lr}", "use e.g. 0.001")
    if cfg.student.tnet_crossfit < 0:
        raise ConfigError("student.tnet_crossfit", f"must be >= 0, got {cfg.student.tnet_crossfit}",
                          "use e.g. 5 parts, or 0 to hallucinate every training sample with the teacher's T-Net")
    if cfg.student.init_from_teacher and not cfg.student.hallucinate:
        raise ConfigError("student.init_from_teacher", "a student that does not hallucinate (student.hallucinate: false) "
                          "lacks the teacher's fusion shape and cannot start from its weights",
                          "set student.init_from_teacher: false, or student.hallucinate: true")
    if cfg.training.weight_decay < 0:
        raise ConfigError("training.weight_decay", f"must be >= 0, got {cfg.training.weight_decay}",
                          "use 0 for none, or e.g. 0.0001")
    if cfg.training.jobs not in (1, AUTO) and cfg.training.devices * cfg.training.num_nodes > 1:
        raise ConfigError("training.jobs", f"{cfg.training.jobs} worker processes and data parallelism over "
                          f"{cfg.training.devices * cfg.training.num_nodes} processes at once",
                          "use jobs: 1 with devices or num_nodes > 1 (every process then trains each row together)")
    if cfg.evaluation.n_folds < 2:
        raise ConfigError("evaluation.n_folds", "cross-validation needs at least 2 folds", "use 2 or more")
    if not 0 < cfg.evaluation.val_share < 1:
        raise ConfigError("evaluation.val_share", f"must be between 0 and 1, got {cfg.evaluation.val_share}",
                          "use e.g. 0.2 (a fifth of the subjects left after the test fold)")
    weights = cfg.training.class_weights
    if isinstance(weights, tuple) and not all(w > 0 for w in weights):
        raise ConfigError("training.class_weights", f"weights must be positive, got {list(weights)}",
                          "give one positive weight per class, or balanced / none")
    if cfg.structural.epsilon <= 0:
        raise ConfigError("structural.epsilon", f"must be > 0, got {cfg.structural.epsilon}", "use e.g. 0.01")
    _check_training_options(cfg.training)


def _check_training_options(t: TrainingConfig) -> None:
    """The schedule, clipping and logger keys (off by default)."""
    if t.lr_warmup_epochs < 0:
        raise ConfigError("training.lr_warmup_epochs", f"must be >= 0, got {t.lr_warmup_epochs}",
                          "use 0 for no warm-up")
    if t.epochs != AUTO and t.lr_warmup_epochs >= t.epochs > 0:
        raise ConfigError("training.lr_warmup_epochs", f"{t.lr_warmup_epochs} warm-up epochs leave none of the "
                          f"{t.epochs} training epochs at the full learning rate", "use fewer warm-up epochs")
    if t.lr_step_epochs < 1:
        raise ConfigError("training.lr_step_epochs", f"must be >= 1, got {t.lr_step_epochs}",
                          "use e.g. 10 (the step schedule lowers the learning rate every 10 epochs)")
    if not 0 < t.lr_step_gamma <= 1:  # also False for NaN
        raise ConfigError("training.lr_step_gamma", f"must be in (0, 1], got {t.lr_step_gamma}",
                          "use e.g. 0.1 (each step divides the learning rate by 10)")
    if t.grad_clip is not None and not 0 < t.grad_clip < math.inf:
        raise ConfigError("training.grad_clip", f"must be a finite number > 0, got {t.grad_clip}",
                          "use e.g. 1.0, or null for no clipping")
    if len(set(t.loggers)) != len(t.loggers):
        raise ConfigError("training.loggers", f"{list(t.loggers)} names a logger twice", "list each logger once")


def _check_model(cfg: RunConfig) -> None:
    if cfg.model.embed_dim % cfg.model.attention_heads:
        raise ConfigError("model.attention_heads", f"{cfg.model.attention_heads} heads do not divide embed_dim "
                          f"{cfg.model.embed_dim}", "choose heads that divide model.embed_dim")
    if cfg.model.tokens < 1:
        raise ConfigError("model.tokens", f"must be >= 1, got {cfg.model.tokens}", "use 1 for one embedding per modality")
    if cfg.model.fusion in ATTENTION_FUSIONS and cfg.model.tokens == 1:
        raise ConfigError("model.tokens", f"{cfg.model.fusion} attends over each modality's tokens, and with one token "
                          "its attention weights are all 1: it reduces to a linear map of the other modality",
                          "set model.tokens to 2 or more (the papers' recipes use 2), or use fusion: concat")
    modalities = set(cfg.data.prevalent) | set(cfg.data.privileged)
    for key in ("backbones", "backbone_weights"):
        unknown = sorted(set(getattr(cfg.model, key)) - modalities)
        if unknown:
            raise ConfigError(f"model.{key}.{unknown[0]}", "not a prevalent or privileged modality", f"use some of {sorted(modalities)}")
    unknown = sorted(set(cfg.model.frozen_backbones) - modalities)
    if unknown:
        raise ConfigError("model.frozen_backbones", f"{unknown[0]!r} is not a prevalent or privileged modality", f"use some of {sorted(modalities)}")
