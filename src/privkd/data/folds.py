"""Subject-independent cross-validation folds.

Physiological and affective signals differ more between people than between
classes, so a model evaluated on windows of subjects it trained on looks far
better than it is. Every fold therefore splits by *subject*: each subject is in
exactly one of train / validation / test, and over the folds every subject is
tested exactly once. ``protocol: loso`` makes each subject its own test fold; ``data.test_path``
tests on another dataset (cross-corpus).

Two protocols of the papers' released scripts leak test information into training and
selection, and exist only to reproduce (and measure) what they inflate: folds over samples
(:func:`sample_folds`) and choosing the epoch on the test fold (:func:`select_on_test`). A run
uses them only when the config names them in ``evaluation.allow_leaks`` too, and every table of
it says so (:func:`privkd.config.schema.protocol_leaks`).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from privkd.config.schema import EvaluationConfig
from privkd.data.dataset import MultimodalDataset
from privkd.errors import SplitError

__all__ = ["Fold", "check_fold", "cross_corpus_fold", "keep_train_fraction", "make_folds", "official_split_fold",
           "sample_folds", "select_on_test", "subject_folds"]


@dataclass(frozen=True, eq=False)  # eq=False: fields are arrays, whose == is elementwise
class Fold:
    """Sample indices (sorted) and subjects (sorted) of one fold's train/validation/test parts."""

    index: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    train_subjects: tuple[str, ...]
    val_subjects: tuple[str, ...]
    test_subjects: tuple[str, ...]


def _check_enough_subjects(n_subjects: int, n_folds: int, n_val_subjects: int) -> None:
    """Every fold needs a test group, ``n_val_subjects`` validation subjects and one training subject."""
    if n_folds < 2:
        raise SplitError(f"n_folds is {n_folds}; cross-validation needs at least 2 folds", "set n_folds >= 2")
    if n_val_subjects < 0:
        raise SplitError(f"n_val_subjects is {n_val_subjects}", "set n_val_subjects >= 0")
    fewest = 2 + min(n_val_subjects, 1)  # a test subject, a training one, and one to select on (if any)
    if n_subjects < fewest:  # no config setting can help: say what can
        raise SplitError(f"the data has {n_subjects} subject(s), but subject-independent evaluation needs at least "
                         f"{fewest}: every fold tests on subjects it never trained on and selects its epoch on "
                         "others", "add samples from more subjects (or, if the subject ids are wrong, re-import with "
                         "the right subject column)")
    if n_subjects < n_folds:
        raise SplitError(f"{n_folds} folds need at least {n_folds} subjects (one test group each), "
                         f"but there are {n_subjects}", f"set n_folds <= {n_subjects}")
    largest_test_group = math.ceil(n_subjects / n_folds)
    if n_subjects - largest_test_group < n_val_subjects + 1:
        raise SplitError(f"{n_subjects} subjects in {n_folds} folds leave {n_subjects - largest_test_group} "
                         f"non-test subjects in some fold, fewer than {n_val_subjects} validation + 1 training",
                         "use more folds or fewer validation subjects (n_val_subjects)")


