"""A run's (fold, row) pairs trained side by side in worker processes (``training.jobs``).

Small networks use a second core poorly through intra-op threads: the demo's training step is
far from twice as fast on two threads as on one, so two rows trained side by side on one
thread each finish sooner than the same two rows one after the other on two threads
(measured: ``docs/speed.md``, "Rows side by side").

A row's result does not depend on which process trains it, or when: every row is seeded by
itself (:func:`privkd.training.row.fit_row`), and a student loads its fold's teacher from
the teacher's saved weights, as a resumed run does. So a run with ``jobs: 2`` equals one
with ``jobs: 1`` at the same ``training.threads`` (``tests/test_workers.py``); ``threads``
does change results (the order of floating-point sums in the kernels), which is why the
resolved value is recorded and part of every row's fingerprint.

The workers are spawned, not forked (a forked copy of a process that has run PyTorch can
hang), each receives the run's dataset once, and trains one (fold, row) at a time as the
main process hands it out; a student is handed out only once its teacher has finished, and
fails at once with it. Only the main process answers stop signals: the workers ignore
SIGTERM and SIGINT (a Ctrl-C reaches the whole process group), are killed when the main
process stops, and end by themselves within a second if it dies, so no orphan goes on
writing into a run that is being resumed. The interrupted rows resume from their last
checkpoint. What the workers print (Lightning's progress bars, warnings) goes to
``workers/worker-<n>.log`` in the run directory.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Protocol

import torch

from privkd.config.fitted import AUTO
from privkd.config.schema import RunConfig
from privkd.errors import ConfigError, DatasetError
from privkd.interrupt import STOP_SIGNALS
from privkd.training.auto import Resolved

__all__ = ["RowOutcome", "RowTask", "intra_op_threads", "resolve_jobs", "train_pairs"]

WORKER_LOGS = "workers"
"""Directory of the run that holds each worker process's output."""


@dataclass(frozen=True)
class RowTask:
    """One (fold, row) to train, and the row of the same fold it distils from."""

    fold: int
    row: str
    teacher: str | None
    provides_teacher: bool
    label: str
    """How progress lines name it, e.g. ``fold 2/5: pkdot``."""


@dataclass(frozen=True)
class RowOutcome:
    """A trained (fold, row)'s record, or the failure recorded for it."""

    record: dict | None = None
    failure: dict | None = None


