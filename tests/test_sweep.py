"""``privkd sweep``: every grid point is a run; the best is chosen on validation scores only."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from privkd.cli import app
from privkd.errors import ConfigError
from privkd.training.sweep import parse_grid, run_sweep

TINY = {"name": "tiny", "methods": ["baseline"], "evaluation": {"max_folds": 1},
        "training": {"epochs": 1, "progress_bar": False, "limit_train_batches": 3}}


@pytest.fixture
def config(tmp_path, monkeypatch, watch_path):
    monkeypatch.setenv("PRIVKD_CACHE", str(watch_path.parent))
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def test_grid_values_are_parsed_as_yaml():
    assert parse_grid(["training.lr=1e-3,0.01", "structural.ot_mode=paper,paired"]) == {
        "training.lr": [1e-3, 0.01], "structural.ot_mode": ["paper", "paired"]}


def test_grid_sweep_picks_the_best_validation_score_and_records_test_beside_it(config, tmp_path):
    result = CliRunner().invoke(app, ["sweep", str(config), "--grid", "training.lr=0.0001,0.01", "--out", str(tmp_path / "sw")])
    assert result.exit_code == 0, result.output
    (sweep_dir,) = (tmp_path / "sw").iterdir()
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert [p["params"] for p in sweep["points"]] == [{"training.lr": 0.0001}, {"training.lr": 0.01}]
    for point in sweep["points"]:
        (metrics,) = [json.loads(p.read_text()) for p in (tmp_path / "sw" / sweep_dir.name / "points").glob(
            f"{point['run_dir'].rsplit('/', 1)[-1]}/fold_*/baseline/metrics.json")]
        assert point["objective"] == pytest.approx(metrics["validation"]["val/f1"])
        assert 0 < point["test"]["baseline"]["accuracy"] <= 1
    assert sweep["best"]["objective"] == max(p["objective"] for p in sweep["points"])
    assert "best" in (sweep_dir / "sweep.md").read_text()


def test_optuna_trials_sample_the_grid(config, tmp_path):
    sweep_dir = run_sweep(config, [], {"training.lr": [0.001, 0.01]}, tmp_path / "sw", trials=2)
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert len(sweep["points"]) == 2 and all(p["params"]["training.lr"] in (0.001, 0.01) for p in sweep["points"])


def test_unknown_grid_key_fails_before_training(config, tmp_path):
    with pytest.raises(ConfigError, match="training.lrr"):
        run_sweep(config, [], {"training.lrr": [0.1]}, tmp_path / "sw")
    assert not (tmp_path / "sw").exists()


def test_grid_values_reach_every_point_as_the_values_they_are(config, tmp_path):
    """A point's values are set in its config as they are, not printed as ``--set`` text and
    parsed again: NumPy's integers, which JSON cannot write, failed every sweep given them."""
    sweep_dir = run_sweep(config, [], {"training.batch_size": np.arange(32, 48, 16), "training.lr": np.array([1e-5])},
                          tmp_path / "sw")
    (point,) = json.loads((sweep_dir / "sweep.json").read_text())["points"]
    assert point["params"] == {"training.batch_size": 32, "training.lr": 1e-05}
    saved = yaml.safe_load((Path(point["run_dir"]) / "config.yaml").read_text())
    assert (saved["training"]["batch_size"], saved["training"]["lr"]) == (32, 1e-05)
