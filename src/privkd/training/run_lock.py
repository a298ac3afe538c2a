"""One process per run directory: an exclusive ``flock`` on ``RUN_DIR/.privkd.lock``, held for
as long as the process trains into the directory.

Two processes resuming one run at once would interleave its CSV logs and checkpoints until
the run could no longer be resumed; the second is refused instead, with the holder's pid and
host. The kernel drops the lock of a process that dies (even by SIGKILL), so a lock left
by a dead process never blocks a resume. Linux and macOS (``fcntl``).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO

from privkd.errors import PrivkdError

__all__ = ["LOCK_FILE", "locked_run_dir"]

LOCK_FILE = ".privkd.lock"


def _holder(handle: IO[str]) -> str:
    """Who holds the lock, as its file records it (written just after the lock was taken)."""
    handle.seek(0)
    try:
        record = json.loads(handle.read() or "{}")
    except ValueError:
        record = {}
    if "pid" not in record:
        return "another privkd process (it has not recorded its pid yet)"
    return f"privkd process {record['pid']} on {record.get('host', '?')} (since {record.get('started', '?')})"


def _open(path: Path) -> IO[str]:
    try:
        return os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+", encoding="utf-8")
    except OSError as err:
        raise PrivkdError(f"{path.parent}: cannot lock the run directory ({err.strerror})",
                          "make the run directory writable, or copy it somewhere writable and resume the copy") from err


def _acquire(path: Path) -> IO[str]:
    """The locked lock file; retried when the holder removed the file between our open and lock."""
    while True:
        handle = _open(path)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            handle.close()
            raise PrivkdError(f"{path.parent}: in use by {holder}; two processes in one run directory would "
                              "interleave its logs and checkpoints",
                              "wait for that process to finish (or stop it), then resume") from None
        try:
            same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return handle
        handle.close()


@contextmanager
def locked_run_dir(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` exclusively for the block; refuse (:class:`PrivkdError`) if another process holds it.

    The lock file is removed on release, so a finished run directory holds only its results.
    """
    path = run_dir / LOCK_FILE
    handle = _acquire(path)
    try:
        handle.truncate(0)
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": datetime.now().isoformat(timespec="seconds"), "command": sys.argv}))
        handle.flush()
        yield
    finally:
        path.unlink(missing_ok=True)  # still locked: a process waiting on this inode retries on a fresh file
        handle.close()
