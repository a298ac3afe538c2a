"""The one on-disk dataset format of privkd: one HDF5 file per dataset.

Every importer converts into this format and everything downstream reads only
this format, so no training code ever knows where the data came from.

Layout::

    /modalities/<name>   float32 array, first axis = sample, e.g. (N, channels, time);
                         video may be stored as uint8 (0-255), read back as float32 in [0, 1];
                         attrs: kind ("signal" | "spectrogram" | "video" | "features"),
                                sampling_rate (Hz; NaN allowed only for "features"),
                                channel_names (optional JSON list, one per axis-1 entry)
    /labels              int64 (N,) class ids (classification) or float32 (N,) / (N, T) targets
    /subjects            UTF-8 strings (N,), subject id of every sample
    /groups              optional UTF-8 strings (N,), recording / video id
    /splits              optional UTF-8 strings (N,), e.g. "train" / "validation"
    root attrs           format = "privkd-dataset", format_version = 1,
                         task ("classification" | "regression"),
                         class_names (JSON list, classification), target_names (JSON list, regression),
                         description, source,
                         independence (optional: "subject", the default, or "recording" when
                         /subjects holds one id per recording because the data has no subject ids)

The writer and the validator share one set of rules
(:func:`~privkd.data.h5format.rules._check_content`): the writer checks the
in-memory arrays exactly as the validator checks a file, so a file written by
:func:`write_dataset` always validates. Errors are
:class:`~privkd.errors.DatasetError` naming the file, the field and the fix.

- :mod:`~privkd.data.h5format.spec`: the format's name, version, kinds and tasks, and the
  dataclasses describing a validated file, the bottom layer;
- :mod:`~privkd.data.h5format.rules`: the checks shared by the writer and the validator;
- :mod:`~privkd.data.h5format.validation`: reading a file and checking it against the rules;
- :mod:`~privkd.data.h5format.writing`: writing whole arrays or streamed samples, checked first;
- :mod:`~privkd.data.h5format.summary`: the human-readable description of a file.
"""

from privkd.data.h5format.spec import (
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEPENDENCE,
    MAX_ABS_VALUE,
    MODALITY_KINDS,
    TASKS,
    DatasetInfo,
    ModalityInfo,
    independent,
)
from privkd.data.h5format.summary import describe
from privkd.data.h5format.validation import read_info, validate_dataset
from privkd.data.h5format.writing import write_dataset, write_streamed_dataset

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "INDEPENDENCE",
    "MAX_ABS_VALUE",
    "MODALITY_KINDS",
    "TASKS",
    "DatasetInfo",
    "ModalityInfo",
    "describe",
    "independent",
    "read_info",
    "validate_dataset",
    "write_dataset",
    "write_streamed_dataset",
]
