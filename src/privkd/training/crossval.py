"""Subject-independent cross-validation of every configured method, fold by fold.

Within a fold, methods are trained in a fixed order (the teacher before its students) on
the same training subjects, selected on the same validation subjects and scored once on
the same unseen test subjects. Each finished (fold, method) writes its metrics at once, so a
later failure never loses a finished result.
"""

from __future__ import annotations

import copy
import json
import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.data import Dataset

from privkd.config import (
    METHOD_NAMES,
    STUDENT_METHODS,
    RunConfig,
    config_to_dict,
    row_method,
    variant_config,
)
from privkd.data import (
    Fold,
    MultimodalDataset,
    official_split_fold,
    read_info,
    subject_folds,
)
from privkd.data.embedded import embedded_dataset_path
from privkd.data.h5format import DatasetInfo
from privkd.deploy import save_student, student_role
from privkd.errors import ConfigError, PrivkdError, SplitError
from privkd.evaluation.diagnostics import structure_gaps, tnet_fidelity
from privkd.evaluation.metrics import Predictions, predict, retrieval_recall, score
from privkd.evaluation.summary import aggregate, summary_markdown
from privkd.losses.structural import StructuralOTLoss
from privkd.methods.amid import AMIDModule
from privkd.methods.base import PrivkdModule
from privkd.methods.mt_pkdot import MTPKDOTModule
from privkd.methods.registry import build_module, build_net, reference_backbone
from privkd.methods.teacher import refit_tnet
from privkd.models.network import TOKENS_SUFFIX, PrivilegedNet
from privkd.training.feature_cache import cached_tokens
from privkd.training.fit import encode_dataset, fit, make_loader, seed_everything
from privkd.training.probes import AlignmentRecorder, SimilarityRecorder, probe_batch
from privkd.training.run_dir import (
    environment,
    is_primary_process,
    open_run_dir,
    write_json_atomic,
    write_text_atomic,
)

ProgressCallback = Callable[[str], None]


EMBEDDED_NAMES = {"embedded": "classification", "embedded-regression": "regression"}
"""``data.path`` values that name a dataset shipped with privkd, and which variant each is."""


def resolve_data_path(path: str) -> Path:
    """An embedded dataset's name → its cached file; anything else is a privkd HDF5 file."""
    return embedded_dataset_path(variant=EMBEDDED_NAMES[path]) if path in EMBEDDED_NAMES else Path(path)


def rows_to_train(cfg: RunConfig) -> list[str]:
    """Results rows in training order: methods (adding the teacher when a student needs
    it), then variants."""
    wanted = set(cfg.methods)
    rows = [m for m in METHOD_NAMES if m in wanted] + list(cfg.variants)
    if any(needs_fold_teacher(variant_config(cfg, row), row_method(cfg, row)) for row in rows) and "teacher" not in wanted:
        rows.insert(1 if "baseline" in wanted else 0, "teacher")
    return rows


def needs_fold_teacher(cfg: RunConfig, method: str) -> bool:
    """Distilled students, and AMID with a fixed teacher, use the fold's pre-trained teacher."""
    return method in STUDENT_METHODS or (method == "amid" and not cfg.amid.online_teacher)


def check_against_dataset(cfg: RunConfig, info: DatasetInfo) -> None:
    """Config errors only the dataset reveals, raised before anything is trained or written."""
    available = list(info.modalities)
    for key, names in (("data.prevalent", cfg.data.prevalent), ("data.privileged", cfg.data.privileged)):
        unknown = [n for n in names if n not in available]
        if unknown:
            raise ConfigError(key, f"modality {unknown[0]!r} is not in the dataset", f"use some of {available}")
    methods = {row_method(cfg, row) for row in rows_to_train(cfg)}
    for method in ("p2p_kl", "amid"):
        if info.task != "classification" and method in methods:
            raise ConfigError("methods", f"{method} needs class labels; this dataset is a regression task", "use p2p_mse, p2p_cosine, pkdot or mtpkdot")


