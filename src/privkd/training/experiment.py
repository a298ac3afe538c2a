"""Subject-independent cross-validation of every configured method, fold by fold.

Within a fold, rows are trained in a fixed order (the teachers before the rows that distil
from them) on the same training subjects, selected on the same validation subjects and
scored once on the same unseen test subjects. Each finished (fold, row) writes its metrics at
once, so a later failure never loses a finished result. What a row's method needs and
records is asked from the method registry; nothing here names a method.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from privkd.config.loading import variant_config
from privkd.config.schema import LEAKS, RunConfig, protocol_leaks
from privkd.data import Fold, MultimodalDataset, read_info
from privkd.data.folds import make_folds
from privkd.data.h5format import DatasetInfo
from privkd.data.opening import open_dataset, resolve_data_path
from privkd.deploy import save_student
from privkd.errors import disk_full_error, is_disk_full
from privkd.evaluation.metrics import (
    resolve_metric,
    retrieval_recall,
    score,
)
from privkd.evaluation.sanity import teacher_margin
from privkd.evaluation.summary import aggregate, summary_markdown
from privkd.interrupt import RunInterrupted
from privkd.methods.base import FoldData, PrivkdModule
from privkd.methods.registry import bound_row
from privkd.models.inference import Predictions, predict
from privkd.models.network import PrivilegedNet
from privkd.training.auto import (
    Resolved,
    resolve_rows,
    resolve_training,
    resolve_validation_subjects,
)
from privkd.training.checks import check_accelerator, check_against_dataset
from privkd.training.cross_corpus import open_test_corpus, read_test_corpus
from privkd.training.feature_cache import frozen_backbone_tokens
from privkd.training.final import train_final_rows
from privkd.training.inputs import (
    check_config_and_data,
    check_finished_rows,
    inputs_record,
    read_inputs,
    write_inputs,
)
from privkd.training.loggers import check_logger_packages
from privkd.training.reuse import fingerprint, take_over
from privkd.training.row import (
    Tracking,
    degenerate_parts,
    fit_row,
    row_spec,
    rows_to_train,
    teacher_of,
)
from privkd.training.run_dir import (
    FAILED_FILE,
    claim_run_dir,
    finished_record,
    is_primary_process,
    row_dir,
    write_json_atomic,
    write_text_atomic,
)
from privkd.training.split_trainer import SplitTrainer
from privkd.training.workers import (
    WORKER_LOGS,
    RowOutcome,
    RowTask,
    intra_op_threads,
    resolve_jobs,
    train_pairs,
)

ProgressCallback = Callable[[str], None]


@dataclass
class RunResult:
    """Where a run lives and what it found; ``failures`` lists the (fold, row) pairs that failed."""

    run_dir: Path
    summary: dict
    final: dict | None = None
    """``final/final.json`` of a run with ``evaluation.final``: the students trained on every subject."""

    @property
    def failures(self) -> list[dict]:
        return self.summary.get("failed", []) + (self.final or {}).get("failed", [])




class RunInputs(NamedTuple):
    """What a run reads before its directory exists: the dataset file and its description, and the
    config with the rows its switches add (and the lines saying so)."""

    data_path: Path
    info: DatasetInfo
    cfg: RunConfig
    resolved: list[Resolved]


def check_before_run(cfg: RunConfig) -> RunInputs:
    """Read the dataset's description and check ``cfg`` against it and this machine (every row's
    logger packages and accelerator): the checks of :func:`run_experiment` before it creates the
    run directory, for the commands that create theirs first (``privkd study``, ``privkd sweep``)."""
    data_path = resolve_data_path(cfg.data.path, cfg.seed)
    info = read_info(data_path)
    cfg, resolved = resolve_rows(cfg, info)
    check_against_dataset(cfg, info)
    read_test_corpus(cfg, info)  # a cross-corpus test file that does not match is refused here
    for row in rows_to_train(cfg):
        training = variant_config(cfg, row).training
        check_logger_packages(training)
        check_accelerator(training)
    return RunInputs(data_path, info, cfg, resolved)


def score_on_fold(module: PrivkdModule, info: DatasetInfo, cfg: RunConfig, fold: FoldData, test: Predictions) -> dict[str, float]:
    """Test-fold metrics of the trained network from its ``test`` predictions; for
    classification also R@1/R@5 of its test embeddings against the training embeddings, then
    whatever else the method scores on the test subjects."""
    groups = fold.test.groups if cfg.evaluation.group_average else None
    metrics = score(info.task, test.outputs, test.labels, n_outputs=info.n_outputs, target_names=info.target_names, groups=groups)
    if info.task == "classification":
        gallery = predict(module.net, fold.loader(fold.train))
        metrics.update(retrieval_recall(test.embeddings, test.labels, gallery.embeddings, gallery.labels))
    metrics.update(module.extra_test_metrics(fold.loader(fold.test)))
    return metrics


def save_predictions(path: Path, test: Predictions, test_set: MultimodalDataset) -> None:
    """The test fold's outputs, labels, file rows and subjects (confusion matrices, per-subject scores)."""
    np.savez_compressed(path, outputs=test.outputs.numpy(), labels=test.labels.numpy(), indices=test.indices.numpy(),
                        subjects=np.asarray(test_set.subjects, dtype=str))


