"""Import UEA/UCR time-series archive files (``.ts``, as sktime, aeon and tslearn read them).

Layout of one file (``BasicMotions_TRAIN.ts``)::

    # comments
    @problemName BasicMotions
    @timeStamps false
    @univariate false
    @dimensions 6
    @equalLength true
    @seriesLength 100
    @classLabel true Standing Running Walking Badminton
    @data
    -0.74,0.21,...:0.12,0.33,...:...:Standing

One case per line after ``@data``: its dimensions separated by ``:``, the values of one
dimension by ``,``, then the class label (``@classLabel true``) or the regression target
(``@targetLabel true``).

* The archive's official split is kept: the ``*_TEST.ts`` beside a ``*_TRAIN.ts`` is found
  on its own (or named with ``test=``), and the cases are stored with ``/splits`` ``train``
  and ``test``, what ``evaluation.protocol: splits`` trains and tests on.
* Dimensions are grouped into modalities by index, ``{"accelerometer": [0, 1, 2],
  "gyroscope": [3, 4, 5]}`` (default: every dimension in one modality ``series``); each is a
  ``signal`` of shape ``(dimensions, steps)`` with channel names ``dim_<index>``. The format
  records no sampling rate, so it is asked for.
* The format holds no subject ids. ``subjects=`` gives one per case (the training file's cases
  first, then the test file's); ``no_subject_ids=True`` makes every case its own recording
  and the results recording-independent (:data:`privkd.data.h5format.spec.INDEPENDENCE`).
* Refused with the line and the fix: time stamps, missing values (``?``, ``NaN``), series of
  unequal length, a label not declared in ``@classLabel``, files that disagree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from privkd.data.importers.arrays import from_arrays
from privkd.data.importers.common import progress as progress_bar
from privkd.data.importers.common import require_file, source_error

__all__ = ["CHANNEL_PREFIX", "TsFile", "import_ts", "parse_dimensions", "read_ts", "test_file_of"]

DEFAULT_MODALITY = "series"
CHANNEL_PREFIX = "dim_"
"""Channel ``dim_<index>`` of an imported modality is dimension ``index`` of the ``.ts`` file, so
that ``privkd predict`` can take a ``.ts`` file's dimensions for a student's inputs."""


@dataclass(frozen=True)
class TsFile:
    """What one ``.ts`` file holds: ``values`` of shape ``(cases, dimensions, steps)`` and one
    label per case (class labels as written, or regression targets as floats)."""

    path: Path
    problem: str | None
    values: np.ndarray
    labels: list[str] | list[float]
    class_labels: list[str] | None
    regression: bool


def _flag(path: Path, line_no: int, tag: str, words: list[str]) -> bool:
    if not words or words[0].lower() not in ("true", "false"):
        raise source_error(path, f"line {line_no}: {tag} needs true or false, found {' '.join(words)!r}",
                           f"write '{tag} true' or '{tag} false'", field=f"line {line_no}")
    return words[0].lower() == "true"


def _values(path: Path, line_no: int, dim: int, text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        bad = next(v for v in text.split(",") if not _is_float(v))
        raise source_error(path, f"line {line_no}, dimension {dim}: {bad.strip()!r} is not a number",
                           "write numbers separated by ',' and dimensions separated by ':'; missing values ('?') "
                           "must be filled in (interpolated) or the case dropped before import",
                           field=f"line {line_no}") from None
    step = next((t for t, v in enumerate(values) if not math.isfinite(v)), None)
    if step is not None:
        raise source_error(path, f"line {line_no}, dimension {dim}, step {step}: missing or infinite value "
                           f"({values[step]})", "fill in missing values (e.g. interpolate) or drop the case; a privkd "
                           "dataset holds finite numbers only", field=f"line {line_no}")
    return values


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_ts(path: str | Path, *, require_labels: bool = True) -> TsFile:
    """Parse one UEA/UCR ``.ts`` file (equal-length series without time stamps); with
    ``require_labels=False`` (data to predict) an unlabelled file gives an empty ``labels``."""
    path = require_file(path, ".ts", "check the path of the .ts file (e.g. BasicMotions_TRAIN.ts)")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise source_error(path, f"cannot read the file as text ({exc})", "pass a UEA/UCR .ts text file") from exc
    header: dict[str, Any] = {"class_labels": None, "regression": False, "problem": None, "dimensions": None}
    cases: list[list[list[float]]] = []
    labels: list[str] = []
    in_data = False
    for line_no, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if not line.startswith("@"):
                raise source_error(path, f"line {line_no}: {line[:40]!r} before @data",
                                   "start header lines with '@' and put the cases after a line '@data'",
                                   field=f"line {line_no}")
            _header_line(path, line_no, line, header)
            in_data = line.lower() == "@data"
            continue
        labelled = header["class_labels"] is not None or header["regression"]
        fields = line.split(":")
        if labelled:
            if len(fields) < 2:
                raise source_error(path, f"line {line_no}: no label after the series",
                                   "end every case with ':<label>'", field=f"line {line_no}")
            labels.append(fields.pop().strip())
        cases.append([_values(path, line_no, d, text) for d, text in enumerate(fields)])
    if not in_data or not cases:
        raise source_error(path, "no cases: the file has no '@data' line followed by one line per case",
                           "pass a UEA/UCR .ts file with its @data section")
    if header["class_labels"] is None and not header["regression"] and require_labels:
        raise source_error(path, "the cases have no labels (@classLabel false and no @targetLabel true)",
                           "import a labelled .ts file (@classLabel true ... or @targetLabel true); to predict "
                           "unlabelled cases, give privkd predict the .ts file itself")
    return TsFile(path=path, problem=header["problem"], values=_stack(path, cases, header["dimensions"]),
                  labels=_checked_labels(path, labels, header), class_labels=header["class_labels"],
                  regression=header["regression"])


def _header_line(path: Path, line_no: int, line: str, header: dict[str, Any]) -> None:
    tag, *words = line.split()
    key = tag.lower()
    if key == "@problemname":
        header["problem"] = " ".join(words) or None
    elif key == "@timestamps" and _flag(path, line_no, tag, words):
        raise source_error(path, "time-stamped series (@timeStamps true) are not supported",
                           "resample the series to a fixed rate and write them without time stamps",
                           field=f"line {line_no}")
    elif key in ("@dimensions", "@dimension"):
        try:
            header["dimensions"] = int(words[0])
        except (IndexError, ValueError):
            raise source_error(path, f"line {line_no}: {tag} needs a whole number", f"write e.g. '{tag} 6'",
                               field=f"line {line_no}") from None
    elif key == "@classlabel" and _flag(path, line_no, tag, words):
        header["class_labels"] = words[1:]
    elif key == "@targetlabel":
        header["regression"] = _flag(path, line_no, tag, words)


def _stack(path: Path, cases: list[list[list[float]]], declared: int | None) -> np.ndarray:
    """``(cases, dimensions, steps)``, refusing cases of another dimension count or length."""
    dims, steps = len(cases[0]), len(cases[0][0])
    if declared is not None and dims != declared:
        raise source_error(path, f"the first case has {dims} dimensions but @dimensions says {declared}",
                           "fix @dimensions or the case (dimensions are separated by ':')")
    for i, case in enumerate(cases):
        lengths = {len(series) for series in case}
        if len(case) != dims or lengths != {steps}:
            raise source_error(path, f"case {i} has {len(case)} dimension(s) of {sorted(lengths)} steps; case 0 has "
                               f"{dims} of {steps}: privkd stores samples of one shape (equal-length series)",
                               "resample or pad every series to one length (e.g. aeon's or sktime's "
                               "padding/resizing transformers) and write the file again", field=f"case {i}")
    return np.asarray(cases, dtype=np.float64)


def _checked_labels(path: Path, labels: list[str], header: Mapping[str, Any]) -> list[str] | list[float]:
    if header["regression"]:
        try:
            return [float(label) for label in labels]
        except ValueError:
            bad = next(i for i, label in enumerate(labels) if not _is_float(label))
            raise source_error(path, f"case {bad}: regression target {labels[bad]!r} is not a number",
                               "write a number after the last ':' of every case", field=f"case {bad}") from None
    declared = header["class_labels"]
    unknown = next((i for i, label in enumerate(labels) if declared and label not in declared), None)
    if unknown is not None:
        raise source_error(path, f"case {unknown}: class label {labels[unknown]!r} is not declared in @classLabel "
                           f"({' '.join(declared)})", "add it to the @classLabel line or fix the case's label",
                           field=f"case {unknown}")
    return labels


def test_file_of(train: str | Path) -> Path | None:
    """The archive's test file beside a training file: ``X_TRAIN.ts`` -> ``X_TEST.ts`` when it exists."""
    train = Path(train)
    for suffix, test_suffix in (("_TRAIN", "_TEST"), ("_train", "_test")):
        if train.stem.endswith(suffix):
            test = train.with_name(train.stem.removesuffix(suffix) + test_suffix + train.suffix)
            return test if test.is_file() else None
    return None


