"""Run directories: created so they never overwrite each other, resumed only by the run
that made them, and holding what every (fold, row) finished or why it failed.

Layout: ``config.yaml``, ``inputs.json`` (what a resume compares: :mod:`privkd.training.inputs`),
``environment.json`` and ``folds.json`` at the top, written before anything trains; one
``fold_<i>/<row>/`` per (fold, row), whose ``metrics.json`` marks it finished (written last)
and whose ``failed.json`` says why it failed. While a process trains into a run directory it
holds its lock (:mod:`privkd.training.run_lock`).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from privkd.atomic import remove_orphans, write_json_atomic, write_text_atomic
from privkd.config.parse import config_to_dict
from privkd.config.schema import RunConfig
from privkd.data.folds import Fold
from privkd.errors import PrivkdError
from privkd.portable import portable_kernels
from privkd.training.run_lock import locked_run_dir

if TYPE_CHECKING:
    from privkd.training.auto import Resolved

__all__ = [
    "FAILED_FILE",
    "INPUTS_FILE",
    "check_resumable",
    "claim_run_dir",
    "create_run_dir",
    "discard_broken_checkpoints",
    "environment",
    "finished_record",
    "is_primary_process",
    "open_run_dir",
    "record_failure",
    "row_dir",
    "run_config_path",
    "write_json_atomic",
    "write_run_files",
    "write_text_atomic",
]


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


INPUTS_FILE = "inputs.json"
"""What a run was started on (:mod:`privkd.training.inputs`), compared by a resume."""

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
    if is_primary_process():  # absolute: the resume command printed with it works from any directory
        run_dir = create_run_dir(Path(root).absolute(), name)
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
    numbers (docs/guide/runs.md, "Deterministic on one machine")."""
    import torch

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": sys.argv,
        "cpu": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "portable_kernels": portable_kernels(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "packages": {p: _version(p) for p in ("privkd", "torch", "lightning", "torchmetrics", "numpy", "h5py", "scipy")},
        "git_commit": _git_commit(),
        "started": datetime.now().isoformat(timespec="seconds"),
    }


def fold_records(folds: list[Fold]) -> list[dict]:
    """``folds.json``: the subjects of every fold."""
    return [{"fold": f.index, "train": list(f.train_subjects), "val": list(f.val_subjects), "test": list(f.test_subjects)}
            for f in folds]


def write_run_files(run_dir: Path, cfg: RunConfig, data_path: Path, folds: list[Fold],
                    resolved: Sequence[Resolved] = (), inputs: Mapping[str, Any] | None = None) -> None:
    """A new run's config as given (``config.yaml``), what its ``auto`` values became and why
    (``resolved.json``), what a resume compares against (``inputs.json``,
    :mod:`privkd.training.inputs`), the environment and the folds."""
    if inputs is not None:  # before config.yaml: a run directory with a config always has it
        write_json_atomic(run_dir / INPUTS_FILE, dict(inputs))
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    write_json_atomic(run_dir / "resolved.json", {item.key: {"value": item.value, "why": item.why} for item in resolved})
    write_json_atomic(run_dir / "environment.json", {**environment(), "data_path": str(data_path)})
    write_json_atomic(run_dir / "folds.json", fold_records(folds))


@contextmanager
def claim_run_dir(cfg: RunConfig, out_root: str | Path, data_path: Path, folds: list[Fold], primary: bool,
                  resolved: Sequence[Resolved] = (), resume: str | Path | None = None,
                  progress: Callable[[str], None] = lambda _: None, inputs: Mapping[str, Any] | None = None,
                  check_resume: Callable[[Path], None] = lambda _: None) -> Iterator[Path]:
    """The run directory, locked for the block: a new one, or the run
    to ``resume``, checked first (:func:`check_resumable`, then ``check_resume``) and rid of what its interrupted
    process left broken (:func:`discard_broken_checkpoints`). A new one gets the files of
    :func:`write_run_files` (``inputs`` its ``inputs.json``). Data-parallel workers share the
    primary process's directory and lock."""
    if resume is not None:
        run_dir = Path(resume).absolute()
        check_resumable(run_dir, cfg, folds)
        check_resume(run_dir)
        with locked_run_dir(run_dir) if primary else nullcontext():
            if primary:
                discard_broken_checkpoints(run_dir, progress)
            yield run_dir
        return
    run_dir = open_run_dir(out_root, cfg.name)
    with locked_run_dir(run_dir) if primary else nullcontext():
        if primary:
            write_run_files(run_dir, cfg, data_path, folds, resolved, inputs)
        yield run_dir