def score_on_fold(module: PrivkdModule, info: DatasetInfo, cfg: RunConfig, train_set: Dataset, test_set: Dataset,
                  test: Predictions) -> dict[str, float]:
    """Test-fold metrics of the trained network from its ``test`` predictions; for
    classification also R@1/R@5 of its test embeddings against the training embeddings, and
    for AMID its online teacher's scores beside the student's (Table 4)."""
    groups = test_set.groups if cfg.evaluation.group_average else None
    metrics = score(info.task, test.outputs, test.labels, n_outputs=info.n_outputs, target_names=info.target_names, groups=groups)
    if info.task == "classification":
        gallery = predict(module.net, make_loader(train_set, cfg.training, train=False))
        metrics.update(retrieval_recall(test.embeddings, test.labels, gallery.embeddings, gallery.labels))
    if isinstance(module, AMIDModule):
        teacher = predict(module.teacher, make_loader(test_set, cfg.training, train=False))
        teacher_scores = score(info.task, teacher.outputs, teacher.labels, n_outputs=info.n_outputs)
        metrics.update({f"teacher_{name}": value for name, value in teacher_scores.items()})
    return metrics


def probe_recorders(module: PrivkdModule, row: str, val_set: Dataset) -> dict[str, AlignmentRecorder | SimilarityRecorder]:
    """Recorders of the report's training figures for this row, by the file each saves to."""
    teacher = getattr(module, "teacher", None)
    if teacher is not None:
        return {"similarity.npz": SimilarityRecorder(probe_batch(val_set), module.net, teacher)}
    if row == "teacher" and module.net.adapters:
        return {"alignment.npz": AlignmentRecorder(probe_batch(val_set), module.net)}
    return {}


def save_deployable_student(directory: Path, net: PrivilegedNet, row_cfg: RunConfig, info: DatasetInfo, row: str,
                            method: str, fold: Fold, test_metrics: dict[str, float]) -> None:
    """Rows that run on prevalent modalities alone get a student directory with a model card
    (``privkd predict`` / ``privkd export``); the teacher needs privileged inputs and gets none."""
    role = student_role(method)
    if role is not None:
        save_student(directory, net, row_cfg, info, row=row, method=method, role=role, fold=fold.index,
                     test_metrics=test_metrics, train_subjects=fold.train_subjects)


def save_predictions(path: Path, test: Predictions, test_set: MultimodalDataset) -> None:
    """The test fold's outputs, labels, file rows and subjects (confusion matrices, per-subject scores)."""
    np.savez_compressed(path, outputs=test.outputs.numpy(), labels=test.labels.numpy(), indices=test.indices.numpy(),
                        subjects=np.asarray(test_set.subjects, dtype=str))


def refit_tnet_on_fold(teacher: PrivilegedNet, train_set: Dataset, val_set: Dataset, cfg: RunConfig) -> dict[str, float]:
    """Refit the selected teacher's T-Net on its frozen embeddings of this fold's training subjects."""
    return refit_tnet(
        teacher,
        encode_dataset(teacher, train_set, cfg.training.batch_size),
        encode_dataset(teacher, val_set, cfg.training.batch_size),
        loss=cfg.teacher.tnet_loss,
        epochs=cfg.teacher.tnet_refit_epochs,
        lr=cfg.teacher.tnet_refit_lr,
        batch_size=cfg.training.batch_size,
    )


IN_MEMORY_LIMIT_BYTES = 2 * 2**30
"""``data.in_memory: auto`` loads the selected modalities when they take less than this."""