def _rows_of(subjects: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Sorted indices of the samples whose subject is in ``chosen``."""
    return np.flatnonzero(np.isin(subjects, chosen))


def _warn_missing_classes(folds: list[Fold], labels: np.ndarray) -> None:
    """Warn when a class has no training sample in a fold: its test samples cannot be learnt."""
    classes = np.unique(labels)
    for fold in folds:
        missing = np.setdiff1d(classes, labels[fold.train])
        if missing.size:
            warnings.warn(f"fold {fold.index}: classes {missing.tolist()} have no training samples "
                          f"(training subjects {list(fold.train_subjects)})", stacklevel=3)


def subject_folds(
    subjects: Sequence[str] | np.ndarray,
    n_folds: int = 5,
    n_val_subjects: int = 1,
    seed: int = 0,
    labels: Sequence[int] | np.ndarray | None = None,
) -> list[Fold]:
    """Split samples into ``n_folds`` subject-independent folds.

    The unique subjects are shuffled with ``seed`` and cut into ``n_folds``
    test groups whose sizes differ by at most one. In fold ``k`` the
    validation subjects are the first ``n_val_subjects`` that follow test
    group ``k`` in the shuffled order (wrapping around), so validation duty
    rotates over subjects; all other subjects train. Pass class ``labels``
    to be warned when a fold's training set lacks a class.

    Raises :class:`~privkd.errors.SplitError` (a ``ValueError``) when there
    are too few subjects for the requested folds.
    """
    subjects = np.asarray(subjects).astype(str)
    unique = np.unique(subjects)
    _check_enough_subjects(len(unique), n_folds, n_val_subjects)
    groups = np.array_split(np.random.default_rng(seed).permutation(unique), n_folds)
    folds = []
    for k in range(n_folds):
        rest = np.concatenate(groups[k + 1:] + groups[:k])
        test, val, train = groups[k], rest[:n_val_subjects], rest[n_val_subjects:]
        folds.append(Fold(index=k, train=_rows_of(subjects, train), val=_rows_of(subjects, val),
                          test=_rows_of(subjects, test), train_subjects=tuple(sorted(train.tolist())),
                          val_subjects=tuple(sorted(val.tolist())), test_subjects=tuple(sorted(test.tolist()))))
    if labels is not None:
        _warn_missing_classes(folds, np.asarray(labels))
    return folds


def _subjects_of(subjects: np.ndarray, rows: np.ndarray) -> tuple[str, ...]:
    return tuple(sorted(np.unique(subjects[rows]).tolist()))


def sample_folds(labels: Sequence[int] | np.ndarray | None, subjects: Sequence[str] | np.ndarray, n_folds: int,
                 val_share: float, seed: int) -> list[Fold]:
    """``n_folds`` folds over samples, stratified by class (``labels``; None for regression), as
    the papers' released scripts split: every subject's samples, and overlapping windows, fall
    into training and test alike. LEAKING: for reproducing published numbers only.

    Each class's samples are shuffled with ``seed`` and dealt to the folds in turn (a running
    offset over classes keeps the fold sizes within one); in fold ``k``, ``val_share`` of each
    class's remaining samples (at least one) select the epoch and the rest train."""
    subjects = np.asarray(subjects).astype(str)
    n = len(subjects)
    if n_folds < 2 or n < 2 * n_folds:
        raise SplitError(f"{n} samples cannot make {n_folds} sample folds with a validation part each",
                         f"set evaluation.n_folds between 2 and {max(n // 2, 2)}")
    strata = np.zeros(n, dtype=int) if labels is None else np.asarray(labels).astype(int).reshape(n)
    rng = np.random.default_rng(seed)
    fold_of, offset = np.empty(n, dtype=int), 0
    for stratum in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == stratum))
        fold_of[members] = (offset + np.arange(len(members))) % n_folds
        offset += len(members)
    folds = []
    for k in range(n_folds):
        test = np.flatnonzero(fold_of == k)
        val = []
        for stratum in np.unique(strata):
            rest = rng.permutation(np.flatnonzero((fold_of != k) & (strata == stratum)))
            val.append(rest[: max(1, round(val_share * len(rest)))] if len(rest) > 1 else rest[:0])
        val_rows = np.sort(np.concatenate(val))
        train = np.setdiff1d(np.flatnonzero(fold_of != k), val_rows)
        folds.append(Fold(index=k, train=train, val=val_rows, test=test, train_subjects=_subjects_of(subjects, train),
                          val_subjects=_subjects_of(subjects, val_rows), test_subjects=_subjects_of(subjects, test)))
    return folds


def select_on_test(fold: Fold, subjects: Sequence[str] | np.ndarray) -> Fold:
    """``fold`` with its test part selecting the epoch (``evaluation.selection: test``), as the
    papers' released scripts do, and its validation samples training instead. LEAKING: the test
    score then reports the best of many epochs on the very samples it is measured on."""
    train = np.union1d(fold.train, fold.val)
    return dataclasses.replace(fold, train=train, val=fold.test, train_subjects=_subjects_of(np.asarray(subjects).astype(str), train),
                               val_subjects=fold.test_subjects)


def cross_corpus_fold(subjects: Sequence[str] | np.ndarray, n_val_subjects: int, seed: int,
                      test_subjects: Sequence[str] | np.ndarray) -> Fold:
    """The one fold of cross-corpus evaluation (``data.test_path``): ``n_val_subjects`` subjects
    of the training dataset, drawn with ``seed``, select the epoch, all its other subjects train,
    and every sample of the test dataset (``test_subjects``: its ``/subjects``) tests. The test
    indices are rows of the test dataset."""
    subjects = np.asarray(subjects).astype(str)
    unique = np.unique(subjects)
    if len(unique) < n_val_subjects + 1:
        raise SplitError(f"the training dataset has {len(unique)} subjects, fewer than {n_val_subjects} validation + 1",
                         "lower evaluation.n_val_subjects")
    shuffled = np.random.default_rng(seed).permutation(unique)
    val, train = shuffled[:n_val_subjects], shuffled[n_val_subjects:]
    tested = np.asarray(test_subjects).astype(str)
    return Fold(index=0, train=_rows_of(subjects, train), val=_rows_of(subjects, val), test=np.arange(len(tested)),
                train_subjects=tuple(sorted(train.tolist())), val_subjects=tuple(sorted(val.tolist())),
                test_subjects=tuple(sorted(np.unique(tested).tolist())))


