"""The one on-disk dataset format of privkd: one HDF5 file per dataset.

Every importer converts into this format and everything downstream reads only
this format, so no training code ever knows where the data came from.

Layout::

    /modalities/<name>   float32 array, first axis = sample, e.g. (N, channels, time);
                         video may be stored as uint8 (0-255), read back as float32 in [0, 1];
                         attrs: kind ("signal" | "spectrogram" | "video" | "features"),
                                sampling_rate (Hz; NaN allowed only for "features"),
                                channel_names (optional JSON list, one per axis-1 entry)
    /labels              int64 (N,) class ids (classification) or float32 (N,) / (N, T) targets
    /subjects            UTF-8 strings (N,), subject id of every sample
    /groups              optional UTF-8 strings (N,), recording / video id
    /splits              optional UTF-8 strings (N,), e.g. "train" / "validation"
    root attrs           format = "privkd-dataset", format_version = 1,
                         task ("classification" | "regression"),
                         class_names (JSON list, classification), target_names (JSON list, regression),
                         description, source

The writer and the validator share one set of rules (``_check_content``): the
writer checks the in-memory arrays exactly as the validator checks a file, so a
file written by :func:`write_dataset` always validates. Errors are
:class:`~privkd.errors.DatasetError` naming the file, the field and the fix.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import h5py
import numpy as np

from privkd.atomic import write_atomic
from privkd.errors import DatasetError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MODALITY_KINDS",
    "TASKS",
    "DatasetInfo",
    "ModalityInfo",
    "describe",
    "read_info",
    "validate_dataset",
    "write_dataset",
    "write_streamed_dataset",
]

FORMAT_NAME = "privkd-dataset"
FORMAT_VERSION = 1
MODALITY_KINDS = ("signal", "spectrogram", "video", "features")
TASKS = ("classification", "regression")

# Value scans read at most this many bytes at a time, so a video dataset is
# checked for NaN/inf without ever being loaded whole.
_SCAN_BYTES = 16 * 2**20
# Target size of one compressed chunk: small enough that a lazy per-sample read
# decompresses little, large enough that tiny samples (a 2 s signal window) are
# not stored one per chunk, which would bloat the file and slow full reads.
_CHUNK_BYTES = 256 * 2**10
_REIMPORT = "re-create the file with privkd.data.write_dataset or a privkd importer"


class _ArrayLike(Protocol):
    """What the shared checks need from an array: numpy arrays and h5py datasets both fit."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def __getitem__(self, key: Any) -> Any: ...


@dataclass(frozen=True)
class ModalityInfo:
    """Description of one modality; ``sample_shape`` excludes the sample axis."""

    name: str
    kind: str
    sampling_rate: float | None
    sample_shape: tuple[int, ...]
    channel_names: tuple[str, ...] | None


@dataclass(frozen=True)
class DatasetInfo:
    """What a validated dataset file holds, without its arrays."""

    path: Path
    task: str
    n_samples: int
    modalities: dict[str, ModalityInfo]
    class_names: list[str] | None
    target_names: list[str] | None
    subjects: list[str]
    description: str
    source: str

    @property
    def n_classes(self) -> int | None:
        """Number of classes for classification, ``None`` for regression."""
        return None if self.class_names is None else len(self.class_names)

    @property
    def n_outputs(self) -> int:
        """Width of a model's output: one logit per class, or one value per regression target."""
        return self.n_classes if self.class_names is not None else len(self.target_names or [])


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


# --------------------------------------------------------------------------- rules


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


def _check_modality(file: Path, name: str, array: _ArrayLike, attrs: Mapping[str, Any]) -> ModalityInfo:
    """Check one modality's structure and attributes (not its values)."""
    field = f"/modalities/{name}"
    if len(array.shape) < 1 or min(array.shape[1:], default=1) < 1:
        raise DatasetError(file, field, f"shape {tuple(array.shape)} has no sample axis or an empty axis",
                           "store an array whose first axis is the sample, e.g. (N, channels, time)")
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
    if target_names is not None and len(target_names) != n_targets:
        raise DatasetError(c.file, "/@target_names", f"{len(target_names)} target names for {n_targets} targets",
                           "give one name per label column")
    _check_finite(c.file, "/labels", labels)
    return None, target_names or [f"target_{i}" for i in range(n_targets)]


