"""The resume matrix: SIGINT, SIGTERM and SIGKILL at every stage of the work (import, teacher,
T-Net refit, student, the run's summary, the final all-subject training, the report), each in a real ``privkd`` process; doing
the work again (``privkd run --resume``, or the same import or report command) must give the
uninterrupted result and leave no temporary file, lock or resume checkpoint behind.

The signal is sent by the process to itself at a fixed point of the stage (a launcher patches
the stage's function), so every case interrupts the stage it names, mid-work, on any machine.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from test_bad_input import config_file, small_dataset
from typer.testing import CliRunner

from privkd.cli import app
from privkd.training.run_lock import LOCK_FILE

SIGNALS = ("SIGINT", "SIGTERM", "SIGKILL")
# `make test` interrupts every stage with SIGTERM (what a scheduler sends) and the student with
# SIGKILL (no handler runs); the other pairs are the same paths and run under `make test-slow`.
FAST_PAIRS = {("SIGTERM", stage) for stage in ("teacher", "tnet_refit", "student", "summary", "final")} | {
    ("SIGKILL", "student"), ("SIGTERM", "import"), ("SIGKILL", "import"), ("SIGTERM", "report")}


def pairs(stages: tuple[str, ...]) -> list:
    """(signal, stage) parameters, the pairs outside FAST_PAIRS marked slow."""
    return [pytest.param(signal_name, stage, id=f"{stage}-{signal_name}",
                         marks=() if (signal_name, stage) in FAST_PAIRS else pytest.mark.slow)
            for stage in stages for signal_name in SIGNALS]
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143, "SIGKILL": -signal.SIGKILL}
RUN_STAGES = ("teacher", "tnet_refit", "student", "summary", "final")

LAUNCHER = '''
"""privkd, with a stop signal sent to itself mid-way through one stage: launcher.py STAGE SIGNAL ARGS..."""
import os
import signal
import sys

stage, signal_name = sys.argv[1], sys.argv[2]


def stop():
    os.kill(os.getpid(), getattr(signal, signal_name))


def stopping_at(call, function):
    """``function``, sending the signal when it is called for the ``call``-th time (before it runs)."""
    calls = 0

    def wrapped(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == call:
            stop()
        return function(*args, **kwargs)
    return wrapped


if stage == "import":  # inside the temporary file, after the arrays, before the labels
    import privkd.data.h5format.writing as writing
    writing._write_columns = stopping_at(1, writing._write_columns)
elif stage in ("teacher", "student", "final"):  # at the end of the row's second epoch, the first one checkpointed
    import lightning as L
    import privkd.training.row as training_row

    class StopInSecondEpoch(L.Callback):
        def on_train_epoch_end(self, trainer, module):
            if trainer.current_epoch == 1:
                stop()

    real_fit = training_row.fit
    where = {"teacher": ("fold_0", "teacher"), "student": ("fold_0", "pkdot"), "final": ("final", "pkdot")}[stage]

    def fit(module, train_set, val_set, cfg, out_dir, seed, callbacks=(), loggers=()):
        if (out_dir.parent.name, out_dir.name) == where:
            callbacks = [*callbacks, StopInSecondEpoch()]
        return real_fit(module, train_set, val_set, cfg, out_dir, seed, callbacks=callbacks, loggers=loggers)
    training_row.fit = fit
elif stage == "tnet_refit":  # the third T-Net objective of the refit: its first epoch's batches
    import privkd.methods.teacher as teacher
    real_refit = teacher.refit_tnet

    def refit_tnet(*args, **kwargs):
        teacher.tnet_objective = stopping_at(3, teacher.tnet_objective)
        return real_refit(*args, **kwargs)
    teacher.refit_tnet = refit_tnet
elif stage == "summary":  # every row finished; summary.json written, summary.md not yet
    import privkd.training.experiment as experiment
    experiment.summary_markdown = stopping_at(1, experiment.summary_markdown)
elif stage == "report":  # inside the second figure's temporary file
    import privkd.atomic
    import privkd.report as report

    def write_figure(path, data):
        return privkd.atomic.write_atomic(path, lambda tmp: (tmp.write_bytes(data[:100]), stop()))
    report.write_bytes_atomic = stopping_at(2, write_figure)

from privkd.cli import app
app(prog_name="privkd", args=sys.argv[3:])
'''


def invoke(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args])


def interrupted(tmp: Path, stage: str, signal_name: str, *args: str | Path) -> subprocess.CompletedProcess:
    launcher = tmp / "launcher.py"
    launcher.write_text(LAUNCHER)
    process = subprocess.run([sys.executable, str(launcher), stage, signal_name, *map(str, args)],
                             capture_output=True, text=True, timeout=300, check=False)
    assert process.returncode == EXIT_CODES[signal_name], process.stdout + process.stderr
    output = " ".join((process.stdout + process.stderr).split())
    assert "Traceback" not in output
    if signal_name != "SIGKILL":  # a signal a process can catch gets one line saying what happened
        assert f"stopped: {signal_name}" in output, output
    return process


def leftovers(directory: Path) -> list[Path]:
    """What an interrupted process may leave and a finished one must not."""
    return [p for p in directory.rglob("*") if p.name.endswith(".tmp") or p.name in (LOCK_FILE, "last.ckpt")]


def row_records(run_dir: Path) -> dict[str, dict]:
    """Every (fold, row)'s and final row's record."""
    return {str(p.relative_to(run_dir)): json.loads(p.read_text()) for p in sorted(run_dir.glob("*/*/metrics.json"))}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The dataset, config and an uninterrupted run with its report: what every case must reproduce."""
    tmp = tmp_path_factory.mktemp("matrix")
    config = config_file(tmp, small_dataset(tmp / "data.h5"), methods=["baseline", "teacher", "pkdot"],
                         training={"epochs": 3, "patience": 3, "batch_size": 8}, teacher={"tnet_refit_epochs": 3})
    for out in ("whole", "whole_final"):  # the final stage's cases are compared with a run that has one
        result = invoke("run", config, "--out", tmp / out, *(["--final"] if out == "whole_final" else []))
        assert result.exit_code == 0, result.output
    (whole,), (whole_final,) = (tmp / "whole").iterdir(), (tmp / "whole_final").iterdir()
    assert invoke("report", whole).exit_code == 0
    table = pd.DataFrame({"subject": [f"s{i // 3}" for i in range(12)], "label": ["a", "b", "c"] * 4,
                          "eda.mean": np.linspace(0.0, 1.0, 12), "ecg.hr": np.linspace(60.0, 90.0, 12)})
    table.to_csv(tmp / "table.csv", index=False)
    assert invoke("data", "import", "table", tmp / "table.csv", tmp / "whole.h5", "--no-progress").exit_code == 0
    return {"tmp": tmp, "config": config, "whole": whole, "whole_final": whole_final}