def row_fingerprints(cfg: RunConfig, rows: list[str]) -> dict[str, str]:
    """Each row's :func:`~privkd.training.reuse.fingerprint` (``rows`` in training order, teachers first)."""
    prints: dict[str, str] = {}
    for row in rows:
        spec, teacher = row_spec(cfg, row), teacher_of(cfg, row)
        prints[row] = fingerprint(variant_config(cfg, row), spec.name, spec.sections, prints[teacher] if teacher else None)
    return prints


def train_row(row: str, cfg: RunConfig, fold: Fold, data: FoldData, info: DatasetInfo, teacher: PrivilegedNet | None,
              directory: Path, primary: bool, row_fingerprint: str, tracking: Tracking = Tracking()) -> tuple[dict, PrivilegedNet]:
    """Train, score and save one (fold, row); returns its record and trained network."""
    row_cfg = variant_config(cfg, row)
    spec = row_spec(cfg, row)
    fitted = fit_row(row, cfg, fold, data, info, teacher, directory, tracking)
    module, validation, recorders = fitted.module, fitted.validation, fitted.recorders
    record: dict = {"fold": fold.index, "row": row, "method": spec.name, "teacher": teacher_of(cfg, row),
                    "fingerprint": row_fingerprint, "validation": validation}
    if fitted.initial is not None:
        record["initial"] = fitted.initial
    record.update(module.fold_record(data))
    test = predict(module.net, data.loader(data.test))
    record["test"] = score_on_fold(module, info, cfg, data, test)
    parts = {"validation": predict(module.net, data.loader(data.val)), "test": test}
    if (degenerate := degenerate_parts(parts, info, row_cfg.training, len(data.train), validation["epochs_trained"])):
        record["degenerate"] = degenerate
    if primary:
        directory.mkdir(parents=True, exist_ok=True)  # a row fitted without Lightning has made nothing there yet
        torch.save(module.net.state_dict(), directory / "model.pt")
        if spec.deployable:  # a row that needs privileged inputs (the teacher) gets no deployable student
            save_student(directory / "student", module.net, row_cfg, info, row=row, method=spec.name, role=spec.role,
                         fold=fold.index, test_metrics=record["test"], train_subjects=fold.train_subjects)
        save_predictions(directory / "test_predictions.npz", test, data.test)
        for name, recorder in recorders.items():
            recorder.save(directory / name)
        write_json_atomic(directory / "metrics.json", record)  # last: its presence marks the row finished
        (directory / FAILED_FILE).unlink(missing_ok=True)
    return record, module.net


