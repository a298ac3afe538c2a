"""Rows trained side by side in worker processes (``training.jobs``): the same results as one
after the other at the same threads, a student only after its teacher, failures kept to their
row, stop signals ending the whole run, and no worker outliving its main process."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_bad_input import config_file, small_dataset
from typer.testing import CliRunner

from privkd.cli import app
from privkd.config.loading import load_config, packaged_config_path
from privkd.config.schema import VariantConfig
from privkd.config.validation import validate
from privkd.errors import ConfigError, DatasetError
from privkd.training.reuse import fingerprint
from privkd.training.workers import RowOutcome, RowTask, cpu_cores, resolve_jobs, train_pairs

RUN = {"evaluation": {"n_folds": 3, "max_folds": None},
       "training": {"epochs": 3, "batch_size": 8, "patience": 3, "threads": 1, "progress_bar": False},
       "teacher": {"tnet_refit_epochs": 3}}


def results(run_dir: Path) -> dict[str, object]:
    """Everything a run found: every (fold, row)'s record, weights and test predictions, and the summary."""
    found: dict[str, object] = {"summary": json.loads((run_dir / "summary.json").read_text())}
    for path in sorted(run_dir.glob("fold_*/*/*")):
        if path.name == "metrics.json":
            found[str(path.relative_to(run_dir))] = json.loads(path.read_text())
        elif path.name in ("model.pt", "test_predictions.npz"):
            found[str(path.relative_to(run_dir))] = path.read_bytes()
    return found


@pytest.fixture(scope="module")
def one_after_another(tmp_path_factory):
    """The dataset, config and the run of ``jobs: 1`` (at one thread) every other run must equal."""
    tmp = tmp_path_factory.mktemp("workers")
    config = config_file(tmp, small_dataset(tmp / "data.h5"), **RUN)
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp / "serial")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp / "serial").iterdir()
    return config, run_dir


def test_two_workers_train_what_one_process_trains(one_after_another, tmp_path):
    config, serial = one_after_another
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path), "--set", "training.jobs=2"])
    assert result.exit_code == 0, result.output
    (parallel,) = tmp_path.iterdir()
    assert len(results(serial)) == 1 + 9 * 3
    assert results(parallel) == results(serial)
    resolved = json.loads((parallel / "resolved.json").read_text())
    assert "training.jobs" not in resolved and "training.threads" not in resolved  # both set
    assert json.loads((parallel / "environment.json").read_text())["torch_threads"] == 1
    assert sorted(p.name for p in (parallel / "workers").iterdir()) == ["worker-1.log", "worker-2.log"]
    assert "finished" in result.output  # each pair says when it is done, as pairs end out of order


class ScriptedTrainer:
    """Stands in for the run's trainer: each row's name says what its training does."""

    def train(self, task: RowTask) -> RowOutcome:
        start = time.monotonic()
        if task.row == "crash":
            os._exit(3)
        if task.row == "bad_data":
            raise DatasetError("data.h5", "/labels", "unreadable", "import it again")
        time.sleep(2.0 if task.row == "late_teacher" else 0.3)
        if task.row == "late_teacher" or (task.row == "teacher" and task.fold == 0):
            return RowOutcome(failure={"fold": task.fold, "row": task.row, "error": "RuntimeError: diverged"})
        return RowOutcome(record={"pid": os.getpid(), "start": start, "end": time.monotonic()})

    def fail(self, task: RowTask, reason: str) -> RowOutcome:
        return RowOutcome(failure={"fold": task.fold, "row": task.row, "error": reason})


def task(fold: int, row: str, teacher: str | None = None) -> RowTask:
    return RowTask(fold, row, teacher, row == "teacher", f"fold {fold + 1}: {row}")


def test_a_student_waits_for_its_teacher_and_fails_with_it(tmp_path):
    tasks = [task(fold, row, "teacher" if row == "student" else None) for fold in (0, 1)
             for row in ("baseline", "teacher", "student")]
    tasks.append(task(2, "student", "teacher"))  # its teacher finished in an earlier attempt
    lines: list[str] = []
    outcomes = train_pairs(tasks, ScriptedTrainer(), jobs=2, threads=1, log_dir=tmp_path, progress=lines.append)
    assert set(outcomes) == {(t.fold, t.row) for t in tasks}
    assert outcomes[0, "student"].failure == {"fold": 0, "row": "student",
                                              "error": "the fold's teacher failed (RuntimeError: diverged)"}
    teacher, student = outcomes[1, "teacher"].record, outcomes[1, "student"].record
    assert student["start"] >= teacher["end"]
    assert outcomes[2, "student"].record is not None
    assert len({outcome.record["pid"] for outcome in outcomes.values() if outcome.record}) == 2
    assert "fold 1: student FAILED: the fold's teacher failed (RuntimeError: diverged)" in lines
    assert not multiprocessing.active_children()


def test_a_run_whose_last_teacher_fails_ends_with_its_student(tmp_path):
    """Every other row is done when the teacher fails: its student, the last task, fails without
    a worker, and the run ends instead of waiting on no worker at all."""
    tasks = [RowTask(0, "late_teacher", None, True, "fold 1: late_teacher"), task(0, "baseline"),
             task(0, "student", "late_teacher")]
    ended: dict[tuple[int, str], RowOutcome] = {}
    run = threading.Thread(target=lambda: ended.update(train_pairs(
        tasks, ScriptedTrainer(), jobs=2, threads=1, log_dir=tmp_path, progress=lambda _: None)), daemon=True)
    run.start()
    run.join(timeout=120)
    assert not run.is_alive(), "train_pairs still waits after every task has its outcome"
    assert ended[0, "student"].failure["error"] == "the fold's late_teacher failed (RuntimeError: diverged)"
    assert ended[0, "baseline"].record is not None
    assert not multiprocessing.active_children()


