"""What a run was started on, recorded so that a resume compares before it trusts.

A new run writes ``inputs.json`` beside its ``config.yaml`` before anything trains: the data
file's path and the sha256 of its bytes (read in chunks, so a multi-GB file costs one
sequential read and no memory; the embedded and ``synthetic:`` datasets are hashed as the
cached file they resolve to), the config as written and its fingerprint, the config with its
``auto`` values resolved, and each row's :func:`~privkd.training.reuse.fingerprint`.

``privkd run --resume`` reads the run's own ``config.yaml``, so without this record a
dataset rewritten in place or a hand-edited ``config.yaml`` resumed without a word, and the
finished rows trained on the old inputs were mixed with new ones. Now
:func:`check_config_and_data` refuses such a resume before the dataset is opened, naming the
changed config keys (old and new values) or the data file, and :func:`check_finished_rows`
refuses one whose finished rows record another fingerprint than this resume would give them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from privkd.atomic import write_json_atomic
from privkd.config.parse import config_to_dict
from privkd.config.schema import RunConfig
from privkd.data.folds import Fold
from privkd.errors import PrivkdError
from privkd.training.reuse import NOT_RESULTS
from privkd.training.run_dir import INPUTS_FILE, finished_record, row_dir

__all__ = [
    "INPUTS_FILE",
    "check_config_and_data",
    "check_finished_rows",
    "config_fingerprint",
    "file_sha256",
    "inputs_record",
    "read_inputs",
    "write_inputs",
]

CHUNK_BYTES = 8 * 2**20
"""Bytes read at a time when hashing the data file."""

NEW_RUN = "start a new run on what changed: `privkd run CONFIG` without --resume"


def file_sha256(path: Path, chunk: int = CHUNK_BYTES) -> str:
    """The sha256 of the file's bytes, read ``chunk`` bytes at a time."""
    digest = hashlib.sha256()
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    try:
        with open(path, "rb", buffering=0) as file:
            while n := file.readinto(buffer):
                digest.update(view[:n])
    except OSError as err:
        raise PrivkdError(f"{path}: cannot read the data file to hash it ({err.strerror})",
                          "make the data file readable") from err
    return digest.hexdigest()


def config_fingerprint(values: Mapping[str, Any]) -> str:
    """A config's fingerprint: the sha256 of its values as canonical JSON (as
    :func:`~privkd.training.reuse.fingerprint` hashes a row's)."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def data_record(data_path: Path) -> dict[str, Any]:
    """The data file as a run records it: path, size and content hash."""
    return {"path": str(data_path), "bytes": data_path.stat().st_size, "sha256": file_sha256(data_path)}


def inputs_record(configured: RunConfig, data_path: Path, resolved: RunConfig, prints: Mapping[str, str]) -> dict[str, Any]:
    """``inputs.json``: ``configured`` is the config as written (what ``config.yaml`` keeps),
    ``resolved`` the same with its ``auto`` values resolved, ``prints`` each row's fingerprint."""
    values = config_to_dict(configured)
    return {"data": data_record(data_path),
            "config": {"fingerprint": config_fingerprint(values), "values": values},
            "resolved_config": config_to_dict(resolved),
            "rows": dict(prints)}


def write_inputs(run_dir: Path, record: Mapping[str, Any]) -> None:
    write_json_atomic(run_dir / INPUTS_FILE, dict(record))


def read_inputs(run_dir: Path) -> dict[str, Any] | None:
    """The run's recorded inputs; ``None`` for a run made before privkd recorded them."""
    path = run_dir / INPUTS_FILE
    if not path.is_file():
        return None
    fix = f"start a new run (`privkd run CONFIG` without --resume); or delete {path} to resume without comparing"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        raise PrivkdError(f"{path}: unreadable ({type(err).__name__}: {err}); the file is damaged", fix) from err
    valid = (isinstance(record, dict) and isinstance(record.get("data"), dict)
             and isinstance(record["data"].get("sha256"), str) and isinstance(record.get("config"), dict)
             and isinstance(record["config"].get("fingerprint"), str) and isinstance(record["config"].get("values"), dict))
    if not valid:
        raise PrivkdError(f"{path}: not a record of the run's inputs (data file hash, config fingerprint)", fix)
    return record


def _flat(values: Any, prefix: str = "") -> dict[str, Any]:
    """``{"training": {"lr": 0.1}}`` → ``{"training.lr": 0.1}``; lists are values."""
    if not isinstance(values, Mapping) or (prefix and not values):
        return {prefix: values}
    flat: dict[str, Any] = {}
    for key, value in values.items():
        flat.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