def run_experiment(cfg: RunConfig, out_root: str | Path, progress: ProgressCallback = lambda _: None,
                   resume: str | Path | None = None, tracking: Tracking = Tracking(),
                   reuse: Sequence[Path] = ()) -> RunResult:
    """Train and score every row on every fold; write config, environment, per-fold
    metrics, ``summary.json`` and ``summary.md`` under a new run directory.

    Everything that can be checked (config against dataset, folds, feature caches) is checked
    before the run directory is created, so a refused run leaves nothing behind. A (fold, row)
    that fails is recorded in ``failed.json`` and the summary, and the other folds go on (the
    rows that distil from a failed teacher fail with it). ``resume`` continues an interrupted
    run in its own directory: finished (fold, row) pairs are read back, an interrupted training
    continues from its last epoch, and the result equals an uninterrupted run's. ``tracking``
    adds the caller's own Lightning loggers and callbacks to every training (the same objects
    each time, so a logger sees every (fold, row) in turn). ``reuse`` names earlier run
    directories whose finished (fold, row) pairs are taken over where the row depends on
    nothing that differs (:mod:`privkd.training.reuse`: a sweep's later points).
    """
    configured = cfg  # as written (``auto`` included): what config.yaml keeps and a resume is checked against
    data_path, info, cfg, resolved = check_before_run(cfg)
    primary = is_primary_process()  # data-parallel workers train alongside but write nothing
    if not primary:
        progress = lambda _: None
    recorded = None
    if resume is not None:  # before the dataset is opened: a changed config or data file is refused first
        recorded = read_inputs(Path(resume))
        if recorded is not None:
            check_config_and_data(Path(resume), recorded, configured, data_path)
    dataset = open_dataset(cfg, info, data_path, frozen_backbone_tokens(cfg, info, data_path, progress))
    cfg, validation_subjects = resolve_validation_subjects(cfg, dataset.subjects, dataset.splits)
    resolved += validation_subjects
    test_dataset = open_test_corpus(cfg, read_test_corpus(cfg, info), progress)  # None but for cross-corpus runs
    folds = make_folds(cfg.evaluation, dataset, cfg.seed, cfg.data.train_fraction, test_dataset)
    cfg, fitted_to_folds = resolve_training(cfg, folds)
    resolved += fitted_to_folds
    cfg, spread = resolve_jobs(cfg, len(folds) * len(rows_to_train(cfg)), bool(tracking.loggers or tracking.callbacks))
    resolved += spread
    for item in resolved:
        progress(item.line())
    prints = row_fingerprints(cfg, rows_to_train(cfg))
    inputs = inputs_record(configured, data_path, cfg, prints) if primary and (resume is None or recorded is None) else None

    def check_resume(run_dir: Path) -> None:  # finished rows trained under other settings are refused
        check_finished_rows(run_dir, recorded, folds, prints, cfg, {item.key: item.why for item in resolved},
                            progress)

    with (intra_op_threads(cfg.training.threads),
          claim_run_dir(configured, out_root, data_path, folds, primary, resolved, resume, progress, inputs,
                        check_resume) as run_dir):
        if resume is not None and inputs is not None:  # made by an older privkd: recorded now, under the lock
            progress(f"{run_dir}: no record of the data file and config it started on (made by an older privkd): "
                     "they cannot be compared; recorded now for later resumes")
            write_inputs(run_dir, inputs)
        try:
            return _train_every_row(cfg, info, dataset, folds, run_dir, primary, progress, tracking, reuse, test_dataset)
        except RunInterrupted as stop:  # the CLI says where to resume
            stop.run_dir = run_dir
            raise
        except OSError as error:
            if not is_disk_full(error):
                raise
            raise disk_full_error(error, run_dir) from error


@dataclass(kw_only=True)
class PairTrainer(SplitTrainer):
    """Trains one (fold, row) of a run."""

    folds: list[Fold]
    primary: bool
    prints: dict[str, str]
    test_dataset: MultimodalDataset | None = None
    """Cross-corpus runs (``data.test_path``): the dataset the folds' test indices are rows of."""

    def split(self, task: RowTask) -> Fold:
        return self.folds[task.fold]

    def split_data(self, split: Fold) -> FoldData:
        if self.test_dataset is None:
            return super().split_data(split)
        return FoldData(self.dataset.subset(split.train), self.dataset.subset(split.val),
                        self.test_dataset.subset(split.test), self.cfg.training)

    def directory(self, split: Fold, row: str) -> Path:
        return row_dir(self.run_dir, split, row)

    def fit(self, row: str, split: Fold, data: FoldData, teacher: PrivilegedNet | None,
            directory: Path) -> tuple[dict, PrivilegedNet]:
        return train_row(row, self.cfg, split, data, self.info, teacher, directory, self.primary, self.prints[row],
                         self.tracking)


