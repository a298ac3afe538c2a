"""One typed, validated configuration schema for every privkd run.

Configs are plain data: YAML read with ``yaml.safe_load`` into frozen dataclasses. Every
key is checked against the schema, so a typo fails before any training starts, with an
error naming the key, what was wrong and the allowed values.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from privkd.errors import ConfigError

METHOD_NAMES = ("baseline", "teacher", "pkdot", "mtpkdot", "p2p_cosine", "p2p_mse", "p2p_kl", "amid")
"""Methods a run can train, in the order they are trained within a fold (students need the teacher)."""

STUDENT_METHODS = METHOD_NAMES[2:7]
"""Methods that distil from the teacher trained earlier in the same fold."""

ONLINE_METHODS = ("amid",)
"""Methods that train their own teacher together with the student."""

SHARED_SECTIONS = ("data", "evaluation", "model", "teacher", "study")
"""Sections every row of a run shares; a variant may override any other section."""


@dataclass(frozen=True)
class DataConfig:
    """Where the samples come from and which modalities play which role.

    ``path`` is a privkd HDF5 file, or ``embedded`` for the smartwatch recordings shipped
    with privkd. Roles are configuration, never code paths: swap the lists to distil the
    other way round. ``in_memory``: load the selected modalities once (fast) or read each
    sample from disk (video); ``auto`` loads them when they take under 2 GiB.
    """

    path: str = "embedded"
    prevalent: tuple[str, ...] = ("accelerometer",)
    privileged: tuple[str, ...] = ("gyroscope",)
    in_memory: Literal["auto", True, False] = "auto"


@dataclass(frozen=True)
class EvaluationConfig:
    """Subject-independent cross-validation: each fold tests unseen subjects.

    ``n_val_subjects`` training subjects per fold are held out for model selection
    (early stopping, best checkpoint); the test fold is never used for that.
    ``max_folds`` trains only the first folds (for quick checks); null trains all.
    ``group_average`` (regression): score each recording/video group (``/groups``) on its
    own and average the per-group CCCs, as per-video protocols do; else pool all samples.
    ``protocol: splits`` uses the dataset's official ``/splits`` instead of folds (Affwild2):
    one fold testing the ``validation`` split, training on the ``train`` split minus
    ``n_val_subjects`` of its subjects, which select the epoch.
    """

    n_folds: int = 5
    n_val_subjects: int = 1
    max_folds: int | None = None
    group_average: bool = False
    protocol: Literal["subject_folds", "splits"] = "subject_folds"


@dataclass(frozen=True)
class ModelConfig:
    """Architecture shared by every method so that only the training signal differs.

    ``backbones`` maps a modality name to a backbone name; modalities not listed get the
    default for their kind (``signal_cnn`` for signals, ``mlp`` for feature vectors,
    ``resnet18`` for spectrograms, ``r3d_18`` for video). ``backbone_weights`` maps a
    modality to a weights file (a saved ``state_dict``) for its backbone; nothing is ever
    downloaded. ``frozen_backbones`` lists modalities whose backbone is not trained; with
    ``cache_features`` their backbone tokens are computed once per (dataset, backbone,
    weights) and read from disk afterwards.

    ``fusion``: ``concat`` (Fig. 3a), ``joint_cross_attention`` (3b) or
    ``multimodal_transformer`` (3c). ``tokens``: how many embeddings per modality along its
    time axis reach the T-Net and the fusion (1 = one vector per modality); attention
    fusion attends over them with ``attention_heads`` heads.
    """

    embed_dim: int = 64
    fusion: Literal["concat", "joint_cross_attention", "multimodal_transformer"] = "concat"
    fusion_dim: int = 128
    dropout: float = 0.2
    backbones: dict[str, str] = field(default_factory=dict)
    backbone_weights: dict[str, str] = field(default_factory=dict)
    frozen_backbones: tuple[str, ...] = ()
    cache_features: bool = True
    tokens: int = 1
    attention_heads: int = 4
    tnet_hidden: int = 128
    tnet_bottleneck: int = 32


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation settings shared by all methods; selection is on validation macro-F1 (CCC).

    ``limit_train_batches`` caps the batches of each epoch: set it to 1 to check a recipe
    end to end in minutes before the real run.

    Scale: ``devices`` processes per node on ``num_nodes`` nodes with a Lightning
    ``strategy`` (``ddp``); ``batch_size`` is per process, and batch-structural losses see
    the global batch of all processes (:mod:`privkd.training.distributed`).
    ``sync_batchnorm`` makes batch norm use global statistics too. ``precision``:
    ``bf16-mixed`` / ``16-mixed`` autocast (the Sinkhorn solver always runs in float32).
    """

    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 8
    num_workers: int = 0
    accelerator: str = "cpu"
    progress_bar: bool = True
    limit_train_batches: int | None = None
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "32-true"
    sync_batchnorm: bool = False


