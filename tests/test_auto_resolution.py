"""``evaluation.n_val_subjects: auto`` against a brute-force search (issue 31, item 1).

The resolution once took the median samples per subject over the list of unique subject ids
(always 1), so that subjects with hundreds of samples were given 30 validation subjects and a
fold trained on one subject. Here the resolved number is compared with the smallest number of
validation subjects that a search over every candidate finds to satisfy the documented rule
(at least ``val_share`` of the subjects left after the test fold, and at least
``min_val_samples`` validation samples at the median samples per subject, counted with
pandas), on datasets with one and with many samples per subject; then every fold the runner
makes is checked for its validation share and its training subjects.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from test_early_checks import config, invoke

from privkd.config.loading import config_from_dict
from privkd.data import write_dataset
from privkd.data.folds import subject_folds
from privkd.training.auto import resolve_validation_subjects


def per_sample_subjects(counts: list[int]) -> np.ndarray:
    """One subject id per sample: subject ``i`` holds ``counts[i]`` samples, in shuffled order."""
    ids = np.repeat([f"p{i:03d}" for i in range(len(counts))], counts)
    return np.random.default_rng(0).permutation(ids)


def brute_force(subjects: np.ndarray, n_folds: int, val_share: float, min_val_samples: int) -> int:
    """The smallest number of validation subjects meeting both of the rule's floors, searched
    over every candidate (at most all but one of the subjects left after a test fold)."""
    n_subjects = pd.Series(subjects).nunique()
    left = n_subjects - math.ceil(n_subjects / n_folds)
    median = pd.Series(subjects).value_counts().median()
    for n_val in range(1, left):
        if n_val >= max(1, round(val_share * left)) and n_val * median >= min_val_samples:
            return n_val
    return max(1, left - 1)  # neither floor reachable: keep one training subject


CASES = {
    "one sample per subject (a table of 250 people)": [1] * 250,
    "two samples per subject": [2] * 40,
    "many samples per subject (the smartwatch demo's shape)": [486] * 10,
    "uneven recordings": [3 * (1 + i % 12) for i in range(24)],
    "few subjects, few samples": [4] * 6,
}


@pytest.mark.parametrize("counts", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize(("n_folds", "val_share", "min_val_samples"), [(5, 0.2, 30), (3, 0.1, 100), (10, 0.3, 5)])
def test_n_val_subjects_auto_matches_brute_force(counts, n_folds, val_share, min_val_samples):
    if n_folds > len(counts):
        pytest.skip("more folds than subjects: refused before any resolution (test_folds)")
    subjects = per_sample_subjects(counts)
    cfg = config_from_dict({"evaluation": {"n_folds": n_folds, "val_share": val_share,
                                           "min_val_samples": min_val_samples, "n_val_subjects": "auto"}})
    resolved, lines = resolve_validation_subjects(cfg, subjects)
    n_val = resolved.evaluation.n_val_subjects
    assert n_val == brute_force(subjects, n_folds, val_share, min_val_samples), lines[0].line()
    median = float(np.median(counts))
    assert f"median of {median:g} per subject" in lines[0].line()

    n_subjects = len(counts)
    for fold in subject_folds(subjects, n_folds=n_folds, n_val_subjects=n_val, seed=0):
        left = n_subjects - len(fold.test_subjects)
        assert len(fold.val_subjects) == n_val
        assert len(fold.train_subjects) == left - n_val >= 1  # a fold never trains on nobody
        assert len(fold.val_subjects) / left >= min(val_share, (left - 1) / left) - 1 / left  # the share, rounded
        assert not set(fold.train_subjects) & set(fold.val_subjects)


def test_many_samples_per_subject_keep_most_subjects_for_training():
    """The issue's case: 10 subjects of ~486 windows each, 5 folds: 2 validation subjects
    (a fifth of 8), so every fold trains on 6 subjects, not on 1."""
    subjects = per_sample_subjects([486] * 10)
    resolved, _ = resolve_validation_subjects(config_from_dict({"evaluation": {"n_val_subjects": "auto"}}), subjects)
    assert resolved.evaluation.n_val_subjects == 2
    folds = subject_folds(subjects, n_folds=5, n_val_subjects=2, seed=0)
    assert [len(fold.train_subjects) for fold in folds] == [6] * 5


def test_the_runner_resolves_from_every_sample_of_the_file(tmp_path, monkeypatch):
    """The runner passes one subject id per sample (not the unique ids): 6 subjects of 40
    samples, 3 folds, leave 4 after a test fold; 0.2 of them rounds to 1, and 30 samples at 40
    per subject need 1: one validation subject, three training subjects."""
    from privkd.training import experiment

    rng = np.random.default_rng(0)
    n = 240
    data = write_dataset(tmp_path / "data.h5", modalities={m: rng.normal(size=(n, 3, 16)).astype(np.float32)
                                                           for m in ("acc", "gyro")},
                         labels=np.arange(n) % 2, subjects=[f"s{i // 40}" for i in range(n)], task="classification",
                         class_names=["a", "b"], modality_kinds={"acc": "signal", "gyro": "signal"},
                         sampling_rates={"acc": 16.0, "gyro": 16.0})
    seen = []

    class Seen(Exception):
        """Raised once the folds are asked for: nothing needs training to see what was resolved."""

    def stop_at_folds(evaluation, dataset, *args, **kwargs):
        seen.append(evaluation.n_val_subjects)
        raise Seen

    monkeypatch.setattr(experiment, "make_folds", stop_at_folds)
    values = config(data, **{"evaluation.n_val_subjects": "auto", "evaluation.n_folds": 3})
    assert isinstance(invoke(tmp_path, values).exception, Seen)
    assert seen == [1]
