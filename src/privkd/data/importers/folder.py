"""Import any user's folder of ``.npy`` arrays described by a CSV manifest.

Layout::

    <root>/manifest.csv            sample,subject,label[,group][,split]   (one row per sample)
    <root>/<modality>/<sample>.npy one array per sample and modality, e.g. eeg/s01_t03.npy

* Modalities are the subfolders of ``<root>`` that hold ``.npy`` files (sorted by name).
* All samples of one modality share one shape. The kind defaults by the rank of a sample:
  1-D -> ``"features"``, 2-D -> ``"signal"`` (channels, time), 3-D -> ``"spectrogram"``
  (channels, freq, time), 4-D -> ``"video"`` (3, T, H, W); ``kinds={modality: kind}``
  overrides it. Signal, spectrogram and video modalities need ``sampling_rates={modality: Hz}``
  (frames per second for video). Video arrays that are ``uint8`` everywhere stay ``uint8``.
* Labels: the ``label_columns`` of the manifest, as for :func:`~privkd.data.importers.table.import_table`
  (one column of strings / integers -> classification with sorted class names; float or several
  columns -> regression; ``task=`` forces it). ``group`` and ``split`` columns are used when present.
* The manifest, its columns, every file's existence and every array header (shape, dtype) are
  checked before any array is read; the arrays are then read one sample at a time and streamed
  into the output (:func:`~privkd.data.h5format.write_streamed_dataset`), so a large folder never
  sits in memory. Any error leaves no output file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from privkd.data.h5format import MODALITY_KINDS, write_streamed_dataset
from privkd.data.importers.common import progress as progress_bar
from privkd.data.importers.common import require_dir, require_file, source_error
from privkd.data.importers.table import _csv_where, _labels, _require_columns, _strings

__all__ = ["import_folder"]

DEFAULT_KINDS = {1: "features", 2: "signal", 3: "spectrogram", 4: "video"}
# Rank a sample of each kind must have (features: any).
_KIND_RANKS = {"signal": 2, "spectrogram": 3, "video": 4}
_SAVE_FIX = "save it with numpy.save(path, array) from a numeric (float or integer) array"


# ------------------------------------------------------------- .npy helpers (shared)


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``.npy`` file from its header only (no data read)."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:  # rarer header versions: let numpy parse them
                array = np.load(path, mmap_mode="r", allow_pickle=False)
                shape, dtype = array.shape, array.dtype
    except (OSError, ValueError, EOFError) as exc:
        raise source_error(path, f"not a readable .npy file ({exc})", _SAVE_FIX) from exc
    dtype = np.dtype(dtype)
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer) or dtype == np.bool_):
        raise source_error(path, f"array of dtype {dtype}, not real numbers", _SAVE_FIX)
    return tuple(int(s) for s in shape), dtype


def _load_npy(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The array of ``path``, checked against the ``shape`` its header had."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise source_error(path, f"not a readable .npy file ({exc})", _SAVE_FIX) from exc
    if array.shape != shape:
        raise source_error(path, f"shape {array.shape} differs from the {shape} its header had when checked",
                           "do not modify the folder while it is being imported")
    return array


def _check_finite(path: Path, array: np.ndarray) -> None:
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            what = "NaN" if np.isnan(array[index]) else "inf"
            raise source_error(path, f"{what} value at index {index}",
                               "replace or drop non-finite values (interpolate short gaps, or drop the sample)")


def _npy_modalities(root: Path) -> list[str]:
    """Names of the (non-hidden) subfolders of ``root`` holding ``.npy`` files, sorted."""
    return sorted(d.name for d in root.iterdir()
                  if d.is_dir() and not d.name.startswith(".") and next(d.glob("*.npy"), None) is not None)


# --------------------------------------------------------------------- the importer


def _check_options(src: Path, modalities: Sequence[str], option: str, mapping: Mapping[str, object]) -> None:
    unknown = sorted(set(mapping) - set(modalities))
    if unknown:
        raise source_error(src, f"{option} names {unknown}, but the modalities (subfolders holding .npy files) are "
                           f"{list(modalities)}", f"fix the modality name in {option}", field=option)


def _paths(src: Path, modality: str, samples: Sequence[str], manifest: Path) -> list[Path]:
    """The file of every sample in ``modality``, all checked to exist."""
    paths = [src / modality / f"{sample}.npy" for sample in samples]
    missing = [i for i, p in enumerate(paths) if not p.is_file()]
    if missing:
        i = missing[0]
        raise source_error(paths[i], f"sample '{samples[i]}' ({manifest.name} {_csv_where(i)}) has no "
                           f"'{modality}' array; {len(missing)} of {len(paths)} samples lack one",
                           f"save every sample of {manifest.name} as {src / modality}/<sample>.npy, "
                           "or drop the samples without one from the manifest")
    return paths


def _modality_shape(paths: Sequence[Path]) -> tuple[tuple[int, ...], bool]:
    """The shape shared by all arrays, and whether they are all uint8."""
    shape, dtype = _npy_header(paths[0])
    all_uint8 = dtype == np.uint8
    for path in paths[1:]:
        other, dtype = _npy_header(path)
        if other != shape:
            raise source_error(path, f"shape {other} differs from shape {shape} of {paths[0]}",
                               "give every sample of a modality the same shape (crop or pad them to a common "
                               "length, or resample them)")
        all_uint8 = all_uint8 and dtype == np.uint8
    if len(shape) == 0 or 0 in shape:
        raise source_error(paths[0], f"shape {shape} is a scalar or has an empty axis",
                           "save at least a 1-D array, e.g. numpy.save(path, numpy.atleast_1d(x))")
    return shape, all_uint8


def _kind(src: Path, modality: str, shape: tuple[int, ...], kinds: Mapping[str, str], path: Path) -> str:
    if modality in kinds:
        kind = kinds[modality]
    elif len(shape) in DEFAULT_KINDS:
        kind = DEFAULT_KINDS[len(shape)]
    else:
        raise source_error(path, f"'{modality}' samples have rank {len(shape)} (shape {shape}); only ranks 1-4 "
                           "have a default kind", f"pass kinds={{'{modality}': 'features'}} or reshape the arrays")
    rank = _KIND_RANKS.get(kind)
    if rank is not None and len(shape) != rank:
        layout = {"signal": "(channels, time)", "spectrogram": "(channels, freq, time)", "video": "(3, T, H, W)"}
        raise source_error(path, f"a {kind} sample must have shape {layout[kind]}, but '{modality}' samples have "
                           f"shape {shape}", f"reshape the arrays, or pass kinds={{'{modality}': 'features'}}")
    if kind == "video" and shape[0] != 3:
        raise source_error(path, f"a video sample must have shape (3, T, H, W) (RGB first), but '{modality}' "
                           f"samples have shape {shape}", "store frames as (3, T, H, W), e.g. array.transpose(3, 0, 1, 2) "
                           "for (T, H, W, 3)")
    return kind


def _rate(src: Path, modality: str, kind: str, rates: Mapping[str, float]) -> float | None:
    rate = rates.get(modality)
    if rate is None:
        if kind == "features":
            return None
        raise source_error(src, f"modality '{modality}' is a {kind} modality but has no sampling rate",
                           f"pass sampling_rates={{'{modality}': <Hz>}} (frames per second for video), or "
                           f"kinds={{'{modality}': 'features'}} if its samples have no time axis",
                           field="sampling_rates")
    try:
        value = float(rate)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise source_error(src, f"sampling_rates['{modality}'] is {rate!r}", "give a positive rate in Hz",
                           field="sampling_rates")
    return value


def import_folder(
    src: str | Path,
    dst: str | Path,
    *,
    manifest: str | Path = "manifest.csv",
    label_columns: str | Sequence[str] = ("label",),
    task: str | None = None,
    kinds: Mapping[str, str] | None = None,
    sampling_rates: Mapping[str, float] | None = None,
    progress: bool = True,
) -> Path:
    """Import a folder of per-sample ``.npy`` files plus a CSV manifest into the privkd dataset ``dst``.

    ``manifest`` is relative to ``src`` unless absolute. See the module docstring for the
    layout and defaults. Returns ``dst``.
    """
    src, dst = require_dir(src, "dataset", "check the path to the folder holding manifest.csv"), Path(dst)
    manifest_path = require_file(src / manifest, "manifest",
                                 f"write a CSV manifest with columns sample,subject,label to {src / manifest}, "
                                 "or pass manifest= with its name")
    label_columns = [label_columns] if isinstance(label_columns, str) else list(label_columns)
    kinds, sampling_rates = dict(kinds or {}), dict(sampling_rates or {})

    try:
        columns = [str(c) for c in pd.read_csv(manifest_path, nrows=0).columns]
    except Exception as exc:  # empty file, bad quoting, not text
        raise source_error(manifest_path, f"cannot read the manifest ({type(exc).__name__}: {exc})",
                           "write a comma-separated file with a header line sample,subject,label") from exc
    _require_columns(manifest_path, columns, {"sample": None, "subject": None,
                                              **{c: "label_columns" for c in label_columns}})
    text = ["sample", "subject", *(c for c in ("group", "split") if c in columns)]
    try:
        frame = pd.read_csv(manifest_path, dtype={c: str for c in text})
    except Exception as exc:
        raise source_error(manifest_path, f"cannot read the manifest ({type(exc).__name__}: {exc})",
                           "fix the CSV syntax (one comma-separated row per sample)") from exc
    if len(frame) == 0:
        raise source_error(manifest_path, "the manifest has no rows", "add one row per sample")
    samples = _strings(manifest_path, frame["sample"], "sample", _csv_where, "sample")
    seen: dict[str, int] = {}
    for i, sample in enumerate(samples):
        if sample in seen:
            raise source_error(manifest_path, f"sample '{sample}' is listed twice ({_csv_where(seen[sample])} and "
                               f"{_csv_where(i)})", "list every sample once", field=f"column sample, {_csv_where(i)}")
        seen[sample] = i
    subjects = _strings(manifest_path, frame["subject"], "subject", _csv_where, "subject")
    groups = _strings(manifest_path, frame["group"], "group", _csv_where, "group") if "group" in columns else None
    splits = _strings(manifest_path, frame["split"], "split", _csv_where, "split") if "split" in columns else None
    task, labels, class_names, target_names = _labels(manifest_path, frame, label_columns, task, _csv_where)

    modalities = _npy_modalities(src)
    if not modalities:
        raise source_error(src, "no modality folder: no subfolder holds .npy files",
                           "save each modality's arrays as <root>/<modality>/<sample>.npy")
    _check_options(src, modalities, "kinds", kinds)
    for m, kind in kinds.items():
        if kind not in MODALITY_KINDS:
            raise source_error(src, f"kinds['{m}'] is {kind!r}, expected one of {list(MODALITY_KINDS)}",
                               "fix the kind", field="kinds")
    _check_options(src, modalities, "sampling_rates", sampling_rates)
    paths = {m: _paths(src, m, samples, manifest_path) for m in modalities}

    shapes, modality_kinds, rates, uint8 = {}, {}, {}, []
    for m in modalities:
        shapes[m], all_uint8 = _modality_shape(paths[m])
        modality_kinds[m] = _kind(src, m, shapes[m], kinds, paths[m][0])
        rates[m] = _rate(src, m, modality_kinds[m], sampling_rates)
        if modality_kinds[m] == "video" and all_uint8:
            uint8.append(m)

    def arrays():
        for i in progress_bar(range(len(samples)), f"Importing {src.name}", total=len(samples), enabled=progress):
            sample = {}
            for m in modalities:
                array = _load_npy(paths[m][i], shapes[m])
                _check_finite(paths[m][i], array)
                sample[m] = array
            yield sample

    kind_text = ", ".join(f"{m} ({modality_kinds[m]}, {shapes[m]})" for m in modalities)
    return write_streamed_dataset(
        dst, sample_shapes=shapes, samples=arrays(), labels=labels, subjects=subjects, task=task,
        class_names=class_names, target_names=target_names, modality_kinds=modality_kinds,
        uint8_modalities=uint8, sampling_rates=rates, groups=groups, splits=splits,
        description=f"Folder {src.name}: {len(samples)} samples from {manifest_path.name}; modalities {kind_text}",
        source=str(src))
