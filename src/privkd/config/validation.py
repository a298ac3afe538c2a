"""The range of every numeric key and the rules that involve several config keys at once,
checked before anything is trained (or any run directory is made): a value that would only fail
once a row trains fails here instead, where the message can name the key. What only the dataset
reveals is checked against it by :func:`privkd.training.checks.check_against_dataset`.

The rules about methods ask the method registry (:mod:`privkd.methods.registry`) what each
method needs, so adding a method never means editing this file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from lightning.pytorch.accelerators import AcceleratorRegistry
from lightning.pytorch.strategies import StrategyRegistry

from privkd.config.fitted import AUTO
from privkd.config.parse import build_config, config_to_dict
from privkd.config.rows import row_method, set_key
from privkd.config.schema import (
    LEAKS,
    SHARED_SECTIONS,
    RunConfig,
    TrainingConfig,
    VariantConfig,
    protocol_leaks,
)
from privkd.errors import ConfigError
from privkd.methods.registry import method_names, method_spec

__all__ = ["ATTENTION_FUSIONS", "AUTO", "FOLD_SEED_STRIDE", "MAX_SEED", "RANGES", "Range", "validate"]


ATTENTION_FUSIONS = ("joint_cross_attention", "multimodal_transformer")
"""Fusions that attend over the token axis, so need more than one token to attend at all."""


RUN_WIDE_KEYS = ("training.jobs", "training.threads")
"""Training keys a variant may not change: how the run's rows are spread over processes."""

MAX_SEED = 2**32 - 1
"""The largest seed NumPy (and so Lightning's ``seed_everything``) accepts; the smallest is 0."""

FOLD_SEED_STRIDE = 1000
"""Fold ``i`` of a run (and the ``--final`` training, one past the last fold) is seeded with
``seed + FOLD_SEED_STRIDE * i`` (:func:`privkd.training.row.fit_row`)."""


MAX_THREADS = 1024
"""The most intra-op threads a run may ask for: above any machine's core count (more threads
than cores only wait on each other), and far below the 100000 with which OpenMP crashed."""


