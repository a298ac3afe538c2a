"""The format's rules, shared by the writer (on arrays) and the validator (on a file).

Both sides bring their data into one :class:`_Content` and run
:func:`_check_content` on it, so a file written by
:func:`~privkd.data.h5format.write_dataset` always validates and the two can
never disagree about what a valid dataset is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from privkd.data.h5format.spec import (
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEPENDENCE,
    MAX_ABS_VALUE,
    MAX_DATASET_BYTES,
    MAX_SAMPLE_BYTES,
    MODALITY_KINDS,
    TASKS,
    DatasetInfo,
    ModalityInfo,
)
from privkd.errors import DatasetError

__all__ = ["TOKENS_SUFFIX", "check_declared_size", "huge_value_error"]  # the rest is package-private: used by validation and writing only

# Value scans read at most this many bytes at a time, so a video dataset is
# checked for NaN/inf without ever being loaded whole.
_SCAN_BYTES = 16 * 2**20
_REIMPORT = "re-create the file with privkd.data.write_dataset or a privkd importer"

TOKENS_SUFFIX = "@tokens"
"""``inputs[name + TOKENS_SUFFIX]`` carries a frozen backbone's precomputed tokens for ``name``
(:mod:`privkd.training.feature_cache`); a modality may not be named so."""


class _ArrayLike(Protocol):
    """What the shared checks need from an array: numpy arrays and h5py datasets both fit."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def __getitem__(self, key: Any) -> Any: ...


@dataclass(frozen=True)
class _Content:
    """Everything the rules inspect, read from a file or about to be written.

    ``modalities`` is ``None`` when there is no ``/modalities`` group; string
    columns are already decoded to object arrays of ``str``.
    """

    file: Path
    attrs: Mapping[str, Any]
    modalities: Mapping[str, tuple[_ArrayLike, Mapping[str, Any]]] | None
    labels: np.ndarray | None
    subjects: np.ndarray | None
    groups: np.ndarray | None
    splits: np.ndarray | None



def _as_text(value: Any) -> str | None:
    """Decode a string attribute whichever way the writing tool stored it."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, (str, np.str_)):
        return str(value)
    return None


def _json_names(file: Path, field: str, raw: Any) -> list[str] | None:
    """Parse a JSON list of names attribute, ``None`` when absent."""
    if raw is None:
        return None
    text = _as_text(raw)
    try:
        names = json.loads(text) if text is not None else None
    except json.JSONDecodeError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise DatasetError(file, field, f"expected a JSON list of non-empty strings, found {raw!r}",
                           'store it as json.dumps(["name", ...])')
    if len(set(names)) != len(names):
        raise DatasetError(file, field, f"names are not unique: {names}", "give every entry its own name")
    return names


def _check_format(file: Path, attrs: Mapping[str, Any]) -> None:
    found = _as_text(attrs.get("format"))
    if found != FORMAT_NAME:
        state = "is missing" if found is None else f"is {found!r}"
        raise DatasetError(file, "/@format", f"root attribute 'format' {state}, expected {FORMAT_NAME!r}",
                           f"{_REIMPORT} (`privkd data import ...`); privkd reads only its own format")
    version = attrs.get("format_version")
    if not isinstance(version, (int, np.integer)) or not 1 <= int(version) <= FORMAT_VERSION:
        raise DatasetError(file, "/@format_version",
                           f"format_version is {version!r}, this privkd reads version {FORMAT_VERSION}",
                           f"{_REIMPORT} with this privkd version, or upgrade privkd if the file is newer")


def _check_task(file: Path, attrs: Mapping[str, Any]) -> str:
    task = _as_text(attrs.get("task"))
    if task not in TASKS:
        raise DatasetError(file, "/@task", f"task is {task!r}, expected one of {list(TASKS)}",
                           "set the root attribute 'task' to 'classification' (integer class ids) "
                           "or 'regression' (continuous targets)")
    return task


def _check_independence(file: Path, attrs: Mapping[str, Any]) -> str:
    """The root attribute ``independence`` (absent in files written before it existed: subjects)."""
    raw = attrs.get("independence")
    value = INDEPENDENCE[0] if raw is None else _as_text(raw)
    if value not in INDEPENDENCE:
        raise DatasetError(file, "/@independence", f"independence is {raw!r}, expected one of {list(INDEPENDENCE)}",
                           "set it to 'subject' when /subjects holds people's ids, or 'recording' when every "
                           "recording was given its own id (data without subject ids)")
    return value


def _check_modality(file: Path, name: str, array: _ArrayLike, attrs: Mapping[str, Any]) -> ModalityInfo:
    """Check one modality's structure and attributes (not its values)."""
    field = f"/modalities/{name}"
    _check_modality_name(file, field, name)
    if len(array.shape) < 1 or min(array.shape[1:], default=1) < 1:
        raise DatasetError(file, field, f"shape {tuple(array.shape)} has no sample axis or an empty axis",
                           "store an array whose first axis is the sample, e.g. (N, channels, time)")
    check_declared_size(file, field, tuple(array.shape), np.dtype(array.dtype).itemsize)
    kind = _as_text(attrs.get("kind"))
    if kind not in MODALITY_KINDS:
        raise DatasetError(file, f"{field}@kind", f"kind is {kind!r}, expected one of {list(MODALITY_KINDS)}",
                           "give the modality one of the known kinds (modality_kinds= in write_dataset)")
    if not (np.issubdtype(array.dtype, np.floating) or (kind == "video" and array.dtype == np.uint8)):
        raise DatasetError(file, field, f"dtype is {array.dtype}, expected a float array (or uint8 for video)",
                           "convert the data to float32 before writing; video frames may stay uint8 (0-255)")
    rate = _sampling_rate(file, field, kind, attrs.get("sampling_rate"))
    channels = _json_names(file, f"{field}@channel_names", attrs.get("channel_names"))
    if channels is not None and (len(array.shape) < 2 or len(channels) != array.shape[1]):
        raise DatasetError(file, f"{field}@channel_names",
                           f"{len(channels)} channel names for shape {tuple(array.shape)}",
                           "give one name per entry of axis 1 (the channel axis, right after the sample axis)")
    return ModalityInfo(name=name, kind=kind, sampling_rate=rate, sample_shape=tuple(int(s) for s in array.shape[1:]),
                        channel_names=None if channels is None else tuple(channels))