@dataclass(frozen=True)
class TeacherConfig:
    """Teacher stage: fused classifier over all modalities plus the T-Net.

    The T-Net maps the prevalent embeddings to the privileged ones and is trained with the
    teacher (``tnet_loss``: ``mse`` or ``mmd``) against detached privileged embeddings, so
    it learns to hallucinate them without pulling the teacher's features towards
    whatever is easy to predict. After the teacher's epoch is selected, the T-Net is fitted
    again on that teacher's frozen embeddings (``tnet_refit_epochs``, early-stopped on the
    validation subjects; 0 disables), so the student gets a T-Net matched to its teacher.

    MT-PKDOT's modality adapters are trained with the teacher (Alg. 1): ``align_weight``
    weighs the cosine alignment of Eq. 1 (adapter output vs the detached joint embedding)
    and ``adapter_task_weight`` the task loss of each adapter's own head, so every aligned
    representation can be scored on its own when the student picks a teacher.
    """

    tnet_loss: Literal["mse", "mmd"] = "mse"
    tnet_weight: float = 1.0
    tnet_refit_epochs: int = 100
    tnet_refit_lr: float = 1e-3
    align_weight: float = 1.0
    adapter_task_weight: float = 0.5


@dataclass(frozen=True)
class StudentConfig:
    """What every distilled student shares.

    ``init_from_teacher`` starts the student's prevalent encoders, T-Net, fusion and head
    from the teacher's: the paper's student shares the teacher's architecture, and the
    frozen T-Net only makes sense on embeddings from the space it was trained on.
    """

    init_from_teacher: bool = True


@dataclass(frozen=True)
class StructuralConfig:
    """Structural distillation (MT-PKDOT Eq. 2-7), shared by PKDOT and MT-PKDOT.

    ``k`` anchors per row (clipped to batch - 1), ``epsilon`` the entropic regularisation
    (0.01 = geomloss blur 0.1 as the authors ran it), ``ot_mode`` ``paired`` (row i of the
    teacher tied to row i of the student) or ``paper`` (anchor rows as two point clouds,
    permutation invariant, as the authors' code). ``paired`` is the default because it
    measured better on validation subjects: mean validation macro-F1 over the 5 folds of
    the shipped ``compare`` config 0.8772 against 0.8706 for ``paper`` (2 folds better, 1
    tied, 2 worse: within fold noise).
    """

    k: int = 30
    epsilon: float = 0.01
    ot_mode: Literal["paper", "paired"] = "paired"


@dataclass(frozen=True)
class PKDOTConfig:
    """PKDOT student: ``task + beta * OT`` (MT-PKDOT Eq. 10 with gamma = 0)."""

    beta: float = 0.6


@dataclass(frozen=True)
class MTPKDOTConfig:
    """MT-PKDOT student, Eq. 10: ``alpha * task + beta * OT + gamma * centroid``.

    Defaults are the authors' released weights (0.8 task, 0.2 OT); gamma = 0 is the
    paper's "without centroid" ablation (Table VI).
    """

    alpha: float = 0.8
    beta: float = 0.2
    gamma: float = 0.2


@dataclass(frozen=True)
class PointToPointConfig:
    """Point-to-point baselines (MT-PKDOT Table II): ``task + beta * match``.

    ``p2p_cosine`` scales beta by exp(-teacher batch loss) (dynamic weighting, Aslam et
    al. CVPRW'23), ``p2p_mse`` matches embeddings by MSE, ``p2p_kl`` matches logits
    softened by ``temperature`` (Hinton et al.; classification only).
    """

    beta: float = 1.0
    temperature: float = 4.0


