"""Data: the privkd HDF5 dataset format, its torch dataset, the embedded default data and subject-wise folds."""

from privkd.data.importers.arrays import from_arrays
from privkd.data.dataset import MultimodalDataset
from privkd.data.embedded import (
    OVERLAP,
    WINDOW_SECONDS,
    build_watch_dataset,
    embedded_dataset_path,
    load_watch_recordings,
)
from privkd.data.folds import Fold, official_split_fold, subject_folds
from privkd.data.h5format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MODALITY_KINDS,
    TASKS,
    DatasetInfo,
    ModalityInfo,
    describe,
    read_info,
    validate_dataset,
    write_dataset,
    write_streamed_dataset,
)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MODALITY_KINDS",
    "OVERLAP",
    "TASKS",
    "WINDOW_SECONDS",
    "DatasetInfo",
    "Fold",
    "ModalityInfo",
    "MultimodalDataset",
    "build_watch_dataset",
    "describe",
    "embedded_dataset_path",
    "from_arrays",
    "load_watch_recordings",
    "official_split_fold",
    "read_info",
    "subject_folds",
    "validate_dataset",
    "write_dataset",
    "write_streamed_dataset",
]
