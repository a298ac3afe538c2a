"""Run a saved student on new data: a privkd ``.h5`` dataset or a CSV / Parquet feature table.

The input is checked against what the student expects before anything is computed: every
prevalent modality present, with the sample shape it was trained on, and, where the input
says, the same modality kind, sampling rate and channel (feature column) names in the same
order. A kind, rate or channel order other than the training data's is refused with a
:class:`~privkd.errors.DatasetError` naming the modality, the field, the trained and the given
value, unless ``allow_mismatch`` (``privkd predict --allow-mismatch``) turns it into an
:class:`InputWarning`. A table's feature columns are taken by the names the student was
trained on, in training order, wherever they stand in the table. The privileged modalities
are never asked for. Predictions are written as one CSV row per sample. Values
beyond what float32 arithmetic survives are refused; values that lie many orders of magnitude
outside the training data (in training standard deviations) are scored with an
:class:`InputWarning`, since the prediction then says little.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch

from privkd.atomic import write_atomic
from privkd.data.dataset import as_float
from privkd.data.h5format import MAX_ABS_VALUE, ModalityInfo, read_info
from privkd.deploy.answers import split_rows, true_labels
from privkd.deploy.output import check_output_file
from privkd.deploy.student import LoadedStudent, load_student
from privkd.deploy.ts_input import ts_batches
from privkd.errors import DatasetError
from privkd.optional import require
from privkd.paths import refuse_output_onto_inputs

__all__ = ["TABLE_SUFFIXES", "InputWarning", "predict_arrays", "predict_file"]

TABLE_SUFFIXES = (".csv", ".parquet")
H5_SUFFIXES = (".h5", ".hdf5")
TS_SUFFIX = ".ts"
ID_COLUMNS = ("sample", "id", "subject", "group", "split")
"""Columns of a table input copied to the predictions beside the row index."""
LABEL_COLUMN = "label"
"""A classification table's label column, copied to the predictions as ``true_label``."""
FAR_FROM_TRAINING = 1e3
"""Distance from the training mean, in training standard deviations, beyond which an input value
is reported: a thousand is no outlier but other units or another preprocessing."""


class InputWarning(UserWarning):
    """An input the student scores although it never saw anything like it in training."""


# --------------------------------------------------------------------------- inputs


def _expected_text(student: LoadedStudent) -> str:
    return ", ".join(f"{name} {tuple(m.sample_shape)}" for name, m in student.inputs.items())


def _names_text(names: list[str] | tuple[str, ...]) -> str:
    shown = ", ".join(names[:8])
    return f"[{shown}{f', ... ({len(names) - 8} more)' if len(names) > 8 else ''}]"


def _rate_text(rate: float | None) -> str:
    return "none" if rate is None else f"{rate:g} Hz"


def _trained_names(entry: dict) -> tuple[str, list[str] | None]:
    """The field and the names the student was trained on along axis 1: a features
    modality's feature columns, else the channel names (``None`` when not recorded)."""
    if entry["kind"] == "features" and entry.get("feature_columns"):
        return "feature columns", list(entry["feature_columns"])
    return "channel names", list(entry["channel_names"]) if entry.get("channel_names") else None


def _mismatches(student: LoadedStudent, name: str, found: ModalityInfo) -> list[tuple[str, str]]:
    """``(field, problem)`` for each way the input modality ``found`` differs from what the
    student was trained on: kind, sampling rate, channel names and their order. What the input
    does not state (no channel names) is not a mismatch."""
    entry = student.card["inputs"][name]
    problems = []
    if found.kind != entry["kind"]:
        problems.append(("kind", (f"modality '{name}': kind is {found.kind!r} in this file, but this student was "
                                  f"trained on kind {entry['kind']!r}")))
    trained_rate, rate = entry.get("sampling_rate"), found.sampling_rate
    if (trained_rate is None) != (rate is None) or (
            trained_rate is not None and rate is not None and not math.isclose(rate, trained_rate, rel_tol=1e-6)):
        problems.append(("sampling_rate", (f"modality '{name}': sampling rate is {_rate_text(rate)} in this file, "
                                           f"but this student was trained on {_rate_text(trained_rate)}")))
    what, trained = _trained_names(entry)
    given = list(found.channel_names) if found.channel_names else None
    if trained is not None and given is not None and given != trained:
        order = " (the same names in another order)" if sorted(given) == sorted(trained) else ""
        problems.append(("channel_names", (f"modality '{name}': {what} are {_names_text(given)} in this file{order}, "
                                           f"but this student was trained on {_names_text(trained)}")))
    return problems


