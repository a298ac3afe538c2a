"""`MultimodalDataset`: the torch view of a privkd dataset file.

Reads are lazy by default (one h5py read per modality per item), so a video
dataset never has to fit in memory. The HDF5 handle is opened on first access
in each process and never shared: HDF5 handles must not cross ``fork`` or be
pickled, so DataLoader workers each open their own. Small datasets can be
loaded once with ``in_memory=True``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from privkd.data.h5format import MAX_ABS_VALUE, DatasetInfo, read_info
from privkd.data.h5format.rules import TOKENS_SUFFIX, huge_value_error
from privkd.data.h5format.validation import scan_modality_values
from privkd.errors import DatasetError

__all__ = ["TOKENS_SUFFIX", "Batch", "MultimodalDataset", "as_float"]


class Batch(NamedTuple):
    """One sample of a :class:`MultimodalDataset`, or a batch of them once collated (a
    DataLoader collates a named tuple field by field into the same type).

    ``inputs`` maps each loaded modality (and each frozen backbone's cached tokens) to a
    float32 tensor; ``label`` is the class id or the regression targets; ``subject`` the
    subject id (a list of them in a batch); ``index`` the row in the file (both may be left
    out of a batch made by hand for a loss, which never reads them)."""

    inputs: dict[str, torch.Tensor]
    label: torch.Tensor
    subject: Any = None
    index: Any = None


def as_float(stored: np.ndarray) -> np.ndarray:
    """Stored samples as float32; uint8 video frames map to [0, 1]."""
    if stored.dtype == np.uint8:
        return stored.astype(np.float32) / 255.0
    return np.asarray(stored, dtype=np.float32)


class MultimodalDataset(Dataset):
    """Samples of selected modalities and rows of a privkd dataset file.

    ``extra`` adds per-row arrays of the whole file (first axis = file row, e.g. a frozen
    backbone's cached tokens, see :mod:`privkd.training.feature_cache`) to every item's
    inputs under their own keys.

    Items are ``{"inputs": {name: float32 tensor}, "label": tensor,
    "subject": str, "index": int}`` where ``label`` is an int64 scalar for
    classification and a float32 ``(T,)`` vector for regression (``T = 1`` for
    single-target files), and ``index`` is the row in the file, so that
    predictions can be traced back to samples. ``default_collate`` batches
    them into a dict of stacked tensors.
    """

    def __init__(
        self,
        path: str | Path,
        modalities: Sequence[str] | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
        in_memory: bool = False,
        extra: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        self.path = Path(path)
        self.extra = dict(extra or {})
        self._info = read_info(self.path)
        self.modalities = self._select_modalities(modalities)
        self.in_memory = in_memory
        self._rows = self._select_rows(indices)
        with h5py.File(self.path, "r") as h5:
            self._labels = self._load_labels(h5)
            self._subjects = np.asarray(h5["subjects"].asstr()[()], dtype=str)[self._rows]
            self._groups = np.asarray(h5["groups"].asstr()[()], dtype=str)[self._rows] if "groups" in h5 else None
            self._splits = np.asarray(h5["splits"].asstr()[()], dtype=str)[self._rows] if "splits" in h5 else None
            self._memory = self._load_inputs(h5) if in_memory else None
        if in_memory:
            self._memory.update({key: torch.from_numpy(np.asarray(array[self._rows], dtype=np.float32))
                                 for key, array in self.extra.items()})
        self._file: h5py.File | None = None
        self._file_pid: int | None = None

    # ------------------------------------------------------------ construction

    def _select_modalities(self, requested: Sequence[str] | None) -> tuple[str, ...]:
        available = list(self._info.modalities)
        if requested is None:
            return tuple(available)
        for name in requested:
            if name not in self._info.modalities:
                raise DatasetError(self.path, f"/modalities/{name}",
                                   f"no modality '{name}'; available: {', '.join(available)}",
                                   "request one of the available modalities (check the config's modality lists)")
        return tuple(requested)

    def _select_rows(self, indices: Sequence[int] | np.ndarray | None) -> np.ndarray:
        n = self._info.n_samples
        if indices is None:
            return np.arange(n)
        rows = np.asarray(indices, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise IndexError(f"row indices must lie in [0, {n}) for {self.path}; got {rows.min()}..{rows.max()}")
        return rows

    def _load_labels(self, h5: h5py.File) -> np.ndarray:
        labels = np.asarray(h5["labels"][()])[self._rows]
        if self._info.task == "classification":
            return labels.astype(np.int64)
        return labels.astype(np.float32).reshape(len(self._rows), -1)

    def _load_inputs(self, h5: h5py.File) -> dict[str, torch.Tensor]:
        """Read the selected rows of every modality once (a contiguous span, then index)."""
        if not self._rows.size:
            return {name: torch.empty((0, *self._info.modalities[name].sample_shape)) for name in self.modalities}
        lo, hi = int(self._rows.min()), int(self._rows.max()) + 1
        return {name: torch.from_numpy(as_float(self._read(h5, name, slice(lo, hi), f"samples {lo}-{hi - 1}"))[self._rows - lo])
                for name in self.modalities}

    def _read(self, h5: h5py.File, name: str, rows: slice | int, which: str) -> np.ndarray:
        """``/modalities/<name>[rows]``; a damaged block (a corrupted compressed chunk: "filter
        returned failure") becomes a :class:`DatasetError` naming the file and the field."""
        try:
            return h5["modalities"][name][rows]
        except (OSError, RuntimeError) as err:
            raise DatasetError(self.path, f"/modalities/{name}", f"{which} cannot be read (corrupted: {err})",
                               "delete the file and write it again (re-run the import); `privkd data info FILE` "
                               "checks every value") from err

    # ---------------------------------------------------------------- pickling

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_file_pid"] = None
        return state

    def _handle(self) -> h5py.File:
        """This process's read handle, opened on first use (also after a fork)."""
        if self._file is None or self._file_pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._file_pid = os.getpid()
        return self._file

    def close(self) -> None:
        """Close this process's file handle (reopened on the next lazy read)."""
        if self._file is not None and self._file_pid == os.getpid():
            self._file.close()
        self._file = None
        self._file_pid = None

    # ------------------------------------------------------------------ access

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: int) -> Batch:
        row = int(self._rows[i])
        if self._memory is not None:
            inputs = {name: tensor[i] for name, tensor in self._memory.items()}
        else:
            inputs = {name: torch.from_numpy(as_float(self._read(self._handle(), name, row, f"sample {row}")))
                      for name in self.modalities}
            inputs.update({key: torch.from_numpy(np.asarray(array[row], dtype=np.float32)) for key, array in self.extra.items()})
        return Batch(inputs, torch.as_tensor(self._labels[i]), str(self._subjects[i]), row)

    def check_values(self) -> None:
        """Refuse NaN or inf in a selected modality, and, once loaded, channels constant over every
        sample (a dead or unplugged sensor carries no information and would only look like data).

        A lazily read dataset is scanned in the file, block by block, over every sample of the
        file (not only the selected rows), so that a dataset too large for memory is checked
        before training too."""
        if self._memory is None:
            scan_modality_values(self.path, self.modalities)
            return
        for name in self.modalities:
            values = self._memory[name]
            field = f"/modalities/{name}"
            bad = ~torch.isfinite(values.reshape(len(values), -1)).all(dim=1)
            if bad.any():
                raise DatasetError(self.path, field, f"NaN or inf in sample {int(self._rows[int(bad.nonzero()[0])])}",
                                   "replace or drop non-finite values (re-import the data)")
            huge = (values.reshape(len(values), -1).abs() >= MAX_ABS_VALUE).any(dim=1)
            if huge.any():
                i = int(huge.nonzero()[0])
                raise huge_value_error(self.path, field, float(values[i].abs().max()), int(self._rows[i]))
            if len(values) < 2 or values.dim() < 2:
                continue
            per_channel = values.transpose(0, 1).reshape(values.shape[1], -1)
            constant = (per_channel.max(dim=1).values == per_channel.min(dim=1).values).nonzero().flatten().tolist()
            if constant:
                channels = self._info.modalities[name].channel_names
                label = [channels[c] for c in constant] if channels else constant
                raise DatasetError(self.path, field, f"channel(s) {label} are constant over every sample",
                                   "drop the channel (check the sensor), or leave the modality out of the config")

    def subset(self, indices: Sequence[int] | np.ndarray) -> MultimodalDataset:
        """The same file, modalities and loading mode restricted to ``indices`` (rows of the file)."""
        return MultimodalDataset(self.path, self.modalities, indices, in_memory=self.in_memory, extra=self.extra)

    @property
    def info(self) -> DatasetInfo:
        """Structure of the whole file (not only the selected rows)."""
        return self._info

    @property
    def rows(self) -> np.ndarray:
        """Rows of the file this dataset holds, in item order."""
        return self._rows.copy()

    @property
    def labels(self) -> np.ndarray:
        """Labels of the selected rows: int64 (n,) or float32 (n, T)."""
        return self._labels

    @property
    def subjects(self) -> np.ndarray:
        """Subject id (str) of every selected row."""
        return self._subjects

    @property
    def splits(self) -> np.ndarray | None:
        """Official split name of every selected row, ``None`` when the file has no ``/splits``."""
        return self._splits

    @property
    def groups(self) -> np.ndarray | None:
        """Recording/video id of every selected row, ``None`` when the file has no ``/groups``."""
        return self._groups