@dataclass(frozen=True)
class AMIDConfig:
    """AMID (CVPR 2023), Eq. 17: ``L_cls + L_JSD + a1 L_MIs + a2 L_MIa + a3 L_adv``.

    Defaults from Sec. 4.2: alpha = (4, 1.6, 1), tau = 0.6 and 5 warm-up epochs (the
    emotion setting), discriminator weights by Eq. 14. The switches are the paper's
    ablations (Tables 4-5): ``contrastive: infonce`` replaces the label-aware MI bound by
    plain InfoNCE; ``discriminators: d1`` drops the enhanced discriminator;
    ``dynamic_weights: false`` keeps lambda = (0.5, 0.5); ``online_teacher: false`` distils
    from the fold's fixed pre-trained teacher instead of training one jointly;
    ``warmup_epochs: 0`` removes the warm-up. ``mi_reduction`` ``mean`` (default) averages
    Eq. 8-9 over each anchor's positives and negatives; ``sum`` is the literal Eq. 8 (see
    :func:`privkd.losses.amid.label_aware_contrastive_mi`). ``mean`` is the default because it
    measured better on validation subjects: mean validation macro-F1 over the 5 folds of the
    shipped ``amid_ablation`` config 0.810 against 0.734 for ``sum``, whose terms (about 80
    per anchor at batch 128) swamp the task loss at alpha = 4.
    """

    alpha_mi_s: float = 4.0
    alpha_mi_a: float = 1.6
    alpha_adv: float = 1.0
    tau: float = 0.6
    warmup_epochs: int = 5
    contrastive: Literal["label_aware", "infonce"] = "label_aware"
    mi_reduction: Literal["sum", "mean"] = "mean"
    discriminators: Literal["both", "d1"] = "both"
    dynamic_weights: bool = True
    online_teacher: bool = True
    discriminator_lr: float = 1e-4


@dataclass(frozen=True)
class VariantConfig:
    """An extra results row: ``method`` trained with ``set`` overrides (``section.key: value``).

    Variants share the fold's teacher, so they may not override the shared sections
    (data, evaluation, model, teacher). Example: ``pkdot_paper: {method: pkdot, set:
    {structural.ot_mode: paper}}``.
    """

    method: str
    set: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyConfig:
    """``privkd study``: ``seeds`` repetitions of the run (seeds ``seed``, ``seed + 1``, ...), and
    per method the candidate settings ``search.<method>.<section.key>: [values]`` (their grid),
    of which each fold keeps the one with the best validation score."""

    seeds: int = 3
    search: dict[str, dict[str, tuple[Any, ...]]] = field(default_factory=dict)


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
    student: StudentConfig = field(default_factory=StudentConfig)
    structural: StructuralConfig = field(default_factory=StructuralConfig)
    pkdot: PKDOTConfig = field(default_factory=PKDOTConfig)
    mtpkdot: MTPKDOTConfig = field(default_factory=MTPKDOTConfig)
    p2p: PointToPointConfig = field(default_factory=PointToPointConfig)
    amid: AMIDConfig = field(default_factory=AMIDConfig)
    variants: dict[str, VariantConfig] = field(default_factory=dict)
    study: StudyConfig = field(default_factory=StudyConfig)

    def __post_init__(self) -> None:
        _check_cross_fields(self)


