"""Evaluation protocols beside subject folds: leave-one-subject-out, cross-corpus testing, and
the papers' leaking protocols (sample folds, selection on the test fold), which run only when
named in ``evaluation.allow_leaks`` and are marked wherever their scores appear."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from privkd.config.loading import config_from_dict
from privkd.config.parse import config_to_dict
from privkd.config.schema import EvaluationConfig
from privkd.data import MultimodalDataset, read_info, write_dataset
from privkd.data.folds import make_folds
from privkd.deploy.card import model_card
from privkd.errors import ConfigError
from privkd.evaluation.summary import summary_markdown
from privkd.training.cross_corpus import check_test_corpus

SUBJECTS = [f"s{i}" for i in range(6)]


def _dataset(path: Path, *, classes: tuple[str, ...] = ("rest", "walk"), width: int = 4,
             prefix: str = "s", seed: int = 0) -> Path:
    """Six subjects of eight samples each, both classes per subject, two feature modalities."""
    rng = np.random.default_rng(seed)
    n = 48
    return write_dataset(path, modalities={"acc": rng.normal(size=(n, width)), "gyro": rng.normal(size=(n, 3))},
                         labels=np.tile(np.arange(len(classes)), n // len(classes)),
                         subjects=np.repeat([f"{prefix}{i}" for i in range(6)], 8), task="classification",
                         class_names=list(classes), modality_kinds={"acc": "features", "gyro": "features"})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> MultimodalDataset:
    return MultimodalDataset(_dataset(tmp_path_factory.mktemp("protocols") / "train.h5"))


def test_loso_folds_hold_one_subject_each(dataset):
    folds = make_folds(EvaluationConfig(protocol="loso", n_val_subjects=1), dataset, seed=0)
    assert len(folds) == len(SUBJECTS)
    assert sorted(s for fold in folds for s in fold.test_subjects) == SUBJECTS
    for fold in folds:
        assert len(fold.test_subjects) == 1 and len(fold.val_subjects) == 1
        assert set(fold.test_subjects).isdisjoint(fold.train_subjects + fold.val_subjects)


def test_sample_folds_share_subjects_and_stratify(dataset):
    folds = make_folds(EvaluationConfig(protocol="sample_folds", n_folds=4, allow_leaks=("sample_folds",)), dataset, seed=0)
    tested = np.concatenate([fold.test for fold in folds])
    assert sorted(tested.tolist()) == list(range(len(dataset)))  # every sample tested once
    for fold in folds:
        assert set(fold.test_subjects) & set(fold.train_subjects)  # the leak: the same people on both sides
        assert np.bincount(dataset.labels[fold.test]).tolist() == [6, 6]  # stratified: 48 samples, 2 classes, 4 folds
        assert not set(fold.test) & set(fold.train) and not set(fold.val) & set(fold.train)


def test_selection_on_the_test_fold_trains_on_the_validation_samples(dataset):
    honest = make_folds(EvaluationConfig(n_folds=3, n_val_subjects=1), dataset, seed=0)
    leaky = make_folds(EvaluationConfig(n_folds=3, n_val_subjects=1, selection="test", allow_leaks=("test_selection",)),
                       dataset, seed=0)
    for fair, fold in zip(honest, leaky, strict=True):
        assert np.array_equal(fold.val, fair.test) and np.array_equal(fold.test, fair.test)
        assert np.array_equal(fold.train, np.union1d(fair.train, fair.val))


@pytest.mark.parametrize(("evaluation", "key", "leak"), [
    ({"protocol": "sample_folds"}, "evaluation.protocol", "subjects shared between training and test"),
    ({"selection": "test"}, "evaluation.selection", "epoch chosen on the test fold"),
    ({"protocol": "sample_folds", "selection": "test", "allow_leaks": ["sample_folds"]}, "evaluation.selection",
     "epoch chosen on the test fold"),
])
def test_leaking_protocols_are_refused_unless_named_in_allow_leaks(evaluation, key, leak):
    with pytest.raises(ConfigError, match=key) as refused:
        config_from_dict({"methods": ["baseline"], "evaluation": evaluation})
    assert leak in str(refused.value) and "allow_leaks" in str(refused.value)
    allowed = {**evaluation, "allow_leaks": ["sample_folds", "test_selection"]}
    assert config_from_dict({"methods": ["baseline"], "evaluation": allowed}).evaluation.allow_leaks


def test_leaks_are_marked_in_the_summary_and_the_model_card():
    summary = {"task": "classification", "folds": 2, "leaks": ["subjects shared between training and test"],
               "methods": {"baseline": {"f1": {"mean": 0.9, "std": 0.0, "per_fold": [0.9, 0.9]}}}}
    text = summary_markdown(summary, "leaky")
    assert "LEAKING, for reproducing published numbers only: subjects shared between training and test" in text
    assert "subject-independent" not in text
    card = {"format": "privkd-student", "row": "baseline", "method": "baseline", "role": "student", "task": "classification",
            "inputs": {"acc": {"kind": "features", "sample_shape": [4]}}, "class_names": ["rest", "walk"],
            "config": config_to_dict(config_from_dict({"methods": ["baseline"], "evaluation": {
                "selection": "test", "allow_leaks": ["test_selection"]}})),
            "training": {"fold": 0, "dataset": "train.h5", "data_path": "train.h5", "train_subjects": ["s1"], "val_subjects": ["s2"],
                         "test_subjects": ["s0"], "seed": 0},
            "test_metrics": {"f1": 0.9}}
    rendered = model_card(card)
    assert rendered.count("LEAKING, for reproducing published numbers only: epoch chosen on the test fold") == 2


def test_cross_corpus_refuses_other_modalities_or_classes(tmp_path):
    cfg = config_from_dict({"methods": ["baseline"], "data": {"path": str(tmp_path / "train.h5"), "prevalent": ["acc"],
                                                              "privileged": ["gyro"], "test_path": str(tmp_path / "x.h5")}})
    train = read_info(_dataset(tmp_path / "train.h5"))
    check_test_corpus(cfg, train, read_info(_dataset(tmp_path / "same.h5", prefix="t", seed=1)))  # matches: passes
    for name, kwargs, words in (("classes.h5", {"classes": ("walk", "rest")}, "class_names"),
                                ("wide.h5", {"width": 5}, "sample_shape")):
        other = read_info(_dataset(tmp_path / name, **kwargs))
        with pytest.raises(ConfigError, match="data.test_path") as refused:
            check_test_corpus(cfg, train, other)
        assert words in str(refused.value) and name in str(refused.value) and "re-import" in str(refused.value)
    with pytest.raises(ConfigError, match="cannot be combined"):
        config_from_dict({"methods": ["baseline"], "data": {"test_path": "x.h5"}, "evaluation": {"protocol": "loso"}})


def test_cross_corpus_fold_tests_every_sample_of_the_other_dataset(tmp_path, dataset):
    other = MultimodalDataset(_dataset(tmp_path / "other.h5", prefix="t", seed=1))
    (fold,) = make_folds(EvaluationConfig(n_val_subjects=1), dataset, seed=0, test_dataset=other)
    assert fold.test.tolist() == list(range(len(other))) and fold.test_subjects == tuple(f"t{i}" for i in range(6))
    assert len(fold.val_subjects) == 1 and len(fold.train_subjects) == 5


def test_a_cross_corpus_run_tests_on_the_other_dataset_and_a_leaky_one_says_so(tmp_path, run_config):
    train, other = _dataset(tmp_path / "train.h5"), _dataset(tmp_path / "other.h5", prefix="t", seed=1)
    base = {"name": "corpus", "methods": ["baseline"], "training": {"epochs": 1, "progress_bar": False},
            "evaluation": {"n_val_subjects": 1, "linear_reference": False},
            "data": {"path": str(train), "prevalent": ["acc"], "privileged": ["gyro"], "test_path": str(other)}}
    result, run_dir = run_config(base)
    assert result.exit_code == 0, result.output
    summary = (run_dir / "summary.md").read_text()
    assert "other.h5 (cross-corpus)" in summary and "LEAKING" not in summary
    tested = np.load(run_dir / "fold_0" / "baseline" / "test_predictions.npz")["subjects"]
    assert sorted(set(tested.tolist())) == [f"t{i}" for i in range(6)]
    leaky = {**base, "data": {**base["data"], "test_path": None},
             "evaluation": {"protocol": "sample_folds", "n_folds": 2, "max_folds": 1, "selection": "test",
                            "allow_leaks": ["sample_folds", "test_selection"], "linear_reference": False}}
    result, run_dir = run_config(leaky)
    assert result.exit_code == 0, result.output
    assert "subjects shared between training and test; epoch chosen on the test fold" in result.output
    assert "LEAKING" in (run_dir / "summary.md").read_text()
