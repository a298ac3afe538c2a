"""Interrupted runs resume exactly; failed folds are recorded without losing the others; runs are deterministic."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import privkd.training.row as training_row
from privkd.cli import app

CONFIG = {
    "name": "resumable", "methods": ["baseline", "teacher", "mt_teacher", "pkdot", "mtpkdot"], "evaluation": {"max_folds": 2},
    "training": {"epochs": 4, "patience": 10, "limit_train_batches": 6, "progress_bar": False},
    "teacher": {"tnet_refit_epochs": 2},
}


@pytest.fixture
def config(tmp_path, monkeypatch, watch_path):
    monkeypatch.setenv("PRIVKD_CACHE", str(watch_path.parent))
    path = tmp_path / "resumable.yaml"
    path.write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    return path


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def only_run(root):
    (run_dir,) = root.iterdir()
    return run_dir


def per_fold(run_dir):
    return {row: values["accuracy"]["per_fold"] for row, values in json.loads((run_dir / "summary.json").read_text())["methods"].items()}


@pytest.mark.slow
def test_sigkill_mid_fold_then_resume_gives_the_uninterrupted_metrics(config, tmp_path):
    assert invoke("run", config, "--out", tmp_path / "whole").exit_code == 0
    whole = only_run(tmp_path / "whole")

    env = {**os.environ, "PRIVKD_CACHE": os.environ["PRIVKD_CACHE"]}
    process = subprocess.Popen([sys.executable, "-m", "privkd", "run", str(config), "--out", str(tmp_path / "cut")],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900  # generous: a loaded CI host; pytest-timeout bounds the test
    while process.poll() is None and time.monotonic() < deadline:  # kill once fold 1's PKDOT student has epochs behind it
        runs = list((tmp_path / "cut").glob("*/fold_1/pkdot"))
        if runs and (runs[0] / "checkpoints" / "last.ckpt").is_file() and not (runs[0] / "metrics.json").exists():
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert process.wait() == -signal.SIGKILL, "the run finished before it could be interrupted"
    cut = only_run(tmp_path / "cut")
    assert not (cut / "summary.json").exists()
    finished_before = {p: p.stat().st_mtime_ns for p in cut.glob("fold_0/*/metrics.json")}
    assert len(finished_before) == 5  # every row of fold 0

    result = invoke("run", "--resume", cut)
    assert result.exit_code == 0, result.output
    assert "fold 1/2" not in result.output and "fold 2/2: teacher" not in result.output  # reused, not retrained
    assert "fold 2/2: pkdot" in result.output
    assert {p: p.stat().st_mtime_ns for p in cut.glob("fold_0/*/metrics.json")} == finished_before  # reused, not retrained
    assert per_fold(cut) == per_fold(whole)
    for name in ("pkdot", "mtpkdot"):
        resumed, uninterrupted = (json.loads((d / "fold_1" / name / "metrics.json").read_text()) for d in (cut, whole))
        assert resumed == uninterrupted
        a, b = (np.load(d / "fold_1" / name / "similarity.npz") for d in (cut, whole))
        np.testing.assert_array_equal(a["student"], b["student"])
    assert not list(cut.glob("fold_*/*/checkpoints/last.ckpt"))
    logs = [pd.read_csv(d / "fold_1" / "pkdot" / "logs" / "metrics.csv") for d in (cut, whole)]
    assert sorted(logs[0]["epoch"].unique()) == sorted(logs[1]["epoch"].unique())  # the curves survive the interruption
    pd.testing.assert_series_equal(logs[0]["val/selection"].dropna().reset_index(drop=True),
                                   logs[1]["val/selection"].dropna().reset_index(drop=True))


def test_resume_refuses_other_settings(config, tmp_path):
    result = invoke("run", config, "--resume", tmp_path)
    assert result.exit_code == 2 and "drop CONFIG" in result.output and "Traceback" not in result.output


def test_a_failed_fold_is_recorded_and_the_others_are_kept(config, tmp_path, monkeypatch):
    real_fit = training_row.fit

    def failing_fit(module, train_set, val_set, cfg, out_dir, seed, callbacks=(), loggers=()):
        if out_dir.parent.name == "fold_1" and out_dir.name == "teacher":
            raise RuntimeError("simulated out-of-memory")
        return real_fit(module, train_set, val_set, cfg, out_dir, seed, callbacks=callbacks, loggers=loggers)

    monkeypatch.setattr(training_row, "fit", failing_fit)
    result = invoke("run", config, "--out", tmp_path / "runs", "--set", "training.epochs=1", "--only", "baseline",
                    "--only", "pkdot")
    assert result.exit_code == 3, result.output
    run_dir = only_run(tmp_path / "runs")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [(f["fold"], f["row"]) for f in summary["failed"]] == [(1, "teacher"), (1, "pkdot")]
    assert "simulated out-of-memory" in summary["failed"][0]["error"]
    assert "teacher failed" in summary["failed"][1]["error"]
    assert len(summary["methods"]["baseline"]["accuracy"]["per_fold"]) == 2
    assert len(summary["methods"]["pkdot"]["accuracy"]["per_fold"]) == 1
    assert (run_dir / "fold_1" / "teacher" / "failed.json").is_file()
    assert "failed" in (run_dir / "summary.md").read_text()

    monkeypatch.setattr(training_row, "fit", real_fit)
    resumed = invoke("run", "--resume", run_dir)
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "failed" not in summary and len(summary["methods"]["pkdot"]["accuracy"]["per_fold"]) == 2
    assert not (run_dir / "fold_1" / "teacher" / "failed.json").exists()


@pytest.mark.slow
def test_two_runs_with_one_seed_give_identical_metrics(config, tmp_path):
    for out in ("a", "b"):
        result = invoke("run", config, "--out", tmp_path / out, "--set", "training.epochs=2", "--only", "baseline",
                        "--only", "pkdot")
        assert result.exit_code == 0, result.output
    a, b = (json.loads((only_run(tmp_path / o) / "summary.json").read_text())["methods"] for o in ("a", "b"))
    assert a == b