def _refuse_or_warn(path: Path, name: str, problems: list[tuple[str, str]], allow_mismatch: bool) -> None:
    """One error naming every mismatch (field of the first), or one warning each with ``allow_mismatch``."""
    if not problems:
        return
    if allow_mismatch:
        for field, problem in problems:
            warnings.warn(InputWarning(f"{path}: field '/modalities/{name}@{field}': {problem}; scored anyway "
                                       "(--allow-mismatch), so its predictions may mean little"), stacklevel=4)
        return
    raise DatasetError(path, f"/modalities/{name}@{problems[0][0]}", "; ".join(p for _, p in problems),
                       "give data recorded and preprocessed as the training data was (same kind, sampling rate and "
                       "channel order: see the model card), or pass --allow-mismatch (allow_mismatch=True) to score "
                       "it anyway with a warning")


def _h5_batches(student: LoadedStudent, path: Path, batch_size: int, allow_mismatch: bool = False,
                split: str | None = None) -> tuple[dict[str, np.ndarray], Iterator[dict[str, np.ndarray]]]:
    """Check a privkd dataset against the student; return its id columns (the ``row`` of each
    sample in the file, subject, group, split and the true labels) and a batch reader of the
    ``split`` part (every sample without one)."""
    info = read_info(path)  # structure only: values are checked batch by batch below
    for name, expected in student.inputs.items():
        found = info.modalities.get(name)
        if found is None:
            raise DatasetError(path, f"/modalities/{name}",
                               f"no modality '{name}', which this student needs (it expects {_expected_text(student)}; "
                               f"the file has {', '.join(info.modalities) or 'none'})",
                               f"give a dataset holding '{name}' with per-sample shape {tuple(expected.sample_shape)}")
        if tuple(found.sample_shape) != tuple(expected.sample_shape):
            raise DatasetError(path, f"/modalities/{name}",
                               f"per-sample shape {tuple(found.sample_shape)}, but this student expects {name} samples "
                               f"shaped {tuple(expected.sample_shape)}",
                               "resample / window the data the way the training data was (see the model card)")
    for name, found in ((n, info.modalities[n]) for n in student.inputs):
        _refuse_or_warn(path, name, _mismatches(student, name, found), allow_mismatch)
    with h5py.File(path, "r") as h5:
        columns = {name: np.asarray(h5[f"{name}s"].asstr()[()], dtype=str)
                   for name in ("subject", "group", "split") if f"{name}s" in h5}
        rows = split_rows(path, "/splits", columns.get("split"), split, info.n_samples)
        ids = {"row": rows, **{name: column[rows] for name, column in columns.items()},
               **true_labels(student, np.asarray(h5["labels"][()])[rows])}

    def batches() -> Iterator[dict[str, np.ndarray]]:
        with h5py.File(path, "r") as h5:
            group = h5["modalities"]
            for start in range(0, len(rows), batch_size):
                # a slice where the rows run on (every sample), else h5py's increasing index list
                chosen = rows[start:start + batch_size]
                where = slice(int(chosen[0]), int(chosen[-1]) + 1) if split is None else chosen
                yield {name: as_float(group[name][where]) for name in student.prevalent}

    return ids, batches()


def _table_columns(path: Path) -> list[str]:
    """The header as written: pandas would rename a second ``eda.mean`` to ``eda.mean.1``."""
    if path.suffix.lower() != ".csv":
        require("pyarrow.parquet", "parquet", "reading a Parquet table")
    try:
        if path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8-sig") as handle:  # as pandas reads it: no BOM, blank lines skipped
                columns = next((row for row in csv.reader(handle) if row), [])
        else:
            import pyarrow.parquet as pq

            columns = [str(c) for c in pq.read_schema(path).names]
    except Exception as exc:  # pandas / pyarrow report unreadable files with many exception types
        raise DatasetError(path, "/", f"cannot read the table ({type(exc).__name__}: {exc})",
                           "give a valid CSV (comma-separated, header line) or Parquet file") from exc
    repeated = next((c for i, c in enumerate(columns) if c in columns[:i]), None)
    if repeated is not None:
        raise DatasetError(path, f"column {repeated}", f"the column name '{repeated}' appears more than once",
                           "give every column its own name (drop or rename the copy)")
    return columns


