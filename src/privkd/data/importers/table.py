"""Import any user's table (CSV or Parquet): one row per sample, feature columns grouped into modalities.

Layout::

    subject,label,eda.mean,eda.slope,face.au12
    s01,pain,0.31,-0.02,1.7
    ...

* Feature columns are grouped into modalities by the prefix before the first ``.`` of their
  name (``eda.mean``, ``eda.slope`` -> modality ``eda`` with 2 features), keeping column order;
  or, with ``modality_patterns={"eda": r"^gsr_", ...}``, by regular expression
  (:func:`re.search`). Every modality is of kind ``"features"``: one 1-D vector per sample.
* The feature (column) names of each modality are its ``channel_names``, in stored vector
  order, all of them: the format's channel names name axis 1 of the stored array, which is the
  feature axis of an ``(N, features)`` modality. A saved student records them, and
  ``privkd predict`` takes a table's columns by these names. They are also listed in the
  dataset ``description`` ("... 2 feature modalities grouped by ...: eda 2 columns, face 1
  column. Feature columns: eda = [eda.mean, eda.slope]; ...") for people, where very wide
  tables are listed with the first columns of each modality and a count of the rest;
  :func:`privkd.deploy.student._feature_columns` parses that listing back for datasets
  imported before the channel names were stored. :func:`grouping_lines` renders the grouping
  for ``privkd data import table``.
* Labels: one label column of strings or integers -> classification, class ids in the sorted
  order of the unique values, ``class_names`` = those values as strings; float label columns, or
  several label columns -> regression, ``target_names`` = the column names. ``task=`` forces it.
* Subjects, groups and splits are stored as strings; in a CSV they are read as text, so ids
  such as ``"07"`` keep their zero padding (Parquet integers become their decimal string).

Every problem raises :class:`~privkd.errors.DatasetError` naming the table and the column (and
the first offending row: ``row i`` counts data rows from 0; ``line`` is the CSV line, header = 1),
and no output file is left behind.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from privkd.data.h5format import TASKS, write_dataset
from privkd.data.importers.common import progress as progress_bar
from privkd.data.importers.common import require_file, source_error
from privkd.optional import require

__all__ = ["grouping_lines", "import_table", "table_modalities"]

# Longest feature-name listing kept in the description (HDF5 attributes are kept small).
_MAX_DESCRIPTION_NAMES = 8000

Where = Callable[[int], str]


# --------------------------------------------------------------- shared column helpers
# (also used by the folder and features importers)


def _csv_where(i: int) -> str:
    """Location of data row ``i`` of a CSV file with one header line."""
    return f"row {i} (line {i + 2})"


def _row_where(i: int) -> str:
    return f"row {i}"


def _field(column: str, where: str | None = None) -> str:
    return f"column {column}" if where is None else f"column {column}, {where}"


# The command-line option of each importer argument that names a column, for the errors: a CLI
# user must read --label, not label_columns= (``privkd data import table`` / ``folder`` / ``features``).
_CLI_OPTIONS = {"subject_column": "--subject-column", "label_columns": "--label", "group_column": "--group-column",
                "split_column": "--split-column", "id_column": "--id-column", "label_column": "--label-column"}


def _require_columns(file: Path, present: Sequence[str], required: Mapping[str, str | None]) -> None:
    """Every ``required`` column (name -> the option that names it, or None for a fixed name) is in ``present``."""
    for column, option in required.items():
        if column not in present:
            cli = f" ({_CLI_OPTIONS[option]} on the command line)" if option in _CLI_OPTIONS else ""
            fix = ("add the column (or rename the column that holds it)" if option is None
                   else f"add the column, or pass {option}={cli} with the name of the column that holds it")
            if option in ("label_columns", "label_column"):
                fix += ("; to predict data without labels, give privkd predict the table itself (a .csv or .parquet "
                        "table needs no labels)")
            raise source_error(file, f"no column '{column}' (columns present: {', '.join(map(str, present))})",
                               fix, field=_field(column))


def _first(mask: np.ndarray) -> int | None:
    rows = np.flatnonzero(mask)
    return int(rows[0]) if rows.size else None


def _check_complete(file: Path, series: pd.Series, column: str, where: Where, what: str) -> None:
    """No missing (NaN/empty) value in ``series``."""
    values = series.to_numpy()
    missing = series.isna().to_numpy() | np.array([isinstance(v, str) and not v.strip() for v in values], dtype=bool)
    i = _first(missing)
    if i is not None:
        raise source_error(file, f"missing value in {what} column '{column}' at {where(i)}",
                           f"fill in every {what} value, or drop the rows that lack one", field=_field(column, where(i)))


def _strings(file: Path, series: pd.Series, column: str, where: Where, what: str) -> list[str]:
    """A column of ids as strings (integers and integral floats without a trailing '.0')."""
    _check_complete(file, series, column, where, what)
    out = []
    for v in series.to_numpy():
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            v = int(v)
        out.append(str(v).strip())
    return out


def _numeric(file: Path, series: pd.Series, column: str, where: Where, what: str) -> np.ndarray:
    """A column of finite numbers as float64; errors name the first offending row."""
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        numbers = series.astype("float64")
    else:
        numbers = pd.to_numeric(series, errors="coerce")
        i = _first((numbers.isna() & series.notna()).to_numpy())
        if i is not None:
            raise source_error(file, f"{what} column '{column}' is not numeric: {where(i)} holds {series.iloc[i]!r}",
                               "store numbers only in this column (fix or drop the row), or, if it is not a "
                               f"{what} column, exclude it (name it via the subject/label/group/split options)",
                               field=_field(column, where(i)))
        numbers = numbers.astype("float64")
    values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    i = _first(np.isnan(values))
    if i is not None:
        raise source_error(file, f"missing value (NaN) in {what} column '{column}' at {where(i)}",
                           "fill in the value (e.g. impute it) or drop the row", field=_field(column, where(i)))
    i = _first(~np.isfinite(values))
    if i is not None:
        raise source_error(file, f"infinite value in {what} column '{column}' at {where(i)}",
                           "replace it with a finite number or drop the row", field=_field(column, where(i)))
    return values


def _class_ids(file: Path, series: pd.Series, column: str, where: Where) -> tuple[np.ndarray, list[str]]:
    """Class ids in the sorted order of the unique values, and those values as strings."""
    _check_complete(file, series, column, where, "label")
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_integer_dtype(series):
        values = series.to_numpy()
    elif pd.api.types.is_float_dtype(series):
        values = series.to_numpy(dtype=np.float64)
        if np.all(np.mod(values, 1) == 0):  # 1.0, 2.0: integer classes stored as floats
            values = values.astype(np.int64)
    else:
        values = np.array([str(v).strip() for v in series.to_numpy()], dtype=object)
    unique = np.unique(values)
    return np.searchsorted(unique, values).astype(np.int64), [str(v) for v in unique.tolist()]


def _labels(
    file: Path, frame: pd.DataFrame, columns: Sequence[str], task: str | None, where: Where,
) -> tuple[str, np.ndarray, list[str] | None, list[str] | None]:
    """(task, labels, class_names, target_names) from the label ``columns`` of ``frame``.

    ``task=None`` picks classification for one column of strings, integers or booleans, and
    regression for a float column or several columns.
    """
    columns = list(columns)
    for column in columns:
        _check_complete(file, frame[column], column, where, "label")
    if task is None:
        several = len(columns) > 1
        task = "regression" if several or pd.api.types.is_float_dtype(frame[columns[0]]) else "classification"
    if task not in TASKS:
        raise source_error(file, f"task is {task!r}, expected one of {list(TASKS)} or None (auto)",
                           "pass task='classification', task='regression' or leave it out", field="task")
    if task == "classification":
        if len(columns) != 1:
            raise source_error(file, f"classification needs exactly one label column, got {columns}",
                               "pass a single label column, or task='regression' for several targets",
                               field=_field(columns[0]))
        labels, class_names = _class_ids(file, frame[columns[0]], columns[0], where)
        if len(class_names) < 2:  # the file would be written, and every run on it refused
            raise source_error(file, f"the label column '{columns[0]}' holds one class ({class_names[0]}) in every "
                               "row; a classifier needs at least 2 to tell apart",
                               "include the rows of the other classes, or pass task='regression' "
                               "(--task regression) if the column is a continuous target", field=_field(columns[0]))
        return task, labels, class_names, None
    targets = [_numeric(file, frame[c], c, where, "label") for c in columns]
    labels = (targets[0] if len(targets) == 1 else np.stack(targets, axis=1)).astype(np.float32)
    return task, labels, None, columns


def _feature_names(groups: Mapping[str, Sequence[str]]) -> str:
    """'eda = [eda.mean, eda.slope]; face = [face.au12]', capped in length.

    The format is parsed back by :func:`privkd.deploy.student._feature_columns`; every
    modality lists at least its first column, however long its name.
    """
    budget = max(200, _MAX_DESCRIPTION_NAMES // max(len(groups), 1))
    parts = []
    for name, columns in groups.items():
        shown, length = [], 0
        for column in columns:
            if shown and length + len(column) > budget:
                break
            shown.append(column)
            length += len(column) + 2
        rest = len(columns) - len(shown)
        listed = ", ".join(shown) + (f", ... ({rest} more)" if rest else "")
        parts.append(f"{name} = [{listed}]")
    return "; ".join(parts)


def _how_grouped(patterns: Mapping[str, str] | None) -> str:
    return "by the prefix before the first '.'" if patterns is None else "by regular expression"


def _n_columns(n: int) -> str:
    return f"{n} column" if n == 1 else f"{n} columns"


def grouping_lines(groups: Mapping[str, Sequence[str]], patterns: Mapping[str, str] | None = None,
                   *, shown: int = 3, max_modalities: int = 12) -> list[str]:
    """How the feature columns were grouped: a heading, then one line per modality.

    ``voice: 12 columns (voice_jitter, voice_shimmer, voice_hnr, ...), pattern ^voice_``; at
    most ``max_modalities`` modality lines, then a count of the rest.
    """
    lines = [f"Modality grouping {_how_grouped(patterns)} ({len(groups)} modalities):"]
    for name, columns in list(groups.items())[:max_modalities]:
        names = ", ".join([*columns[:shown], *(["..."] if len(columns) > shown else [])])
        pattern = "" if patterns is None else f", pattern {patterns[name]}"
        lines.append(f"  {name}: {_n_columns(len(columns))} ({names}){pattern}")
    if len(groups) > max_modalities:
        lines.append(f"  ... ({len(groups) - max_modalities} more modalities)")
    return lines


def _grouping_sentence(groups: Mapping[str, Sequence[str]], patterns: Mapping[str, str] | None,
                       max_modalities: int = 12) -> str:
    """'grouped by regular expression: voice 3 columns (^voice_), mfcc 2 columns (^mfcc_)' for the description."""
    items = [f"{name} {_n_columns(len(columns))}" + ("" if patterns is None else f" ({patterns[name]})")
             for name, columns in list(groups.items())[:max_modalities]]
    rest = len(groups) - len(items)
    return f"grouped {_how_grouped(patterns)}: {', '.join(items)}" + (f", ... ({rest} more)" if rest else "")


# --------------------------------------------------------------------- the importer


def _read_columns(path: Path) -> list[str]:
    """The column names only (cheap), so missing columns are reported before the data is read;
    a name used twice is refused (pandas would import the copy as ``eda.mean.1``)."""
    columns = _header(path)
    repeated = next((c for i, c in enumerate(columns) if c in columns[:i]), None)
    if repeated is not None:
        raise source_error(path, f"the column name '{repeated}' appears more than once",
                           "give every column its own name (drop or rename the copy)", field=_field(repeated))
    return columns


def _header(path: Path) -> list[str]:
    """The column names as written (duplicates included), or a DatasetError for an unreadable file."""
    if path.suffix.lower() != ".csv":
        require("pyarrow.parquet", "parquet", "reading a Parquet table")
    try:
        if path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8-sig") as handle:  # as pandas reads it: no BOM, blank lines skipped
                header = next((row for row in csv.reader(handle) if row), None)
            if not header:
                raise pd.errors.EmptyDataError("no header line")
            return header
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    except pd.errors.EmptyDataError as exc:
        raise source_error(path, "the file is empty (no header line)",
                           "write a header line with the column names, then one row per sample") from exc
    except Exception as exc:  # pandas / pyarrow report unreadable files with many exception types
        raise source_error(path, f"cannot read the table ({type(exc).__name__}: {exc})",
                           "check that the file is a valid CSV (comma-separated, header line) or Parquet file") from exc


def _read_table(path: Path, text_columns: Sequence[str]) -> pd.DataFrame:
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path, dtype={c: str for c in text_columns})
        return pd.read_parquet(path)
    except Exception as exc:
        raise source_error(path, f"cannot read the table ({type(exc).__name__}: {exc})",
                           "check that the file is a valid CSV (comma-separated, header line) or Parquet file") from exc


def _group_by_prefix(path: Path, features: Sequence[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for column in features:
        prefix = column.split(".", 1)[0] if "." in column else ""
        if not prefix:
            example = column.lstrip(".") or "x"
            raise source_error(
                path, f"column '{column}' has no modality prefix: feature columns are grouped into modalities by "
                "the text before the first '.' of their name (e.g. 'eda.mean' belongs to modality 'eda')",
                f"rename it to '<modality>.{example}' (e.g. 'eda.{example}'), pass modality_patterns="
                "{'<modality>': r'<regex>'} to group columns by regular expression, or, if it is not a feature, "
                "name it with subject_column / label_columns / group_column / split_column",
                field=_field(column))
        groups.setdefault(prefix, []).append(column)
    return groups


def _group_by_patterns(path: Path, features: Sequence[str], patterns: Mapping[str, str]) -> dict[str, list[str]]:
    compiled = {}
    for name, pattern in patterns.items():
        try:
            compiled[name] = re.compile(pattern)
        except re.error as exc:
            raise source_error(path, f"modality_patterns['{name}'] = {pattern!r} is not a valid regular "
                               f"expression ({exc})", "fix the regular expression",
                               field=f"modality_patterns['{name}']") from exc
    groups: dict[str, list[str]] = {name: [] for name in patterns}
    unmatched = []
    for column in features:
        hits = [name for name, regex in compiled.items() if regex.search(column)]
        if len(hits) > 1:
            raise source_error(path, f"column '{column}' matches the patterns of several modalities: {hits}",
                               "make the modality_patterns mutually exclusive (anchor them, e.g. r'^eda\\.')",
                               field=_field(column))
        if hits:
            groups[hits[0]].append(column)
        else:
            unmatched.append(column)
    if unmatched:
        raise source_error(path, f"{len(unmatched)} feature column(s) match no modality pattern: {unmatched}",
                           "add a pattern that matches them to modality_patterns, drop the columns from the "
                           "table, or name them with subject_column / label_columns / group_column / split_column",
                           field=_field(unmatched[0]))
    empty = [name for name, columns in groups.items() if not columns]
    if empty:
        raise source_error(path, f"modality_patterns[{empty[0]!r}] = {patterns[empty[0]]!r} matches no feature "
                           f"column (feature columns: {list(features)})",
                           "fix the pattern or remove the modality from modality_patterns",
                           field=f"modality_patterns['{empty[0]}']")
    return groups


def _plan(
    path: Path, subject_column: str, label_columns: str | Sequence[str], modality_patterns: Mapping[str, str] | None,
    group_column: str | None, split_column: str | None,
) -> tuple[list[str], dict[str, list[str]]]:
    """Check the table's type and header; returns (label columns, modality -> feature columns)."""
    if path.suffix.lower() not in (".csv", ".parquet"):
        raise source_error(path, f"unsupported table type {path.suffix or '(no suffix)'!r}",
                           "give a .csv or .parquet file (convert other formats with pandas first)")
    require_file(path, "table", "check the path to the .csv / .parquet table")
    label_columns = [label_columns] if isinstance(label_columns, str) else list(label_columns)
    if not label_columns:
        raise source_error(path, "no label column given", "pass label_columns=('label',) or the target columns",
                           field="label_columns")

    columns = _read_columns(path)
    required = {subject_column: "subject_column", **{c: "label_columns" for c in label_columns}}
    for option, column in (("group_column", group_column), ("split_column", split_column)):
        if column is not None:
            required[column] = option
    _require_columns(path, columns, required)
    reserved = set(required)
    features = [c for c in columns if c not in reserved]
    if not features:
        raise source_error(path, f"no feature columns (columns: {columns})",
                           "add numeric feature columns named '<modality>.<feature>'")
    groups = (_group_by_prefix(path, features) if modality_patterns is None
              else _group_by_patterns(path, features, modality_patterns))
    return label_columns, groups