def _check_cross_fields(cfg: RunConfig) -> None:
    """Constraints that involve several keys at once."""
    unknown = [m for m in cfg.methods if m not in METHOD_NAMES]
    if unknown:
        raise ConfigError("methods", f"unknown method(s) {unknown}", f"use some of {list(METHOD_NAMES)}")
    if not cfg.methods and not cfg.variants:
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
    students = [m for m in cfg.methods if m in STUDENT_METHODS + ONLINE_METHODS] + [v.method for v in cfg.variants.values()]
    if students and not cfg.data.privileged:
        raise ConfigError("data.privileged", f"empty but {students[0]} needs a privileged modality", "name one")
    for name, variant in cfg.variants.items():
        _check_variant(name, variant)
    positive = {
        "evaluation.n_folds": cfg.evaluation.n_folds,
        "training.epochs": cfg.training.epochs,
        "training.batch_size": cfg.training.batch_size,
        "model.embed_dim": cfg.model.embed_dim,
        "structural.k": cfg.structural.k,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(key, f"must be >= 1, got {value}", "use a positive integer")
    if cfg.evaluation.n_folds < 2:
        raise ConfigError("evaluation.n_folds", "cross-validation needs at least 2 folds", "use 2 or more")
    if cfg.structural.epsilon <= 0:
        raise ConfigError("structural.epsilon", f"must be > 0, got {cfg.structural.epsilon}", "use e.g. 0.01")
    if cfg.model.embed_dim % cfg.model.attention_heads:
        raise ConfigError("model.attention_heads", f"{cfg.model.attention_heads} heads do not divide embed_dim "
                          f"{cfg.model.embed_dim}", "choose heads that divide model.embed_dim")
    if cfg.model.tokens < 1:
        raise ConfigError("model.tokens", f"must be >= 1, got {cfg.model.tokens}", "use 1 for one embedding per modality")
    modalities = set(cfg.data.prevalent) | set(cfg.data.privileged)
    for key in ("backbones", "backbone_weights"):
        unknown = sorted(set(getattr(cfg.model, key)) - modalities)
        if unknown:
            raise ConfigError(f"model.{key}.{unknown[0]}", "not a prevalent or privileged modality", f"use some of {sorted(modalities)}")
    unknown = sorted(set(cfg.model.frozen_backbones) - modalities)
    if unknown:
        raise ConfigError("model.frozen_backbones", f"{unknown[0]!r} is not a prevalent or privileged modality", f"use some of {sorted(modalities)}")
    structural = [m for m in (*cfg.methods, *(v.method for v in cfg.variants.values())) if m in ("pkdot", "mtpkdot")]
    if structural and cfg.structural.k >= cfg.training.batch_size:
        raise ConfigError("structural.k", f"{cfg.structural.k} anchors need batches of more than {cfg.structural.k} "
                          f"samples, but training.batch_size is {cfg.training.batch_size}",
                          "lower structural.k or raise training.batch_size (the papers: 30 anchors, batch 128)")
    if cfg.training.batch_size < 2 and students:
        raise ConfigError("training.batch_size", "structural distillation needs at least 2 samples per batch", "use >= 2")


def _check_variant(name: str, variant: VariantConfig) -> None:
    if name in METHOD_NAMES:
        raise ConfigError(f"variants.{name}", "a variant may not reuse a method's name", "pick another row name")
    variable = ("baseline", *STUDENT_METHODS, *ONLINE_METHODS)
    if variant.method not in variable:
        raise ConfigError(f"variants.{name}.method", f"{variant.method!r} cannot be varied", f"use one of {list(variable)}")
    for key in variant.set:
        if key.split(".")[0] in SHARED_SECTIONS or "." not in key:
            raise ConfigError(
                f"variants.{name}.set.{key}",
                "a variant can only change its own training, not the shared data, folds, model or teacher",
                "override keys of training, student, structural or the method's section",
            )


def variant_config(cfg: RunConfig, name: str) -> RunConfig:
    """The config a results row is trained with: the run's, plus the variant's overrides."""
    if name not in cfg.variants:
        return cfg
    values = config_to_dict(cfg)
    values["variants"] = {}
    for key, value in cfg.variants[name].set.items():
        set_key(values, key.split("."), value)
    return config_from_dict(values)


def restrict_rows(cfg: RunConfig, rows: list[str]) -> RunConfig:
    """Keep only the named methods and variants (all when ``rows`` is empty)."""
    if not rows:
        return cfg
    known = list(cfg.methods) + list(cfg.variants)
    unknown = [row for row in rows if row not in known]
    if unknown:
        raise ConfigError("--only", f"{unknown[0]!r} is not a row of this config", f"use some of {known}")
    return dataclasses.replace(
        cfg,
        methods=tuple(m for m in cfg.methods if m in rows),
        variants={name: v for name, v in cfg.variants.items() if name in rows},
    )


def row_method(cfg: RunConfig, name: str) -> str:
    """The method behind a results row (a method name, or a variant's method)."""
    return cfg.variants[name].method if name in cfg.variants else name


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert YAML shapes (lists → tuples)."""
    if tp is Any:
        return value
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
        article = "an" if _type_name(tp)[0] in "aeiou" else "a"
        raise ConfigError(key, f"expected {_type_name(tp)}, got {value!r} ({type(value).__name__})", f"give {article} {_type_name(tp)}")
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


def set_key(values: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``values[path[0]][path[1]]... = value`` in place, creating sections as needed."""
    node = values
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(".".join(path), f"'{part}' is not a section", "override a key inside a section")
    node[path[-1]] = value


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``values`` with every ``key.path=value`` override applied."""
    result = copy.deepcopy(values)
    for item in overrides:
        set_key(result, *parse_override(item))
    return result


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config with ``yaml.safe_load``, apply ``--set`` overrides and validate."""
    path = resolve_config_path(path)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(str(path), f"not valid YAML ({err})", "fix the YAML syntax") from err
    return config_from_dict(apply_overrides(values, overrides or []))


def resolve_config_path(arg: str | Path) -> Path:
    """A YAML file path, or the name of a config shipped with privkd (``demo``, ``compare``...)."""
    path = Path(arg)
    if path.is_file():
        return path
    if path.suffix == "" and (Path(__file__).parent / "configs" / f"{path.name}.yaml").is_file():
        return packaged_config_path(path.name)
    shipped = sorted(p.stem for p in (Path(__file__).parent / "configs").glob("*.yaml"))
    raise ConfigError(str(arg), "config file not found", f"pass an existing YAML file or a shipped config name: {shipped}")


def packaged_config_path(name: str) -> Path:
    """Path of a config shipped inside the package (e.g. ``demo``)."""
    path = Path(__file__).parent / "configs" / f"{name}.yaml"
    if not path.is_file():
        shipped = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(name, "no such shipped config", f"use one of {shipped}")
    return path
