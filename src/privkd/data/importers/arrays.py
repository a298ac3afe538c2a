"""A privkd dataset file straight from numpy arrays: :func:`from_arrays`.

For data already in memory (a notebook, an sktime/aeon loader, the scikit-learn estimators
of :mod:`privkd.sklearn`), without the table or folder layouts the importers read. It is
the importers' conventions in one call: labels of any type (strings or integers become class
ids in the sorted order of the unique values, floats become regression targets), subject
ids of any type (stored as their ``str``), each modality's kind from the rank of one
sample, and data without subject ids accepted only when ``no_subject_ids=True`` says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privkd.data.h5format import MODALITY_KINDS, write_dataset
from privkd.data.importers.folder import DEFAULT_KINDS
from privkd.data.importers.table import _labels, _row_where
from privkd.errors import DatasetError

__all__ = ["from_arrays", "recording_ids"]


def recording_ids(n: int, prefix: str = "recording") -> list[str]:
    """One id per recording (``recording-0007``), zero-padded so they sort in order: the
    ``/subjects`` of data without subject ids, where each recording stands alone."""
    width = len(str(max(n - 1, 0)))
    return [f"{prefix}-{i:0{width}d}" for i in range(n)]


def _subjects(path: Path, n: int, subjects: Sequence[Any] | np.ndarray | None, no_subject_ids: bool) -> list[str]:
    if subjects is None:
        if not no_subject_ids:
            raise DatasetError(path, "/subjects", "no subject ids were given: privkd holds out whole subjects so "
                               "that a score says how the model does on people it never saw",
                               "pass subjects= (one id per sample), or no_subject_ids=True to make every sample its "
                               "own recording (results are then called recording-independent: recordings of one "
                               "person may sit in both training and test)")
        return recording_ids(n)
    if no_subject_ids:
        raise DatasetError(path, "/subjects", "both subjects= and no_subject_ids=True were given",
                           "keep subjects= (the data has subject ids) or drop it (it has none)")
    ids = [str(s) for s in np.asarray(subjects, dtype=object).ravel()]
    if len(ids) != n:
        raise DatasetError(path, "/subjects", f"{len(ids)} subject ids for {n} labels",
                           "give one subject id per sample, in the order of the labels")
    return ids


def _label_frame(path: Path, labels: Any, target_names: Sequence[str] | None) -> tuple[pd.DataFrame, list[str]]:
    """The labels as table columns, so the table importer's label rules apply unchanged."""
    array = np.asarray(labels)
    if array.ndim == 1:
        name = target_names[0] if target_names else "label"
        return pd.DataFrame({name: array}), [name]
    if array.ndim == 2:
        names = list(target_names) if target_names is not None else [f"target_{j}" for j in range(array.shape[1])]
        if len(names) != array.shape[1]:
            raise DatasetError(path, "/@target_names", f"{len(names)} target names for {array.shape[1]} label "
                               "columns", "give one name per column of labels")
        return pd.DataFrame(dict(zip(names, array.T, strict=True))), names
    raise DatasetError(path, "/labels", f"labels have shape {array.shape}",
                       "pass one label per sample (shape (N,)) or one row of regression targets per sample (N, T)")


def _kinds(path: Path, arrays: Mapping[str, np.ndarray], kinds: Mapping[str, str]) -> dict[str, str]:
    """Each modality's kind: as given, else from the rank of one sample (1 features, 2 signal, ...)."""
    out = {}
    for name, array in arrays.items():
        kind = kinds.get(name, DEFAULT_KINDS.get(array.ndim - 1))
        if kind not in MODALITY_KINDS:
            raise DatasetError(path, f"/modalities/{name}", f"samples of shape {array.shape[1:]} have no default kind"
                               if name not in kinds else f"kind {kind!r} is not one of {list(MODALITY_KINDS)}",
                               f"pass kinds={{'{name}': KIND}} with KIND one of {list(MODALITY_KINDS)}")
        out[name] = kind
    return out


def from_arrays(
    path: str | Path,
    modalities: Mapping[str, Any],
    labels: Any,
    *,
    subjects: Sequence[Any] | np.ndarray | None = None,
    no_subject_ids: bool = False,
    task: str | None = None,
    kinds: Mapping[str, str] | None = None,
    sampling_rates: Mapping[str, float] | None = None,
    channel_names: Mapping[str, Sequence[str]] | None = None,
    target_names: Sequence[str] | None = None,
    groups: Sequence[Any] | np.ndarray | None = None,
    splits: Sequence[Any] | np.ndarray | None = None,
    description: str = "",
    source: str = "",
) -> Path:
    """Write ``modalities`` (name -> array whose first axis is the sample) and ``labels`` as the
    privkd dataset ``path``; returns ``path``.

    ``subjects`` holds one id per sample (any type, stored as ``str``); without them pass
    ``no_subject_ids=True``: every sample becomes its own recording and results are described
    as recording-independent. ``labels``: strings, integers or booleans give classification
    (class ids in sorted order, ``class_names`` the values as strings), floats or a 2-D array
    regression (``target_names`` naming the columns); ``task`` forces one. A modality's kind
    defaults by the rank of one sample: ``(D,)`` features, ``(channels, time)`` signal,
    ``(freq, time, channels)``-like rank 3 spectrogram, rank 4 video; time-based kinds need
    their rate in ``sampling_rates`` (Hz). Everything is checked before the file is written.
    """
    path = Path(path)
    arrays = {name: np.asarray(array) for name, array in modalities.items()}
    kinds = _kinds(path, arrays, kinds or {})
    rates = dict(sampling_rates or {})
    for name, kind in kinds.items():
        if kind != "features" and name not in rates:
            raise DatasetError(path, f"/modalities/{name}@sampling_rate", f"'{name}' is a {kind} modality "
                               f"(samples of shape {arrays[name].shape[1:]}) without a sampling rate",
                               f"pass sampling_rates={{'{name}': HZ}}, or kinds={{'{name}': 'features'}} if its "
                               "values are not sampled in time")
    frame, columns = _label_frame(path, labels, target_names)
    task, label_array, class_names, names = _labels(path, frame, columns, task, _row_where)
    independence = "recording" if no_subject_ids else "subject"
    return write_dataset(
        path, modalities=arrays, labels=label_array, subjects=_subjects(path, len(frame), subjects, no_subject_ids),
        task=task, class_names=class_names, target_names=names, modality_kinds=kinds, sampling_rates=rates,
        channel_names={name: [str(c) for c in names_] for name, names_ in (channel_names or {}).items()},
        groups=None if groups is None else [str(g) for g in groups],
        splits=None if splits is None else [str(s) for s in splits],
        description=description, source=source, independence=independence)