def _table_batches(student: LoadedStudent, path: Path, batch_size: int,
                   split: str | None = None) -> tuple[dict[str, np.ndarray], Iterator[dict[str, np.ndarray]]]:
    """Check a feature table against the student; return its id and true-label columns and a
    batch reader of the rows whose ``split`` column says ``split`` (every row without one)."""
    not_vectors = {n: m for n, m in student.inputs.items() if m.kind != "features" or len(m.sample_shape) != 1}
    if not_vectors:
        name, m = next(iter(not_vectors.items()))
        raise DatasetError(path, "/", f"a table can only feed 1-D feature vectors, but this student's input '{name}' "
                           f"is a {m.kind} modality shaped {tuple(m.sample_shape)}",
                           "give a privkd .h5 dataset (import the raw data with `privkd data import ...`)")
    columns = _table_columns(path)
    selected: dict[str, list[str]] = {}
    for name, m in student.inputs.items():
        n_features = m.sample_shape[0]
        named = student.card["inputs"][name].get("feature_columns")
        if named:
            present = set(columns)
            # a column is found by its name, or prefixed with the modality (channel names of a hand-written dataset)
            named = [c if c in present or f"{name}.{c}" not in present else f"{name}.{c}" for c in named]
            missing = [c for c in named if c not in present]
            if missing:
                raise DatasetError(path, f"column {missing[0]}",
                                   f"{len(missing)} of the {n_features} feature columns of modality '{name}' are "
                                   f"missing (e.g. {missing[:3]}); this student expects {name} = {named[:5]}"
                                   f"{' ...' if len(named) > 5 else ''}",
                                   "give a table with the feature columns the student was trained on (see the model card)")
            selected[name] = list(named)
            continue
        found = [c for c in columns if c.split(".", 1)[0] == name and "." in c]
        if not found:
            raise DatasetError(path, f"columns {name}.*",
                               f"no feature column of modality '{name}', which this student needs ({n_features} "
                               f"columns named '{name}.<feature>')",
                               f"add the {n_features} '{name}.<feature>' columns, in training order")
        if len(found) != n_features:
            raise DatasetError(path, f"columns {name}.*",
                               f"{len(found)} feature columns of modality '{name}', but this student expects "
                               f"{n_features} (shape ({n_features},))",
                               f"give exactly the {n_features} '{name}.<feature>' columns the student was trained on")
        warnings.warn(InputWarning(f"{path}: field 'columns {name}.*': this student records no feature column names "
                                   f"for '{name}', so the {n_features} '{name}.<feature>' columns are taken in table "
                                   "order, which nothing can check: make sure it is the training order"), stacklevel=3)
        selected[name] = found
    id_columns = [c for c in ID_COLUMNS if c in columns]
    answers = ([LABEL_COLUMN] if student.task == "classification" else student.output_names)
    label_columns = [c for c in answers if c in columns and c not in id_columns]
    try:
        if path.suffix.lower() == ".csv":
            text = [*id_columns, *(label_columns if student.task == "classification" else [])]  # "07" stays "07"
            frame = pd.read_csv(path, usecols=[*id_columns, *label_columns, *(c for cols in selected.values() for c in cols)],
                                dtype={c: str for c in text})
        else:
            frame = pd.read_parquet(path, columns=[*id_columns, *label_columns, *(c for cols in selected.values() for c in cols)])
    except Exception as exc:
        raise DatasetError(path, "/", f"cannot read the table ({type(exc).__name__}: {exc})",
                           "give a valid CSV (comma-separated, header line) or Parquet file") from exc
    where = (lambda i: f"row {i} (line {i + 2})") if path.suffix.lower() == ".csv" else (lambda i: f"row {i}")
    arrays = {}
    for name, cols in selected.items():
        values = []
        for column in cols:
            numbers = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            bad = np.flatnonzero(~np.isfinite(numbers))
            if bad.size:
                i = int(bad[0])
                raise DatasetError(path, f"column {column}, {where(i)}",
                                   f"feature value {frame[column].iloc[i]!r} is missing, not numeric or not finite",
                                   "fill in a finite number (e.g. impute it) or drop the row")
            values.append(numbers)
        arrays[name] = np.stack(values, axis=1).astype(np.float32) if values else np.empty((len(frame), 0), np.float32)
    ids = {c: np.asarray([str(v) for v in frame[c].to_numpy()], dtype=str) for c in id_columns}
    ids.update({f"true_{c}": frame[c].to_numpy() for c in label_columns})
    rows = split_rows(path, "column split", ids.get("split"), split, len(frame))
    ids = {"row": rows, **{name: column[rows] for name, column in ids.items()}}
    arrays = {name: array[rows] for name, array in arrays.items()}
    n = len(rows)

    def batches() -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, n, batch_size):
            yield {name: array[start:start + batch_size] for name, array in arrays.items()}

    return ids, batches()


