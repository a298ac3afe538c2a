"""``privkd study``: per fold, each method keeps the candidate with the best validation score;
its test score is read once; seeds repeat the whole run."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from privkd.cli import app
from privkd.config.loading import config_from_dict, load_config
from privkd.errors import ConfigError
from privkd.training.study import (
    candidate_variants,
    chosen_departures,
    diagnostic_lines,
    run_study,
    study_markdown,
    subject_means,
    write_study,
)

STUDY = {"name": "tiny", "methods": ["baseline", "teacher", "pkdot"], "evaluation": {"max_folds": 1},
         "variants": {"pkdot_zero": {"method": "pkdot", "set": {"pkdot.beta": 0.0}}},
         "training": {"epochs": 1, "progress_bar": False, "limit_train_batches": 3}, "teacher": {"tnet_refit_epochs": 1},
         "study": {"seeds": 2, "search": {"pkdot": {"pkdot.beta": [0.1, 2.0]}}}}


def test_candidates_are_the_search_grid():
    cfg = config_from_dict({**STUDY, "study": {"search": {"pkdot": {"pkdot.beta": [0.1, 2.0], "structural.k": [5, 10]}}}})
    variants = candidate_variants(cfg)
    assert len(variants) == 4 and {v.method for v in variants.values()} == {"pkdot"}
    assert {"pkdot.beta": 2.0, "structural.k": 5} in [v.set for v in variants.values()]
    shipped = candidate_variants(load_config("nested"))  # the README's study: every searched method has candidates
    assert len(shipped) == 9 and {v.method for v in shipped.values()} == set(load_config("nested").study.search)
    with pytest.raises(ConfigError, match="study.search.amid"):
        candidate_variants(config_from_dict({**STUDY, "study": {"search": {"amid": {"amid.tau": [0.5]}}}}))


def test_a_bad_search_fails_before_the_study_directory_exists(tmp_path):
    cfg = config_from_dict({**STUDY, "study": {"search": {"amid": {"amid.tau": [0.5]}}}})
    with pytest.raises(ConfigError, match="study.search.amid"):
        run_study(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_study_chooses_on_validation_and_reports_the_chosen_test_score(tmp_path, monkeypatch, watch_path):
    monkeypatch.setenv("PRIVKD_CACHE", str(watch_path.parent))
    config = tmp_path / "study.yaml"
    # the control switch adds a row no config names: the study must still know its teacher
    config.write_text(yaml.safe_dump({**STUDY, "evaluation": {"max_folds": 1, "teacher_init_control": True}}, sort_keys=False))
    result = CliRunner().invoke(app, ["study", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "pkdot[beta=2.0]" in result.output  # progress names the candidate (not eaten as rich markup)
    (study_dir,) = (tmp_path / "out").iterdir()
    summary = json.loads((study_dir / "summary.json").read_text())
    choices = json.loads((study_dir / "choices.json").read_text())
    assert summary["seeds"] == [0, 1] and len(summary["methods"]["pkdot"]["accuracy"]["per_run"]) == 2
    assert summary["teachers"]["teacher_init"] == "teacher" and summary["teachers"]["baseline"] is None
    for seed, index in (("0", 0), ("1", 1)):
        (run_dir,) = (study_dir / f"seed_{seed}").iterdir()
        records = [json.loads((run_dir / "fold_0/pkdot/metrics.json").read_text())]  # the defaults win ties
        records += [json.loads(p.read_text()) for p in sorted(run_dir.glob("fold_0/pkdot[[]*/metrics.json"))]
        assert len(records) == 3  # the defaults and the two candidates
        best = max(records, key=lambda r: r["validation"]["val/f1"])
        (pick,) = choices[seed]["pkdot"]
        assert pick["row"] == best["row"] and pick["test"] == best["test"]
        assert summary["methods"]["pkdot"]["accuracy"]["per_run"][index] == best["test"]["accuracy"]
        # the config's own variant is a row of its own, never one of pkdot's candidates
        (zero_pick,) = choices[seed]["pkdot_zero"]
        assert zero_pick["row"] == "pkdot_zero" and "structure_test" in zero_pick
    study_md = (study_dir / "study.md").read_text()
    assert "settings chosen" in study_md and "| pkdot[beta=0.1] |" in study_md and "| teacher | — |" in study_md
    # students fuse no hallucinations by default, a departure from PKDOT: marked in the study's table
    assert "| pkdot ‡ |" in study_md and "student.hallucinate = False (paper: True)" in study_md
    assert 0 < summary["holdout_ratio"] < 1 and set(summary["subjects"]) >= {"baseline", "pkdot"}
    # the tables are a function of the finished runs: writing them again gives the same files
    before = {name: (study_dir / name).read_text() for name in ("summary.json", "choices.json", "study.md")}
    write_study(study_dir, load_config(study_dir / "config.yaml"))
    assert before == {name: (study_dir / name).read_text() for name in before}


def test_diagnostics_table_only_when_a_chosen_run_has_diagnostics():
    """A study of rows without a T-Net or a structural gap (baseline, AMID) prints no empty
    table; with them, each row's means over the chosen runs of every seed."""
    plain = {0: {"baseline": [{"row": "baseline"}], "amid": [{"row": "amid"}]}}
    assert diagnostic_lines(plain) == []
    gap = {when: {"anchor_mad": value, "ot": 10 * value} for when, value in (("before", 0.2), ("after", 0.1))}
    picks = {0: {"pkdot": [{"row": "pkdot", "structure_test": gap, "tnet_test": {"r2": 0.4, "cosine": 0.8}}]},
             1: {"pkdot": [{"row": "pkdot", "structure_test": gap, "tnet_test": {"r2": 0.6, "cosine": 0.9}}]}}
    lines = diagnostic_lines(picks)
    assert "| pkdot | — | — | — | — | 0.5000 | 0.8500 |" in lines
    assert "| pkdot | 0.2000 | 0.1000 | 2.0000 | 1.0000 | — | — |" in lines


