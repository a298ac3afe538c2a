"""What the format is called and allows, and what a validated file is described as.

The bottom layer of :mod:`privkd.data.h5format`: plain constants and frozen
dataclasses that the rules, the reader, the writer and the summary all build on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "INDEPENDENCE",
    "MAX_ABS_VALUE",
    "MAX_COLUMN_BYTES",
    "MAX_DATASET_BYTES",
    "MAX_SAMPLES",
    "MAX_SAMPLE_BYTES",
    "MODALITY_KINDS",
    "TASKS",
    "DatasetInfo",
    "ModalityInfo",
    "independent",
]

FORMAT_NAME = "privkd-dataset"
FORMAT_VERSION = 1
MODALITY_KINDS = ("signal", "spectrogram", "video", "features")
TASKS = ("classification", "regression")
INDEPENDENCE = ("subject", "recording")
"""What the ``/subjects`` column identifies (root attribute ``independence``): people
(``"subject"``, the default), or, for data imported without subject ids, each recording
(``"recording"``). Held-out "subjects" are then only held-out recordings, and every table,
report and model card says "recording-independent" rather than "subject-independent"."""
MAX_ABS_VALUE = 1e18
"""Largest magnitude a stored value may have: beyond it float32 arithmetic on the data (its
squares in a standardisation or a loss; float32 ends at 3.4e38) overflows, and a value of
1e30 among ordinary ones is a unit or conversion mistake, not a measurement."""

# Declared sizes are checked before anything is read: an 8 KB file may declare a chunked
# (10, 3, 10**9) array whose chunks were never written, and reading one sample of it would
# allocate 11 GiB. The bounds are far above any real dataset.
MAX_SAMPLE_BYTES = 2**30
"""Largest sample of one modality, counted as the float32 array privkd reads it into (1 GiB)."""
MAX_DATASET_BYTES = 2**40
"""Largest modality array as stored (1 TiB)."""
MAX_SAMPLES = 10**8
"""Most samples a dataset file may hold (its labels, subjects, groups and splits are read whole)."""
MAX_COLUMN_BYTES = 2**30
"""Largest /labels, /subjects, /groups or /splits array as stored (1 GiB): they are read whole."""


@dataclass(frozen=True)
class ModalityInfo:
    """Description of one modality; ``sample_shape`` excludes the sample axis."""

    name: str
    kind: str
    sampling_rate: float | None
    sample_shape: tuple[int, ...]
    channel_names: tuple[str, ...] | None


@dataclass(frozen=True)
class DatasetInfo:
    """What a validated dataset file holds, without its arrays."""

    path: Path
    task: str
    n_samples: int
    modalities: dict[str, ModalityInfo]
    class_names: list[str] | None
    target_names: list[str] | None
    subjects: list[str]
    description: str
    source: str
    independence: str = "subject"
    """One of :data:`INDEPENDENCE`: what the held-out ids of a fold are (people or recordings)."""

    @property
    def n_classes(self) -> int | None:
        """Number of classes for classification, ``None`` for regression."""
        return None if self.class_names is None else len(self.class_names)

    @property
    def n_outputs(self) -> int:
        """Width of a model's output: one logit per class, or one value per regression target."""
        return self.n_classes if self.class_names is not None else len(self.target_names or [])


def independent(independence: str | None) -> str:
    """``"subject-independent"`` or ``"recording-independent"``: how results on held-out ids
    are described, from a dataset's, summary's or card's ``independence`` (``None``, as in
    results written before it was recorded, means subjects)."""
    return f"{independence or INDEPENDENCE[0]}-independent"
