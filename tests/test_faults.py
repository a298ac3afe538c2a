"""Every fault ends cleanly (issue 31, sections 4, 5 and item 7).

A NaN loss stops its row with a message naming the term; the Python API refuses arguments of
the wrong type before anything is written; a full disk, too many threads or a hand-edited
results file end with one line and a non-zero exit, keeping what was finished and leaving no
lock behind.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from test_early_checks import config, dataset, invoke
from typer.testing import CliRunner

import privkd
from privkd.cli import app
from privkd.data import write_streamed_dataset
from privkd.interrupt import RunInterrupted, stop_on_signals
from privkd.methods.base import PrivkdModule


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return dataset(tmp_path_factory.mktemp("data") / "data.h5")


def quick(data: Path, **changes) -> dict:
    """A one-fold baseline trained in this process (so that a monkeypatch reaches it)."""
    return config(data, **{"training.jobs": 1, "training.threads": 1, **changes})


# ----------------------------------------------------------------------------- NaN losses


def test_a_nan_loss_stops_the_row_naming_the_term(data, tmp_path, monkeypatch):
    real = PrivkdModule.task_loss
    monkeypatch.setattr(PrivkdModule, "task_loss", lambda self, outputs, targets: real(self, outputs, targets) * torch.nan)
    result = invoke(tmp_path, quick(data))
    assert result.exit_code == 3, (result.exit_code, result.output, result.exception)
    message = " ".join(result.output.split())
    assert "NonFiniteLoss" in message and "['task', 'loss']" in message and "epoch 0" in message, message
    assert "Traceback" not in result.output


def test_a_finite_loss_trains_as_before(data, tmp_path):
    result = invoke(tmp_path, quick(data))
    assert result.exit_code == 0, (result.output, result.exception)


# ------------------------------------------------------------------ Python API argument types


@pytest.mark.parametrize(("arguments", "named"), [
    ({"config": 123}, "config"),
    ({"out": 5}, "out"),
    ({"progress": 5}, "progress"),
    ({"overrides": "training.epochs=1"}, "overrides"),
    ({"overrides": ["training.epochs=1", 2]}, "overrides"),
    ({"loggers": "csv"}, "loggers"),
    ({"loggers": ["csv"]}, "loggers"),
    ({"callbacks": [object()]}, "callbacks"),
    ({"callbacks": object()}, "callbacks"),
    ({"resume": 7, "config": None}, "resume"),
], ids=lambda value: str(value)[:40])
def test_the_python_api_refuses_wrong_argument_types_before_any_directory(arguments, named, data, tmp_path,
                                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)  # out=5 must not make ./5, nor the default ./runs
    values = {"config": quick(data), "out": tmp_path / "runs", **arguments}
    config_arg = values.pop("config")
    with pytest.raises(TypeError, match=f"privkd.run: (each item of )?{named} must be") as refused:
        privkd.run(config_arg, **values)
    assert "Traceback" not in str(refused.value)
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_an_overrides_string_says_to_wrap_it_in_a_list(data, tmp_path):
    with pytest.raises(TypeError, match=r"overrides=\['training.epochs=1'\]"):
        privkd.run(quick(data), tmp_path / "runs", overrides="training.epochs=1")


# -------------------------------------------------------------------------------- threads


def test_a_hundred_thousand_threads_are_refused_before_the_run_directory(data, tmp_path):
    """OpenMP crashed (a segfault, and a lock left behind) creating them."""
    from test_early_checks import assert_refused_before_the_run_dir

    result = invoke(tmp_path, config(data, **{"training.threads": 100000}))
    assert_refused_before_the_run_dir(result, tmp_path, "training.threads")


# ------------------------------------------------------------------------------ full disk


def no_space(path: object) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", str(path))


def test_a_full_disk_during_a_run_ends_with_one_line_keeping_finished_rows(data, tmp_path, monkeypatch):
    from privkd.training import experiment
    from privkd.training.run_lock import LOCK_FILE

    real, calls = experiment.save_predictions, []

    def save_until_the_disk_is_full(path, *args):
        calls.append(path)
        if len(calls) > 1:  # the second row finds the disk full
            raise no_space(path)
        real(path, *args)

    monkeypatch.setattr(experiment, "save_predictions", save_until_the_disk_is_full)
    result = invoke(tmp_path, quick(data, methods=["baseline", "teacher"]))
    message = " ".join(result.output.split())
    assert result.exit_code == 2, (result.exit_code, message, result.exception)
    assert "Traceback" not in result.output and "no space left on the device" in message, message
    run_dir = next((tmp_path / "runs").iterdir())
    assert f"privkd run --resume {run_dir}" in message
    assert (run_dir / "fold_0" / "baseline" / "metrics.json").is_file()  # the finished row is kept
    assert not (run_dir / "fold_0" / "teacher" / "failed.json").exists()  # not recorded as the row's own failure
    assert not (run_dir / LOCK_FILE).exists()

    monkeypatch.setattr(experiment, "save_predictions", real)  # space freed: the resume finishes the run
    resumed = CliRunner().invoke(app, ["run", "--resume", str(run_dir)])
    assert resumed.exit_code == 0, (resumed.output, resumed.exception)
    assert set(json.loads((run_dir / "summary.json").read_text())["methods"]) == {"baseline", "teacher"}


def test_a_full_disk_during_an_import_ends_with_one_line(tmp_path, monkeypatch):
    from privkd.data.h5format import writing

    def full(tmp, content):
        raise no_space(tmp)

    monkeypatch.setattr(writing, "_write_file", full)
    frame = pd.DataFrame({"subject": ["a", "a", "b", "b"], "label": ["x", "y", "x", "y"], "f.1": [0.1, 0.2, 0.3, 0.4]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    result = CliRunner().invoke(app, ["data", "import", "table", str(tmp_path / "t.csv"), str(tmp_path / "t.h5")])
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output and "no space left on the device" in " ".join(result.output.split())
    assert sorted(path.name for path in tmp_path.iterdir()) == ["t.csv"]  # no half-written file


# ---------------------------------------------------------------------- hand-edited results


@pytest.fixture(scope="module")
def finished_run(data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("finished")
    result = invoke(root, quick(data))
    assert result.exit_code == 0, result.output
    return next((root / "runs").iterdir())


def edited_copy(run_dir: Path, tmp_path: Path, relative: str, edit) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    path = copy / relative
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    return copy


@pytest.mark.parametrize(("relative", "edit", "code"), [
    ("summary.json", lambda s: {**s, "methods": {"baseline": [1, 2]}}, 2),  # was an AttributeError traceback
    ("summary.json", lambda s: {**s, "methods": {"baseline": {m: {"mean": "high"} for m in s["methods"]["baseline"]}}},
     2),  # was a ValueError traceback
    ("fold_0/baseline/metrics.json", lambda r: [r], 2),  # was an AttributeError traceback
    ("summary.json", lambda s: {**s, "folds": "three", "metric": 5}, 0),  # reported as written
    ("fold_0/baseline/metrics.json", lambda r: {**r, "test": "oops", "validation": None}, 0),  # not read by the report
], ids=["methods-list", "mean-text", "metrics-list", "folds-text", "metrics-test-text"])
def test_report_on_a_hand_edited_results_file_gives_one_line(relative, edit, code, finished_run, tmp_path):
    copy = edited_copy(finished_run, tmp_path, relative, edit)
    result = CliRunner().invoke(app, ["report", str(copy)])
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    if code == 2:
        assert result.output.count("error:") == 1 and "Fix:" in result.output and "by hand" in result.output


def test_report_on_an_unedited_run_still_works(finished_run, tmp_path):
    copy = edited_copy(finished_run, tmp_path, "summary.json", lambda s: s)
    result = CliRunner().invoke(app, ["report", str(copy)])
    assert result.exit_code == 0, (result.output, result.exception)


# --------------------------------------------------------------------------- stop signals


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGXCPU],
                         ids=lambda s: signal.Signals(s).name)
def test_every_signal_a_terminal_or_scheduler_sends_stops_the_run_cleanly(signum):
    """By default each ended the process at once, mid-write, with no word on how to resume."""
    before = signal.getsignal(signum)
    with pytest.raises(RunInterrupted) as stop, stop_on_signals():
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler raises as soon as the signal is delivered
    assert stop.value.exit_code == 128 + signum
    assert signal.getsignal(signum) == before  # the previous handler is back


def test_a_closed_terminal_stops_a_run_with_its_resume_command(tmp_path):
    from test_run_safety import one_line, privkd, started_training

    from privkd.training.run_lock import LOCK_FILE

    data = dataset(tmp_path / "data.h5")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config(data, **{"training.epochs": 50, "training.patience": 50,
                                                                         "training.limit_train_batches": 2,
                                                                         "training.batch_size": 4})))
    process = privkd("run", tmp_path / "config.yaml", "--out", tmp_path / "runs")
    run_dir = started_training(process, tmp_path / "runs")
    process.send_signal(signal.SIGHUP)
    message = one_line(process.communicate(timeout=120)[0])
    assert process.returncode == 128 + signal.SIGHUP, message
    assert "stopped: SIGHUP" in message and f"--resume {run_dir}" in message and "Traceback" not in message
    assert not (run_dir / LOCK_FILE).exists()


def test_report_refuses_a_row_name_that_leaves_the_run_directory(finished_run, tmp_path):
    """A row named ``../../evilrow`` in summary.json, with a row folder at that path, made the
    report read that folder and write ``evilrow.png`` outside the run directory."""
    evil = "../../evilrow"
    copy = edited_copy(finished_run, tmp_path / "a" / "b", "summary.json",
                       lambda s: {**s, "methods": {evil: s["methods"]["baseline"]}})
    shutil.copytree(copy / "fold_0" / "baseline", (copy / "fold_0" / evil).resolve())
    before = {path for path in tmp_path.rglob("*") if copy not in path.parents}
    result = CliRunner().invoke(app, ["report", str(copy)])
    message = " ".join(result.output.split())
    assert result.exit_code == 2, (result.exit_code, message, result.exception)
    assert "not a plain name" in message and "Traceback" not in result.output
    assert {path for path in tmp_path.rglob("*") if copy not in path.parents} == before


def test_a_nearly_full_disk_is_found_before_hdf5_fails_on_it(tmp_path, monkeypatch):
    """HDF5 reports a full disk only when the file is closed, and its half-closed objects then
    crashed the interpreter (data import: a segfault, exit 139, on a real full tmpfs). Each
    block is checked against the free space first: one line, exit 2, no file."""
    from privkd.data.h5format import writing

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(writing.shutil, "disk_usage", lambda path: usage._replace(free=writing.SPACE_MARGIN // 2))
    frame = pd.DataFrame({"subject": ["a", "a", "b", "b"], "label": ["x", "y", "x", "y"], "f.1": [0.1, 0.2, 0.3, 0.4]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    result = CliRunner().invoke(app, ["data", "import", "table", str(tmp_path / "t.csv"), str(tmp_path / "t.h5")])
    message = " ".join(result.output.split())
    assert result.exit_code == 2, (result.output, result.exception)
    assert "no space left on the device" in message and "MiB free" in message and "Traceback" not in message
    assert sorted(path.name for path in tmp_path.iterdir()) == ["t.csv"]

    samples = ({"x": np.zeros(3, np.float32)} for _ in range(4))  # a streamed import (video, long recordings)
    with pytest.raises(OSError, match="MiB free") as full:
        write_streamed_dataset(tmp_path / "s.h5", sample_shapes={"x": (3,)}, samples=samples, labels=[0, 1, 0, 1],
                               subjects=["a", "a", "b", "b"], task="classification", class_names=["p", "q"],
                               modality_kinds={"x": "features"})
    assert full.value.errno == errno.ENOSPC
    assert sorted(path.name for path in tmp_path.iterdir()) == ["t.csv"]


def test_a_full_disk_met_in_a_librarys_temporary_file_names_the_run(tmp_path):
    """torch and numpy write through temporary files elsewhere: the message names the run, whose
    resume command it gives, not a /tmp/tmpXXXX path the user never chose."""
    from privkd.errors import disk_full_error

    run_dir = tmp_path / "runs" / "run-1"
    inside = str(disk_full_error(no_space(run_dir / "fold_0" / "baseline" / "model.pt"), run_dir))
    elsewhere = str(disk_full_error(no_space("/tmp/tmpnpyagd83"), run_dir))
    assert f"writing {run_dir}/fold_0/baseline/model.pt" in inside
    assert f"writing the results of {run_dir}" in elsewhere and "tmpnpyagd83" not in elsewhere
    assert f"privkd run --resume {run_dir}" in elsewhere
