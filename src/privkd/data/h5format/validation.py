"""Reading a dataset file and checking it against the format's rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from privkd.data.h5format.rules import _check_content, _Content
from privkd.data.h5format.spec import DatasetInfo
from privkd.errors import DatasetError

__all__ = ["read_info", "validate_dataset"]


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