# --------------------------------------------------------------------------- outputs


@torch.inference_mode()
def predict_arrays(student: LoadedStudent, inputs: dict[str, np.ndarray | torch.Tensor], device: str = "cpu") -> np.ndarray:
    """The student's outputs (logits or regression values), float32 ``(batch, n_outputs)``,
    for one batch of prevalent inputs ``{modality: (batch, *sample_shape)}``."""
    batch = {name: torch.as_tensor(np.asarray(inputs[name], dtype=np.float32)).to(device) for name in student.prevalent}
    return student.net(batch).logits.float().cpu().numpy()


def _output_frame(student: LoadedStudent, outputs: np.ndarray, ids: dict[str, np.ndarray]) -> pd.DataFrame:
    """``row`` (the input's own index unless ``ids`` gives it), the id and true-label columns, the predictions."""
    columns: dict[str, np.ndarray] = {"row": np.arange(len(outputs))}
    columns.update(ids)
    names = student.output_names
    if student.task == "classification":
        logits = torch.from_numpy(outputs).double()
        probabilities = torch.softmax(logits, dim=-1).numpy()
        columns["predicted"] = np.asarray(names, dtype=object)[outputs.argmax(axis=1)] if len(outputs) else np.array([], dtype=object)
        columns.update({f"prob_{name}": probabilities[:, j] for j, name in enumerate(names)})
    else:
        taken = set(columns)
        names = names or [f"target_{j}" for j in range(outputs.shape[1])]
        columns.update({(f"pred_{name}" if name in taken else name): outputs[:, j] for j, name in enumerate(names)})
    return pd.DataFrame(columns)


def _training_distance(student: LoadedStudent, name: str, array: np.ndarray) -> np.ndarray | None:
    """Per sample, the largest distance of a value from the training mean in training standard
    deviations (the student's own standardisation); ``None`` if the student has none."""
    encoders = getattr(student.net, "encoders", None)
    standardize = getattr(encoders[name], "standardize", None) if encoders is not None and name in encoders else None
    if standardize is None:
        return None
    with torch.inference_mode():
        z = standardize(torch.as_tensor(array, dtype=torch.float32).cpu().double())
    return z.abs().reshape(len(array), -1).amax(dim=1).numpy() if len(array) else np.zeros(0)