@pytest.mark.parametrize(("signal_name", "stage"), pairs(RUN_STAGES))
def test_an_interrupted_run_resumes_to_the_uninterrupted_results(setup, stage, signal_name, tmp_path):
    whole = setup["whole_final" if stage == "final" else "whole"]
    interrupted(tmp_path, stage, signal_name, "run", setup["config"], "--out", tmp_path / "runs",
                *(["--final"] if stage == "final" else []))
    (run_dir,) = (tmp_path / "runs").iterdir()
    if stage not in ("summary", "final"):
        assert not (run_dir / "summary.json").exists()

    resumed = invoke("run", "--resume", run_dir)
    assert resumed.exit_code == 0, resumed.output
    assert row_records(run_dir) == row_records(whole)
    for name in ("summary.json", "summary.md"):
        assert (run_dir / name).read_text() == (whole / name).read_text()
    if stage == "final":
        assert (run_dir / "final" / "final.json").read_text() == (whole / "final" / "final.json").read_text()
        for a, b in zip(*(sorted(d.glob("final/*/student/weights.pt")) for d in (run_dir, whole)), strict=True):
            for key, value in torch.load(b, weights_only=True).items():
                torch.testing.assert_close(torch.load(a, weights_only=True)[key], value, rtol=0, atol=0)
    assert leftovers(run_dir) == []


@pytest.mark.parametrize(("signal_name", "stage"), pairs(("import",)))
def test_an_interrupted_import_imports_the_same_file_when_run_again(setup, signal_name, stage, tmp_path):
    target = tmp_path / "table.h5"
    interrupted(tmp_path, stage, signal_name, "data", "import", "table", setup["tmp"] / "table.csv", target, "--no-progress")
    assert not target.exists()

    assert invoke("data", "import", "table", setup["tmp"] / "table.csv", target, "--no-progress").exit_code == 0
    with h5py.File(target) as again, h5py.File(setup["tmp"] / "whole.h5") as whole:
        assert dict(again.attrs) == dict(whole.attrs)
        names: list[str] = []
        whole.visit(names.append)
        assert names and sorted(again) == sorted(whole)
        for name in names:
            if isinstance(whole[name], h5py.Dataset):
                np.testing.assert_array_equal(again[name][()], whole[name][()])
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(("signal_name", "stage"), pairs(("report",)))
def test_an_interrupted_report_is_written_whole_when_run_again(setup, signal_name, stage, tmp_path):
    run_dir = tmp_path / "run"
    subprocess.run(["cp", "-r", str(setup["whole"]), str(run_dir)], check=True)
    for written in [run_dir / "report.md", run_dir / "report.html", *(run_dir / "report").iterdir()]:
        written.unlink()
    interrupted(tmp_path, stage, signal_name, "report", run_dir)
    assert not (run_dir / "report.md").exists()

    assert invoke("report", run_dir).exit_code == 0
    figures = sorted(p.name for p in (setup["whole"] / "report").iterdir())
    assert sorted(p.name for p in (run_dir / "report").iterdir()) == figures
    for figure in figures:
        assert (run_dir / "report" / figure).read_bytes() == (setup["whole"] / "report" / figure).read_bytes()
    assert (run_dir / "report.md").read_text().replace(str(run_dir), "RUN") == \
        (setup["whole"] / "report.md").read_text().replace(str(setup["whole"]), "RUN")
    assert leftovers(run_dir) == []
