"""Files appear whole or not at all: every privkd output is written to a temporary file beside
its destination and renamed into place.

A crash, Ctrl-C or a failed check mid-write therefore never leaves half a dataset, summary,
report, student or prediction file behind, and concurrent writers of one file each produce a
complete one. Finished files get ordinary permissions (``0o666`` less the umask), since
results are meant to be shared.

A temporary file is named ``.<name>.<host>-<pid>.<random>.tmp``: one left behind by a process
that died without cleaning up (SIGKILL, power loss) is removed by the next write to the same
destination on that host, since its owner is known to be gone.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["remove_orphans", "write_atomic", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]


def _shared_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _owner_tag() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_orphans(directory: Path, name: str | None = None) -> list[Path]:
    """Delete the temporary files in ``directory`` (of destination ``name``, or of any) whose
    writing process, on this host, no longer exists; returns what was removed."""
    host = re.escape(socket.gethostname())
    pattern = re.compile(rf"\.{re.escape(name) if name else '.+'}\.{host}-(\d+)\.[^.]+\.tmp")
    removed = []
    for candidate in directory.glob(f".{name or ''}*.tmp") if directory.is_dir() else ():
        match = pattern.fullmatch(candidate.name)
        if match and not _alive(int(match.group(1))):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(path.parent, path.name)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_owner_tag()}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, _shared_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | Path, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
