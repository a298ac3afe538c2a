"""``data.train_fraction``: learning curves cut each training subject's samples, nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest

from privkd.config.loading import config_from_dict, load_config, packaged_config_path
from privkd.config.schema import EvaluationConfig
from privkd.data import Fold, subject_folds
from privkd.data.folds import keep_train_fraction, make_folds
from privkd.errors import ConfigError
from privkd.training.auto import resolve_training
from privkd.training.reuse import fingerprint

COUNTS = {"s0": 5, "s1": 8, "s2": 9, "s3": 12, "s4": 3, "s5": 7, "s6": 10}
"""Samples per subject of the synthetic layout: uneven, some odd, one tiny."""


@dataclass
class _Data:
    """What :func:`make_folds` reads of a dataset: subjects, official splits, labels, class names."""

    subjects: np.ndarray
    labels: np.ndarray
    splits: np.ndarray | None = None
    info: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(class_names=["a", "b"]))


def _layout(splits: bool = False) -> _Data:
    """The subjects' samples interleaved (as a dataset read in recording order may hold them),
    labels alternating so every subject shows both classes."""
    subjects = np.array([s for i in range(max(COUNTS.values())) for s, n in COUNTS.items() if i < n])
    official = np.where(np.isin(subjects, ["s5", "s6"]), "validation", "train") if splits else None
    return _Data(subjects, np.arange(len(subjects)) % 2, official)


def _per_subject(fold: Fold, subjects: np.ndarray) -> dict[str, int]:
    names, counts = np.unique(subjects[fold.train], return_counts=True)
    return dict(zip(names.tolist(), counts.tolist(), strict=True))


EVALUATION = EvaluationConfig(n_folds=3, n_val_subjects=1)


def test_half_keeps_half_of_each_training_subject_rounded_up_and_nothing_else_moves() -> None:
    data = _layout()
    full, half = make_folds(EVALUATION, data, seed=0), make_folds(EVALUATION, data, seed=0, train_fraction=0.5)
    kept = {"s0": 3, "s1": 4, "s2": 5, "s3": 6, "s4": 2, "s5": 4, "s6": 5}  # ceil(n / 2)
    assert len(half) == 3
    for whole, cut in zip(full, half, strict=True):
        assert _per_subject(cut, data.subjects) == {s: kept[s] for s in whole.train_subjects}
        assert len(cut.train) == sum(kept[s] for s in whole.train_subjects) < len(whole.train)
        assert set(cut.train.tolist()) < set(whole.train.tolist())
        assert np.all(np.diff(cut.train) > 0), "still sorted and unique"
        assert np.array_equal(cut.val, whole.val) and np.array_equal(cut.test, whole.test)
        assert (cut.train_subjects, cut.val_subjects, cut.test_subjects) == (
            whole.train_subjects, whole.val_subjects, whole.test_subjects)


def test_official_split_fold_is_cut_the_same_way() -> None:
    data = _layout(splits=True)
    splits = EvaluationConfig(protocol="splits", n_val_subjects=1)
    (whole,), (cut,) = make_folds(splits, data, seed=0), make_folds(splits, data, seed=0, train_fraction=0.25)
    assert whole.test_subjects == ("s5", "s6") and np.array_equal(cut.test, whole.test)
    assert np.array_equal(cut.val, whole.val)
    assert _per_subject(cut, data.subjects) == {s: {"s0": 2, "s1": 2, "s2": 3, "s3": 3, "s4": 1}[s]
                                                for s in whole.train_subjects}


def test_a_small_fraction_keeps_at_least_one_sample_and_rounds_exact_products_exactly() -> None:
    subjects = np.array(["a"] * 30 + ["b"] * 3)
    fold = Fold(0, np.arange(33), np.array([], dtype=np.int64), np.array([], dtype=np.int64), ("a", "b"), (), ())
    assert _per_subject(keep_train_fraction(fold, subjects, 0.1, seed=0), subjects) == {"a": 3, "b": 1}
    assert _per_subject(keep_train_fraction(fold, subjects, 0.01, seed=0), subjects) == {"a": 1, "b": 1}


def test_same_seed_same_samples_other_seed_other_samples() -> None:
    data = _layout()
    first, again = (make_folds(EVALUATION, data, seed=0, train_fraction=0.5) for _ in range(2))
    assert all(np.array_equal(a.train, b.train) for a, b in zip(first, again, strict=True))
    whole = subject_folds(data.subjects, n_folds=3, n_val_subjects=1, seed=0)[0]
    seed_0 = keep_train_fraction(whole, data.subjects, 0.5, seed=0).train
    seed_1 = keep_train_fraction(whole, data.subjects, 0.5, seed=1).train
    assert np.array_equal(seed_0, first[0].train)
    assert whole.train_subjects == ("s0", "s1", "s5")
    assert len(seed_0) == len(seed_1) == 3 + 4 + 4 and not np.array_equal(seed_0, seed_1)


def test_a_subjects_samples_do_not_depend_on_the_other_subjects_and_grow_with_the_fraction() -> None:
    data = _layout()
    folds = make_folds(EVALUATION, data, seed=0, train_fraction=0.5)
    shared = set(folds[0].train_subjects) & set(folds[1].train_subjects)
    assert shared and set(folds[0].train_subjects) != set(folds[1].train_subjects)
    for subject in shared:
        first, second = (fold.train[data.subjects[fold.train] == subject] for fold in folds[:2])
        assert np.array_equal(first, second)
    whole = subject_folds(data.subjects, n_folds=3, n_val_subjects=1, seed=0)[0]
    smaller = [set(keep_train_fraction(whole, data.subjects, f, seed=0).train.tolist()) for f in (0.1, 0.25, 0.5, 0.75)]
    assert smaller[0] <= smaller[1] <= smaller[2] <= smaller[3] < set(whole.train.tolist())


def test_fraction_one_gives_todays_folds() -> None:
    data = _layout()
    today = subject_folds(data.subjects, n_folds=3, n_val_subjects=1, seed=0)
    for folds in (make_folds(EVALUATION, data, seed=0), make_folds(EVALUATION, data, seed=0, train_fraction=1.0)):
        for old, new in zip(today, folds, strict=True):
            assert all(np.array_equal(getattr(old, part), getattr(new, part)) for part in ("train", "val", "test"))
            assert (old.index, old.train_subjects, old.val_subjects, old.test_subjects) == (
                new.index, new.train_subjects, new.val_subjects, new.test_subjects)
    assert keep_train_fraction(today[0], data.subjects, 1.0, seed=0) is today[0]


@pytest.mark.parametrize("fraction", [0, 0.0, -0.5, 1.5])
def test_fractions_outside_zero_one_are_refused(fraction: float) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"data": {"train_fraction": fraction}})
    assert err.value.key == "data.train_fraction"
    assert "(0, 1]" in str(err.value) and "0.25" in err.value.fix


def test_fraction_is_part_of_the_row_fingerprint_and_of_auto_batch_sizes() -> None:
    full, half = (config_from_dict({"methods": ["baseline"], "data": {"train_fraction": f}}) for f in (1, 0.5))
    assert full.data.train_fraction == 1.0 and half.data.train_fraction == 0.5
    assert fingerprint(full, "baseline", (), None) != fingerprint(half, "baseline", (), None)
    layout = _layout()
    folds = make_folds(EVALUATION, layout, seed=0, train_fraction=0.5)
    _, resolved = resolve_training(half, folds)
    batch = next(item for item in resolved if item.key == "training.batch_size")
    assert batch.why.startswith(f"{min(len(f.train) for f in folds)} training samples in the smallest fold")


def test_the_learning_curve_config_runs_the_papers_rows_on_the_demo_data() -> None:
    cfg, demo = load_config(packaged_config_path("learning_curve")), load_config(packaged_config_path("demo"))
    assert cfg.methods == ("baseline", "teacher", "pkdot", "p2p_kl", "mtpkdot")
    assert (cfg.data, cfg.evaluation, cfg.model) == (demo.data, demo.evaluation, demo.model)


def test_the_learning_curve_sizes_training_to_each_fraction_and_is_the_demo_at_full_data() -> None:
    """The demo's pinned batch 128 and patience 8 leave about 2 optimiser steps per epoch at 10 %
    of the data, and early stopping ends training after a few dozen steps; the learning curve
    leaves them auto, which gives the demo's batch and anchors on the full training folds (and
    the couple more epochs that training.min_steps asks for)."""
    from privkd.data.dataset import MultimodalDataset
    from privkd.data.embedded import embedded_dataset_path

    cfg, demo = load_config(packaged_config_path("learning_curve")), load_config(packaged_config_path("demo"))
    dataset = MultimodalDataset(embedded_dataset_path(), modalities=["accelerometer", "gyroscope"])

    def trained(fraction: float):
        resolved, _ = resolve_training(cfg, make_folds(cfg.evaluation, dataset, cfg.seed, fraction))
        return resolved.training, resolved.structural.k

    full, k_full = trained(1.0)
    assert (full.batch_size, k_full) == (demo.training.batch_size, demo.structural.k)
    assert demo.training.epochs <= full.epochs <= demo.training.epochs + 3
    tenth, _ = trained(0.1)
    smallest = min(len(f.train) for f in make_folds(cfg.evaluation, dataset, cfg.seed, 0.1))
    assert tenth.batch_size < full.batch_size and smallest // tenth.batch_size >= 8
    assert tenth.epochs * (smallest // tenth.batch_size) >= cfg.training.min_steps and tenth.patience > full.patience