def parse_dimensions(text: str) -> list[int]:
    """``"0-2"``, ``"0,1,2"`` or ``"0-1,5"`` -> ``[0, 1, 2]`` (0-based dimension indices)."""
    indices: list[int] = []
    for part in text.split(","):
        start, sep, end = part.strip().partition("-")
        first, last = int(start), int(end) if sep else int(start)
        indices.extend(range(first, last + 1))
    return indices


def _check_grouping(path: Path, dims: int, groups: Mapping[str, Sequence[int]]) -> None:
    seen: dict[int, str] = {}
    for name, indices in groups.items():
        if not indices:
            raise source_error(path, f"modality '{name}' has no dimension", "give it at least one dimension index",
                               field="modalities")
        for d in indices:
            if not 0 <= d < dims:
                raise source_error(path, f"modality '{name}' names dimension {d}, but the file has dimensions "
                                   f"0-{dims - 1}", "use 0-based dimension indices within the file's",
                                   field="modalities")
            if d in seen:
                raise source_error(path, f"dimension {d} is in both '{seen[d]}' and '{name}'",
                                   "put every dimension in one modality at most", field="modalities")
            seen[d] = name


def _agree(train: TsFile, test: TsFile) -> None:
    if train.values.shape[1:] != test.values.shape[1:]:
        raise source_error(test.path, f"cases of {test.values.shape[1]} dimensions x {test.values.shape[2]} steps, "
                           f"but {train.path.name} has {train.values.shape[1]} x {train.values.shape[2]}",
                           "import the training and test files of one problem")
    if train.regression != test.regression:
        raise source_error(test.path, "one file has class labels, the other regression targets",
                           "import the training and test files of one problem")