def _check_modality_name(file: Path, field: str, name: str) -> None:
    """A modality's name keys its encoder in a network (a ``torch.nn.ModuleDict`` takes no ``.``)
    and its inputs in a batch, where ``<name>@tokens`` is a frozen backbone's cached tokens: a
    name with a ``.`` or that ending fails, or is mistaken for another modality's tokens, only
    once a run has started."""
    if "." in name or name.endswith(TOKENS_SUFFIX):
        new = name.replace(".", "_").removesuffix(TOKENS_SUFFIX) or "modality"
        raise DatasetError(file, field, f"the modality name {name!r} contains '.' or ends with {TOKENS_SUFFIX!r}, "
                           "which privkd uses inside its networks and batches",
                           f"rename it, e.g. to {new!r} (with h5py: file.move('modalities/{name}', 'modalities/{new}')),"
                           " or choose another name when importing")


def _size(n: int) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"


def check_declared_size(file: Path, field: str, shape: tuple[int, ...], itemsize: int) -> None:
    """Refuse a modality whose declared shape is implausibly large, before any of it is read.

    A sample is counted as privkd reads it (float32, or the stored type when wider); the whole
    array as stored. An HDF5 file declares shapes, not contents: a few KB may declare
    terabytes of never-written chunks that read back as zeros.
    """
    if len(shape) < 1:
        return
    per_sample = math.prod(shape[1:]) * max(itemsize, 4)
    if per_sample > MAX_SAMPLE_BYTES:
        raise DatasetError(file, field, f"declared shape {shape} makes one sample {_size(per_sample)} as float32, "
                           f"beyond the {_size(MAX_SAMPLE_BYTES)} privkd reads a sample into",
                           "store smaller samples (shorter windows, fewer frames, smaller frames), or check that the "
                           "file was written by a privkd importer")
    total = math.prod(shape) * itemsize
    if total > MAX_DATASET_BYTES:
        raise DatasetError(file, field, f"declared shape {shape} of {itemsize}-byte values is {_size(total)}, beyond "
                           f"the {_size(MAX_DATASET_BYTES)} privkd reads",
                           "split the data into several dataset files, or check that the file was written by a "
                           "privkd importer")


