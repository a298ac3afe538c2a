"""Writing a dataset file, from whole arrays or from samples produced one at a time.

Everything the caller passes is checked with the validator's rules before the
first byte is written, and the file appears only once complete.
"""

from __future__ import annotations

import errno
import json
import math
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from privkd.atomic import write_atomic
from privkd.data.h5format.rules import (
    _SCAN_BYTES,
    _ArrayLike,
    _check_content,
    _Content,
    _rows_within,
)
from privkd.data.h5format.spec import FORMAT_NAME, FORMAT_VERSION
from privkd.errors import DatasetError

__all__ = ["write_dataset", "write_streamed_dataset"]

# Target size of one compressed chunk: small enough that a lazy per-sample read
# decompresses little, large enough that tiny samples (a 2 s signal window) are
# not stored one per chunk, which would bloat the file and slow full reads.
_CHUNK_BYTES = 256 * 2**10


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
    """In-memory counterpart of :func:`.validation._read_strings`: strings only, never silently ``str()``-ed.

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


SPACE_MARGIN = 8 * 2**20
"""Free bytes kept on the device beyond the next block: room for HDF5 to flush its chunk cache
and write its metadata when the file is closed."""


def _check_space(target: Path, nbytes: int) -> None:
    """Raise ``OSError(ENOSPC)`` before a write of ``nbytes`` (uncompressed) that the device has
    no room for. HDF5 cannot fail cleanly on a full disk: its write error surfaces when the file
    is closed, and the half-closed objects then crash the interpreter (a segfault, exit 139);
    checked block by block, a full disk is instead one clean error and no file."""
    free = shutil.disk_usage(target.parent).free
    if free < nbytes + SPACE_MARGIN:
        raise OSError(errno.ENOSPC, f"No space left on device: {free / 2**20:.1f} MiB free, {nbytes / 2**20:.1f} MiB "
                      f"to write next and {SPACE_MARGIN // 2**20} MiB kept for closing the file", str(target))


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
                block = np.asarray(array[start:start + step], dtype=ds.dtype)
                _check_space(target, block.nbytes)
                ds[start:start + step] = block
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
    _check_space(Path(h5.filename), c.labels.nbytes + sum(len(str(text).encode()) + 16 for column in
                                                          (c.subjects, c.groups, c.splits) if column is not None
                                                          for text in column))
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
    independence: str,
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
                             "description": description, "source": source, "independence": independence}
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
    independence: str = "subject",
) -> Path:
    """Validate arrays and write them as a privkd dataset file.

    Everything is checked before anything is written, with the validator's
    rules, and the file appears only once complete (see :func:`privkd.atomic.write_atomic`).
    Modalities are stored as float32 (uint8 video stays uint8), chunked along
    the sample axis and lightly compressed (gzip level 1 + shuffle) for cheap
    per-sample reads. For data that does not fit in memory use
    :func:`write_streamed_dataset`. ``independence="recording"`` records that ``subjects``
    holds one id per recording (data without subject ids), so that results are described as
    recording-independent (:data:`~privkd.data.h5format.spec.INDEPENDENCE`).
    """
    path = Path(path)
    arrays = {name: np.asarray(array) for name, array in modalities.items()}
    content = _prepare_content(path, arrays, labels, subjects, task, class_names, target_names, modality_kinds,
                               sampling_rates, channel_names, groups, splits, description, source, independence)
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
        _check_space(Path(self.ds.file.filename), self.buffer[:self.filled].nbytes)
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
    independence: str = "subject",
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
                               sampling_rates, channel_names, groups, splits, description, source, independence)
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
