"""``privkd study``: per fold, each method keeps the candidate with the best validation score;
its test score is read once; seeds repeat the whole run."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from privkd.cli import app
from privkd.config import config_from_dict
from privkd.errors import ConfigError
from privkd.training.study import candidate_variants

STUDY = {"name": "tiny", "methods": ["baseline", "teacher", "pkdot"], "evaluation": {"max_folds": 1},
         "training": {"epochs": 1, "progress_bar": False, "limit_train_batches": 3}, "teacher": {"tnet_refit_epochs": 1},
         "study": {"seeds": 2, "search": {"pkdot": {"pkdot.beta": [0.1, 2.0]}}}}


def test_candidates_are_the_search_grid():
    cfg = config_from_dict({**STUDY, "study": {"search": {"pkdot": {"pkdot.beta": [0.1, 2.0], "structural.k": [5, 10]}}}})
    variants = candidate_variants(cfg)
    assert len(variants) == 4 and {v.method for v in variants.values()} == {"pkdot"}
    assert {"pkdot.beta": 2.0, "structural.k": 5} in [v.set for v in variants.values()]
    with pytest.raises(ConfigError, match="study.search.amid"):
        candidate_variants(config_from_dict({**STUDY, "study": {"search": {"amid": {"amid.tau": [0.5]}}}}))


def test_study_chooses_on_validation_and_reports_the_chosen_test_score(tmp_path, monkeypatch, watch_path):
    monkeypatch.setenv("PRIVKD_CACHE", str(watch_path.parent))
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(STUDY, sort_keys=False))
    result = CliRunner().invoke(app, ["study", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    (study_dir,) = (tmp_path / "out").iterdir()
    summary = json.loads((study_dir / "summary.json").read_text())
    choices = json.loads((study_dir / "choices.json").read_text())
    assert summary["seeds"] == [0, 1] and len(summary["methods"]["pkdot"]["accuracy"]["per_run"]) == 2
    for seed, index in (("0", 0), ("1", 1)):
        (run_dir,) = (study_dir / f"seed_{seed}").iterdir()
        records = [json.loads(p.read_text()) for p in run_dir.glob("fold_0/pkdot*/metrics.json")]
        assert len(records) == 3  # the defaults and the two candidates
        best = max(records, key=lambda r: r["validation"]["val/f1"])
        (pick,) = choices[seed]["pkdot"]
        assert pick["row"] == best["row"] and pick["test"] == best["test"]
        assert summary["methods"]["pkdot"]["accuracy"]["per_run"][index] == best["test"]["accuracy"]
    assert "settings chosen" in (study_dir / "study.md").read_text()
