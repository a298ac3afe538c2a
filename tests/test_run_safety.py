"""Runs stopped by a scheduler or Ctrl-C, run directories held by one process at a time,
resume checkpoints read with ``weights_only=True`` whatever the environment says, and what
dead processes leave behind. The signal, lock and checkpoint behaviour is checked with real
``privkd`` processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_bad_input import config_file, small_dataset
from test_bad_input_more import feature_student
from typer.testing import CliRunner

from privkd.cli import app
from privkd.training.run_lock import LOCK_FILE

TRAINING = {"epochs": 4, "patience": 4, "batch_size": 4, "limit_train_batches": 2}


def privkd(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "privkd", *map(str, args)], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def started_training(process: subprocess.Popen, out: Path) -> Path:
    """The run directory, once ``process`` has a finished epoch behind it (and more to go)."""
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and process.poll() is None:
        checkpoints = list(out.glob("*/fold_0/baseline/checkpoints/last.ckpt"))
        if checkpoints:
            return checkpoints[0].parents[3]
        time.sleep(0.01)
    raise AssertionError(f"no epoch finished (exit {process.poll()})")


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def pre_empted(tmp_path_factory):
    """A ``privkd run`` that a second process tries to resume while it trains, then gets SIGTERM."""
    tmp = tmp_path_factory.mktemp("pre_empted")
    config = config_file(tmp, small_dataset(tmp / "data.h5"), methods=["baseline"], training=TRAINING)
    first = privkd("run", config, "--out", tmp / "runs", env={"PRIVKD_CACHE": str(tmp / "cache")})
    run_dir = started_training(first, tmp / "runs")
    first.send_signal(signal.SIGSTOP)  # keeps the lock while the second process tries
    try:
        second = subprocess.run([sys.executable, "-m", "privkd", "run", "--resume", str(run_dir)], check=False,
                                capture_output=True, text=True, timeout=120)
    finally:
        first.send_signal(signal.SIGTERM)
        first.send_signal(signal.SIGCONT)
    output, _ = first.communicate(timeout=120)
    return {"tmp": tmp, "run_dir": run_dir, "first": first, "first_output": output, "second": second}


def test_a_second_process_is_refused_with_the_holder_named(pre_empted):
    second = pre_empted["second"]
    message = one_line(second.stdout + second.stderr)
    assert second.returncode == 2, message
    assert f"privkd process {pre_empted['first'].pid} on {socket.gethostname()}" in message and "Fix:" in message
    assert "Traceback" not in message


def test_sigterm_exits_143_and_says_how_to_resume(pre_empted):
    run_dir, message = pre_empted["run_dir"], one_line(pre_empted["first_output"])
    assert pre_empted["first"].returncode == 143, message
    assert "stopped: SIGTERM" in message and f"privkd run --resume {run_dir}" in message
    assert "Traceback" not in message
    assert not (run_dir / "summary.json").exists() and not (run_dir / LOCK_FILE).exists()


class _Payload:
    """Unpickling this creates ``path``: what a crafted checkpoint could run instead."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_crafted_resume_checkpoint_is_discarded_unrun(pre_empted, monkeypatch):
    tmp, run_dir = pre_empted["tmp"], pre_empted["run_dir"]
    row = run_dir / "fold_0" / "baseline"
    marker = tmp / "code_ran"
    torch.save({"state_dict": _Payload(marker)}, row / "checkpoints" / "last.ckpt")
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.warns(UserWarning):  # the environment variable alone would run it
        torch.load(row / "checkpoints" / "last.ckpt")
    assert marker.exists()
    marker.unlink()

    resumed = privkd("run", "--resume", run_dir, env={"PRIVKD_CACHE": str(tmp / "cache"),
                                                      "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"})
    message = one_line(resumed.communicate(timeout=240)[0])
    assert resumed.returncode == 0, message
    assert not marker.exists()
    assert "last.ckpt: unreadable resume checkpoint" in message and "trains again from its first epoch" in message
    assert (run_dir / "summary.json").is_file()
    assert sorted(p.name for p in (row / "checkpoints").iterdir()) == ["best.ckpt"]  # no stale best-v1.ckpt
    assert not (run_dir / LOCK_FILE).exists()


