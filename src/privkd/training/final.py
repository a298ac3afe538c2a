"""``evaluation.final`` (``privkd run --final``): after cross-validation, the deployable rows
trained once more on every subject, for deployment.

Cross-validation estimates how well a training *procedure* does on unseen subjects; the
model to deploy should then be trained by that same procedure on all the data there is.
The final split is therefore built like a fold without a test part: ``n_val_subjects``
subjects (drawn with the run's seed) select the epoch exactly as they do in every fold, and
every other subject trains. Each deployable row (the baseline and the students) and the
teachers they distil from are trained on it under ``RUN_DIR/final/<row>/``; each student's
model card quotes the cross-validated mean ± std of its row as the estimate for it, since
there is no test subject left to score it on. Final rows train side by side in
``training.jobs`` worker processes, and finished ones are kept on resume, like fold rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from privkd.config.loading import variant_config
from privkd.config.schema import RunConfig
from privkd.data import Fold, MultimodalDataset
from privkd.data.folds import check_fold, keep_train_fraction
from privkd.data.h5format import DatasetInfo
from privkd.deploy import save_student
from privkd.methods.base import FoldData
from privkd.models.inference import predict
from privkd.models.network import PrivilegedNet
from privkd.training.row import (
    FittedRow,
    Tracking,
    degenerate_parts,
    fit_row,
    row_spec,
    teacher_of,
)
from privkd.training.run_dir import (
    FAILED_FILE,
    finished_record,
    write_json_atomic,
)
from privkd.training.split_trainer import SplitTrainer
from privkd.training.workers import WORKER_LOGS, RowTask, train_pairs

__all__ = ["FINAL_DIR", "final_fold", "final_rows", "train_final_rows"]

FINAL_DIR = "final"
"""Where, under the run directory, the rows trained on every subject go."""


def final_fold(subjects: np.ndarray, n_val_subjects: int, seed: int, index: int) -> Fold:
    """Every subject but ``n_val_subjects`` (drawn with ``seed``) trains; those select the epoch;
    nothing is left to test. ``index`` (one past the last fold) seeds the training apart from
    every fold's."""
    subjects = np.asarray(subjects).astype(str)
    shuffled = np.random.default_rng(seed).permutation(np.unique(subjects))
    val, train = shuffled[:n_val_subjects], shuffled[n_val_subjects:]
    return Fold(index=index, train=np.flatnonzero(np.isin(subjects, train)), val=np.flatnonzero(np.isin(subjects, val)),
                test=np.array([], dtype=np.int64), train_subjects=tuple(sorted(train.tolist())),
                val_subjects=tuple(sorted(val.tolist())), test_subjects=())


def final_rows(rows: list[str], deployable: Mapping[str, bool], teacher: Mapping[str, str | None]) -> list[str]:
    """The deployable ``rows`` and the teachers they distil from, in training order."""
    wanted = {row for row in rows if deployable[row]}
    wanted |= {needed for row in wanted if (needed := teacher[row]) is not None}
    return [row for row in rows if row in wanted]


def final_record(row: str, fitted_row: FittedRow, data: FoldData, fold: Fold, info: DatasetInfo, cfg: RunConfig) -> dict:
    """What a final row keeps: its validation score and the T-Net refit, no test scores (the
    module's held-out diagnostics are computed on the validation subjects and dropped)."""
    module = fitted_row.module
    record: dict = {"fold": FINAL_DIR, "row": row, "validation": fitted_row.validation, "test": {},
                    "train_subjects": list(fold.train_subjects), "val_subjects": list(fold.val_subjects)}
    if fitted_row.initial is not None:
        record["initial"] = fitted_row.initial
    record.update({key: value for key, value in module.fold_record(data).items() if not key.endswith("_test")})
    degenerate = degenerate_parts({"validation": predict(module.net, data.loader(data.val))}, info,
                                  variant_config(cfg, row).training, len(data.train), fitted_row.validation["epochs_trained"])
    if degenerate:
        record["degenerate"] = degenerate
    return record