def _sampling_rate(file: Path, field: str, kind: str, raw: Any) -> float | None:
    """A positive rate in Hz; absent/NaN is allowed only for time-less features."""
    try:
        rate = None if raw is None else float(raw)
    except (TypeError, ValueError):
        rate = -1.0
    if rate is None or math.isnan(rate):
        if kind == "features":
            return None
    elif math.isfinite(rate) and rate > 0:
        return rate
    raise DatasetError(file, f"{field}@sampling_rate", f"sampling_rate is {raw!r} for a {kind} modality",
                       "give the sampling rate in Hz (frames per second for video); "
                       "only 'features' modalities may leave it out")


def _check_counts(c: _Content, n_by_modality: Mapping[str, int]) -> int:
    """All first axes agree with the label count; returns that count."""
    if c.labels is None:
        raise DatasetError(c.file, "/labels", "no /labels array", "write one label per sample to /labels")
    if c.subjects is None:
        raise DatasetError(c.file, "/subjects", "no /subjects array",
                           "write the subject id (a string) of every sample to /subjects; "
                           "privkd splits folds by subject")
    n = int(c.labels.shape[0]) if c.labels.ndim else 0
    if n == 0:
        raise DatasetError(c.file, "/labels", "the dataset has no samples", "write at least one sample")
    for name, count in n_by_modality.items():
        if count != n:
            raise DatasetError(c.file, "/labels", f"{n} labels but {count} samples in /modalities/{name}",
                               "write one label per sample (first axis)")
    for field, column in (("/subjects", c.subjects), ("/groups", c.groups), ("/splits", c.splits)):
        if column is not None and column.shape != (n,):
            raise DatasetError(c.file, field, f"shape {column.shape} but there are {n} labels (samples)",
                               f"write one entry per sample to {field}, a 1-D array of strings")
    return n


def _check_labels(c: _Content, task: str) -> tuple[list[str] | None, list[str] | None]:
    """Check label dtype/shape/range against the names; returns (class_names, target_names)."""
    labels = c.labels
    assert labels is not None  # _check_counts ran first
    if task == "classification":
        class_names = _json_names(c.file, "/@class_names", c.attrs.get("class_names"))
        if class_names is None:
            raise DatasetError(c.file, "/@class_names", "classification dataset without class_names",
                               "store the class names as a JSON list, index i naming class id i")
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise DatasetError(c.file, "/labels", f"{labels.dtype} labels of shape {labels.shape}, "
                               "expected integer class ids of shape (N,)",
                               "store class ids 0..n_classes-1 as int64; map class names to ids first")
        outside = np.flatnonzero((labels < 0) | (labels >= len(class_names)))
        if outside.size:
            i = int(outside[0])
            raise DatasetError(c.file, "/labels", f"label {int(labels[i])} at sample {i} is outside "
                               f"[0, {len(class_names)}) given {len(class_names)} class_names",
                               "remap the labels to 0..n_classes-1, or add the missing class names")
        return class_names, None
    target_names = _json_names(c.file, "/@target_names", c.attrs.get("target_names"))
    if labels.ndim not in (1, 2) or not np.issubdtype(labels.dtype, np.floating):
        raise DatasetError(c.file, "/labels", f"{labels.dtype} labels of shape {labels.shape}, "
                           "expected float targets of shape (N,) or (N, T)", "store the targets as float32")
    n_targets = 1 if labels.ndim == 1 else labels.shape[1]
    if n_targets == 0:
        raise DatasetError(c.file, "/labels", f"labels of shape {labels.shape} hold no target (a regression "
                           "network would have no output)", "store at least one target per sample: shape (N,) or (N, T)")
    if target_names is not None and len(target_names) != n_targets:
        raise DatasetError(c.file, "/@target_names", f"{len(target_names)} target names for {n_targets} targets",
                           "give one name per label column")
    _check_finite(c.file, "/labels", labels)
    return None, target_names or [f"target_{i}" for i in range(n_targets)]


