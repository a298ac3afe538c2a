"""Stopping a run on a stop signal (SIGTERM, SIGINT and the others in :data:`STOP_SIGNALS`) with
a non-zero exit code and a way to resume.

Lightning turns SIGTERM into a ``SystemExit`` without a code (exit status 0: a batch
scheduler that pre-empts the job records a success) and Ctrl-C into ``sys.exit(1)``, both
without a word. Under :func:`stop_on_signals` either signal raises :class:`RunInterrupted`
instead, which the runner tags with its run directory and the CLI reports.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

__all__ = ["RunInterrupted", "stop_on_signals"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGXCPU)
"""The signals a terminal or a scheduler sends to end a job: a scheduler's pre-emption, Ctrl-C,
a closed terminal or ssh session (SIGHUP), a scheduler's warning before its time limit (SLURM's
``--signal``, PBS: SIGUSR1/2) and a CPU-time limit reached (SIGXCPU). By default each would end
the process at once, mid-write, with no word on how to resume."""


class RunInterrupted(BaseException):
    """A stop signal arrived. A ``BaseException`` (like ``KeyboardInterrupt``), so that the
    runner's per-row ``except Exception`` does not record it as a failed row and go on."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.run_dir: Path | None = None

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number (SIGTERM 143)."""
        return 128 + self.signum


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Raise :class:`RunInterrupted` in the main thread on the first of :data:`STOP_SIGNALS` in
    the block; a second one gets the default behaviour (SIGINT: ``KeyboardInterrupt``; SIGTERM: the
    process ends), so a stuck clean-up can still be stopped. Outside the main thread, where
    Python delivers no signals, it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}

    def handler(signum: int, frame: FrameType | None) -> None:
        for other in STOP_SIGNALS:
            signal.signal(other, signal.default_int_handler if other == signal.SIGINT else signal.SIG_DFL)
        raise RunInterrupted(signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