def _train_every_row(cfg: RunConfig, info: DatasetInfo, dataset: MultimodalDataset, folds: list[Fold], run_dir: Path,
                     primary: bool, progress: ProgressCallback, tracking: Tracking, reuse: Sequence[Path],
                     test_dataset: MultimodalDataset | None = None) -> RunResult:
    """Every (fold, row) not finished yet (in ``training.jobs`` processes), then the summary files."""
    rows = rows_to_train(cfg)
    prints = row_fingerprints(cfg, rows)
    if cfg.training.devices * cfg.training.num_nodes > 1:  # every rank must train a row together: no rank skips one
        reuse = ()
    outcomes: dict[tuple[int, str], RowOutcome] = {}  # finished (fold, row) pairs, then those trained now
    tasks: list[RowTask] = []
    for fold in folds:
        for row in rows:
            label = f"fold {fold.index + 1}/{len(folds)}: {row}"
            directory = row_dir(run_dir, fold, row)
            record = finished_record(directory)
            if record is None and reuse:
                source = take_over(directory, prints[row], [row_dir(Path(earlier), fold, row) for earlier in reuse])
                if source is not None:
                    progress(f"{label} reused from {source.parent.parent.name}")
                    record = finished_record(directory)
            if record is not None:
                outcomes[fold.index, row] = RowOutcome(record=record)
            else:
                tasks.append(RowTask(fold.index, row, teacher_of(cfg, row), row_spec(cfg, row).provides_teacher, label))
    trainer = PairTrainer(cfg, info, dataset, run_dir, tracking, folds=folds, primary=primary, prints=prints,
                          test_dataset=test_dataset)
    outcomes.update(train_pairs(tasks, trainer, cfg.training.jobs, cfg.training.threads, run_dir / WORKER_LOGS, progress))
    per_fold: dict[str, list[dict[str, float]]] = {row: [] for row in rows}
    records: dict[str, list[dict]] = {}
    failures: list[dict] = []
    for fold in folds:  # in the order of a run trained one row after the other
        for row in rows:
            outcome = outcomes[fold.index, row]
            if outcome.failure is not None:
                failures.append(outcome.failure)
                continue
            per_fold[row].append(outcome.record["test"])
            records.setdefault(row, []).append(outcome.record)

    summary = aggregate(info.task, per_fold)
    summary["folds"] = len(folds)
    summary["leaks"] = [LEAKS[name] for name in protocol_leaks(cfg.evaluation.protocol, cfg.evaluation.selection)]
    if cfg.data.test_path is not None:
        summary["test_corpus"] = Path(cfg.data.test_path).name
    summary["independence"] = info.independence
    # the report names classes and targets from here: a moved run, or one whose dataset is gone, keeps them
    summary["class_names"] = list(info.class_names) if info.class_names else None
    summary["target_names"] = list(info.target_names) if info.target_names else None
    # n_test / n_train of the corrected resampled t-test (privkd.evaluation.stats.corrected_resampled_t)
    summary["holdout_ratio"] = float(np.mean([len(f.test) / (len(f.train) + len(f.val)) for f in folds]))
    summary["metric"] = resolve_metric(cfg.evaluation.metric, info.task)
    summary["teachers"] = {row: teacher_of(cfg, row) for row in rows}
    summary["departures"] = {row: row_spec(cfg, row).departures(variant_config(cfg, row)) for row in rows}
    summary["degenerate"] = {row: [{"fold": r["fold"], **r["degenerate"]} for r in rows_records if "degenerate" in r]
                             for row, rows_records in records.items() if any("degenerate" in r for r in rows_records)}
    summary["initial_fit"] = {row: {part: float(np.mean([r["initial"][part] for r in rows_records]))
                                    for part in ("train", "val", "gap")}
                              for row, rows_records in records.items() if all("initial" in r for r in rows_records)}
    summary["teacher_margin"] = teacher_margin(records, bound_row("lower"), bound_row("upper"), summary["metric"])
    if failures:
        summary["failed"] = failures
    if primary:
        write_json_atomic(run_dir / "summary.json", summary)
        write_text_atomic(run_dir / "summary.md", summary_markdown(summary, f"privkd results: {cfg.name}"))
    final = None
    if cfg.evaluation.final and primary:  # after the summary: a failure here never loses the cross-validated results
        final = train_final_rows(cfg, info, dataset, run_dir, len(folds), summary, rows, progress, tracking)
    return RunResult(run_dir, summary, final)