@dataclass(frozen=True)
class Range:
    """The interval a numeric key must lie in: ``low`` <= value <= ``high`` (``<`` where the end is
    open); a missing end is unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


AT_LEAST_1 = Range(1)
AT_LEAST_0 = Range(0)
ABOVE_0 = Range(0, low_open=True)
_WEIGHT = (AT_LEAST_0, "use 0 to switch the term off, or a positive weight")

RANGES: tuple[tuple[str, Range, str], ...] = (
    ("evaluation.n_val_subjects", AT_LEAST_1, "use a positive integer, or auto"),
    ("evaluation.min_val_samples", AT_LEAST_1, "use a positive integer"),
    ("evaluation.max_folds", AT_LEAST_1, "use null to train every fold, or a positive number of folds"),
    ("model.embed_dim", AT_LEAST_1, "use a positive integer"),
    ("model.fusion_dim", AT_LEAST_1, "use a positive integer, e.g. 128"),
    ("model.dropout", Range(0, 1, high_open=True), "use a probability below 1, e.g. 0.2, or 0 for no dropout"),
    ("model.tokens", AT_LEAST_1, "use 1 for one embedding per modality"),
    ("model.attention_heads", AT_LEAST_1, "use a positive integer"),
    ("model.tnet_hidden", AT_LEAST_1, "use a positive integer, e.g. 128"),
    ("model.tnet_bottleneck", AT_LEAST_1, "use a positive integer, e.g. 32"),
    ("training.epochs", AT_LEAST_1, "use a positive integer, or auto"),
    ("training.batch_size", AT_LEAST_1, "use a positive integer, or auto"),
    ("training.min_steps", AT_LEAST_1, "use a positive integer"),
    ("training.lr", ABOVE_0, "use e.g. 0.001"),
    ("training.weight_decay", AT_LEAST_0, "use 0 for none, or e.g. 0.0001"),
    ("training.patience", AT_LEAST_1, "use a positive integer, or auto"),
    ("training.num_workers", AT_LEAST_0, "use 0 to load batches in the training process, or a number of loader processes"),
    ("training.limit_train_batches", AT_LEAST_1, "use null for every batch, or e.g. 1 to check a recipe end to end"),
    ("training.devices", AT_LEAST_1, "use 1, or the number of devices per node to train on in parallel"),
    ("training.num_nodes", AT_LEAST_1, "use 1, or the number of nodes to train on in parallel"),
    ("training.lr_warmup_epochs", AT_LEAST_0, "use 0 for no warm-up"),
    ("training.lr_step_epochs", AT_LEAST_1, "use e.g. 10 (the step schedule lowers the learning rate every 10 epochs)"),
    ("training.lr_step_gamma", Range(0, 1, low_open=True), "use e.g. 0.1 (each step divides the learning rate by 10)"),
    ("training.grad_clip", ABOVE_0, "use e.g. 1.0, or null for no clipping"),
    ("training.jobs", AT_LEAST_1, "use a positive integer, or auto"),
    ("training.threads", Range(1, MAX_THREADS), "use auto (the machine's cores, shared by the jobs), or at most its cores"),
    ("teacher.tnet_weight", *_WEIGHT),
    ("teacher.tnet_refit_epochs", AT_LEAST_0, "use 0 to keep the T-Net trained with the teacher, or e.g. 100"),
    ("teacher.tnet_refit_lr", ABOVE_0, "use e.g. 0.001"),
    ("teacher.align_weight", *_WEIGHT),
    ("teacher.adapter_task_weight", *_WEIGHT),
    ("student.tnet_crossfit", AT_LEAST_0,
     "use e.g. 5 parts, or 0 to hallucinate every training sample with the teacher's T-Net"),
    ("structural.k", AT_LEAST_1, "use a positive integer, or auto"),
    ("structural.epsilon", ABOVE_0, "use e.g. 0.01"),
    ("pkdot.beta", *_WEIGHT),
    ("mtpkdot.alpha", *_WEIGHT),
    ("mtpkdot.beta", *_WEIGHT),
    ("mtpkdot.gamma", *_WEIGHT),
    ("p2p.beta", *_WEIGHT),
    ("p2p.temperature", ABOVE_0, "use e.g. 4 (Hinton et al.), or 1 for the plain softmax"),
    ("p2p.task_weight", *_WEIGHT),
    ("amid.alpha_mi_s", *_WEIGHT),
    ("amid.alpha_mi_a", *_WEIGHT),
    ("amid.alpha_adv", *_WEIGHT),
    ("amid.tau", ABOVE_0, "use e.g. 0.6 (the paper's)"),
    ("amid.warmup_epochs", AT_LEAST_0, "use 0 for no warm-up, or e.g. 5 (the paper's)"),
    ("amid.discriminator_lr", ABOVE_0, "use e.g. 0.0001"),
    ("study.seeds", AT_LEAST_1, "use a positive number of seeds, e.g. 3"),
)
"""The range of every numeric key that has a plain one (``auto`` and null always pass): a key
added to the schema gets its line here (``tests/test_early_checks.py`` checks that every numeric
key is refused out of range). Keys whose range depends on other keys are checked below."""


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
    _check_protocol(cfg)
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


def _value(cfg: RunConfig, key: str) -> Any:
    """The value of ``section.key`` (or of a top-level key) in ``cfg``."""
    section, _, name = key.rpartition(".")
    return getattr(cfg.section(section) if section else cfg, name)


def _check_range(key: str, value: Any, allowed: Range, fix: str) -> None:
    """Refuse ``value`` of ``key`` outside ``allowed`` (``auto`` and null pass)."""
    if value is not None and value != AUTO and not allowed.holds(value):
        raise ConfigError(key, f"must be {allowed}, got {value}", fix)


def _check_ranges(cfg: RunConfig) -> None:
    for key, allowed, fix in RANGES:
        _check_range(key, _value(cfg, key), allowed, fix)
    _check_lightning_names(cfg.training)
    if cfg.student.tnet_crossfit > 1 and not cfg.student.hallucinate:
        raise ConfigError("student.tnet_crossfit", "cross-fitted T-Nets hallucinate a student's training samples, and "
                          "this student does not hallucinate (student.hallucinate: false)",
                          "set student.tnet_crossfit: 0, or student.hallucinate: true")
    if cfg.student.init_from_teacher and not cfg.student.hallucinate:
        raise ConfigError("student.init_from_teacher", "a student that does not hallucinate (student.hallucinate: false) "
                          "lacks the teacher's fusion shape and cannot start from its weights",
                          "set student.init_from_teacher: false, or student.hallucinate: true")
    if cfg.training.jobs not in (1, AUTO) and cfg.training.devices * cfg.training.num_nodes > 1:
        raise ConfigError("training.jobs", f"{cfg.training.jobs} worker processes and data parallelism over "
                          f"{cfg.training.devices * cfg.training.num_nodes} processes at once",
                          "use jobs: 1 with devices or num_nodes > 1 (every process then trains each row together)")
    if cfg.evaluation.n_folds < 2:
        raise ConfigError("evaluation.n_folds", "cross-validation needs at least 2 folds", "use 2 or more")
    _check_seed(cfg)
    if not 0 < cfg.evaluation.val_share < 1:
        raise ConfigError("evaluation.val_share", f"must be between 0 and 1, got {cfg.evaluation.val_share}",
                          "use e.g. 0.2 (a fifth of the subjects left after the test fold)")
    weights = cfg.training.class_weights
    if isinstance(weights, tuple) and not all(w > 0 for w in weights):
        raise ConfigError("training.class_weights", f"weights must be positive, got {list(weights)}",
                          "give one positive weight per class, or balanced / none")
    _check_training_options(cfg.training)


def _check_protocol(cfg: RunConfig) -> None:
    """The leaking protocols run only when ``evaluation.allow_leaks`` names them (for reproducing
    the papers' released scripts), and cross-corpus testing takes one fold of its own."""
    e = cfg.evaluation
    for name in protocol_leaks(e.protocol, e.selection):
        if name not in e.allow_leaks:
            key = "evaluation.selection" if name == "test_selection" else "evaluation.protocol"
            raise ConfigError(key, f"{getattr(e, key.split('.')[1])} leaks test information ({LEAKS[name]}): it "
                              "exists only to reproduce the papers' released scripts, and every table will say so",
                              f"add {name} to evaluation.allow_leaks to run it anyway, or use the default "
                              f"({'protocol: subject_folds or loso' if name == 'sample_folds' else 'selection: validation'})")
    if cfg.data.test_path is not None and (e.protocol != "subject_folds" or e.selection != "validation"):
        raise ConfigError("data.test_path", f"cross-corpus testing makes one fold of its own, and cannot be combined "
                          f"with protocol: {e.protocol}, selection: {e.selection}",
                          "leave evaluation.protocol and evaluation.selection at their defaults, or drop data.test_path")


def _check_seed(cfg: RunConfig) -> None:
    """Every fold's seed (``seed + 1000 x fold``, up to the ``--final`` training one past the last
    fold) must be one NumPy accepts, else every row fails when it is seeded."""
    largest = MAX_SEED - FOLD_SEED_STRIDE * cfg.evaluation.n_folds
    if not 0 <= cfg.seed <= largest:
        raise ConfigError("seed", f"must be in [0, {largest}], got {cfg.seed} (fold i trains with seed + "
                          f"{FOLD_SEED_STRIDE} x i, and NumPy takes seeds from 0 to {MAX_SEED})",
                          "use a small non-negative integer, e.g. 0")


def _check_lightning_names(t: TrainingConfig) -> None:
    """Accelerator and strategy names as Lightning's ``Trainer`` takes them (its registries)."""
    accelerators = ["auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators())]
    if t.accelerator not in accelerators:
        raise ConfigError("training.accelerator", f"{t.accelerator!r} is not an accelerator Lightning knows",
                          f"use one of {accelerators}")
    strategies = ["auto", *StrategyRegistry.available_strategies()]
    if t.strategy.lower() not in strategies:  # Lightning lower-cases a strategy's name, not an accelerator's
        shown = [name for name in strategies if "_find_unused_parameters_" not in name]
        raise ConfigError("training.strategy", f"{t.strategy!r} is not a strategy Lightning knows",
                          f"use auto (one process per node), ddp (data parallelism) or another of Lightning's: "
                          f"{', '.join(shown)} (and the ddp ones with _find_unused_parameters_true/false)")


def _check_training_options(t: TrainingConfig) -> None:
    """The schedule, clipping and logger keys (off by default)."""
    if t.epochs != AUTO and t.lr_warmup_epochs >= t.epochs > 0:
        raise ConfigError("training.lr_warmup_epochs", f"{t.lr_warmup_epochs} warm-up epochs leave none of the "
                          f"{t.epochs} training epochs at the full learning rate", "use fewer warm-up epochs")
    if len(set(t.loggers)) != len(t.loggers):
        raise ConfigError("training.loggers", f"{list(t.loggers)} names a logger twice", "list each logger once")


def _check_model(cfg: RunConfig) -> None:
    if cfg.model.embed_dim % cfg.model.attention_heads:
        raise ConfigError("model.attention_heads", f"{cfg.model.attention_heads} heads do not divide embed_dim "
                          f"{cfg.model.embed_dim}", "choose heads that divide model.embed_dim")
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
