"""Reading a dataset file and checking it against the format's rules."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from privkd.data.h5format.rules import (
    _check_content,
    _check_finite,
    _check_structure,
    _Content,
)
from privkd.data.h5format.spec import MAX_COLUMN_BYTES, MAX_SAMPLES, DatasetInfo
from privkd.errors import DatasetError

__all__ = ["read_info", "scan_modality_values", "validate_dataset"]


_MAX_LINK_HOPS = 32
_SELF_CONTAINED = ("a privkd dataset is one self-contained file: write the data into it (re-create it with "
                   "privkd.data.write_dataset or a privkd importer, or copy the object in with h5copy)")


def _hard_path(file: Path, h5: h5py.File, path: str) -> str | None:
    """The path of the object ``path`` names, reached through hard links only; ``None`` when absent.

    Each link on the way is looked at before it is followed: an external link (another file)
    is refused, a soft link is replaced by its target path and that is checked the same way, so
    a soft link cannot lead outside the file either. h5py would follow both silently.
    """
    parts = [p for p in path.split("/") if p and p != "."]
    hard: list[str] = []
    hops = 0
    while parts:
        name = parts.pop(0)
        here = "/" + "/".join([*hard, name])
        try:
            link = h5.get(here, getlink=True)
        except (KeyError, TypeError, ValueError, OSError) as exc:  # a link h5py cannot represent, a path through an array
            raise DatasetError(file, path, f"the link {here} on the way to it cannot be followed ({exc})",
                               _SELF_CONTAINED) from exc
        if link is None:
            return None
        if isinstance(link, h5py.ExternalLink):
            raise DatasetError(file, path, f"{here} is an external link to '{link.path}' in the file "
                               f"'{link.filename}'; privkd reads nothing outside the dataset file", _SELF_CONTAINED)
        if isinstance(link, h5py.SoftLink):
            hops += 1
            if hops > _MAX_LINK_HOPS:
                raise DatasetError(file, path, f"soft links from {here} loop or nest deeper than {_MAX_LINK_HOPS}",
                                   _SELF_CONTAINED)
            target = str(link.path)
            if target.startswith("/"):
                hard = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        if not isinstance(link, h5py.HardLink):
            raise DatasetError(file, path, f"{here} is a link of an unknown type ({type(link).__name__})",
                               _SELF_CONTAINED)
        hard.append(name)
    return "/" + "/".join(hard)


def _get(file: Path, h5: h5py.File, path: str) -> Any:
    """``h5[path]`` (``None`` when absent) once every link on the way is known to stay in the
    file, and, for an array, once its bytes are known to be stored in the file too."""
    hard = _hard_path(file, h5, path)
    if hard is None:
        return None
    obj = h5[hard]
    if isinstance(obj, h5py.Dataset):
        _check_storage(file, path, obj)
    return obj


def _check_storage(file: Path, field: str, dataset: h5py.Dataset) -> None:
    """Refuse an array whose values live in other files: external raw storage (``external=``)
    or a virtual dataset mapping another file's arrays."""
    external = dataset.external
    if external:
        raise DatasetError(file, field, f"its values are stored outside the file, in '{external[0][0]}' (HDF5 "
                           "external storage); privkd reads nothing outside the dataset file", _SELF_CONTAINED)
    if dataset.is_virtual:
        others = sorted({source.file_name for source in dataset.virtual_sources() if source.file_name != "."})
        if others:
            raise DatasetError(file, field, f"a virtual dataset mapping arrays of other files ({', '.join(others)}); "
                               "privkd reads nothing outside the dataset file", _SELF_CONTAINED)


