"""One typed, validated configuration schema for every privkd run.

Configs are plain data: YAML read with ``yaml.safe_load`` into frozen dataclasses. Every
key is checked against the schema, so a typo fails before any training starts, with an
error naming the key, what was wrong and the allowed values.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from privkd.errors import ConfigError

METHOD_NAMES = ("baseline", "teacher", "pkdot")
"""Methods a run can train, in the order they are trained within a fold (students need the teacher)."""


@dataclass(frozen=True)
class DataConfig:
    """Where the samples come from and which modalities play which role.

    ``path`` is a privkd HDF5 file, or ``embedded`` for the smartwatch recordings shipped
    with privkd. Roles are configuration, never code paths: swap the lists to distil the
    other way round.
    """

    path: str = "embedded"
    prevalent: tuple[str, ...] = ("accelerometer",)
    privileged: tuple[str, ...] = ("gyroscope",)


@dataclass(frozen=True)
class EvaluationConfig:
    """Subject-independent cross-validation: each fold tests unseen subjects.

    ``n_val_subjects`` training subjects per fold are held out for model selection
    (early stopping, best checkpoint); the test fold is never used for that.
    ``max_folds`` trains only the first folds (for quick checks); null trains all.
    """

    n_folds: int = 5
    n_val_subjects: int = 1
    max_folds: int | None = None


@dataclass(frozen=True)
class ModelConfig:
    """Architecture shared by every method so that only the training signal differs.

    ``backbones`` maps a modality name to a backbone name; modalities not listed get the
    default for their kind (``signal_cnn`` for signals, ``mlp`` for feature vectors).
    """

    embed_dim: int = 64
    fusion: Literal["concat"] = "concat"
    fusion_dim: int = 128
    dropout: float = 0.2
    backbones: dict[str, str] = field(default_factory=dict)
    tnet_hidden: int = 128
    tnet_bottleneck: int = 32


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation settings shared by all methods; selection is on validation macro-F1."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 8
    num_workers: int = 0
    accelerator: str = "cpu"
    progress_bar: bool = True


@dataclass(frozen=True)
class TeacherConfig:
    """Teacher stage: fused classifier over all modalities plus the T-Net.

    The T-Net maps the prevalent embeddings to the privileged ones and is trained with the
    teacher (``tnet_loss``: ``mse`` or ``mmd``) against detached privileged embeddings, so
    it learns to hallucinate them without pulling the teacher's features towards
    whatever is easy to predict. After the teacher's epoch is selected, the T-Net is fitted
    again on that teacher's frozen embeddings (``tnet_refit_epochs``, early-stopped on the
    validation subjects; 0 disables), so the student gets a T-Net matched to its teacher.
    """

    tnet_loss: Literal["mse", "mmd"] = "mse"
    tnet_weight: float = 1.0
    tnet_refit_epochs: int = 100
    tnet_refit_lr: float = 1e-3


@dataclass(frozen=True)
class PKDOTConfig:
    """PKDOT student (MT-PKDOT Eq. 10 with gamma = 0): ``task + beta * OT``.

    ``k`` anchors per row (clipped to batch - 1), ``epsilon`` the entropic regularisation
    (0.01 = geomloss blur 0.1 as the authors ran it), ``ot_mode`` ``paper`` (anchor rows
    as point clouds) or ``paired`` (row i of the teacher tied to row i of the student).
    ``init_from_teacher`` starts the student's prevalent encoders, fusion and head from the
    teacher's, as the paper's student shares the teacher's architecture and the frozen
    T-Net only makes sense on embeddings from the space it was trained on.
    """

    beta: float = 0.6
    k: int = 30
    epsilon: float = 0.01
    ot_mode: Literal["paper", "paired"] = "paper"
    init_from_teacher: bool = True


@dataclass(frozen=True)
class RunConfig:
    """A whole experiment: data, folds, model, optimisation and the methods to compare."""

    name: str = "run"
    seed: int = 0
    methods: tuple[str, ...] = METHOD_NAMES
    data: DataConfig = field(default_factory=DataConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    pkdot: PKDOTConfig = field(default_factory=PKDOTConfig)

    def __post_init__(self) -> None:
        _check_cross_fields(self)


def _check_cross_fields(cfg: RunConfig) -> None:
    """Constraints that involve several keys at once."""
    unknown = [m for m in cfg.methods if m not in METHOD_NAMES]
    if unknown:
        raise ConfigError("methods", f"unknown method(s) {unknown}", f"use some of {list(METHOD_NAMES)}")
    if not cfg.methods:
        raise ConfigError("methods", "no method selected", f"list at least one of {list(METHOD_NAMES)}")
    if not cfg.data.prevalent:
        raise ConfigError("data.prevalent", "empty", "name at least one modality available at test time")
    overlap = set(cfg.data.prevalent) & set(cfg.data.privileged)
    if overlap:
        raise ConfigError(
            "data.privileged",
            f"{sorted(overlap)} listed as both prevalent and privileged",
            "a modality is either available at test time (prevalent) or not (privileged)",
        )
    if "pkdot" in cfg.methods and not cfg.data.privileged:
        raise ConfigError("data.privileged", "empty but the pkdot method needs a privileged modality", "name one")
    positive = {
        "evaluation.n_folds": cfg.evaluation.n_folds,
        "training.epochs": cfg.training.epochs,
        "training.batch_size": cfg.training.batch_size,
        "model.embed_dim": cfg.model.embed_dim,
        "pkdot.k": cfg.pkdot.k,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(key, f"must be >= 1, got {value}", "use a positive integer")
    if cfg.evaluation.n_folds < 2:
        raise ConfigError("evaluation.n_folds", "cross-validation needs at least 2 folds", "use 2 or more")
    if cfg.pkdot.epsilon <= 0:
        raise ConfigError("pkdot.epsilon", f"must be > 0, got {cfg.pkdot.epsilon}", "use e.g. 0.01")
    if cfg.training.batch_size < 2 and "pkdot" in cfg.methods:
        raise ConfigError("training.batch_size", "structural distillation needs at least 2 samples per batch", "use >= 2")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert YAML shapes (lists → tuples)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {value!r}", f"write '{key}:' followed by indented keys")
        return _build(tp, value, prefix=f"{key}.")
    if origin is Literal:
        if value not in args:
            raise ConfigError(key, f"{value!r} is not allowed", f"use one of {list(args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0])
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list, got {value!r}", "write a YAML list, e.g. [a, b]")
        return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {value!r}", "write key: value pairs")
        return {str(k): _coerce(f"{key}.{k}", v, args[1]) for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            return float(value)  # YAML reads 1e-3 (no dot) as a string
        except ValueError:
            pass
    if tp in (int, bool, str, float):
        if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
            return value
        raise ConfigError(key, f"expected {_type_name(tp)}, got {value!r} ({type(value).__name__})", f"give a {_type_name(tp)}")
    raise TypeError(f"unsupported annotation {tp} for {key}")  # a schema bug, not a user error


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}", "unknown key", f"allowed keys here: {names}")
    kwargs = {name: _coerce(f"{prefix}{name}", values[name], hints[name]) for name in names if name in values}
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> RunConfig:
    """Build and validate a :class:`RunConfig` from plain data (e.g. parsed YAML)."""
    if not isinstance(values, dict):
        raise ConfigError("<root>", f"expected a mapping, got {type(values).__name__}", "the file must hold key: value pairs")
    return _build(RunConfig, values)


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """Plain, YAML-safe data for a config (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(cfg))


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into the key path and a YAML-parsed value (so ``1e-3``, ``[a, b]`` work)."""
    if "=" not in item:
        raise ConfigError(item, "override without '='", "write --set key.sub=value, e.g. --set training.epochs=5")
    key, raw = item.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw)


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``values`` with every ``key.path=value`` override applied."""
    result = yaml.safe_load(yaml.safe_dump(values)) or {}
    for item in overrides:
        path, value = parse_override(item)
        node = result
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(".".join(path), f"'{part}' is not a section", "override a key inside a section")
        node[path[-1]] = value
    return result


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config with ``yaml.safe_load``, apply ``--set`` overrides and validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "config file not found", "pass the path of an existing YAML file")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(str(path), f"not valid YAML ({err})", "fix the YAML syntax") from err
    return config_from_dict(apply_overrides(values, overrides or []))


def packaged_config_path(name: str) -> Path:
    """Path of a config shipped inside the package (e.g. ``demo``)."""
    path = Path(__file__).parent / "configs" / f"{name}.yaml"
    if not path.is_file():
        shipped = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(name, "no such shipped config", f"use one of {shipped}")
    return path