_ABSENT = object()


def _show(value: Any) -> str:
    text = "(absent)" if value is _ABSENT else json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any], skip: Sequence[str] = ()) -> list[str]:
    """``key: old -> new`` for every dotted key whose value differs."""
    before, after = _flat(old), _flat(new)
    keys = [k for k in before if k not in skip] + [k for k in after if k not in before and k not in skip]
    return [f"{key}: {_show(before.get(key, _ABSENT))} -> {_show(after.get(key, _ABSENT))}"
            for key in keys if before.get(key, _ABSENT) != after.get(key, _ABSENT)]


def check_config_and_data(run_dir: Path, recorded: Mapping[str, Any], configured: RunConfig, data_path: Path) -> None:
    """Refuse to resume ``run_dir`` when its config (``configured``, read from its ``config.yaml``)
    or its data file's bytes differ from what the run was started on (``recorded``)."""
    changes: list[str] = []
    values = config_to_dict(configured)
    if config_fingerprint(values) != recorded["config"]["fingerprint"]:
        keys = changed_keys(recorded["config"]["values"], values)
        changes.append(f"{run_dir / 'config.yaml'} was edited since the run started ("
                       + ("; ".join(keys) if keys else f"its fingerprint differs from the one in {INPUTS_FILE}") + ")")
    data, now = recorded["data"], file_sha256(data_path)
    if now != data["sha256"]:
        where = (f"the data file {data_path}" if str(data_path) == data.get("path")
                 else f"the data file {data_path} (the run started on {data.get('path')})")
        changes.append(f"{where} has other contents than when the run started (sha256 {data['sha256'][:16]}... "
                       f"then, {now[:16]}... now)")
    if changes:
        raise PrivkdError(f"{run_dir}: cannot resume, its finished rows were trained on other inputs: "
                          + "; and ".join(changes),
                          f"{NEW_RUN} (e.g. `privkd run {run_dir / 'config.yaml'}`), or put the original back and resume")


def check_finished_rows(run_dir: Path, recorded: Mapping[str, Any] | None, folds: Sequence[Fold],
                        prints: Mapping[str, str], resolved: RunConfig, auto: Mapping[str, str],
                        progress: Callable[[str], None]) -> None:
    """Refuse to resume ``run_dir`` when a finished (fold, row)'s ``metrics.json`` records
    another fingerprint than ``prints`` (this resume's, from the ``resolved`` config) gives
    its row: it was trained under other settings. ``auto`` maps the keys resolved from
    ``auto`` (some from this machine: its CPU cores, PyTorch's threads) to why."""
    stale: list[tuple[str, str, str]] = []
    unchecked: list[str] = []
    for fold in folds:
        for row, print_ in prints.items():
            record = finished_record(row_dir(run_dir, fold, row))
            if record is None:
                continue
            stored = record.get("fingerprint")
            if stored is None:
                unchecked.append(f"fold_{fold.index}/{row}")
            elif stored != print_:
                stale.append((f"fold_{fold.index}/{row}", stored, print_))
    if unchecked:
        progress(f"{run_dir}: {', '.join(unchecked)} finished without a recorded fingerprint (an older privkd); "
                 "kept without checking its settings")
    if not stale:
        return
    shown = ", ".join(name for name, _, _ in stale[:6]) + (f" and {len(stale) - 6} more" if len(stale) > 6 else "")
    before = (recorded or {}).get("resolved_config")
    keys = changed_keys(before, config_to_dict(resolved), skip=[f"{s}.{k}" for s, ks in NOT_RESULTS.items() for k in ks]) \
        if isinstance(before, dict) else []
    name, stored, now = stale[0]
    why = f" ({'; '.join(keys)})" if keys else f" ({name}/metrics.json records fingerprint {stored}, this resume gives {now})"
    fix = NEW_RUN
    names = [key.split(":", 1)[0] for key in keys]
    if names and all(name in auto for name in names):
        here = "; ".join(f"{name} from {auto[name]}" for name in names)
        fix = (f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} `auto`, resolved otherwise here ({here}): resume "
               f"where {'it resolves' if len(names) == 1 else 'they resolve'} as before (the same CPU cores, "
               f"OMP_NUM_THREADS), or {NEW_RUN}")
    raise PrivkdError(f"{run_dir}: cannot resume: the finished rows {shown} were trained under other settings than "
                      f"this resume would train the rest with{why}", fix)
