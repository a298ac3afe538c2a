"""Valence/arousal-style regression: embedded targets, grouped CCC and the pipeline end to end."""

import json

import numpy as np
import pytest
import torch

from privkd.data import read_info
from privkd.data.embedded import (
    REGRESSION_TARGETS,
    embedded_dataset_path,
    load_watch_recordings,
)
from privkd.evaluation.metrics import score


@pytest.fixture(scope="module")
def regression_path(watch_path):
    return embedded_dataset_path(watch_path.parent, variant="regression")


def test_regression_targets_follow_their_definition(regression_path):
    import h5py

    raw = np.asarray(load_watch_recordings()["X"][0], dtype=np.float64)  # first recording, (time, 6)
    window = raw[50:150]  # its second window
    expected_angular = np.log(np.mean(np.sqrt((window[:, 3:] ** 2).sum(1))) + 1e-3)
    expected_variability = np.log(np.std(np.sqrt((window[:, :3] ** 2).sum(1))) + 1e-3)
    with h5py.File(regression_path) as h5:
        targets = h5["labels"][1]
    np.testing.assert_allclose(targets, [expected_angular, expected_variability], rtol=1e-5)
    info = read_info(regression_path)
    assert info.task == "regression" and info.target_names == list(REGRESSION_TARGETS) and info.n_outputs == 2


def test_grouped_ccc_is_the_mean_of_per_group_cccs():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(40, 1))
    x = y + rng.normal(scale=0.7, size=(40, 1))
    groups = np.repeat(["a", "b"], 20)

    def ccc(p, t):  # Eq. 8 with population moments, the loss's CCC
        mp, mt = p.mean(), t.mean()
        return 2 * np.mean((p - mp) * (t - mt)) / (p.var() + t.var() + (mp - mt) ** 2)

    expected = np.mean([ccc(x[groups == g, 0], y[groups == g, 0]) for g in ("a", "b")])
    got = score("regression", torch.tensor(x), torch.tensor(y), n_outputs=1, target_names=["v"], groups=groups)
    assert got["ccc_v"] == pytest.approx(expected) and got["ccc"] == pytest.approx(expected)
    pooled = score("regression", torch.tensor(x), torch.tensor(y), n_outputs=1)
    assert pooled["ccc"] == pytest.approx(ccc(x[:, 0], y[:, 0]))


def test_regression_pipeline_end_to_end(run_config):
    result, run_dir = run_config(
        {
            "name": "reg",
            "methods": ["baseline", "teacher", "mtpkdot", "p2p_mse"],
            "data": {"path": "embedded-regression"},
            "evaluation": {"max_folds": 1, "group_average": True},
            "training": {"epochs": 2, "progress_bar": False},
        }
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["task"] == "regression"
    assert list(summary["methods"]) == ["baseline", "teacher", "mt_teacher", "mtpkdot", "p2p_mse"]
    teacher = summary["methods"]["teacher"]
    assert set(teacher) == {"ccc", "ccc_angular_speed", "ccc_acceleration_variability"}
    # The teacher sees the gyroscope, from which the angular-speed target is computed.
    assert teacher["ccc_angular_speed"]["mean"] > summary["methods"]["baseline"]["ccc_angular_speed"]["mean"]
    record = json.loads((run_dir / "fold_0" / "mtpkdot" / "metrics.json").read_text())
    assert len(record["teacher_selection"]) == 2 and sum(record["teacher_selection"][0].values()) > 0


def test_kl_baseline_refused_for_regression(run_config):
    result, run_dir = run_config({"methods": ["p2p_kl"], "data": {"path": "embedded-regression"}})
    assert result.exit_code == 2 and "p2p_kl" in result.output and "p2p_mse" in result.output
    assert run_dir is None  # refused before training or writing anything