def train_final_rows(cfg: RunConfig, info: DatasetInfo, dataset: MultimodalDataset, run_dir: Path, n_folds: int,
                     summary: Mapping, rows: list[str], progress: Callable[[str], None], tracking: Tracking) -> dict:
    """Train :func:`final_rows` on the :func:`final_fold` (side by side in ``training.jobs``
    worker processes, as the folds' rows), on ``data.train_fraction`` of each training
    subject's samples as the folds were; returns ``final.json``'s content."""
    fold = keep_train_fraction(final_fold(dataset.subjects, cfg.evaluation.n_val_subjects, cfg.seed, index=n_folds),
                               dataset.subjects, cfg.data.train_fraction, cfg.seed)
    check_fold(fold, dataset)
    chosen = final_rows(rows, {row: row_spec(cfg, row).deployable for row in rows}, {row: teacher_of(cfg, row) for row in rows})
    tasks = [RowTask(fold.index, row, teacher_of(cfg, row), row_spec(cfg, row).provides_teacher,
                     f"final (every subject but the validation ones): {row}")
             for row in chosen if finished_record(run_dir / FINAL_DIR / row) is None]
    trainer = FinalTrainer(cfg, info, dataset, run_dir, tracking, final_split=fold, summary=summary)
    outcomes = train_pairs(tasks, trainer, cfg.training.jobs, cfg.training.threads, run_dir / WORKER_LOGS, progress)
    failures = [{**outcome.failure, "fold": FINAL_DIR} for outcome in outcomes.values() if outcome.failure is not None]
    for (_, row), outcome in outcomes.items():
        if outcome.failure is None:
            (run_dir / FINAL_DIR / row / FAILED_FILE).unlink(missing_ok=True)
    failed = {failure["row"] for failure in failures}
    students = {row: f"{FINAL_DIR}/{row}/student" for row in chosen if row_spec(cfg, row).deployable and row not in failed}
    content = {"train_subjects": list(fold.train_subjects), "val_subjects": list(fold.val_subjects), "students": students,
               **({"failed": failures} if failures else {})}
    write_json_atomic(run_dir / FINAL_DIR / "final.json", content)
    return content


@dataclass(kw_only=True)
class FinalTrainer(SplitTrainer):
    """Trains one final row."""

    final_split: Fold
    summary: Mapping

    def split(self, task: RowTask) -> Fold:
        return self.final_split

    def directory(self, split: Fold, row: str) -> Path:
        return self.run_dir / FINAL_DIR / row

    def split_data(self, split: Fold) -> FoldData:  # no test part: the validation subjects stand in where a module asks
        val = self.dataset.subset(split.val)
        return FoldData(self.dataset.subset(split.train), val, val, self.cfg.training)

    def fit(self, row: str, split: Fold, data: FoldData, teacher: PrivilegedNet | None,
            directory: Path) -> tuple[dict, PrivilegedNet]:
        return train_final_row(row, self.cfg, split, data, self.info, teacher, directory, self.summary, self.tracking)


def train_final_row(row: str, cfg: RunConfig, fold: Fold, data: FoldData, info: DatasetInfo, teacher: PrivilegedNet | None,
                    directory: Path, summary: Mapping, tracking: Tracking) -> tuple[dict, PrivilegedNet]:
    """Train and save one final row (its student too, when it is deployable); returns its record and network."""
    spec = row_spec(cfg, row)
    fitted = fit_row(row, cfg, fold, data, info, teacher, directory, tracking)
    record = final_record(row, fitted, data, fold, info, cfg)
    directory.mkdir(parents=True, exist_ok=True)  # a row fitted without Lightning has made nothing there yet
    torch.save(fitted.module.net.state_dict(), directory / "model.pt")
    if spec.deployable:
        save_student(directory / "student", fitted.module.net, variant_config(cfg, row), info, row=row, method=spec.name,
                     role=spec.role, fold=None, test_metrics={}, train_subjects=fold.train_subjects,
                     cross_validated=cross_validated(summary, row))
    write_json_atomic(directory / "metrics.json", record)  # last: its presence marks the row finished
    return record, fitted.module.net


def cross_validated(summary: Mapping, row: str) -> dict[str, dict[str, float]]:
    """The row's mean ± std over the run's test folds: the estimate for a student trained on every subject."""
    return {metric: {"mean": values["mean"], "std": values["std"], "folds": len(values["per_fold"])}
            for metric, values in summary["methods"].get(row, {}).items()}
