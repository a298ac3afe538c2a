"""``privkd predict`` on a UEA/UCR ``.ts`` file: no import, no labels needed.

A student trained on a ``privkd data import ts`` dataset records, as each input's channel
names, the ``.ts`` dimensions that fed it (``dim_<index>``), so the same dimensions of a new
file, labelled or not, can be taken for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from privkd.data.importers.ts import CHANNEL_PREFIX, read_ts
from privkd.deploy.answers import true_labels
from privkd.deploy.student import LoadedStudent
from privkd.errors import DatasetError

__all__ = ["ts_batches"]


def ts_batches(student: LoadedStudent, path: Path, batch_size: int,
               split: str | None = None) -> tuple[dict[str, np.ndarray], Iterator[dict[str, np.ndarray]]]:
    """A UEA/UCR ``.ts`` file (labelled or not) for a student trained on a ``privkd data import
    ts`` dataset: each input takes the file's dimensions its channel names ``dim_<index>`` name."""
    if split is not None:
        raise DatasetError(path, "/", f"--split {split}: a .ts file holds one part of a split",
                           "leave --split out and give the file of that part (e.g. X_TEST.ts)")
    parsed = read_ts(path, require_labels=False)
    dims = parsed.values.shape[1]
    arrays = {}
    for name, entry in student.card["inputs"].items():
        channels = list(entry.get("channel_names") or [])
        indices = [c.removeprefix(CHANNEL_PREFIX) for c in channels]
        if not channels or not all(c.startswith(CHANNEL_PREFIX) and i.isdigit() for c, i in zip(channels, indices)):
            raise DatasetError(path, "/", f"this student's input '{name}' was not imported from a .ts file (its "
                               f"channels are {channels or 'unnamed'}, not dim_<index>), so nothing says which "
                               "dimensions feed it", "import the data into a privkd dataset as the training data "
                               "was, and predict that")
        wanted = [int(i) for i in indices]
        if max(wanted) >= dims:
            raise DatasetError(path, "/", f"input '{name}' takes dimensions {wanted}, but the file has {dims}",
                               "give a .ts file of the problem the student was trained on")
        arrays[name] = parsed.values[:, wanted, :].astype(np.float32)
        expected = tuple(student.inputs[name].sample_shape)
        if arrays[name].shape[1:] != expected:
            raise DatasetError(path, "/", f"input '{name}' samples are shaped {arrays[name].shape[1:]}, this student "
                               f"expects {expected}", "resample the series to the training data's length")
    ids: dict[str, np.ndarray] = {}
    if parsed.labels:
        labels = np.asarray(parsed.labels)
        ids = {"true_label": labels} if student.task == "classification" else true_labels(student, labels)
    n = len(parsed.values)

    def batches() -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, n, batch_size):
            yield {name: array[start:start + batch_size] for name, array in arrays.items()}

    return ids, batches()