def _check_values(student: LoadedStudent, path: Path, name: str, array: np.ndarray, start: int, reported: set[str]) -> None:
    """Refuse NaN, inf and values float32 cannot compute with; warn (once per modality) of a
    sample far outside the training range."""
    field = f"/modalities/{name}"
    flat = array.reshape(len(array), -1)
    bad = ~np.isfinite(flat).all(axis=1)
    if bad.any():
        raise DatasetError(path, field, f"NaN or inf value in sample {start + int(np.argmax(bad))}",
                           "replace or drop non-finite values before predicting")
    huge = (np.abs(flat) >= MAX_ABS_VALUE).any(axis=1)
    if huge.any():
        i = int(np.argmax(huge))
        raise DatasetError(path, field, f"value {np.abs(flat[i]).max():.3g} in sample {start + i} is beyond "
                           f"±{MAX_ABS_VALUE:g}, where float32 arithmetic overflows",
                           "rescale it the way the training data was (same units and preprocessing) or drop the sample")
    distance = _training_distance(student, name, array) if name not in reported else None
    if distance is not None and (distance > FAR_FROM_TRAINING).any():
        i = int(np.argmax(distance > FAR_FROM_TRAINING))
        reported.add(name)
        warnings.warn(InputWarning(f"{path}: field '{field}': sample {start + i} lies {distance[i]:.3g} training "
                                   "standard deviations from the training mean, so its prediction says little: check "
                                   "that the units and preprocessing match the training data (see the model card)"),
                      stacklevel=3)


def predict_file(student_dir: str | Path, input_path: str | Path, out_csv: str | Path, *, batch_size: int = 256,
                 device: str = "cpu", allow_mismatch: bool = False, split: str | None = None) -> Path:
    """Predict every sample of ``input_path`` with the student saved in ``student_dir``.

    ``input_path``: a privkd ``.h5`` dataset holding the student's prevalent modalities
    (labels, subjects and any other modality are ignored; the privileged modalities need not
    be there), or, for students whose inputs are 1-D feature vectors, a ``.csv`` / ``.parquet``
    table with feature columns ``<modality>.<feature>``, or, for students trained on a
    ``privkd data import ts`` dataset, a UEA/UCR ``.ts`` file, labelled or not. Tables and
    ``.ts`` files need no labels. Writes ``out_csv`` atomically: one
    row per sample with ``row`` (its index in the input), the ids the input has (``.h5``:
    ``subject``, ``group``, ``split``; a table: ``sample``, ``id``, ``subject``, ``group``,
    ``split``), the known answers when the input has them (``true_label``, or ``true_<target>``
    per regression target), then ``predicted`` (class name) and one ``prob_<class>`` softmax
    column per class, or one column per regression target. ``split`` predicts only the samples
    of that part of a ``.h5`` file's ``/splits`` or a table's ``split`` column (``test``).
    Returns ``out_csv``.

    A ``.h5`` modality of another kind, sampling rate or channel order than the student was
    trained on is refused (:class:`~privkd.errors.DatasetError`), or with ``allow_mismatch``
    scored with an :class:`InputWarning` per difference.
    """
    refuse_output_onto_inputs("--out", out_csv, [("INPUT", input_path), ("STUDENT_DIR", student_dir)],
                              example="predictions.csv")
    student = load_student(student_dir)
    input_path, out_csv = Path(input_path), check_output_file(Path(out_csv), "--out", "predictions.csv")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    suffix = input_path.suffix.lower()
    if not input_path.is_file():
        raise DatasetError(input_path, "/", "file does not exist",
                           "give a privkd .h5 dataset or a .csv / .parquet feature table")
    if suffix in TABLE_SUFFIXES:
        ids, batches = _table_batches(student, input_path, batch_size, split)
    elif suffix == TS_SUFFIX:
        ids, batches = ts_batches(student, input_path, batch_size, split)
    elif suffix in H5_SUFFIXES or h5py.is_hdf5(input_path):
        ids, batches = _h5_batches(student, input_path, batch_size, allow_mismatch, split)
    else:
        raise DatasetError(input_path, "/", f"unsupported input type {input_path.suffix or '(no suffix)'!r}",
                           "give a privkd .h5 dataset, a .csv / .parquet feature table or a UEA/UCR .ts file")
    student.net.to(device)
    outputs, start, reported = [], 0, set()
    for batch in batches:
        for name, array in batch.items():
            _check_values(student, input_path, name, array, start, reported)
        outputs.append(predict_arrays(student, batch, device))
        start += len(next(iter(batch.values())))
    n_outputs = len(student.output_names) or (outputs[0].shape[1] if outputs else 0)
    result = np.concatenate(outputs) if outputs else np.empty((0, n_outputs), np.float32)
    frame = _output_frame(student, result, ids)
    write_atomic(out_csv, lambda tmp: frame.to_csv(tmp, index=False))
    return out_csv