def open_dataset(cfg: RunConfig, info: DatasetInfo, data_path: Path, progress: ProgressCallback) -> MultimodalDataset:
    """The run's samples: raw modalities, except frozen backbones' cached tokens when caching."""
    cached = list(cfg.model.frozen_backbones) if cfg.model.cache_features else []
    extra = {}
    for name in cached:
        progress(f"features of the frozen {name} backbone (computed once, then cached)")
        backbone = reference_backbone(cfg, info, name)
        extra[name + TOKENS_SUFFIX] = cached_tokens(data_path, name, backbone, batch_size=cfg.training.batch_size,
                                                    show_progress=cfg.training.progress_bar)
    raw = [m for m in (*cfg.data.prevalent, *cfg.data.privileged) if m not in cached]
    in_memory = cfg.data.in_memory
    if in_memory == "auto":
        size = sum(4 * info.n_samples * math.prod(info.modalities[m].sample_shape) for m in raw)
        size += sum(array.nbytes for array in extra.values())
        in_memory = size < IN_MEMORY_LIMIT_BYTES
    dataset = MultimodalDataset(data_path, modalities=raw, in_memory=bool(in_memory), extra=extra)
    if dataset.in_memory:  # lazily read files were value-checked by their importer
        dataset.check_values()
    return dataset


def make_folds(cfg: RunConfig, dataset: MultimodalDataset) -> list[Fold]:
    """Subject-independent folds, or the one fold of the dataset's official split."""
    e = cfg.evaluation
    if e.protocol == "splits":
        folds = [official_split_fold(dataset.subjects, dataset.splits, e.n_val_subjects, seed=cfg.seed)]
    else:
        folds = subject_folds(dataset.subjects, n_folds=e.n_folds, n_val_subjects=e.n_val_subjects, seed=cfg.seed)
        folds = folds[: e.max_folds]
    for fold in folds:
        check_fold(fold, dataset)
    return folds


MIN_VALIDATION_SAMPLES = 2


def check_fold(fold: Fold, dataset: MultimodalDataset) -> None:
    """Refuse, before anything trains, a fold whose training part lacks a class (its test
    samples could never be predicted) or whose validation part is too small to select on."""
    if len(fold.val) < MIN_VALIDATION_SAMPLES:
        raise SplitError(f"fold {fold.index}: the validation subjects {list(fold.val_subjects)} have {len(fold.val)} "
                         f"sample(s), fewer than {MIN_VALIDATION_SAMPLES} to select an epoch on",
                         "raise evaluation.n_val_subjects, or drop subjects with too few samples from the dataset")
    names = dataset.info.class_names
    if names is not None:
        missing = sorted(set(range(len(names))) - set(dataset.labels[fold.train].tolist()))
        if missing:
            raise SplitError(f"fold {fold.index}: class(es) {[names[c] for c in missing]} have no training sample "
                             f"(training subjects {list(fold.train_subjects)}), so their test samples cannot be learnt",
                             "use fewer folds or a different seed, or leave classes no subject shows out of the dataset")


@dataclass
class RunResult:
    """Where a run lives and what it found; ``failures`` lists the (fold, row) pairs that failed."""

    run_dir: Path
    summary: dict

    @property
    def failures(self) -> list[dict]:
        return self.summary.get("failed", [])


def fold_records(folds: list[Fold]) -> list[dict]:
    return [{"fold": f.index, "train": list(f.train_subjects), "val": list(f.val_subjects), "test": list(f.test_subjects)}
            for f in folds]


def start_run(cfg: RunConfig, out_root: str | Path, data_path: Path, folds: list[Fold], primary: bool) -> Path:
    """A new run directory with the resolved config, the environment and the folds."""
    run_dir = open_run_dir(out_root, cfg.name)
    if primary:
        write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        write_json_atomic(run_dir / "environment.json", {**environment(), "data_path": str(data_path)})
        write_json_atomic(run_dir / "folds.json", fold_records(folds))
    return run_dir


