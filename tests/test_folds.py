"""Subject-independent folds: disjoint subjects, every subject tested once, determinism, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from privkd.data import Fold, MultimodalDataset, embedded_dataset_path, subject_folds
from privkd.errors import SplitError


def _check_folds(folds: list[Fold], subjects: np.ndarray, n_val: int) -> None:
    n = len(subjects)
    tested = []
    for fold in folds:
        parts = {"train": fold.train, "val": fold.val, "test": fold.test}
        names = {"train": fold.train_subjects, "val": fold.val_subjects, "test": fold.test_subjects}
        assert set(names["train"]).isdisjoint(names["val"]) and set(names["train"]).isdisjoint(names["test"])
        assert set(names["val"]).isdisjoint(names["test"])
        assert len(names["val"]) == n_val and len(names["train"]) >= 1
        for part, rows in parts.items():
            assert np.all(np.diff(rows) > 0), "indices sorted and unique"
            assert set(subjects[rows].tolist()) == set(names[part])
        assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(n))
        tested += fold.test_subjects
    assert sorted(tested) == sorted(set(subjects.tolist())), "every subject tested exactly once"


def test_embedded_subjects_five_folds(tmp_path_factory: pytest.TempPathFactory) -> None:
    dataset = MultimodalDataset(embedded_dataset_path(tmp_path_factory.mktemp("cache")))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every class has training data in every fold
        folds = subject_folds(dataset.subjects, n_folds=5, n_val_subjects=1, seed=0, labels=dataset.labels)
    assert [f.index for f in folds] == [0, 1, 2, 3, 4]
    assert [len(f.test_subjects) for f in folds] == [2] * 5
    assert [len(f.train_subjects) for f in folds] == [7] * 5
    _check_folds(folds, dataset.subjects, n_val=1)


def test_synthetic_seven_subjects_three_folds() -> None:
    subjects = np.array([f"p{i % 7}" for i in range(50)])
    folds = subject_folds(subjects, n_folds=3, n_val_subjects=1, seed=3)
    assert sorted(len(f.test_subjects) for f in folds) == [2, 2, 3]
    _check_folds(folds, subjects, n_val=1)
    no_val = subject_folds(subjects, n_folds=3, n_val_subjects=0, seed=3)
    assert all(f.val.size == 0 and f.val_subjects == () for f in no_val)
    _check_folds(no_val, subjects, n_val=0)


def _signature(folds: list[Fold]) -> list[tuple[tuple[str, ...], ...]]:
    return [(f.train_subjects, f.val_subjects, f.test_subjects) for f in folds]


def test_deterministic_per_seed_and_independent_of_sample_order() -> None:
    subjects = [f"{i % 10:02d}" for i in range(200)]
    same = _signature(subject_folds(subjects, seed=1))
    assert _signature(subject_folds(subjects, seed=1)) == same
    assert _signature(subject_folds(subjects[::-1], seed=1)) == same
    assert _signature(subject_folds(subjects, seed=2)) != same


def test_validation_duty_rotates() -> None:
    folds = subject_folds([str(i) for i in range(10)], n_folds=5, n_val_subjects=1, seed=0)
    assert len({f.val_subjects for f in folds}) == 5


@pytest.mark.parametrize(
    ("n_subjects", "n_folds", "n_val", "words"),
    [
        (4, 5, 1, "5 folds need at least 5 subjects (one test group each), but there are 4"),
        (3, 3, 2, "3 subjects in 3 folds leave 2 non-test subjects in some fold, fewer than 2 validation + 1"),
        (6, 2, 3, "6 subjects in 2 folds leave 3 non-test subjects in some fold, fewer than 3 validation + 1"),
        (6, 1, 0, "n_folds is 1"),
    ],
)
def test_too_few_subjects_raises_with_counts(n_subjects: int, n_folds: int, n_val: int, words: str) -> None:
    subjects = [f"s{i}" for i in range(n_subjects)]
    with pytest.raises(SplitError) as exc:
        subject_folds(subjects, n_folds=n_folds, n_val_subjects=n_val)
    assert words in str(exc.value) and "Fix:" in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_warns_when_a_class_has_no_training_samples() -> None:
    subjects = np.array(["a", "b", "c", "d"])
    labels = np.array([0, 0, 0, 1])  # class 1 only in subject d
    with pytest.warns(UserWarning, match=r"classes \[1\] have no training samples") as record:
        folds = subject_folds(subjects, n_folds=2, n_val_subjects=0, labels=labels)
    d_fold = next(f for f in folds if "d" in f.test_subjects)
    assert len(record) == 1 and f"fold {d_fold.index}" in str(record[0].message)


def test_official_split_fold_tests_the_validation_split_and_selects_on_train_subjects():
    from privkd.data import official_split_fold

    subjects = np.array(["a", "a", "b", "c", "c", "d", "e"])
    splits = np.array(["train", "train", "train", "train", "train", "validation", "validation"])
    fold = official_split_fold(subjects, splits, n_val_subjects=1, seed=0)
    assert fold.test.tolist() == [5, 6] and fold.test_subjects == ("d", "e")
    assert len(fold.val_subjects) == 1 and set(fold.val_subjects) | set(fold.train_subjects) == {"a", "b", "c"}
    assert sorted(fold.train.tolist() + fold.val.tolist()) == [0, 1, 2, 3, 4]
    assert not set(subjects[fold.val]) & set(subjects[fold.train])


def test_official_split_fold_prefers_a_test_split_and_explains_missing_splits():
    from privkd.data import official_split_fold
    from privkd.errors import SplitError

    subjects = np.array(["a", "b", "c", "d"])
    fold = official_split_fold(subjects, np.array(["train", "train", "validation", "test"]), n_val_subjects=1)
    assert fold.test.tolist() == [3]
    # with a test split, the official validation split selects and the whole train split trains
    assert fold.val.tolist() == [2] and fold.train.tolist() == [0, 1] and fold.train_subjects == ("a", "b")
    with pytest.raises(SplitError, match="no /splits"):
        official_split_fold(subjects, None)
    with pytest.raises(SplitError, match="needs 'train'"):
        official_split_fold(subjects, np.array(["dev"] * 4))