def test_ctrl_c_exits_130_and_says_how_to_resume(tmp_path):
    config = config_file(tmp_path, small_dataset(tmp_path / "data.h5"), methods=["baseline"], training=TRAINING)
    process = privkd("run", config, "--out", tmp_path / "runs", env={"PRIVKD_CACHE": str(tmp_path / "cache")})
    run_dir = started_training(process, tmp_path / "runs")
    process.send_signal(signal.SIGINT)
    message = one_line(process.communicate(timeout=120)[0])
    assert process.returncode == 130, message
    assert "stopped: SIGINT" in message and f"privkd run --resume {run_dir}" in message and "Traceback" not in message


def test_a_sigterm_to_the_process_group_stops_the_run_not_its_loader_workers_row(tmp_path):
    """A scheduler signals every process of the job: the loader workers must leave the stop to
    the main process instead of dying and failing the row while the run goes on."""
    config = config_file(tmp_path, small_dataset(tmp_path / "data.h5"), methods=["baseline", "teacher"],
                         training={**TRAINING, "epochs": 50, "patience": 50, "num_workers": 2})
    process = subprocess.Popen([sys.executable, "-m", "privkd", "run", str(config), "--out", str(tmp_path / "runs")],
                               env={**os.environ, "PRIVKD_CACHE": str(tmp_path / "cache")}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    run_dir = started_training(process, tmp_path / "runs")
    os.killpg(process.pid, signal.SIGTERM)
    message = one_line(process.communicate(timeout=120)[0])
    assert process.returncode == 143, message
    assert "stopped: SIGTERM" in message and "FAILED" not in message and "Traceback" not in message
    assert not list(run_dir.glob("fold_*/*/failed.json")) and not (run_dir / "fold_0" / "teacher").exists()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the workers are gone too
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("loader workers outlived the stopped run")


def test_a_dead_importers_temporary_file_is_removed(tmp_path):
    pd.DataFrame({"subject": ["s0", "s1"], "label": ["a", "b"], "eda.mean": [0.1, 0.2]}).to_csv(tmp_path / "t.csv", index=False)
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    orphan = tmp_path / f".t.h5.{socket.gethostname()}-{dead.pid}.k3j4h5g6.tmp"  # as a SIGKILLed import leaves it
    orphan.write_bytes(b"half a dataset")
    result = CliRunner().invoke(app, ["data", "import", "table", str(tmp_path / "t.csv"), str(tmp_path / "t.h5"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert not orphan.exists() and (tmp_path / "t.h5").is_file()
    assert not list(tmp_path.glob("*.tmp"))


def test_markup_in_names_is_printed_as_written(tmp_path):
    table = pd.DataFrame({"subject": ["[/red]", "s1"] * 2, "label": ["[/bold]", "[red]"] * 2, "[x].mean": [0.1, 0.2, 0.3, 0.4]})
    source = tmp_path / "x[" / "bold]t.csv"
    source.parent.mkdir()
    table.to_csv(source, index=False)
    imported = CliRunner().invoke(app, ["data", "import", "table", str(source), str(tmp_path / "t.h5")])
    described = CliRunner().invoke(app, ["data", "info", str(tmp_path / "t.h5")])
    for result in (imported, described):
        assert result.exit_code == 0, (result.output, result.exception)
        for text in ("[/red]", "[/bold]", "[red]", "[x]"):
            assert text in result.output, (text, result.output)
    assert "x[/bold]t.csv" in one_line(imported.output)


def test_predict_warns_of_inputs_far_outside_the_training_range(tmp_path):
    student = feature_student(tmp_path)
    rows = np.random.default_rng(1).normal(size=(3, 4))
    rows[1, 2] = 1e12  # a unit mistake: within float32, far outside anything trained on
    pd.DataFrame({f"eda.f{j}": rows[:, j] for j in range(4)}).to_csv(tmp_path / "new.csv", index=False)
    result = CliRunner().invoke(app, ["predict", str(student), str(tmp_path / "new.csv"), "--out", str(tmp_path / "p.csv")])
    message = one_line(result.output)
    assert result.exit_code == 0, message
    assert "warning:" in message and "new.csv" in message and "sample 1" in message and "standard deviations" in message
    assert len(pd.read_csv(tmp_path / "p.csv")) == 3


def test_finished_rows_records_are_json_objects(tmp_path):
    from privkd.errors import PrivkdError
    from privkd.training.run_dir import finished_record

    (tmp_path / "metrics.json").write_text(json.dumps([1, 2]))
    with pytest.raises(PrivkdError, match="delete"):
        finished_record(tmp_path)