def run_config_path(run_dir: str | Path) -> Path:
    """A run directory's resolved ``config.yaml``; refuses a directory that is not a run."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise PrivkdError(f"{run_dir}: not a privkd run directory (it has no config.yaml)",
                          "pass the run directory that `privkd run` printed (runs/<timestamp>-<name>)")
    return path


def check_resumable(run_dir: Path, cfg: RunConfig, folds: list[Fold]) -> None:
    """The run to resume must be this config on these folds, or its finished results would mix with others."""
    saved = run_config_path(run_dir)
    if yaml.safe_load(saved.read_text()) != config_to_dict(cfg):
        raise PrivkdError(f"{saved}: the config differs from the one being resumed",
                          "resume with `privkd run --resume RUN_DIR` alone, which reads the run's own config.yaml")
    folds_file = run_dir / "folds.json"
    if folds_file.is_file() and json.loads(folds_file.read_text()) != fold_records(folds):
        raise PrivkdError(f"{folds_file}: the dataset now gives other folds than the interrupted run",
                          "resume against the same dataset file, or start a new run")


def finished_record(row_dir: Path) -> dict | None:
    """The metrics of a (fold, row) a previous attempt finished, else ``None``."""
    path = row_dir / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def load_finished_teacher(row_dir: Path, cfg: RunConfig, info: DatasetInfo) -> PrivilegedNet:
    """The fold's teacher (T-Net refit included) as a finished earlier attempt saved it."""
    net = build_net("teacher", cfg, info)
    path = row_dir / "model.pt"
    try:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, KeyError) as err:
        raise PrivkdError(f"{path}: not this run's teacher ({str(err).splitlines()[0]})",
                          f"delete {row_dir} so that the teacher of this fold is trained again") from err
    return net.eval()


def train_row(row: str, cfg: RunConfig, fold: Fold, sets: tuple[Dataset, Dataset, Dataset], info: DatasetInfo,
              teacher: PrivilegedNet | None, row_dir: Path, primary: bool) -> tuple[dict, PrivilegedNet]:
    """Train, score and save one (fold, row); returns its record and trained network."""
    train_set, val_set, test_set = sets
    row_cfg = variant_config(cfg, row)
    seed = cfg.seed + 1000 * fold.index
    seed_everything(seed)
    module = build_module(row_method(cfg, row), row_cfg, info, teacher=teacher)
    distilled = row_method(cfg, row) in STUDENT_METHODS
    initial_student = copy.deepcopy(module.net) if distilled else None
    recorders = probe_recorders(module, row, val_set)
    fitted = fit(module, train_set, val_set, row_cfg.training, row_dir, seed, callbacks=list(recorders.values()))
    module = fitted.module
    record: dict = {"fold": fold.index, "row": row, "method": row_method(cfg, row), "validation": fitted.validation}
    test_loader = make_loader(test_set, cfg.training, train=False)
    if row == "teacher":
        record["tnet"] = refit_tnet_on_fold(module.net, train_set, val_set, cfg)
        record["tnet_test"] = tnet_fidelity(module.net, test_loader)
    if distilled:
        ot = StructuralOTLoss(k=row_cfg.structural.k, epsilon=row_cfg.structural.epsilon, mode=row_cfg.structural.ot_mode)
        record["structure_test"] = structure_gaps(teacher, {"before": initial_student, "after": module.net}, test_loader, ot)
    if isinstance(module, MTPKDOTModule):
        record["teacher_selection"] = module.selection_history
    if isinstance(module, AMIDModule):
        record["teacher_student_gap"] = module.gap_history
    test = predict(module.net, test_loader)
    record["test"] = score_on_fold(module, info, cfg, train_set, test_set, test)
    if primary:
        torch.save(module.net.state_dict(), row_dir / "model.pt")
        save_deployable_student(row_dir / "student", module.net, row_cfg, info, row, record["method"], fold, record["test"])
        save_predictions(row_dir / "test_predictions.npz", test, test_set)
        for name, recorder in recorders.items():
            recorder.save(row_dir / name)
        write_json_atomic(row_dir / "metrics.json", record)  # last: its presence marks the row finished
        (row_dir / FAILED_FILE).unlink(missing_ok=True)
    return record, module.net