def official_split_fold(
    subjects: Sequence[str] | np.ndarray,
    splits: Sequence[str] | np.ndarray | None,
    n_val_subjects: int = 1,
    seed: int = 0,
) -> Fold:
    """One fold from a dataset's official split (e.g. Affwild2's train / validation).

    The test part is the ``test`` split, or the ``validation`` split when there is no
    ``test`` split (Affwild2's test labels are not public, so papers report its validation
    set). With both a ``validation`` and a ``test`` split, the validation split selects the
    epoch (its official role) and the whole ``train`` split trains; otherwise
    ``n_val_subjects`` subjects of the ``train`` split, drawn with ``seed``, select the epoch
    and the rest of ``train`` trains.
    """
    if splits is None:
        raise SplitError("evaluation.protocol is 'splits' but the dataset has no /splits",
                         "use protocol: subject_folds, or import the dataset with its official split")
    subjects, splits = np.asarray(subjects).astype(str), np.asarray(splits).astype(str)
    names = set(splits.tolist())
    test_name = "test" if "test" in names else "validation"
    if "train" not in names or test_name not in names:
        raise SplitError(f"/splits holds {sorted(names)}; the splits protocol needs 'train' and 'validation' or 'test'",
                         "name the official parts train / validation / test when importing")
    in_train_split = splits == "train"
    train_subjects = np.unique(subjects[in_train_split])
    if test_name == "test" and "validation" in names:
        val_rows, train_rows = np.flatnonzero(splits == "validation"), np.flatnonzero(in_train_split)
        val, train = np.unique(subjects[val_rows]), train_subjects
    else:
        if len(train_subjects) < n_val_subjects + 1:
            raise SplitError(f"the train split has {len(train_subjects)} subjects, fewer than {n_val_subjects} "
                             "validation + 1", "lower evaluation.n_val_subjects")
        shuffled = np.random.default_rng(seed).permutation(train_subjects)
        val, train = shuffled[:n_val_subjects], shuffled[n_val_subjects:]
        val_rows = np.flatnonzero(in_train_split & np.isin(subjects, val))
        train_rows = np.flatnonzero(in_train_split & np.isin(subjects, train))
    return Fold(index=0, train=train_rows, val=val_rows, test=np.flatnonzero(splits == test_name),
                train_subjects=tuple(sorted(train.tolist())), val_subjects=tuple(sorted(val.tolist())),
                test_subjects=tuple(sorted(np.unique(subjects[splits == test_name]).tolist())))


def keep_train_fraction(fold: Fold, subjects: Sequence[str] | np.ndarray, fraction: float, seed: int) -> Fold:
    """``fold`` training on ``ceil(fraction x n)`` (at least 1) of each training subject's ``n``
    samples (``data.train_fraction``, for learning curves); validation and test untouched.

    Each subject's samples are a prefix of their own permutation, drawn by a generator seeded
    with ``seed`` and the subject's name alone: the subject keeps the same samples in every
    fold whatever the others are, and a larger fraction keeps those and more, so the points of
    a learning curve differ only by the samples added. ``fraction`` 1 returns ``fold`` itself.
    """
    if fraction == 1:
        return fold
    train_subjects = np.asarray(subjects).astype(str)[fold.train]
    by_subject = np.argsort(train_subjects, kind="stable")  # one pass, not one per subject: folds can be large
    names, starts = np.unique(train_subjects[by_subject], return_index=True)
    kept = []
    for subject, rows in zip(names.tolist(), np.split(fold.train[by_subject], starts[1:]), strict=True):
        # rounded first: 0.1 x 30 is 3.0000000000000004 in floating point, which would keep 4 of 30
        n_kept = max(1, math.ceil(round(fraction * len(rows), 9)))
        order = np.random.default_rng([seed, zlib.crc32(subject.encode())]).permutation(len(rows))
        kept.append(rows[order[:n_kept]])
    return dataclasses.replace(fold, train=np.sort(np.concatenate(kept)))


def make_folds(evaluation: EvaluationConfig, dataset: MultimodalDataset, seed: int,
               train_fraction: float = 1.0, test_dataset: MultimodalDataset | None = None) -> list[Fold]:
    """A run's folds: subject-independent ones (``n_folds`` of them, or one per subject under
    ``loso``), the one fold of the dataset's official split, the one fold testing on
    ``test_dataset`` (cross-corpus), or the leaking ones of the papers' scripts (sample folds,
    selection on the test fold), training on ``train_fraction`` of each training subject's
    samples (:func:`keep_train_fraction`); each checked (:func:`check_fold`) before anything trains."""
    if test_dataset is not None:
        folds = [cross_corpus_fold(dataset.subjects, evaluation.n_val_subjects, seed, test_dataset.subjects)]
    elif evaluation.protocol == "splits":
        folds = [official_split_fold(dataset.subjects, dataset.splits, evaluation.n_val_subjects, seed=seed)]
    elif evaluation.protocol == "sample_folds":
        labels = dataset.labels if dataset.info.task == "classification" else None
        folds = sample_folds(labels, dataset.subjects, evaluation.n_folds, evaluation.val_share, seed)[: evaluation.max_folds]
    else:
        n_folds = len(np.unique(dataset.subjects)) if evaluation.protocol == "loso" else evaluation.n_folds
        folds = subject_folds(dataset.subjects, n_folds=n_folds, n_val_subjects=evaluation.n_val_subjects, seed=seed)
        folds = folds[: evaluation.max_folds]
    if evaluation.selection == "test":
        folds = [select_on_test(fold, dataset.subjects) for fold in folds]
    folds = [keep_train_fraction(fold, dataset.subjects, train_fraction, seed) for fold in folds]
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
                             "use fewer folds, a different seed or a larger data.train_fraction, or leave classes no "
                             "subject shows out of the dataset")