def table_modalities(
    path: str | Path,
    *,
    subject_column: str = "subject",
    label_columns: str | Sequence[str] = ("label",),
    modality_patterns: Mapping[str, str] | None = None,
    group_column: str | None = None,
    split_column: str | None = None,
) -> dict[str, list[str]]:
    """The modality -> feature columns grouping :func:`import_table` applies to this table
    with these options, in stored vector order. Reads the header only."""
    return _plan(Path(path), subject_column, label_columns, modality_patterns, group_column, split_column)[1]


def import_table(
    path: str | Path,
    dst: str | Path,
    *,
    subject_column: str = "subject",
    label_columns: str | Sequence[str] = ("label",),
    task: str | None = None,
    modality_patterns: Mapping[str, str] | None = None,
    group_column: str | None = None,
    split_column: str | None = None,
    progress: bool = True,
) -> Path:
    """Import a ``.csv`` or ``.parquet`` table (one row per sample) into the privkd dataset ``dst``.

    Every column other than the subject, label, group and split columns is a numeric
    feature; see the module docstring for how features become ``"features"`` modalities and
    labels become a classification or regression task (:func:`table_modalities` gives the
    grouping without importing). Returns ``dst``.
    """
    path, dst = Path(path), Path(dst)
    label_columns, groups = _plan(path, subject_column, label_columns, modality_patterns, group_column, split_column)

    text = [c for c in (subject_column, group_column, split_column) if c is not None]
    frame = _read_table(path, text)
    if len(frame) == 0:
        raise source_error(path, "the table has no rows", "add one row per sample")
    where = _csv_where if path.suffix.lower() == ".csv" else _row_where

    subjects = _strings(path, frame[subject_column], subject_column, where, "subject")
    group_ids = None if group_column is None else _strings(path, frame[group_column], group_column, where, "group")
    splits = None if split_column is None else _strings(path, frame[split_column], split_column, where, "split")
    task, labels, class_names, target_names = _labels(path, frame, label_columns, task, where)

    modalities = {}
    for name, cols in progress_bar(list(groups.items()), f"Reading {path.name}", enabled=progress):
        modalities[name] = np.stack([_numeric(path, frame[c], c, where, "feature") for c in cols], axis=1)

    description = (f"Table {path.name}: {len(frame)} rows, {len(modalities)} feature modalities "
                   f"{_grouping_sentence(groups, modality_patterns)}. Feature columns: {_feature_names(groups)}")
    return write_dataset(dst, modalities=modalities, labels=labels, subjects=subjects, task=task,
                         class_names=class_names, target_names=target_names,
                         modality_kinds={name: "features" for name in modalities},
                         channel_names={name: [str(c) for c in cols] for name, cols in groups.items()},
                         groups=group_ids, splits=splits, description=description, source=str(path))