def test_a_study_table_marks_departures_and_tests_subjects_once():
    """Each row a chosen candidate departs from its paper with is marked and listed; the
    Wilcoxon test runs across subjects with each subject's scores averaged over the seeds."""
    picks = {0: {"baseline": [{"fold": 0, "row": "baseline"}], "pkdot": [{"fold": 0, "row": "pkdot[beta=2.0]"}]},
             1: {"baseline": [{"fold": 0, "row": "baseline"}], "pkdot": [{"fold": 0, "row": "pkdot"}]}}
    departures = {0: {"pkdot[beta=2.0]": {"pkdot.beta": {"used": 2.0, "paper": 1.0}}},
                  1: {"pkdot": {"student.hallucinate": {"used": False, "paper": True}}}}
    assert chosen_departures(departures, picks) == {"pkdot": {"pkdot.beta": {"used": 2.0, "paper": 1.0},
                                                              "student.hallucinate": {"used": False, "paper": True}}}
    # subject a tested by both seeds, b by one: each counts once, as its mean over the seeds that tested it
    means = subject_means({0: {"pkdot": {"a": 0.6, "b": 0.8}}, 1: {"pkdot": {"a": 0.8}}})
    assert means == {"pkdot": {"a": pytest.approx(0.7), "b": 0.8}}

    def entry(values):
        return {"mean": sum(values) / len(values), "std": 0.0, "per_run": values}

    subjects = {"baseline": {f"s{i}": 0.5 for i in range(6)}, "pkdot": {f"s{i}": 0.6 + 0.01 * i for i in range(6)}}
    summary = {"task": "classification", "metric": "accuracy", "seeds": [0, 1], "folds": 2, "holdout_ratio": 0.5,
               "methods": {"baseline": {"accuracy": entry([0.5, 0.5, 0.6, 0.5])},
                           "pkdot": {"accuracy": entry([0.6, 0.7, 0.6, 0.65])}},
               "departures": chosen_departures(departures, picks), "subjects": subjects}
    text = study_markdown(config_from_dict(STUDY), summary, picks, {0: [], 1: []})
    assert "| pkdot ‡ |" in text and "| baseline |" in text
    assert "pkdot.beta = 2.0 (paper: 1.0)" in text and "student.hallucinate = False (paper: True)" in text
    assert "corrected resampled t-test" in text and "across the 6 subjects" in text
    assert "| 0.0312 |" in text  # six positive per-subject differences: exact Wilcoxon p = 2 / 2**6


def test_seeds_that_each_drew_their_own_dataset_are_independent_runs():
    """A synthetic task draws a dataset per seed: its runs share no sample, so the t-test needs no
    overlap correction and the Wilcoxon test runs across the runs, not across subjects of one name."""
    def entry(values):
        return {"mean": sum(values) / len(values), "std": 0.0, "per_run": values}

    picks = {0: {"baseline": [{"fold": 0, "row": "baseline"}], "pkdot": [{"fold": 0, "row": "pkdot"}]}}
    summary = {"task": "classification", "metric": "accuracy", "seeds": [0, 1, 2], "folds": 1, "holdout_ratio": 0.0,
               "independent_datasets": True, "subjects": {},
               "methods": {"baseline": {"accuracy": entry([0.5, 0.6, 0.55])},
                           "pkdot": {"accuracy": entry([0.6, 0.65, 0.7])}}}
    text = study_markdown(config_from_dict(STUDY), summary, picks, {0: []})
    assert "Wilcoxon p (runs)" in text and "share no sample and are independent" in text
    # with no overlap term, the corrected t-test is the paired t-test: differences 0.1, 0.05, 0.15
    assert "| 0.0742 | pkdot ×1 |" in text  # t = 0.1 / (0.05 / √3) = 2√3 with df 2: p = 1 − t / √(2 + t²)