def _check_column(file: Path, field: str, obj: Any) -> None:
    """Before /labels, /subjects, /groups or /splits is read whole: its declared size is plausible."""
    if not isinstance(obj, h5py.Dataset) or obj.ndim < 1:
        return  # the rules name what is wrong with it
    count = int(obj.shape[0])
    if count > MAX_SAMPLES:
        raise DatasetError(file, field, f"declares {count} samples, more than the {MAX_SAMPLES} privkd reads",
                           "split the data into several dataset files, or check that the file was written by a "
                           "privkd importer")
    declared = math.prod(obj.shape) * obj.dtype.itemsize
    if declared > MAX_COLUMN_BYTES:
        raise DatasetError(file, field, f"declared shape {tuple(obj.shape)} is {declared / 2**30:.3g} GiB, more than "
                           f"the {MAX_COLUMN_BYTES / 2**30:g} GiB privkd reads whole",
                           "store one entry (a label, a short id) per sample, or check that the file was written by a "
                           "privkd importer")


def _check_strings(file: Path, field: str, obj: Any) -> None:
    if obj is not None and (not isinstance(obj, h5py.Dataset) or h5py.check_string_dtype(obj.dtype) is None):
        raise DatasetError(file, field, "is not an array of strings",
                           f"store {field} as UTF-8 strings (h5py.string_dtype()), one per sample")


def _read_strings(obj: Any) -> np.ndarray | None:
    """Decode a string column to an object array of ``str``; ``None`` when absent."""
    return None if obj is None else np.asarray(obj.asstr()[()], dtype=object)


def _read_content(file: Path, h5: h5py.File) -> _Content:
    """Every object the rules look at, each reached only through links that stay in the file;
    the shape-only rules and the size bounds run before anything is read whole."""
    group = _get(file, h5, "/modalities")
    modalities = None
    if isinstance(group, h5py.Group):
        modalities = {}
        for name in group:  # link names only: nothing is followed yet
            field = f"/modalities/{name}"
            obj = _get(file, h5, field)
            if not isinstance(obj, h5py.Dataset):
                raise DatasetError(file, field, "is a group, not an array",
                                   "store each modality as one array whose first axis is the sample")
            modalities[name] = (obj, obj.attrs)
    labels = _get(file, h5, "/labels")
    if labels is not None and not isinstance(labels, h5py.Dataset):
        raise DatasetError(file, "/labels", "is a group, not an array", "write one label per sample to /labels")
    columns = {field[1:]: _get(file, h5, field) for field in ("/subjects", "/groups", "/splits")}
    for name, obj in columns.items():
        _check_strings(file, f"/{name}", obj)
    unread = _Content(file=file, attrs=h5.attrs, modalities=modalities, labels=labels, **columns)
    _check_structure(unread)  # shapes only: counts agree, before any column is read whole
    for field, obj in (("/labels", labels), *((f"/{name}", obj) for name, obj in columns.items())):
        _check_column(file, field, obj)
    return _Content(file=file, attrs=h5.attrs, modalities=modalities,
                    labels=None if labels is None else np.asarray(labels[()]),
                    **{name: _read_strings(obj) for name, obj in columns.items()})


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


def scan_modality_values(path: str | Path, names: list[str] | tuple[str, ...]) -> None:
    """Scan the modalities ``names`` of a dataset file for NaN, inf and overflowing values, block
    by block, and raise a :class:`DatasetError` naming the first bad sample.

    :func:`read_info` reads no values, and a dataset read lazily (too large for memory) is
    otherwise only looked at sample by sample while training: a NaN in a file not written by a
    privkd importer would be trained on, and every loss become NaN. One streaming pass before
    training refuses it instead; it reads the used modalities only.
    """
    path = Path(path)
    with _open(path) as h5:
        for name in names:
            field = f"/modalities/{name}"
            array = _get(path, h5, field)
            if not isinstance(array, h5py.Dataset):
                raise DatasetError(path, field, "no such modality array", "list a modality the file holds")
            try:
                _check_finite(path, field, array)
            except (OSError, RuntimeError) as exc:  # how h5py reports damaged content
                raise DatasetError(path, field, f"unreadable HDF5 content (truncated or corrupted: {exc})",
                                   "delete it and write it again (re-run the import or build)") from exc