def run_config_path(run_dir: str | Path) -> Path:
    """A run directory's resolved ``config.yaml``; refuses a directory that is not a run."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise PrivkdError(f"{run_dir}: not a privkd run directory (it has no config.yaml)",
                          "pass the run directory that `privkd run` printed (runs/<timestamp>-<name>)")
    return path


def check_resumable(run_dir: Path, cfg: RunConfig, folds: list[Fold]) -> None:
    """The run to resume must be this config on these folds, or its finished results would mix with others."""
    saved = run_config_path(run_dir)
    if yaml.safe_load(saved.read_text()) != config_to_dict(cfg):
        raise PrivkdError(f"{saved}: the config differs from the one being resumed",
                          "resume with `privkd run --resume RUN_DIR` alone, which reads the run's own config.yaml")
    folds_file = run_dir / "folds.json"
    if folds_file.is_file() and _read_json(folds_file, "start a new run") != fold_records(folds):
        raise PrivkdError(f"{folds_file}: the dataset now gives other folds than the interrupted run",
                          "resume against the same dataset file, or start a new run")
    _check_no_links_out(run_dir)
    _check_writable(run_dir)
    for record in run_dir.glob("fold_*/*/metrics.json"):
        finished_record(record.parent)


def _check_no_links_out(run_dir: Path) -> None:
    """Resuming writes all over the run directory: never through a link that leads out of it."""
    root = run_dir.resolve()
    for top, dirs, files in os.walk(run_dir):
        for name in (*dirs, *files):
            path = Path(top) / name
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                raise PrivkdError(f"{path}: a symbolic link to {path.resolve()}, outside the run directory; resuming "
                                  "would write through it", f"replace the link by a real copy (or delete it) in {run_dir}")


def _check_writable(run_dir: Path) -> None:
    """Refuse a read-only run (or part of one) now, not with an OSError after minutes of training."""
    for top, _, files in os.walk(run_dir):
        for path in (Path(top), *(Path(top) / name for name in files)):
            if not os.access(path, os.W_OK | (os.X_OK if path.is_dir() else 0)):
                raise PrivkdError(f"{path}: not writable, and resuming writes checkpoints, logs and results there",
                                  f"make it writable (chmod -R u+w {run_dir}), or copy the run directory somewhere "
                                  "writable and resume the copy")


def _read_json(path: Path, fix: str) -> Any:
    """A JSON file of the run; a damaged one (truncated, stray bytes) is named with ``fix``."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise PrivkdError(f"{path}: unreadable ({type(err).__name__}: {err}); the file is damaged", fix) from err


def discard_broken_checkpoints(run_dir: Path, progress: Callable[[str], None]) -> None:
    """Delete each interrupted training's ``last.ckpt`` that does not load with
    ``weights_only=True`` (damaged, truncated by a kill mid-write, or holding code) and the
    temporary files of dead writers, saying so; those rows train again from their first epoch."""
    import torch

    for top, _, _ in os.walk(run_dir):
        remove_orphans(Path(top))
    for checkpoint in sorted(run_dir.glob("fold_*/*/checkpoints/last.ckpt")):
        try:
            torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - a damaged pickle fails with many exception types
            checkpoint.unlink()
            reason = str(err).splitlines()[0][:200] if str(err) else ""
            progress(f"{checkpoint}: unreadable resume checkpoint ({type(err).__name__}: {reason}), discarded: "
                     f"{checkpoint.parent.parent.parent.name}/{checkpoint.parent.parent.name} trains again "
                     "from its first epoch")


def row_dir(run_dir: Path, fold: Fold, row: str) -> Path:
    """Where one (fold, row) keeps its checkpoints, logs and results."""
    return run_dir / f"fold_{fold.index}" / row


def finished_record(directory: Path) -> dict | None:
    """The metrics of a (fold, row) a previous attempt finished, else ``None``."""
    path = directory / "metrics.json"
    if not path.is_file():
        return None
    record = _read_json(path, f"delete {path} so that this (fold, row) is trained again on resume")
    if not isinstance(record, dict) or "test" not in record:
        raise PrivkdError(f"{path}: not a finished row's record (no test metrics)",
                          f"delete {path} so that this (fold, row) is trained again on resume")
    return record


FAILED_FILE = "failed.json"


def record_failure(directory: Path, fold: Fold, row: str, error: BaseException, primary: bool) -> dict:
    """What failed, kept beside the results (``failed.json``) and listed in the summary."""
    failure = {"fold": fold.index, "row": row, "error": f"{type(error).__name__}: {error}"}
    if primary:
        write_json_atomic(directory / FAILED_FILE, {**failure, "traceback": "".join(traceback.format_exception(error))})
    return failure
