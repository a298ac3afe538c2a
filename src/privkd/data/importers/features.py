"""Import pre-extracted per-utterance features in the IEMOCAP style.

Layout::

    <root>/labels.csv                        utterance_id,session,speaker,label
                                             Ses01F_impro01_F000,Ses01,Ses01F,neu
    <root>/<modality>/<utterance_id>.npy     e.g. audio/, text/, visual/

Each array is a vector ``(D,)`` or a sequence ``(T, D)`` (time first, ``T`` varying per
utterance, ``D`` fixed per modality).

* ``sequence="mean"`` (default) mean-pools sequences over time to ``(D,)`` (vectors are kept
  as they are); the modality is of kind ``"features"``.
* ``sequence="pad"`` zero-pads at the end, or crops the end, every sequence to ``length``
  steps (default: the longest sequence of the modality) and stores it as ``(D, length)``
  (channels = feature dimensions, time = steps), kind ``"signal"``. The sampling rate is set
  to **1.0 per step, a nominal value**: the format requires a rate for signals, but the steps of
  pre-extracted features (frames, tokens) usually have no fixed duration. Vector features
  cannot be padded; use ``sequence="mean"`` for those.
* subjects = the ``subject_column`` values (the sessions by default, so privkd's subject folds
  become leave-one-session-out: 5 IEMOCAP sessions, ``n_folds=5``); groups = the
  ``group_column`` values (the speakers) when that column exists. A ``group_column`` other than
  the default ``"speaker"`` must exist; ``group_column=None`` stores no groups.
* Labels are strings; ``merge={"exc": "hap"}`` renames labels first, then ``classes=[...]`` keeps
  only the utterances with those labels (e.g. IEMOCAP's 4 classes). Class ids follow the
  sorted order of the remaining labels (numeric order when all are integers), and
  ``class_names`` is that sorted list.

The labels CSV, its columns, every expected file and every array header (rank, dimension) are
checked before any array is read; arrays are then streamed one utterance at a time into the
output. Every problem raises :class:`~privkd.errors.DatasetError` naming the source file, and no
output file is left behind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from privkd.data.h5format import write_streamed_dataset
from privkd.data.importers.common import progress as progress_bar
from privkd.data.importers.common import require_dir, require_file, source_error
from privkd.data.importers.folder import (
    _check_finite,
    _load_npy,
    _npy_header,
    _npy_modalities,
)
from privkd.data.importers.table import _csv_where, _require_columns, _strings

__all__ = ["import_features"]

SEQUENCE_MODES = ("mean", "pad")


def _class_order(labels: Sequence[str]) -> list[str]:
    """Sorted unique labels; numerically when every label is an integer ("2" before "10")."""
    unique = sorted(set(labels))
    try:
        return sorted(unique, key=int)
    except ValueError:
        return unique


def _read_labels(path: Path, columns: Mapping[str, str | None]) -> tuple[pd.DataFrame, list[str]]:
    try:
        present = [str(c) for c in pd.read_csv(path, nrows=0, skipinitialspace=True).columns]
    except Exception as exc:  # empty file, bad quoting, not text
        raise source_error(path, f"cannot read the labels CSV ({type(exc).__name__}: {exc})",
                           "write a comma-separated file with a header line utterance_id,session,speaker,label") from exc
    _require_columns(path, present, columns)
    try:
        frame = pd.read_csv(path, dtype=str, skipinitialspace=True)
    except Exception as exc:
        raise source_error(path, f"cannot read the labels CSV ({type(exc).__name__}: {exc})",
                           "fix the CSV syntax (one comma-separated row per utterance)") from exc
    if len(frame) == 0:
        raise source_error(path, "the labels CSV has no rows", "add one row per utterance")
    return frame, present


def _file_shapes(modality: str, paths: Sequence[Path], sequence: str) -> tuple[int, list[tuple[int, ...]]]:
    """Feature dimension D of ``modality`` and the shape of every file, from the headers only."""
    dim, reference, shapes = None, None, []
    for path in paths:
        shape, _ = _npy_header(path)
        if len(shape) not in (1, 2):
            raise source_error(path, f"array of shape {shape}: expected a feature vector (D,) or a sequence (T, D)",
                               "save one vector or one time-first sequence per utterance")
        if 0 in shape:
            raise source_error(path, f"empty array of shape {shape}",
                               "save at least one step and one feature dimension, or drop the utterance")
        if len(shape) == 1 and sequence == "pad":
            raise source_error(path, f"'{modality}' holds a feature vector of shape {shape}, which has no time "
                               "axis to pad", f"use sequence='mean' (vectors are kept as they are), or save "
                               f"'{modality}' as (T, D) sequences")
        if dim is None:
            dim, reference = shape[-1], path
        elif shape[-1] != dim:
            raise source_error(path, f"feature dimension {shape[-1]} (shape {shape}) differs from dimension {dim} "
                               f"of {reference}", f"give every '{modality}' array the same last axis D "
                               "(the same feature extractor for all utterances)")
        shapes.append(shape)
    assert dim is not None
    return dim, shapes


def import_features(
    src: str | Path,
    dst: str | Path,
    *,
    labels_csv: str | Path | None = None,
    id_column: str = "utterance_id",
    subject_column: str = "session",
    label_column: str = "label",
    group_column: str | None = "speaker",
    modalities: Sequence[str] | None = None,
    sequence: str = "mean",
    length: int | None = None,
    classes: Sequence[str] | None = None,
    merge: Mapping[str, str] | None = None,
    progress: bool = True,
) -> Path:
    """Import IEMOCAP-style pre-extracted features (see the module docstring) into the privkd dataset ``dst``.

    ``labels_csv`` defaults to ``<src>/labels.csv`` (a relative path is taken relative to
    ``src``); ``modalities`` defaults to every subfolder of ``src`` holding ``.npy`` files.
    Returns ``dst``.
    """
    src, dst = require_dir(src, "features", "check the path to the folder holding labels.csv and the "
                           "modality folders"), Path(dst)
    if sequence not in SEQUENCE_MODES:
        raise source_error(src, f"sequence is {sequence!r}, expected one of {list(SEQUENCE_MODES)}",
                           "pass sequence='mean' (pool over time) or sequence='pad' (pad/crop to length)",
                           field="sequence")
    if length is not None and (sequence != "pad" or isinstance(length, bool) or not isinstance(length, int)
                               or length < 1):
        raise source_error(src, f"length is {length!r} with sequence={sequence!r}",
                           "give a positive integer length, and only with sequence='pad'", field="length")
    labels_path = require_file(src / (labels_csv if labels_csv is not None else "labels.csv"), "labels CSV",
                               "write labels.csv (utterance_id,session,speaker,label) into the features folder, "
                               "or pass labels_csv=")

    required: dict[str, str | None] = {id_column: "id_column", subject_column: "subject_column",
                                       label_column: "label_column"}
    if group_column is not None and group_column != "speaker":
        required[group_column] = "group_column"
    frame, present = _read_labels(labels_path, required)
    use_groups = group_column is not None and group_column in present

    ids = _strings(labels_path, frame[id_column], id_column, _csv_where, "utterance id")
    seen: dict[str, int] = {}
    for i, uid in enumerate(ids):
        if uid in seen:
            raise source_error(labels_path, f"utterance '{uid}' is listed twice ({_csv_where(seen[uid])} and "
                               f"{_csv_where(i)})", "list every utterance once", field=f"column {id_column}, "
                               f"{_csv_where(i)}")
        seen[uid] = i
    subjects = _strings(labels_path, frame[subject_column], subject_column, _csv_where, "subject")
    groups = _strings(labels_path, frame[group_column], group_column, _csv_where, "group") if use_groups else None
    labels = _strings(labels_path, frame[label_column], label_column, _csv_where, "label")

    merge = dict(merge or {})
    labels = [merge.get(label, label) for label in labels]
    keep = list(range(len(ids)))
    if classes is not None:
        wanted = [str(c) for c in classes]
        absent = [c for c in wanted if c not in set(labels)]
        if absent:
            raise source_error(labels_path, f"classes {absent} have no utterance (labels after merge: "
                               f"{_class_order(labels)})", "fix the class names in classes= (or merge=)",
                               field=f"column {label_column}")
        keep = [i for i in keep if labels[i] in set(wanted)]
    ids, subjects, labels = [ids[i] for i in keep], [subjects[i] for i in keep], [labels[i] for i in keep]
    groups = None if groups is None else [groups[i] for i in keep]
    class_names = _class_order(labels)
    index = {name: i for i, name in enumerate(class_names)}
    class_ids = np.array([index[label] for label in labels], dtype=np.int64)

    if modalities is None:
        names = _npy_modalities(src)
        if not names:
            raise source_error(src, "no modality folder: no subfolder holds .npy files",
                               "save each modality's features as <root>/<modality>/<utterance_id>.npy")
    else:
        names = [require_dir(src / m, f"modality '{m}'", f"create {src / m} or fix the name in modalities=").name
                 for m in modalities]

    paths: dict[str, list[Path]] = {}
    for m in names:
        paths[m] = [src / m / f"{uid}.npy" for uid in ids]
        missing = [i for i, p in enumerate(paths[m]) if not p.is_file()]
        if missing:
            i = missing[0]
            raise source_error(paths[m][i], f"utterance '{ids[i]}' ({labels_path.name} {_csv_where(keep[i])}) has no "
                               f"'{m}' features; {len(missing)} of {len(ids)} utterances lack one",
                               f"save its features as {src / m}/<utterance_id>.npy, or drop the utterance from "
                               f"{labels_path.name}")

    shapes, kinds, rates, file_shapes = {}, {}, {}, {}
    for m in names:
        dim, file_shapes[m] = _file_shapes(m, paths[m], sequence)
        if sequence == "mean":
            shapes[m], kinds[m], rates[m] = (dim,), "features", None
        else:
            shapes[m], kinds[m], rates[m] = (dim, length or max(s[0] for s in file_shapes[m])), "signal", 1.0

    def samples():
        for i in progress_bar(range(len(ids)), f"Importing {src.name}", total=len(ids), enabled=progress):
            sample = {}
            for m in names:
                path = paths[m][i]
                array = _load_npy(path, file_shapes[m][i])
                _check_finite(path, array)
                array = array.astype(np.float64)
                if sequence == "mean":
                    sample[m] = array.mean(axis=0) if array.ndim == 2 else array
                else:
                    dim, total = shapes[m]
                    padded = np.zeros((dim, total), dtype=np.float64)
                    t = min(total, array.shape[0])
                    padded[:, :t] = array[:t].T
                    sample[m] = padded
            yield sample

    mode = ("sequences mean-pooled over time (kind 'features')" if sequence == "mean" else
            "sequences zero-padded/cropped at the end to (D, length) steps (kind 'signal'; the sampling "
            "rate 1.0 is nominal: one unit per step)")
    kept = f"{len(ids)} utterances" + ("" if classes is None else f" of {len(frame)} (classes {class_names})")
    description = (f"Pre-extracted features (IEMOCAP-style layout) from {src.name}: {kept}; modalities "
                   f"{', '.join(f'{m} {shapes[m]}' for m in names)}; {mode}; subjects = '{subject_column}'"
                   + (f", groups = '{group_column}'" if use_groups else ""))
    return write_streamed_dataset(
        dst, sample_shapes=shapes, samples=samples(), labels=class_ids, subjects=subjects,
        task="classification", class_names=class_names, modality_kinds=kinds, sampling_rates=rates,
        groups=groups, description=description, source=str(src))