def import_ts(
    src: str | Path,
    dst: str | Path,
    *,
    sampling_rate: float,
    test: str | Path | Literal["auto"] | None = "auto",
    modalities: Mapping[str, Sequence[int]] | None = None,
    subjects: Sequence[str] | None = None,
    no_subject_ids: bool = False,
    progress: bool = True,
) -> Path:
    """Import the ``.ts`` file ``src`` (and its test file) into the privkd dataset ``dst``.

    ``test="auto"`` takes the ``*_TEST.ts`` beside a ``*_TRAIN.ts`` when there is one; a path
    names it; ``None`` imports ``src`` alone (then without ``/splits``). ``modalities`` maps a
    modality name to its 0-based dimension indices; ``sampling_rate`` is in Hz (BasicMotions:
    10). See the module docstring for subjects and what is refused. Returns ``dst``.
    """
    src, dst = Path(src), Path(dst)
    if subjects is None and not no_subject_ids:
        raise source_error(src, "the .ts format holds no subject ids, and privkd holds out whole subjects so that a "
                           "score says how the model does on people it never saw",
                           "pass subjects= (one id per case, the training file's cases first, then the test file's), "
                           "or no_subject_ids=True to make every case its own recording (results are then called "
                           "recording-independent)", field="subjects")
    test_path = test_file_of(src) if test == "auto" else (None if test is None else Path(test))
    files = [read_ts(path) for path in progress_bar([src, *([test_path] if test_path else [])], "Reading .ts files",
                                                    enabled=progress)]
    for other in files[1:]:
        _agree(files[0], other)
    dims = files[0].values.shape[1]
    groups = dict(modalities) if modalities else {DEFAULT_MODALITY: list(range(dims))}
    _check_grouping(src, dims, groups)
    values = np.concatenate([f.values for f in files])
    names = ["train", "test"][: len(files)]
    splits = [name for name, f in zip(names, files, strict=True) for _ in range(len(f.labels))] if test_path else None
    count = sum(len(f.labels) for f in files)
    if subjects is not None and len(subjects) != count:
        raise source_error(src, f"{len(subjects)} subject ids for {count} cases",
                           "give one subject id per case, the training file's cases first, then the test file's",
                           field="subjects")
    described = ", ".join(f"{f.path.name} ({len(f.labels)} cases)" for f in files)
    grouping = "; ".join(f"{name} = dimensions {', '.join(map(str, idx))}" for name, idx in groups.items())
    unused = sorted(set(range(dims)) - {d for idx in groups.values() for d in idx})
    description = (f"UEA/UCR .ts files {described}, problem {files[0].problem or '?'}: {dims} "
                   f"dimension{'s' if dims != 1 else ''} of "
                   f"{values.shape[2]} steps; modalities {grouping}"
                   + (f"; dimensions not imported: {', '.join(map(str, unused))}" if unused else ""))
    labels = np.asarray([label for f in files for label in f.labels])
    return from_arrays(
        dst, {name: values[:, list(idx), :] for name, idx in groups.items()}, labels, subjects=subjects,
        no_subject_ids=no_subject_ids, task="regression" if files[0].regression else "classification",
        target_names=["target"] if files[0].regression else None,
        sampling_rates={name: sampling_rate for name in groups},
        channel_names={name: [f"{CHANNEL_PREFIX}{d}" for d in idx] for name, idx in groups.items()},
        splits=splits, description=description, source=str(src))
