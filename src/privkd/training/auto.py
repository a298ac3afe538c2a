"""Defaults that fit the dataset: a config's ``auto`` values resolved before anything trains.

One set of settings cannot suit a table of 250 people with one row each and a dataset of
long recordings cut into thousands of windows: with 160 training rows, batches of 128 make an
epoch one optimiser step, and 30 epochs 30 steps, too few for any network. So, unless a
config sets them, privkd sizes them from the data, and says what it chose and why:

- ``evaluation.n_val_subjects``: ``val_share`` of the subjects left after the test fold, at
  least enough subjects for ``min_val_samples`` samples at the median samples per subject;
- ``training.batch_size``: 128, halved (down to 8) until an epoch of the smallest training
  fold holds at least :data:`MIN_STEPS_PER_EPOCH` optimiser steps;
- ``training.epochs``: at least 30, and enough for ``training.min_steps`` optimiser steps;
- ``training.patience``: 8, or epochs / 3.75 when there are more than 30 epochs (8 in 30);
- ``structural.k``: the papers' 30 anchors at batch 128, scaled with the batch size;
- ``evaluation.linear_reference``: the linear reference rows on feature-vector data.

On the embedded data these give the values its configs set explicitly (batch 128, 30
epochs, patience 8, 30 anchors), so the demo is unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from privkd.config.fitted import AUTO
from privkd.config.schema import RunConfig, TrainingConfig, VariantConfig
from privkd.config.validation import validate
from privkd.data.folds import Fold
from privkd.data.h5format import DatasetInfo

__all__ = ["MIN_STEPS_PER_EPOCH", "Resolved", "resolve_rows", "resolve_training", "resolve_validation_subjects",
           "steps_per_epoch"]

LINEAR_ROWS = ("linear", "linear_teacher")
CONTROL_ROW = "teacher_init"

PAPER_BATCH, PAPER_ANCHORS = 128, 30
MIN_BATCH = 8
MIN_STEPS_PER_EPOCH = 8
BASE_EPOCHS, BASE_PATIENCE = 30, 8
MAX_EPOCHS = 500


@dataclass(frozen=True)
class Resolved:
    """One ``auto`` value as resolved for this run, and why."""

    key: str
    value: object
    why: str
    added: tuple[str, ...] = ()
    """For the row switches: the rows added (the value is then the whole list)."""

    def line(self) -> str:
        change = f"+ {', '.join(self.added)}" if self.added else f"auto -> {self.value}"
        return f"{self.key} {change}: {self.why}"


def _replace(cfg: RunConfig, section: str, **values: int) -> RunConfig:
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **values)})


def resolve_rows(cfg: RunConfig, info: DatasetInfo) -> tuple[RunConfig, list[Resolved]]:
    """The rows the switches add: the linear references (``evaluation.linear_reference``) and the
    ``teacher_init`` control (``evaluation.teacher_init_control``)."""
    resolved: list[Resolved] = []
    e = cfg.evaluation
    modalities = [*cfg.data.prevalent, *cfg.data.privileged]
    tabular = all(info.modalities[m].kind == "features" and len(info.modalities[m].sample_shape) == 1
                  for m in modalities if m in info.modalities)
    if e.linear_reference is True or (e.linear_reference == AUTO and tabular):
        added = [row for row in LINEAR_ROWS[: 2 if cfg.data.privileged else 1] if row not in cfg.methods]
        if added:
            cfg = dataclasses.replace(cfg, methods=(*cfg.methods, *added))
            why = ("every modality is a feature vector, and a linear model is the first reference to beat on such data"
                   if e.linear_reference == AUTO else "evaluation.linear_reference")
            resolved.append(Resolved("methods", list(cfg.methods), why, tuple(added)))
    if e.teacher_init_control and CONTROL_ROW not in cfg.variants:
        control = VariantConfig(method="pkdot", set={"pkdot.beta": 0.0, "student.init_from_teacher": True,
                                                              "student.hallucinate": True})
        cfg = dataclasses.replace(cfg, variants={**cfg.variants, CONTROL_ROW: control})
        resolved.append(Resolved("variants", sorted(cfg.variants), "PKDOT with beta = 0: the student started from the "
                                 "teacher and trained on the task alone", (CONTROL_ROW,)))
    return (validate(cfg) if resolved else cfg), resolved


def resolve_validation_subjects(cfg: RunConfig, subjects: np.ndarray,
                                splits: np.ndarray | None = None) -> tuple[RunConfig, list[Resolved]]:
    """``evaluation.n_val_subjects`` from the subjects of the dataset, when it is ``auto``.

    ``subjects`` holds the subject id of every sample (``/subjects``), so that the samples per
    subject can be counted; under ``protocol: splits`` only the ``train`` split's samples are
    counted (``splits``: ``/splits``), since the validation subjects are drawn from it alone,
    unless the dataset has both a ``validation`` and a ``test`` split: then the validation
    split's subjects select (:func:`~privkd.data.folds.official_split_fold`).
    """
    e = cfg.evaluation
    if e.n_val_subjects != AUTO:
        return cfg, []
    subjects = np.asarray(subjects, dtype=str)
    if e.protocol == "splits" and splits is not None:
        splits = np.asarray(splits, dtype=str)
        if {"validation", "test"} <= set(splits.tolist()):  # the official validation split selects
            n_val = len(np.unique(subjects[splits == "validation"]))
            return _replace(cfg, "evaluation", n_val_subjects=n_val), [Resolved(
                "evaluation.n_val_subjects", n_val, "the dataset's own validation split selects the epoch")]
        subjects = subjects[splits == "train"]
    _, counts = np.unique(subjects, return_counts=True)
    n_subjects = len(counts)
    whole = e.protocol == "splits" or cfg.data.test_path is not None  # no test subjects among these
    test_group = 1 if e.protocol == "loso" else math.ceil(n_subjects / e.n_folds)
    left = n_subjects if whole else n_subjects - test_group
    by_share = max(1, round(e.val_share * left))
    median = float(np.median(counts)) if len(counts) else 1.0
    by_samples = math.ceil(e.min_val_samples / max(median, 1.0))
    n_val = max(1, min(max(by_share, by_samples), left - 1))
    where = "in the train split" if e.protocol == "splits" else "of the training dataset" if whole else "left after a test fold"
    why = (f"{e.val_share:g} of the {left} subjects {where} is {by_share}; {e.min_val_samples} validation "
           f"samples at a median of {median:g} per subject need {by_samples}")
    return _replace(cfg, "evaluation", n_val_subjects=n_val), [Resolved("evaluation.n_val_subjects", n_val, why)]


def steps_per_epoch(n_train: int, t: TrainingConfig) -> int:
    """Optimiser steps in an epoch of ``n_train`` samples (per data-parallel process, full batches,
    capped by ``limit_train_batches``); ``t.batch_size`` must be resolved."""
    steps = max(max(n_train // max(t.devices * t.num_nodes, 1), 1) // t.batch_size, 1)
    return min(steps, t.limit_train_batches) if t.limit_train_batches is not None else steps


def resolve_training(cfg: RunConfig, n_train: int | list[Fold]) -> tuple[RunConfig, list[Resolved]]:
    """Batch size, epochs, patience and anchors, where ``auto``, from the number of training
    samples (or the smallest training fold of ``folds``); the result is validated again
    (explicit keys may now conflict with resolved ones). Call it before building modules from
    a config of your own: :func:`~privkd.methods.registry.build_module` and
    :func:`~privkd.training.fit.fit` refuse unresolved values."""
    t = cfg.training
    if not isinstance(n_train, int):
        n_train = min(len(fold.train) for fold in n_train)
    per_process = max(n_train // max(t.devices * t.num_nodes, 1), 1)
    resolved: list[Resolved] = []
    batch = t.batch_size
    if batch == AUTO:
        batch = PAPER_BATCH
        while batch > MIN_BATCH and per_process // batch < MIN_STEPS_PER_EPOCH:
            batch //= 2
        resolved.append(Resolved("training.batch_size", batch, f"{per_process} training samples in the smallest fold; "
                                 f"at least {MIN_STEPS_PER_EPOCH} optimiser steps per epoch"))
    steps = steps_per_epoch(n_train, dataclasses.replace(t, batch_size=batch))
    epochs = t.epochs
    if epochs == AUTO:
        epochs = min(max(BASE_EPOCHS, math.ceil(t.min_steps / steps)), MAX_EPOCHS)
        resolved.append(Resolved("training.epochs", epochs, f"{steps} optimiser steps per epoch; at least {BASE_EPOCHS} "
                                 f"epochs and {t.min_steps} steps (training.min_steps)"))
    patience = t.patience
    if patience == AUTO:
        patience = max(BASE_PATIENCE, round(epochs * BASE_PATIENCE / BASE_EPOCHS))
        resolved.append(Resolved("training.patience", patience, f"{BASE_PATIENCE} epochs in {BASE_EPOCHS}, scaled to {epochs}"))
    cfg = _replace(cfg, "training", batch_size=batch, epochs=epochs, patience=patience)
    if cfg.structural.k == AUTO:
        k = max(1, min(PAPER_ANCHORS, round(batch * PAPER_ANCHORS / PAPER_BATCH), batch - 1))
        cfg = _replace(cfg, "structural", k=k)
        resolved.append(Resolved("structural.k", k, f"the papers' {PAPER_ANCHORS} anchors at batch {PAPER_BATCH}, "
                                 f"scaled to batch {batch}"))
    return validate(cfg), resolved