def _rows_within(shape: tuple[int, ...], budget: int) -> int:
    """How many float32 samples of ``shape`` fit in ``budget`` bytes (at least one)."""
    return max(1, budget // max(4 * math.prod(shape[1:]), 1))


def huge_value_error(file: Path, field: str, value: float, sample: int) -> DatasetError:
    """A value beyond :data:`MAX_ABS_VALUE`, named with its sample."""
    return DatasetError(file, field, f"value {value:.3g} in sample {sample} is beyond ±{MAX_ABS_VALUE:g}, where float32 "
                        "arithmetic overflows (float32 ends at 3.4e38): a unit or conversion mistake",
                        "rescale the modality (other units, or a log transform) or drop the sample, then write the "
                        "file again")


def _scan_blocks(shape: tuple[int, ...], budget: int) -> Iterator[tuple[tuple[Any, ...], int]]:
    """Index tuples of the hyperslabs of an array of ``shape`` holding at most ``budget`` values
    each (at least one), in storage order, with the sample (axis 0 index) each starts at.

    Whole samples are grouped while one fits; a larger sample is cut along its first axis
    that leaves pieces small enough, so no read is ever larger than the budget allows."""
    axis = 0
    while axis < len(shape) - 1 and math.prod(shape[axis + 1:]) > budget:
        axis += 1
    step = max(1, budget // max(math.prod(shape[axis + 1:]), 1))
    for outer in np.ndindex(*shape[:axis]):
        for start in range(0, shape[axis], step):
            yield (*outer, slice(start, start + step)), (outer[0] if outer else start)


def _check_finite(file: Path, field: str, array: _ArrayLike) -> None:
    """Scan ``array`` block by block (never whole, never more than :data:`_SCAN_BYTES` of
    float32 at a time, even within one sample) for NaN, inf and values beyond
    :data:`MAX_ABS_VALUE`.

    Values are checked as float32, the stored precision, so float64 input
    that would overflow to inf when written is caught too.
    """
    if array.dtype == np.uint8 or len(array.shape) == 0:
        return  # integers cannot be NaN or inf
    for key, first in _scan_blocks(tuple(array.shape), max(1, _SCAN_BYTES // 4)):
        with np.errstate(over="ignore"):
            block = np.asarray(array[key], dtype=np.float32)
        # whole samples: one row each; a piece of one sample: a single row
        rows_of = block.reshape(len(block), -1) if len(key) == 1 else block.reshape(1, -1)
        bad = ~np.isfinite(rows_of)
        rows = np.flatnonzero(bad.any(axis=1))
        if rows.size:
            row = int(rows[0])
            value = rows_of[row][bad[row]][0]
            what = "NaN" if np.isnan(value) else "inf"
            raise DatasetError(file, field, f"{what} value in sample {first + row}",
                               "replace or drop non-finite values before writing "
                               "(interpolate short gaps, drop the affected samples)")
        huge = np.abs(rows_of) >= MAX_ABS_VALUE
        rows = np.flatnonzero(huge.any(axis=1))
        if rows.size:
            row = int(rows[0])
            raise huge_value_error(file, field, float(rows_of[row][huge[row]][0]), first + row)


def _check_structure(c: _Content) -> tuple[str, dict[str, ModalityInfo], int]:
    """The rules that need shapes and attributes only: the validator runs them with the
    unread arrays of a file before reading any of them whole. Returns the task, the
    modalities and the sample count."""
    _check_format(c.file, c.attrs)
    task = _check_task(c.file, c.attrs)
    if not c.modalities:
        state = "has no /modalities group" if c.modalities is None else "/modalities is empty"
        raise DatasetError(c.file, "/modalities", f"the file {state}",
                           "write at least one modality array to /modalities/<name>")
    modalities = {name: _check_modality(c.file, name, array, attrs) for name, (array, attrs) in c.modalities.items()}
    n = _check_counts(c, {name: int(array.shape[0]) for name, (array, _) in c.modalities.items()})
    return task, modalities, n


def _check_content(c: _Content, *, check_values: bool) -> DatasetInfo:
    """The rules, shared by the writer (on arrays) and the validator (on a file)."""
    task, modalities, n = _check_structure(c)
    class_names, target_names = _check_labels(c, task)
    if check_values:
        for name, (array, _) in c.modalities.items():
            _check_finite(c.file, f"/modalities/{name}", array)
    assert c.subjects is not None  # _check_counts ran first
    return DatasetInfo(path=c.file, task=task, n_samples=n, modalities=modalities, class_names=class_names,
                       target_names=target_names, subjects=sorted(set(c.subjects.tolist())),
                       description=_as_text(c.attrs.get("description")) or "",
                       source=_as_text(c.attrs.get("source")) or "",
                       independence=_check_independence(c.file, c.attrs))
