"""Opening the samples a run trains on: the configured file (or an embedded dataset) with
the modalities it uses, in memory when they fit."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from privkd.config.schema import RunConfig
from privkd.data.dataset import TOKENS_SUFFIX, MultimodalDataset
from privkd.data.embedded import embedded_dataset_path
from privkd.data.h5format import DatasetInfo
from privkd.data.synthetic import PREFIX as SYNTHETIC_PREFIX
from privkd.data.synthetic import synthetic_dataset_path

__all__ = ["EMBEDDED_NAMES", "IN_MEMORY_LIMIT_BYTES", "open_dataset", "resolve_data_path"]

EMBEDDED_NAMES = {"embedded": "classification", "embedded-regression": "regression"}
"""``data.path`` values that name a dataset shipped with privkd, and which variant each is."""

IN_MEMORY_LIMIT_BYTES = 2 * 2**30
"""``data.in_memory: auto`` loads the selected modalities when they take less than this."""


def resolve_data_path(path: str, seed: int = 0) -> Path:
    """An embedded dataset's name, or a ``synthetic:`` known-answer task (drawn with ``seed``
    unless the path sets one, :mod:`privkd.data.synthetic`) → its cached file; anything else
    is a privkd HDF5 file."""
    if path in EMBEDDED_NAMES:
        return embedded_dataset_path(variant=EMBEDDED_NAMES[path])
    if path.startswith(SYNTHETIC_PREFIX):
        return synthetic_dataset_path(path, seed)
    return Path(path)


def open_dataset(cfg: RunConfig, info: DatasetInfo, data_path: Path, extra: Mapping[str, np.ndarray]) -> MultimodalDataset:
    """The run's samples: the raw prevalent and privileged modalities, except those whose
    frozen backbone's tokens ``extra`` carries (keyed ``<modality>@tokens``)."""
    raw = [m for m in (*cfg.data.prevalent, *cfg.data.privileged) if m + TOKENS_SUFFIX not in extra]
    in_memory = cfg.data.in_memory
    if in_memory == "auto":
        size = sum(4 * info.n_samples * math.prod(info.modalities[m].sample_shape) for m in raw)
        size += sum(array.nbytes for array in extra.values())
        in_memory = size < IN_MEMORY_LIMIT_BYTES
    dataset = MultimodalDataset(data_path, modalities=raw, in_memory=bool(in_memory), extra=dict(extra))
    dataset.check_values()  # a file not written by a privkd importer may hold NaN, even one read lazily
    return dataset
