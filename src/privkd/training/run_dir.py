"""Run directories that never overwrite each other, and files written atomically."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from privkd.atomic import write_json_atomic, write_text_atomic
from privkd.errors import PrivkdError

__all__ = ["create_run_dir", "environment", "is_primary_process", "open_run_dir", "write_json_atomic", "write_text_atomic"]


def create_run_dir(root: str | Path, name: str) -> Path:
    """Create ``root/<timestamp>-<name>``, adding ``-2``, ``-3``... if that already exists."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PrivkdError(f"{root}: cannot create the output directory ({err.strerror}). Fix: pass --out with a writable directory.") from err
    if not os.access(root, os.W_OK):
        raise PrivkdError(f"{root}: output directory is not writable. Fix: pass --out with a writable directory.")
    stem = f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{name}"
    for attempt in range(1, 1000):
        candidate = root / (stem if attempt == 1 else f"{stem}-{attempt}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise PrivkdError(f"{root}: could not find a free run directory name for {stem}")


RUN_DIR_ENV = "PRIVKD_RUN_DIR"
"""Exported by the primary process so that data-parallel workers it launches share its run directory."""


def is_primary_process() -> bool:
    """True unless this is a non-zero rank of a data-parallel run (torchrun, SLURM, Lightning)."""
    from lightning.fabric.utilities.rank_zero import _get_rank

    return (_get_rank() or 0) == 0


def open_run_dir(root: str | Path, name: str) -> Path:
    """The run directory: created by the primary process (and exported in ``$PRIVKD_RUN_DIR``
    for the workers Lightning launches from it); other ranks reuse it, or, when launched
    independently (torchrun, SLURM), a scratch directory, since they write no results."""
    if is_primary_process():
        run_dir = create_run_dir(root, name)
        os.environ[RUN_DIR_ENV] = str(run_dir)
        return run_dir
    return Path(os.environ.get(RUN_DIR_ENV) or tempfile.mkdtemp(prefix="privkd-worker-"))


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_model() -> str:
    """The processor's name (``/proc/cpuinfo`` on Linux, where ``platform.processor()`` is often empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict[str, Any]:
    """What produced a run: interpreter, platform, key package versions, hardware, command.

    The CPU and its instruction set are recorded because they change results: the same code,
    seed and packages give other floating-point rounding in the convolution kernels on another
    processor (or with ``ONEDNN_MAX_CPU_ISA`` set), and training amplifies it into different
    numbers (README, "Deterministic on one machine")."""
    import torch

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": sys.argv,
        "cpu": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "packages": {p: _version(p) for p in ("privkd", "torch", "lightning", "torchmetrics", "numpy", "h5py", "scipy")},
        "git_commit": _git_commit(),
        "started": datetime.now().isoformat(timespec="seconds"),
    }