def _rows_within(shape: tuple[int, ...], budget: int) -> int:
    """How many float32 samples of ``shape`` fit in ``budget`` bytes (at least one)."""
    return max(1, budget // max(4 * math.prod(shape[1:]), 1))


def _check_finite(file: Path, field: str, array: _ArrayLike) -> None:
    """Scan ``array`` block by block (never whole) for NaN or inf.

    Values are checked as float32, the stored precision, so float64 input
    that would overflow to inf when written is caught too.
    """
    if array.dtype == np.uint8:
        return  # integers cannot be NaN or inf
    step = _rows_within(tuple(array.shape), _SCAN_BYTES)
    for start in range(0, array.shape[0], step):
        with np.errstate(over="ignore"):
            block = np.asarray(array[start:start + step], dtype=np.float32)
        bad = ~np.isfinite(block.reshape(len(block), -1))
        rows = np.flatnonzero(bad.any(axis=1))
        if rows.size:
            row = int(rows[0])
            value = block.reshape(len(block), -1)[row][bad[row]][0]
            what = "NaN" if np.isnan(value) else "inf"
            raise DatasetError(file, field, f"{what} value in sample {start + row}",
                               "replace or drop non-finite values before writing "
                               "(interpolate short gaps, drop the affected samples)")


def _check_content(c: _Content, *, check_values: bool) -> DatasetInfo:
    """The rules, shared by the writer (on arrays) and the validator (on a file)."""
    _check_format(c.file, c.attrs)
    task = _check_task(c.file, c.attrs)
    if not c.modalities:
        state = "has no /modalities group" if c.modalities is None else "/modalities is empty"
        raise DatasetError(c.file, "/modalities", f"the file {state}",
                           "write at least one modality array to /modalities/<name>")
    modalities = {name: _check_modality(c.file, name, array, attrs) for name, (array, attrs) in c.modalities.items()}
    n = _check_counts(c, {name: int(array.shape[0]) for name, (array, _) in c.modalities.items()})
    class_names, target_names = _check_labels(c, task)
    if check_values:
        for name, (array, _) in c.modalities.items():
            _check_finite(c.file, f"/modalities/{name}", array)
    assert c.subjects is not None  # _check_counts ran first
    return DatasetInfo(path=c.file, task=task, n_samples=n, modalities=modalities, class_names=class_names,
                       target_names=target_names, subjects=sorted(set(c.subjects.tolist())),
                       description=_as_text(c.attrs.get("description")) or "",
                       source=_as_text(c.attrs.get("source")) or "")


# ----------------------------------------------------------------------- reading


def _read_strings(file: Path, field: str, obj: Any) -> np.ndarray | None:
    """Decode a string column to an object array of ``str``; ``None`` when absent."""
    if obj is None:
        return None
    if not isinstance(obj, h5py.Dataset) or h5py.check_string_dtype(obj.dtype) is None:
        raise DatasetError(file, field, "is not an array of strings",
                           f"store {field} as UTF-8 strings (h5py.string_dtype()), one per sample")
    return np.asarray(obj.asstr()[()], dtype=object)


def _read_content(file: Path, h5: h5py.File) -> _Content:
    group = h5.get("modalities")
    modalities = None
    if isinstance(group, h5py.Group):
        modalities = {}
        for name, obj in group.items():
            if not isinstance(obj, h5py.Dataset):
                raise DatasetError(file, f"/modalities/{name}", "is a group, not an array",
                                   "store each modality as one array whose first axis is the sample")
            modalities[name] = (obj, obj.attrs)
    labels = h5.get("labels")
    if labels is not None and not isinstance(labels, h5py.Dataset):
        raise DatasetError(file, "/labels", "is a group, not an array", "write one label per sample to /labels")
    return _Content(file=file, attrs=h5.attrs, modalities=modalities,
                    labels=None if labels is None else np.asarray(labels[()]),
                    subjects=_read_strings(file, "/subjects", h5.get("subjects")),
                    groups=_read_strings(file, "/groups", h5.get("groups")),
                    splits=_read_strings(file, "/splits", h5.get("splits")))


def _open(path: Path) -> h5py.File:
    """Open a dataset file read-only, turning every way of failing into a DatasetError."""
    if not path.is_file():
        raise DatasetError(path, "/", "file does not exist",
                           "check the path, or create the dataset with `privkd data import ...`")
    if not h5py.is_hdf5(path):
        raise DatasetError(path, "/", "not an HDF5 file",
                           "convert the raw data with a privkd importer (`privkd data import ...`)")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(path, "/", f"unreadable HDF5 file (truncated or corrupted: {exc})",
                           "delete it and write it again (re-run the import or build)") from exc


def validate_dataset(path: str | Path, *, check_values: bool = True) -> DatasetInfo:
    """Check a dataset file against the format and describe it.

    With ``check_values`` every modality is scanned for NaN/inf, in blocks so
    that large files are never loaded whole. Labels and string columns are
    always checked in full (they are small and needed for the description).
    """
    path = Path(path)
    with _open(path) as h5:
        try:
            return _check_content(_read_content(path, h5), check_values=check_values)
        except (OSError, RuntimeError, UnicodeDecodeError) as exc:  # how h5py reports damaged content
            raise DatasetError(path, "/", f"unreadable HDF5 content (truncated or corrupted: {exc})",
                               "delete it and write it again (re-run the import or build)") from exc


def read_info(path: str | Path) -> DatasetInfo:
    """Validate the structure of a dataset file without scanning modality values (fast)."""
    return validate_dataset(path, check_values=False)


# ----------------------------------------------------------------------- writing


def _check_text(file: Path, field: str, text: str) -> None:
    """HDF5 stores UTF-8 strings without NUL characters: refuse what it would mangle or reject."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise DatasetError(file, field, f"{text!r} is not valid Unicode text ({err.reason})",
                           "remove unpaired surrogate characters") from None
    if "\x00" in text:
        raise DatasetError(file, field, f"{text!r} contains a NUL character, which HDF5 strings cannot hold",
                           "remove the NUL characters")


def _check_modality_name(file: Path, name: Any) -> None:
    """A modality name becomes an HDF5 path component: one non-empty name, no '/', no NUL."""
    if not isinstance(name, str) or not name or "/" in name or name == ".":
        raise DatasetError(file, f"/modalities/{name!r}", f"{name!r} cannot name a modality (it becomes an HDF5 path)",
                           "use a plain name such as 'eda' or 'face_video' (no '/', not empty)")
    _check_text(file, f"/modalities/{name!r}", name)


def _string_column(file: Path, field: str, values: Sequence[str] | np.ndarray | None) -> np.ndarray | None:
    """In-memory counterpart of :func:`_read_strings`: strings only, never silently ``str()``-ed.

    Converting e.g. the integer subject 7 to "7" would lose zero-padding
    conventions ("07"), so non-strings are an error.
    """
    if values is None:
        return None
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    bad = [i for i, v in enumerate(array) if not isinstance(v, str)]
    if bad:
        raise DatasetError(file, field, f"entry {bad[0]} is {array[bad[0]]!r} ({type(array[bad[0]]).__name__}), "
                           "not a string", f"pass {field[1:]} as strings, e.g. f'{{subject_id:02d}}'")
    for i, text in enumerate(array):
        _check_text(file, f"{field}[{i}]", text)
    return array


def _label_array(task: str, labels: Any) -> np.ndarray:
    """Bring labels to the stored dtype where that loses nothing (int64 ids, float32 targets)."""
    array = np.asarray(labels)
    if task == "classification" and np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64)
    if task == "regression" and np.issubdtype(array.dtype, np.number):
        return array.astype(np.float32)
    return array


def _modality_attrs(
    file: Path,
    modalities: Mapping[str, Any],
    kinds: Mapping[str, str],
    rates: Mapping[str, float | None],
    channels: Mapping[str, Sequence[str]],
) -> dict[str, dict[str, Any]]:
    """Per-modality attributes as they will be stored; rejects metadata for absent modalities (typos)."""
    for what, mapping in (("modality_kinds", kinds), ("sampling_rates", rates), ("channel_names", channels)):
        unknown = sorted(set(mapping) - set(modalities))
        if unknown:
            raise DatasetError(file, f"/modalities/{unknown[0]}", f"{what} names {unknown} but there is no such "
                               f"modality (modalities: {sorted(modalities)})", f"fix the name in {what}")
    attrs: dict[str, dict[str, Any]] = {}
    for name in modalities:
        rate = rates.get(name)
        attrs[name] = {"kind": kinds.get(name), "sampling_rate": math.nan if rate is None else float(rate)}
        if name in channels:
            attrs[name]["channel_names"] = json.dumps(list(channels[name]))
    return attrs


def _chunk_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (min(shape[0], _rows_within(shape, _CHUNK_BYTES)), *shape[1:])


def _write_file(target: Path, c: _Content) -> None:
    """Write validated content to ``target`` (a temporary path)."""
    assert c.modalities is not None and c.labels is not None and c.subjects is not None
    with h5py.File(target, "w") as h5:
        h5.attrs.update(c.attrs)
        group = h5.create_group("modalities")
        for name, (array, attrs) in c.modalities.items():
            shape = tuple(array.shape)
            ds = _create_modality(group, name, shape, _stored_dtype(array.dtype), attrs)
            step = _rows_within(shape, _SCAN_BYTES)
            for start in range(0, shape[0], step):
                ds[start:start + step] = np.asarray(array[start:start + step], dtype=ds.dtype)
        _write_columns(h5, c)


def _stored_dtype(dtype: np.dtype) -> np.dtype:
    """uint8 video stays uint8 (4x smaller); everything else is stored as float32."""
    return np.dtype(np.uint8) if dtype == np.uint8 else np.dtype(np.float32)


def _create_modality(group: h5py.Group, name: str, shape: tuple[int, ...], dtype: np.dtype,
                     attrs: Mapping[str, Any]) -> h5py.Dataset:
    ds = group.create_dataset(name, shape=shape, dtype=dtype, chunks=_chunk_shape(shape),
                              compression="gzip", compression_opts=1, shuffle=True)
    ds.attrs.update(attrs)
    return ds


def _write_columns(h5: h5py.File, c: _Content) -> None:
    """Labels and the per-sample string columns."""
    assert c.labels is not None
    strings = h5py.string_dtype("utf-8")
    h5.create_dataset("labels", data=c.labels)
    for name, column in (("subjects", c.subjects), ("groups", c.groups), ("splits", c.splits)):
        if column is not None:
            h5.create_dataset(name, data=column, dtype=strings)


def _prepare_content(
    path: Path,
    modalities: Mapping[str, _ArrayLike],
    labels: Any,
    subjects: Sequence[str] | np.ndarray,
    task: str,
    class_names: Sequence[str] | None,
    target_names: Sequence[str] | None,
    modality_kinds: Mapping[str, str],
    sampling_rates: Mapping[str, float | None] | None,
    channel_names: Mapping[str, list[str]] | None,
    groups: Sequence[str] | np.ndarray | None,
    splits: Sequence[str] | np.ndarray | None,
    description: str,
    source: str,
) -> _Content:
    """The content about to be written, in the form the shared rules inspect."""
    for name in modalities:
        _check_modality_name(path, name)
    for field, text in (("/@description", description), ("/@source", source)):
        _check_text(path, field, text)
    for field, names in (("/@class_names", class_names), ("/@target_names", target_names),
                         *((f"/modalities/{m}@channel_names", c) for m, c in (channel_names or {}).items())):
        for text in names or ():
            _check_text(path, field, str(text))
    attrs: dict[str, Any] = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "task": task,
                             "description": description, "source": source}
    if class_names is not None:
        attrs["class_names"] = json.dumps(list(class_names))
    if target_names is not None:
        attrs["target_names"] = json.dumps(list(target_names))
    modality_attrs = _modality_attrs(path, modalities, modality_kinds, sampling_rates or {}, channel_names or {})
    return _Content(file=path, attrs=attrs,
                    modalities={name: (modalities[name], modality_attrs[name]) for name in modalities},
                    labels=_label_array(task, labels),
                    subjects=_string_column(path, "/subjects", subjects),
                    groups=_string_column(path, "/groups", groups),
                    splits=_string_column(path, "/splits", splits))


def write_dataset(
    path: str | Path,
    *,
    modalities: dict[str, np.ndarray],
    labels: Sequence[int] | Sequence[float] | np.ndarray,
    subjects: Sequence[str] | np.ndarray,
    task: str,
    class_names: Sequence[str] | None = None,
    target_names: Sequence[str] | None = None,
    modality_kinds: dict[str, str],
    sampling_rates: dict[str, float | None] | None = None,
    channel_names: dict[str, list[str]] | None = None,
    groups: Sequence[str] | np.ndarray | None = None,
    splits: Sequence[str] | np.ndarray | None = None,
    description: str = "",
    source: str = "",
) -> Path:
    """Validate arrays and write them as a privkd dataset file.

    Everything is checked before anything is written, with the validator's
    rules, and the file appears only once complete (see :func:`privkd.atomic.write_atomic`).
    Modalities are stored as float32 (uint8 video stays uint8), chunked along
    the sample axis and lightly compressed (gzip level 1 + shuffle) for cheap
    per-sample reads. For data that does not fit in memory use
    :func:`write_streamed_dataset`.
    """
    path = Path(path)
    arrays = {name: np.asarray(array) for name, array in modalities.items()}
    content = _prepare_content(path, arrays, labels, subjects, task, class_names, target_names, modality_kinds,
                               sampling_rates, channel_names, groups, splits, description, source)
    _check_content(content, check_values=True)
    return write_atomic(path, lambda tmp: _write_file(tmp, content))


@dataclass(frozen=True)
class _PendingArray:
    """Shape and dtype of a modality whose samples are still to be produced."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def __getitem__(self, key: Any) -> Any:
        raise TypeError("the samples of a streamed modality are not available before they are written")


class _BlockWriter:
    """Buffers streamed samples and writes them one chunk of rows at a time.

    Writing row by row into a compressed chunk would recompress the chunk once per row.
    """

    def __init__(self, ds: h5py.Dataset) -> None:
        self.ds = ds
        self.rows = ds.chunks[0]
        self.buffer = np.empty((self.rows, *ds.shape[1:]), dtype=ds.dtype)
        self.start = 0
        self.filled = 0

    def add(self, sample: np.ndarray) -> None:
        self.buffer[self.filled] = sample
        self.filled += 1
        if self.filled == self.rows:
            self.flush()

    def flush(self) -> None:
        self.ds[self.start:self.start + self.filled] = self.buffer[:self.filled]
        self.start += self.filled
        self.filled = 0


def _checked_sample(file: Path, name: str, index: int, sample: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """One streamed sample, checked for shape and finiteness before it is stored."""
    field = f"/modalities/{name}"
    array = np.asarray(sample)
    if array.shape != shape:
        raise DatasetError(file, field, f"sample {index} has shape {array.shape}, expected {shape}",
                           "produce every sample of a modality with the same shape")
    if dtype == np.uint8:
        if array.dtype != np.uint8:
            raise DatasetError(file, field, f"sample {index} has dtype {array.dtype} in a uint8 video modality",
                               "yield uint8 frames (0-255) for every sample")
        return array
    with np.errstate(over="ignore"):
        stored = array.astype(np.float32)
    if not np.isfinite(stored).all():
        raise DatasetError(file, field, f"NaN or inf value in sample {index}",
                           "replace or drop non-finite values before writing")
    return stored


def write_streamed_dataset(
    path: str | Path,
    *,
    sample_shapes: Mapping[str, Sequence[int]],
    samples: Iterable[Mapping[str, np.ndarray]],
    labels: Sequence[int] | Sequence[float] | np.ndarray,
    subjects: Sequence[str] | np.ndarray,
    task: str,
    class_names: Sequence[str] | None = None,
    target_names: Sequence[str] | None = None,
    modality_kinds: dict[str, str],
    uint8_modalities: Sequence[str] = (),
    sampling_rates: dict[str, float | None] | None = None,
    channel_names: dict[str, list[str]] | None = None,
    groups: Sequence[str] | np.ndarray | None = None,
    splits: Sequence[str] | np.ndarray | None = None,
    description: str = "",
    source: str = "",
) -> Path:
    """Write a dataset whose modality arrays are produced one sample at a time.

    For importers of video or long recordings: labels, subjects and metadata are known
    (and fully checked) before the first sample is decoded; ``samples`` then yields, in
    label order, one ``{modality: array}`` per sample with the shapes of ``sample_shapes``.
    ``uint8_modalities`` names video modalities stored as uint8. Each sample is checked
    as it arrives; any failure, including an exception raised by the ``samples``
    iterator itself, leaves no file behind (see :func:`privkd.atomic.write_atomic`).
    """
    path = Path(path)
    n = len(labels)
    dtypes = {name: np.dtype(np.uint8 if name in uint8_modalities else np.float32) for name in sample_shapes}
    pending = {name: _PendingArray((n, *map(int, shape)), dtypes[name]) for name, shape in sample_shapes.items()}
    content = _prepare_content(path, pending, labels, subjects, task, class_names, target_names, modality_kinds,
                               sampling_rates, channel_names, groups, splits, description, source)
    _check_content(content, check_values=False)

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as h5:
            h5.attrs.update(content.attrs)
            group = h5.create_group("modalities")
            assert content.modalities is not None
            writers = {name: _BlockWriter(_create_modality(group, name, array.shape, array.dtype, attrs))
                       for name, (array, attrs) in content.modalities.items()}
            count = 0
            for count, sample in enumerate(samples, start=1):
                if count > n:
                    break
                missing = sorted(set(writers) - set(sample))
                if missing:
                    raise DatasetError(path, f"/modalities/{missing[0]}", f"sample {count - 1} lacks {missing}",
                                       "yield every modality for every sample")
                for name, writer in writers.items():
                    writer.add(_checked_sample(path, name, count - 1, sample[name], pending[name].shape[1:],
                                               dtypes[name]))
            if count != n:
                produced = f"more than {n}" if count > n else str(count)
                raise DatasetError(path, "/labels", f"{n} labels but {produced} samples were produced",
                                   "yield exactly one sample per label")
            for writer in writers.values():
                writer.flush()
            _write_columns(h5, content)

    return write_atomic(path, write)


# ---------------------------------------------------------------------- describe


def _count_table(names: Sequence[str], counts: Sequence[int]) -> list[str]:
    width = max(len(n) for n in names)
    return [f"  {name:<{width}}  {count}" for name, count in zip(names, counts)]


def _labels_section(info: DatasetInfo, labels: np.ndarray) -> list[str]:
    if info.class_names is not None:
        counts = np.bincount(labels, minlength=len(info.class_names))
        names = [f"{i} {name}" for i, name in enumerate(info.class_names)]
        return [f"Classes ({len(names)}, samples per class):", *_count_table(names, counts.tolist())]
    columns = labels.reshape(len(labels), -1)
    names = info.target_names or [f"target_{j}" for j in range(columns.shape[1])]
    lines = [f"Targets ({len(names)}):"]
    for name, column in zip(names, columns.T):
        lines.append(f"  {name}: min {column.min():.4g}, mean {column.mean():.4g}, max {column.max():.4g}")
    return lines


def _modality_line(m: ModalityInfo) -> str:
    rate = "no sampling rate" if m.sampling_rate is None else f"{m.sampling_rate:g} Hz"
    text = f"  {m.name}: {m.kind}, per-sample shape {m.sample_shape}, {rate}"
    return f"{text}, channels {', '.join(m.channel_names)}" if m.channel_names else text


def describe(info: DatasetInfo) -> str:
    """Human-readable summary used by ``privkd data info PATH``.

    Reads the labels and subjects again from ``info.path`` for the counts.
    """
    with h5py.File(info.path, "r") as h5:
        labels = np.asarray(h5["labels"][()])
        subjects = np.asarray(h5["subjects"].asstr()[()], dtype=str)
    names, counts = np.unique(subjects, return_counts=True)
    lines = [f"Dataset: {info.path}"]
    lines += [f"{key}: {value}" for key, value in (("Description", info.description), ("Source", info.source)) if value]
    lines += [f"Task: {info.task}", f"Samples: {info.n_samples}", "Modalities:"]
    lines += [_modality_line(m) for m in info.modalities.values()]
    lines += _labels_section(info, labels)
    lines += [f"Subjects ({len(names)}, samples per subject):", *_count_table(names.tolist(), counts.tolist())]
    return "\n".join(lines)
