"""A sweep point that changes only a student key takes the fold's baseline and teacher over
from the first point, and its results equal retraining them."""

import json

import pytest

from privkd.config.loading import config_from_dict
from privkd.training.experiment import row_fingerprints, rows_to_train, run_experiment
from privkd.training.sweep import run_sweep

TINY = {"name": "tiny", "methods": ["baseline", "teacher", "pkdot"], "evaluation": {"max_folds": 1},
        "model": {"embed_dim": 16, "fusion_dim": 16, "tnet_hidden": 16, "tnet_bottleneck": 8},
        "training": {"epochs": 1, "batch_size": 64, "progress_bar": False, "limit_train_batches": 3},
        "structural": {"k": 10}}


def records(run_dir):
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(run_dir.glob("fold_0/*/metrics.json"))}


def test_a_row_depends_on_its_sections_and_its_teacher_only():
    base = row_fingerprints(config_from_dict(TINY), rows_to_train(config_from_dict(TINY)))
    beta = row_fingerprints(config_from_dict({**TINY, "pkdot": {"beta": 2.0}}), ["baseline", "teacher", "pkdot"])
    assert beta["baseline"] == base["baseline"] and beta["teacher"] == base["teacher"] and beta["pkdot"] != base["pkdot"]
    align = row_fingerprints(config_from_dict({**TINY, "teacher": {"align_weight": 0.5}}), ["baseline", "teacher", "pkdot"])
    assert align["baseline"] == base["baseline"]
    assert align["teacher"] != base["teacher"] and align["pkdot"] != base["pkdot"]  # a new teacher, so a new student
    seed = row_fingerprints(config_from_dict({**TINY, "seed": 1}), ["baseline", "teacher", "pkdot"])
    assert not set(seed.values()) & set(base.values())


def test_sweep_points_reuse_unchanged_rows_and_equal_retraining(tmp_path, monkeypatch, watch_path):
    monkeypatch.setenv("PRIVKD_CACHE", str(watch_path.parent))
    import yaml

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    lines: list[str] = []
    sweep_dir = run_sweep(config, [], {"pkdot.beta": [0.5, 2.0]}, tmp_path / "sweep", row="pkdot", progress=lines.append)
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    first, second = (records(__import__("pathlib").Path(p["run_dir"])) for p in sweep["points"])
    assert [line for line in lines if "reused" in line] == [
        f"fold 1/1: {row} reused from {sweep['points'][0]['run_dir'].rsplit('/', 1)[-1]}" for row in ("baseline", "teacher")]
    assert second["baseline"] == first["baseline"] and second["teacher"] == first["teacher"]
    alone = run_experiment(config_from_dict({**TINY, "pkdot": {"beta": 2.0}}), tmp_path / "alone")
    retrained = records(alone.run_dir)
    assert second == retrained  # every row, the reused ones and the student that distilled from a reused teacher
    assert second["pkdot"]["test"]["accuracy"] == pytest.approx(retrained["pkdot"]["test"]["accuracy"], abs=0)
