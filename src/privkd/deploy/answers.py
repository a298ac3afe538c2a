"""What a predictions CSV holds beside the predictions: the known answers of the input (its
true labels) and which of its rows were asked for (one part of its official split).

Shared by the readers of :mod:`privkd.deploy.predict` and :mod:`privkd.deploy.ts_input`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from privkd.deploy.student import LoadedStudent
from privkd.errors import DatasetError

__all__ = ["split_rows", "true_labels"]


def true_labels(student: LoadedStudent, labels: np.ndarray) -> dict[str, np.ndarray]:
    """The known answers beside the predictions: ``true_label`` (a class name) or ``true_<target>``."""
    if student.task == "classification":
        names = np.asarray(student.output_names, dtype=object)
        return {"true_label": names[labels]} if labels.size and labels.max() < len(names) else {}
    columns = labels.reshape(len(labels), -1)
    names = student.output_names or [f"target_{j}" for j in range(columns.shape[1])]
    return {f"true_{name}": columns[:, j] for j, name in enumerate(names)} if len(names) == columns.shape[1] else {}


def split_rows(path: Path, field: str, splits: np.ndarray | None, split: str | None, n: int) -> np.ndarray:
    """The rows of the ``split`` part (all rows without one), or an error naming the parts there are;
    ``field`` is where the input keeps its split names (``/splits``, ``column split``)."""
    if split is None:
        return np.arange(n)
    if splits is None:
        raise DatasetError(path, field, f"--split {split}: the input has no {field}",
                           "leave --split out to predict every sample, or give the input its split names")
    rows = np.flatnonzero(splits == split)
    if not rows.size:
        raise DatasetError(path, field, f"--split {split}: no sample is in split {split!r} (splits: "
                           f"{', '.join(dict.fromkeys(splits.tolist()))})", "name one of the splits the file holds")
    return rows