FAILED_FILE = "failed.json"


def record_failure(row_dir: Path, fold: Fold, row: str, error: BaseException, primary: bool) -> dict:
    """What failed, kept beside the results (``failed.json``) and listed in the summary."""
    failure = {"fold": fold.index, "row": row, "error": f"{type(error).__name__}: {error}"}
    if primary:
        write_json_atomic(row_dir / FAILED_FILE, {**failure, "traceback": traceback.format_exc()})
    return failure


def run_experiment(cfg: RunConfig, out_root: str | Path, progress: ProgressCallback = lambda _: None,
                   resume: str | Path | None = None) -> RunResult:
    """Train and score every method on every fold; write config, environment, per-fold
    metrics, ``summary.json`` and ``summary.md`` under a new run directory.

    Everything that can be checked (config against dataset, folds, feature caches) is checked
    before the run directory is created, so a refused run leaves nothing behind. A (fold, row)
    that fails is recorded in ``failed.json`` and the summary, and the other folds go on (the
    fold's students fail with its teacher). ``resume`` continues an interrupted run in its
    own directory: finished (fold, row) pairs are read back, an interrupted training continues
    from its last epoch, and the result equals an uninterrupted run's.
    """
    data_path = resolve_data_path(cfg.data.path)
    info = read_info(data_path)
    check_against_dataset(cfg, info)
    primary = is_primary_process()  # data-parallel workers train alongside but write nothing
    if not primary:
        progress = lambda _: None
    dataset = open_dataset(cfg, info, data_path, progress)
    folds = make_folds(cfg, dataset)
    if resume is not None:
        run_dir = Path(resume)
        check_resumable(run_dir, cfg, folds)
    else:
        run_dir = start_run(cfg, out_root, data_path, folds, primary)

    rows = rows_to_train(cfg)
    per_fold: dict[str, list[dict[str, float]]] = {row: [] for row in rows}
    failures: list[dict] = []
    for fold in folds:
        sets = tuple(dataset.subset(idx) for idx in (fold.train, fold.val, fold.test))
        teacher: PrivilegedNet | None = None
        teacher_error: str | None = None
        for row in rows:
            row_dir = run_dir / f"fold_{fold.index}" / row
            record = finished_record(row_dir)
            try:
                needs_teacher = needs_fold_teacher(variant_config(cfg, row), row_method(cfg, row))
                if teacher_error is not None and needs_teacher:
                    raise RuntimeError(f"the fold's teacher failed ({teacher_error})")
                if record is None:
                    if needs_teacher and teacher is None:  # finished in an earlier attempt
                        teacher = load_finished_teacher(run_dir / f"fold_{fold.index}" / "teacher", cfg, info)
                    progress(f"fold {fold.index + 1}/{len(folds)}: {row}")
                    record, net = train_row(row, cfg, fold, sets, info, teacher, row_dir, primary)
                    if row == "teacher":
                        teacher = net
            except Exception as error:  # noqa: BLE001 - one failed (fold, row) must not lose the others
                failures.append(record_failure(row_dir, fold, row, error, primary))
                progress(f"fold {fold.index + 1}/{len(folds)}: {row} FAILED: {failures[-1]['error']}")
                if row == "teacher":
                    teacher_error = failures[-1]["error"]
                continue
            per_fold[row].append(record["test"])

    summary = aggregate(info.task, per_fold)
    summary["folds"] = len(folds)
    if failures:
        summary["failed"] = failures
    if primary:
        write_json_atomic(run_dir / "summary.json", summary)
        write_text_atomic(run_dir / "summary.md", summary_markdown(summary, f"privkd results: {cfg.name}"))
    return RunResult(run_dir, summary)