def test_a_dead_worker_fails_its_row_and_is_replaced(tmp_path):
    tasks = [task(0, "crash"), task(0, "baseline"), task(1, "baseline"), task(2, "baseline")]
    outcomes = train_pairs(tasks, ScriptedTrainer(), jobs=2, threads=1, log_dir=tmp_path, progress=lambda _: None)
    assert outcomes[0, "crash"].failure["error"] == "its worker process died (exit code 3)"
    assert all(outcomes[fold, "baseline"].record for fold in range(3))
    assert not multiprocessing.active_children()


def test_a_dataset_error_in_a_worker_ends_the_run(tmp_path):
    with pytest.raises(DatasetError, match="labels"):
        train_pairs([task(0, "baseline"), task(0, "bad_data")], ScriptedTrainer(), jobs=2, threads=1,
                    log_dir=tmp_path, progress=lambda _: None)
    assert not multiprocessing.active_children()


def children(pid: int) -> set[int]:
    return {int(child) for path in Path(f"/proc/{pid}/task").glob("*/children") for child in path.read_text().split()}


def alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def all_end(pids: set[int], seconds: float = 10.0) -> bool:
    """Whether every process of ``pids`` has ended within ``seconds`` (multiprocessing's resource
    tracker, a child too, leaves a moment after the main process)."""
    deadline = time.monotonic() + seconds
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(alive(pid) for pid in pids)


def start_run(config: Path, out: Path) -> subprocess.Popen:
    """``privkd run CONFIG --set training.jobs=2`` in its own process group, once both workers train."""
    process = subprocess.Popen([sys.executable, "-m", "privkd", "run", str(config), "--out", str(out),
                                "--set", "training.jobs=2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    deadline = time.monotonic() + 900
    while not list(out.glob("*/fold_*/*/metrics.json")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0]
        time.sleep(0.05)
    return process


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").exists(), reason="reads the process tree from /proc")
def test_sigterm_to_the_group_stops_every_worker_and_the_run_resumes_to_the_same_results(one_after_another, tmp_path):
    config, serial = one_after_another
    process = start_run(config, tmp_path)
    workers = children(process.pid)
    os.killpg(process.pid, signal.SIGTERM)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 143, output
    assert "stopped: SIGTERM" in output and "Traceback" not in output
    assert all_end(workers)
    (run_dir,) = tmp_path.iterdir()
    result = CliRunner().invoke(app, ["run", "--resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert results(run_dir) == results(serial)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").exists(), reason="reads the process tree from /proc")
def test_workers_end_when_their_main_process_is_killed(one_after_another, tmp_path):
    process = start_run(one_after_another[0], tmp_path)
    workers = children(process.pid)
    assert len(workers) >= 2
    process.kill()
    process.communicate(timeout=60)
    assert all_end(workers)


# ------------------------------------------------------------------ resolving jobs and threads


def demo(**training) -> object:
    cfg = load_config(packaged_config_path("demo"))
    return dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, **training))


def test_auto_jobs_take_one_core_each_up_to_the_pairs():
    cfg, resolved = resolve_jobs(demo(jobs="auto", threads="auto"), n_pairs=15, own_loggers=False)
    jobs = min(cpu_cores(), 15)
    assert (cfg.training.jobs, cfg.training.threads) == (jobs, max(1, cpu_cores() // jobs))
    assert [item.key for item in resolved] == ["training.jobs", "training.threads"]
    cfg, _ = resolve_jobs(demo(jobs="auto", threads="auto"), n_pairs=1, own_loggers=False)
    assert cfg.training.jobs == 1


@pytest.mark.parametrize(("training", "own_loggers", "why"), [
    ({"accelerator": "cuda"}, False, "an accelerator"),
    ({"devices": 2}, False, "data parallelism"),
    ({}, True, "the caller's own loggers"),
])
def test_auto_jobs_stay_in_this_process_where_workers_cannot_help(training, own_loggers, why):
    cfg, resolved = resolve_jobs(demo(jobs="auto", **training), n_pairs=15, own_loggers=own_loggers)
    assert cfg.training.jobs == 1
    assert why in resolved[0].why


def test_refused_combinations_name_the_key():
    with pytest.raises(ConfigError, match="training.jobs.*logger"):
        resolve_jobs(demo(jobs=2), n_pairs=15, own_loggers=True)
    with pytest.raises(ConfigError, match="training.jobs.*data parallelism"):
        validate(demo(jobs=2, devices=2))
    with pytest.raises(ConfigError, match=r"training.threads.*in \[1, 1024\]"):
        validate(demo(threads=0))
    fast = VariantConfig(method="pkdot", set={"training.jobs": 2})
    with pytest.raises(ConfigError, match="variants.fast.set.training.jobs"):
        validate(dataclasses.replace(demo(), variants={"fast": fast}))


def test_the_fingerprint_counts_threads_but_not_jobs():
    def printed(**training) -> str:
        return fingerprint(demo(**training), "baseline", (), None)

    assert printed(jobs=1, threads=1) == printed(jobs=4, threads=1)
    assert printed(jobs=1, threads=1) != printed(jobs=1, threads=2)
