"""The typed schema of a privkd run: one frozen dataclass per config section.

Configs are plain data: YAML read with ``yaml.safe_load`` into these dataclasses by
:mod:`privkd.config.parse` (every key and type checked) and validated across keys by
:mod:`privkd.config.validation`. Why a default is what it is, with the measurements behind
it, is in ``docs/defaults.md``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

SHARED_SECTIONS = ("data", "evaluation", "model", "teacher", "study")
"""Sections every row of a run shares; a variant may override any other section."""


@dataclass(frozen=True)
class DataConfig:
    """Where the samples come from and which modalities play which role.

    ``path`` is a privkd HDF5 file, ``embedded`` for the smartwatch recordings shipped
    with privkd, or ``synthetic:<setup>`` for a known-answer task of Lopez-Paz et al. (ICLR
    2016) where privileged information provably helps (:mod:`privkd.data.synthetic`). Roles are configuration, never code paths: swap the lists to distil the
    other way round. ``in_memory``: load the selected modalities once (fast) or read each
    sample from disk (video); ``auto`` loads them when they take under 2 GiB.

    ``train_fraction``: the share of each training subject's samples that trains, rounded up
    (a learning curve: how a method does with less data). The samples are drawn with the
    run's seed and the subject alone, so a subject keeps the same ones in every fold (and in
    ``--final``), and a larger fraction keeps those and more. Validation and test samples
    are never cut, so every point of a learning curve is scored on the same validation and
    test samples.

    ``test_path``: cross-corpus evaluation. One fold trains and selects on ``path`` (every
    subject but ``evaluation.n_val_subjects`` validation ones) and tests once on every sample of
    ``test_path``, a dataset with the same modalities (kind and sample shape) and the same classes
    or targets, e.g. IEMOCAP → MSP-Improv.
    """

    path: str = "embedded"
    prevalent: tuple[str, ...] = ("accelerometer",)
    privileged: tuple[str, ...] = ("gyroscope",)
    in_memory: Literal["auto", True, False] = "auto"
    train_fraction: float = 1.0
    test_path: str | None = None


LEAKS = {"sample_folds": "subjects shared between training and test", "test_selection": "epoch chosen on the test fold"}
"""The leaking choices of :class:`EvaluationConfig` (as ``allow_leaks`` names them), and the
words every table, summary, report and model card of a run that makes them carries."""


def protocol_leaks(protocol: str, selection: str) -> list[str]:
    """The :data:`LEAKS` names an evaluation's ``protocol`` and ``selection`` make (none for privkd's own)."""
    return [name for name, leaks in (("sample_folds", protocol == "sample_folds"), ("test_selection", selection == "test"))
            if leaks]


@dataclass(frozen=True)
class EvaluationConfig:
    """Subject-independent cross-validation: each fold tests unseen subjects.

    ``n_val_subjects`` training subjects per fold are held out for model selection
    (early stopping, best checkpoint); the test fold is never used for that. ``auto``:
    ``val_share`` of the subjects left after the test fold, and at least enough subjects for
    ``min_val_samples`` samples (a one-row-per-person table needs dozens of validation
    subjects, a dataset of long recordings one or two). ``metric``: what selects the epoch and
    a study's settings and is the headline of the results (gap closed, paired tests);
    ``auto`` is macro-F1 for classification (accuracy flatters a model that predicts the
    majority class) and CCC for regression. ``linear_reference`` adds the ``linear`` and
    ``linear_teacher`` rows (scikit-learn's regularised linear models on the same folds);
    ``auto`` adds them when every modality is a feature vector, the data where a linear model
    is the first thing to beat. ``teacher_init_control`` adds the ``teacher_init`` row: the
    PKDOT student started from the teacher and trained with distillation weight 0, which
    separates what a distillation loss adds from what starting at the teacher's weights adds.
    ``max_folds`` trains only the first folds (for quick checks); null trains all.
    ``group_average`` (regression): score each recording/video group (``/groups``) on its
    own and average the per-group CCCs, as per-video protocols do; else pool all samples.
    ``protocol: splits`` uses the dataset's official ``/splits`` instead of folds (Affwild2):
    one fold testing the ``validation`` split, training on the ``train`` split minus
    ``n_val_subjects`` of its subjects, which select the epoch. ``final`` (``privkd run
    --final``): after the folds, train the baseline and the students once more on every
    subject but ``n_val_subjects`` validation ones, under ``final/``, for deployment.
    ``protocol: loso``: leave one subject out, one fold per subject (``n_folds`` unused).

    For reproducing published numbers only, two leaking choices of the papers' released
    scripts, each refused unless also named in ``allow_leaks`` and marked in every table,
    summary, report and model card: ``protocol: sample_folds`` (stratified folds over samples,
    so the same subjects, and overlapping windows, are in training and test; ``val_share`` of
    the other samples select the epoch) and ``selection: test`` (the epoch is chosen on the test
    fold, whose validation samples then train). See docs/protocols.md.
    """

    n_folds: int = 5
    n_val_subjects: int | Literal["auto"] = "auto"
    val_share: float = 0.2
    min_val_samples: int = 30
    metric: Literal["auto", "accuracy", "f1", "ua", "auroc", "ap", "ccc"] = "auto"
    linear_reference: Literal["auto"] | bool = "auto"
    teacher_init_control: bool = False
    max_folds: int | None = None
    group_average: bool = False
    protocol: Literal["subject_folds", "loso", "splits", "sample_folds"] = "subject_folds"
    final: bool = False
    selection: Literal["validation", "test"] = "validation"
    allow_leaks: tuple[Literal["sample_folds", "test_selection"], ...] = ()


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
    """Optimisation settings shared by all methods; the epoch is selected on the validation subjects.

    ``auto`` values fit the dataset, and the run prints and records what they became and why
    (``resolved.json``): ``batch_size`` 128, halved until an epoch holds at least 8 optimiser
    steps on the smallest training fold; ``epochs`` at least 30 and enough for ``min_steps``
    optimiser steps; ``patience`` 8, or epochs / 3.75 when the epochs are many (see
    :mod:`privkd.training.auto`). An explicit value always wins. ``class_weights``:
    ``balanced`` weighs each class's task loss by n / (classes x its count on the training
    subjects), ``none`` not at all, or one weight per class.

    ``optimizer``: ``adamw`` (decoupled ``weight_decay``; the embedded data's default) or
    ``adam`` (``weight_decay`` as an L2 term; the PKDOT / MT-PKDOT authors' optimiser, with
    ``weight_decay: 0`` in their recipes).

    ``limit_train_batches`` caps the batches of each epoch: set it to 1 to check a recipe
    end to end in minutes before the real run.

    Scale: ``devices`` processes per node on ``num_nodes`` nodes with a Lightning
    ``strategy`` (``ddp``); ``batch_size`` is per process, and batch-structural losses see
    the global batch of all processes (:mod:`privkd.methods.distributed`).
    ``sync_batchnorm`` makes batch norm use global statistics too. ``precision``:
    ``bf16-mixed`` / ``16-mixed`` autocast (the Sinkhorn solver always runs in float32).

    ``lr_schedule`` multiplies ``lr`` once per epoch: ``none`` (constant), ``cosine`` (half a
    cosine from ``lr`` down towards 0 over the epochs) or ``step`` (times ``lr_step_gamma``
    every ``lr_step_epochs``), after ``lr_warmup_epochs`` of linear warm-up. ``grad_clip``
    clips each optimiser's gradient norm to that value (Lightning's norm clipping). Both are
    off by default, so that a result does not move unless asked to.

    ``jobs``: how many (fold, row) pairs train side by side, each in its own worker process
    (``auto``: one per CPU core, at most one per pair; 1 on an accelerator, under data
    parallelism and with the Python API's own logger objects); 1 trains them one after the
    other in this process. ``threads``: intra-op CPU threads of each training process
    (``auto``: the cores shared out among the jobs, one each at ``jobs: auto``; with
    ``jobs: 1`` PyTorch's own default). A row's result depends on ``threads``, not on ``jobs``:
    see :mod:`privkd.training.workers`.

    ``loggers``: where the per-epoch metrics also go. ``csv`` (``logs/metrics.csv``, which the
    report reads) is always written; ``tensorboard`` adds event files under the row's
    ``tensorboard/``, ``mlflow`` a run in a local file store (``mlruns/`` of the run
    directory; no server).
    """

    epochs: int | Literal["auto"] = "auto"
    batch_size: int | Literal["auto"] = "auto"
    min_steps: int = 750
    optimizer: Literal["adamw", "adam"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int | Literal["auto"] = "auto"
    class_weights: Literal["none", "balanced"] | tuple[float, ...] = "none"
    num_workers: int = 0
    accelerator: str = "cpu"
    progress_bar: bool = True
    limit_train_batches: int | None = None
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "32-true"
    sync_batchnorm: bool = False
    lr_schedule: Literal["none", "cosine", "step"] = "none"
    lr_warmup_epochs: int = 0
    lr_step_epochs: int = 10
    lr_step_gamma: float = 0.1
    grad_clip: float | None = None
    jobs: int | Literal["auto"] = 1
    threads: int | Literal["auto"] = "auto"
    loggers: tuple[Literal["csv", "tensorboard", "mlflow"], ...] = ("csv",)


@dataclass(frozen=True)
class TeacherConfig:
    """Teacher stage: fused classifier over all modalities plus the T-Net.

    The T-Net maps the prevalent embeddings to the privileged ones and is trained with the
    teacher (``tnet_loss``: ``mse`` or ``mmd``) against detached privileged embeddings, so
    it learns to hallucinate them without pulling the teacher's features towards
    whatever is easy to predict. After the teacher's epoch is selected, the T-Net is fitted
    again on that teacher's frozen embeddings (``tnet_refit_epochs``, early-stopped on the
    validation subjects; 0 disables), so the student gets a T-Net matched to its teacher.

    MT-PKDOT's self-distilled teacher (``mt_teacher``) also trains its modality adapters
    (Alg. 1): ``align_weight`` weighs the cosine alignment of Eq. 1 (adapter output vs the
    detached joint embedding) and ``adapter_task_weight`` the task loss of each adapter's own
    head, so every aligned representation can be scored on its own when the student picks a
    teacher. PKDOT's teacher (``teacher``) has no adapters and ignores both.
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

    The T-Net belongs to the teacher stage: a student that hallucinates uses its teacher's
    trained and refitted T-Net, frozen. The student's prevalent encoders, fusion and head start from
    random weights; ``init_from_teacher: true`` starts them from the teacher's instead (no
    paper prescribes it: a network trained on the same samples starts the student at a
    minimum of its training loss, reached partly through the real privileged input, and on the
    known-answer tasks every student started there ends below its counterpart from scratch;
    ``docs/defaults.md``). ``cache_teacher_outputs`` computes the frozen
    teacher's outputs once per sample instead of at every step (same results, see
    :mod:`privkd.methods.frozen_outputs`); ``false`` recomputes them. ``tnet_crossfit``: during
    training, each training sample's privileged tokens are hallucinated by a T-Net fitted
    without its subject, one of ``tnet_crossfit`` parts of the training subjects
    (:mod:`privkd.methods.crossfit`), so that a T-Net that memorised the training samples does
    not hand the student their answers; 0 or 1 uses the teacher's T-Net for every sample.
    ``hallucinate: false`` (the default; a departure from PKDOT and MT-PKDOT, whose students
    fuse the T-Net's hallucinations): a student fuses its prevalent modalities alone, the
    baseline's network, and distils into that. On the known-answer tasks a student that fuses
    a T-Net fitted on its own training samples leans on that input and learns less from the
    teacher (``docs/defaults.md``). ``true`` is the papers' student; it is needed by
    ``init_from_teacher`` (the teacher's fusion takes the privileged tokens) and ``tnet_crossfit``.
    """

    init_from_teacher: bool = False
    cache_teacher_outputs: bool = True
    tnet_crossfit: int = 0
    hallucinate: bool = False


@dataclass(frozen=True)
class StructuralConfig:
    """Structural distillation (MT-PKDOT Eq. 2-7), shared by PKDOT and MT-PKDOT.

    ``k`` anchors per row (clipped to batch - 1; ``auto``: the papers' 30 at batch 128, scaled
    with the batch size), ``epsilon`` the entropic regularisation
    (0.01 = geomloss blur 0.1 as the authors ran it), ``ot_mode`` ``paper`` (the authors'
    loss: each similarity matrix shifted by its global minimum, the anchor rows of teacher
    and student as two point clouds, permutation invariant) or ``paired`` (privkd's variant:
    row i of the teacher tied to row i of the student); ``docs/defaults.md`` has what was
    measured of each.
    """

    k: int | Literal["auto"] = "auto"
    epsilon: float = 0.01
    ot_mode: Literal["paper", "paired"] = "paper"


@dataclass(frozen=True)
class PKDOTConfig:
    """PKDOT student: ``task + beta * OT`` (MT-PKDOT Eq. 10 with gamma = 0)."""

    beta: float = 0.6


@dataclass(frozen=True)
class MTPKDOTConfig:
    """MT-PKDOT student, Eq. 10: ``alpha * task + beta * OT + gamma * centroid``.

    Defaults are the authors' released weights (0.8 task, 0.2 OT); gamma = 0 is the
    paper's "without centroid" ablation (Table VI). ``centroid``: ``features`` is Eq. 9 and
    Alg. 2 (the mean joint embedding of the selected teacher against the student's);
    ``similarities`` takes the centroids of the anchored similarity rows instead, a reading
    of the text's "after the anchor selection"; ``normalized`` the centroids of the
    L2-normalised features, a scale-free form (the term lies in [0, 4] whatever the embedding
    norms, where Eq. 9 on raw features grows with the embeddings' scale).
    """

    alpha: float = 0.8
    beta: float = 0.2
    gamma: float = 0.2
    centroid: Literal["features", "similarities", "normalized"] = "features"


@dataclass(frozen=True)
class PointToPointConfig:
    """Point-to-point baselines (MT-PKDOT Table II): ``task + beta * match``.

    ``p2p_cosine`` scales beta by exp(-teacher batch loss) (dynamic weighting, Aslam et
    al. CVPRW'23), ``p2p_mse`` matches embeddings by MSE, ``p2p_kl`` matches logits
    softened by ``temperature`` (Hinton et al.; classification only). ``task_weight``
    weighs the task loss: generalized distillation's ``(1 - lambda) task + lambda match``
    (Lopez-Paz et al. 2016, Eq. 4) is ``task_weight = 1 - lambda, beta = lambda``, and
    ``task_weight: 0`` trains on the teacher's outputs alone.
    """

    beta: float = 1.0
    temperature: float = 4.0
    task_weight: float = 1.0


@dataclass(frozen=True)
class AMIDConfig:
    """AMID (CVPR 2023), Eq. 17: ``L_cls + L_JSD + a1 L_MIs + a2 L_MIa + a3 L_adv``.

    Defaults from Sec. 4.2: alpha = (4, 1.6, 1), tau = 0.6 and 5 warm-up epochs (the
    emotion setting), discriminator weights by Eq. 14. The switches are the paper's
    ablations (Tables 4-5): ``contrastive: infonce`` replaces the label-aware MI bound by
    plain InfoNCE; ``discriminators: d1`` drops the enhanced discriminator;
    ``dynamic_weights: false`` keeps lambda = (0.5, 0.5); ``online_teacher: false`` distils
    from a fixed AMID teacher M pre-trained on the fold (``amid_teacher``) instead of
    training one jointly;
    ``warmup_epochs: 0`` removes the warm-up. ``mi_reduction`` ``mean`` (default) averages
    Eq. 8-9 over each anchor's positives and negatives; ``sum`` is the literal Eq. 8 (see
    :func:`privkd.losses.amid.label_aware_contrastive_mi`); ``docs/defaults.md`` says why
    ``mean`` is the default.
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
    """Names the run directory, ``runs/<timestamp>-<name>``, so that runs of one config sort together."""
    seed: int = 0
    """Seeds everything random in the run; fold ``i`` uses ``seed + 1000 i`` and a study's seeds
    count up from it, so one number reproduces the whole run."""
    methods: tuple[str, ...] = ()
    """Rows to train; :func:`privkd.config.loading.config_from_dict` fills in every
    registered method when a config does not list any."""
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
    """Extra rows by name, ``name: {method: M, set: {section.key: value}}`` (:class:`VariantConfig`),
    so that one run compares a method with its own settings changed beside the defaults."""
    study: StudyConfig = field(default_factory=StudyConfig)
    extensions: dict[str, Any] = field(default_factory=dict)
    """Sections of methods registered outside privkd (:data:`EXTENSION_SECTIONS`), by name;
    written at the top level of a YAML config like the built-in sections."""

    def section(self, name: str) -> Any:
        """The settings section ``name``: a built-in one or an extension's."""
        return self.extensions[name] if name in self.extensions else getattr(self, name)


EXTENSION_SECTIONS: dict[str, type] = {}
"""Settings dataclasses of sections that methods registered outside privkd add to the schema
(see :func:`register_section`); the built-in sections are the fields of :class:`RunConfig`."""


def register_section(name: str, settings: type) -> None:
    """Add a top-level config section ``name`` read into the frozen dataclass ``settings``,
    so that a method defined in one file can bring its own settings."""
    if not dataclasses.is_dataclass(settings):
        raise TypeError(f"settings of section {name!r} must be a dataclass, got {settings!r}")
    if name in {f.name for f in dataclasses.fields(RunConfig)} or name in EXTENSION_SECTIONS:
        raise ValueError(f"a config section named {name!r} already exists")
    EXTENSION_SECTIONS[name] = settings