class RowTrainer(Protocol):
    """Trains a task, or records why it failed; picklable, each worker gets a copy."""

    def train(self, task: RowTask) -> RowOutcome:
        """The task trained, or its failure recorded; a :class:`DatasetError` ends the run."""

    def fail(self, task: RowTask, reason: str) -> RowOutcome:
        """The task recorded as failed for ``reason``, untrained."""


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask of a batch job, not the machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_jobs(cfg: RunConfig, n_pairs: int, own_loggers: bool) -> tuple[RunConfig, list[Resolved]]:
    """``training.jobs`` and ``training.threads`` as numbers, and why; ``n_pairs`` is the number
    of (fold, row) pairs of the run, ``own_loggers`` whether the caller passed logger or
    callback objects (which cannot be sent to another process)."""
    t, cores = cfg.training, cpu_cores()
    resolved: list[Resolved] = []
    jobs = t.jobs
    if jobs == AUTO:
        alone = ("an accelerator" if t.accelerator != "cpu" else "data parallelism" if t.devices * t.num_nodes > 1
                 else "the caller's own loggers" if own_loggers else None)
        jobs = 1 if alone else max(1, min(cores, n_pairs))
        why = f"rows train in this process with {alone}" if alone else f"{cores} CPU cores, {n_pairs} (fold, row) pairs"
        resolved.append(Resolved("training.jobs", jobs, why))
    elif jobs > 1 and own_loggers:
        raise ConfigError("training.jobs", f"{jobs} worker processes cannot share the logger and callback objects "
                          "passed to this run", "use jobs: 1, or name the loggers in training.loggers")
    threads = t.threads
    if threads == AUTO:
        threads = torch.get_num_threads() if jobs == 1 else max(1, cores // jobs)
        why = "PyTorch's default" if jobs == 1 else f"{cores} CPU cores shared by {jobs} jobs"
        resolved.append(Resolved("training.threads", threads, why))
    return replace(cfg, training=replace(t, jobs=jobs, threads=threads)), resolved


@contextlib.contextmanager
def intra_op_threads(threads: int) -> Iterator[None]:
    """PyTorch's intra-op threads set to ``threads`` for the block, then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_pairs(tasks: Sequence[RowTask], trainer: RowTrainer, jobs: int, threads: int, log_dir: Path,
                progress: Callable[[str], None]) -> dict[tuple[int, str], RowOutcome]:
    """Every task's outcome, keyed by (fold, row): in this process, in the order given, when
    ``jobs`` is 1; else in ``jobs`` worker processes, teachers first."""
    if jobs == 1 or len(tasks) <= 1:
        return _train_here(tasks, trainer, progress)
    return _Pool(trainer, min(jobs, len(tasks)), threads, log_dir, progress).train(tasks)


def _teacher_failure(task: RowTask, outcomes: dict[tuple[int, str], RowOutcome]) -> str | None:
    """Why ``task`` cannot train (its teacher failed in this run), if so."""
    done = outcomes.get((task.fold, task.teacher)) if task.teacher else None
    if done is None or done.failure is None:
        return None
    return f"the fold's {task.teacher} failed ({done.failure['error']})"


def _report(task: RowTask, outcome: RowOutcome, progress: Callable[[str], None], seconds: float | None = None) -> None:
    if outcome.failure is not None:
        progress(f"{task.label} FAILED: {outcome.failure['error']}")
    elif seconds is not None:
        progress(f"{task.label} finished ({seconds:.0f} s)")


def _train_here(tasks: Sequence[RowTask], trainer: RowTrainer,
                progress: Callable[[str], None]) -> dict[tuple[int, str], RowOutcome]:
    outcomes: dict[tuple[int, str], RowOutcome] = {}
    for task in tasks:
        progress(task.label)
        reason = _teacher_failure(task, outcomes)
        outcomes[task.fold, task.row] = outcome = trainer.train(task) if reason is None else trainer.fail(task, reason)
        _report(task, outcome, progress)
    return outcomes


class _Worker:
    """One spawned worker process and the pipe to it."""

    def __init__(self, number: int, threads: int, log_dir: Path) -> None:
        context = multiprocessing.get_context("spawn")
        self.connection, theirs = context.Pipe()
        self.process = context.Process(target=_work, name=f"privkd-worker-{number}",
                                       args=(theirs, threads, log_dir / f"worker-{number}.log", os.getpid()))
        self.process.start()  # returns at once: the process imports PyTorch on its own
        theirs.close()
        self.task: RowTask | None = None
        self.started = 0.0

    def send_trainer(self, trainer: RowTrainer) -> None:
        """The trainer by value: plain pickle, not the tensor-sharing one of ``Connection.send``
        (its file descriptors pass through a server thread that a stop signal can break)."""
        self.connection.send_bytes(pickle.dumps(trainer))

    def hand(self, task: RowTask) -> None:
        self.connection.send(task)
        self.task, self.started = task, time.monotonic()

    def stop(self) -> None:
        if self.task is None and self.process.is_alive():
            with contextlib.suppress(OSError):
                self.connection.send(None)
            self.process.join(timeout=5)
        if self.process.is_alive():  # busy, or not leaving: its row resumes from its last checkpoint
            self.process.kill()
        self.process.join()
        self.connection.close()


class _Pool:
    def __init__(self, trainer: RowTrainer, jobs: int, threads: int, log_dir: Path,
                 progress: Callable[[str], None]) -> None:
        self.trainer, self.threads, self.log_dir, self.progress = trainer, threads, log_dir, progress
        log_dir.mkdir(parents=True, exist_ok=True)
        self.workers = [_Worker(n + 1, threads, log_dir) for n in range(jobs)]
        try:
            for worker in self.workers:  # once all are starting: each send waits for that worker's imports
                worker.send_trainer(trainer)
        except BaseException:  # a stop signal while they start: none may be left behind
            for worker in self.workers:
                worker.stop()
            raise

    def train(self, tasks: Sequence[RowTask]) -> dict[tuple[int, str], RowOutcome]:
        pending = sorted(tasks, key=lambda task: not task.provides_teacher)  # the critical path first; stable
        in_this_run = {(task.fold, task.row) for task in tasks}
        outcomes: dict[tuple[int, str], RowOutcome] = {}
        try:
            while True:
                self._hand_out(pending, in_this_run, outcomes)
                busy = {worker.connection: worker for worker in self.workers if worker.task is not None}
                if not busy:  # the last tasks may fail in _hand_out (a teacher failed): nothing to wait for
                    break
                for connection in wait(list(busy)):
                    worker = busy[connection]
                    task, outcome = worker.task, self._receive(worker)
                    assert task is not None
                    outcomes[task.fold, task.row] = outcome
                    _report(task, outcome, self.progress, time.monotonic() - worker.started)
        finally:
            for worker in self.workers:
                worker.stop()
        return outcomes

    def _hand_out(self, pending: list[RowTask], in_this_run: set[tuple[int, str]],
                  outcomes: dict[tuple[int, str], RowOutcome]) -> None:
        """Idle workers get the first pending tasks whose teacher has finished (in this run or
        an earlier attempt); a task whose teacher failed fails here at once."""
        for task in list(pending):
            teacher = (task.fold, task.teacher)
            if task.teacher is not None and teacher in in_this_run and teacher not in outcomes:
                continue  # its teacher is still training
            if (reason := _teacher_failure(task, outcomes)) is not None:
                pending.remove(task)
                outcomes[task.fold, task.row] = outcome = self.trainer.fail(task, reason)
                _report(task, outcome, self.progress)
                continue
            idle = next((worker for worker in self.workers if worker.task is None), None)
            if idle is None:
                return
            pending.remove(task)
            self.progress(task.label)
            idle.hand(task)

    def _receive(self, worker: _Worker) -> RowOutcome:
        task = worker.task
        assert task is not None
        try:
            result = worker.connection.recv()
        except EOFError:  # the worker died (killed, out of memory): a failed row, and a new worker
            worker.process.join()
            code = worker.process.exitcode
            index = self.workers.index(worker)
            worker.task = None
            worker.stop()
            self.workers[index] = _Worker(index + 1, self.threads, self.log_dir)
            self.workers[index].send_trainer(self.trainer)
            return self.trainer.fail(task, f"its worker process died (exit code {code})")
        worker.task = None
        if isinstance(result, (DatasetError, OSError)):  # the data's fault or a full disk, every other row's too
            raise result
        return result


def _work(connection: Connection, threads: int, log: Path, parent: int) -> None:
    """A worker process: receive the trainer, then train each task the main process sends
    until it sends ``None``."""
    for signum in STOP_SIGNALS:  # the main process decides when the run stops
        signal.signal(signum, signal.SIG_IGN)
    threading.Thread(target=_end_with_parent, args=(parent,), daemon=True).start()
    with open(log, "a", buffering=1) as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        sys.stdout = sys.stderr = out
        torch.set_num_threads(threads)
        trainer: RowTrainer = connection.recv()  # like every message here: from the main process, on a private pipe
        while (task := _next(connection)) is not None:
            try:
                connection.send(trainer.train(task))
            except (DatasetError, OSError) as error:  # the data's fault, or a full disk: the run stops
                connection.send(error)


def _next(connection: Connection) -> RowTask | None:
    try:
        return connection.recv()
    except EOFError:  # the main process is gone
        return None


def _end_with_parent(parent: int) -> None:
    """End this worker within a second of its main process's death (it would otherwise go on
    writing into a run directory that a resumed run may already hold)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)
