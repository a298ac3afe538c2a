"""Cross-corpus evaluation (``data.test_path``): train and select on one dataset, test once on another.

A model trained on one corpus (IEMOCAP) and tested on another (MSP-Improv) is scored on
people, sessions and recording conditions it never saw, the question a deployment asks. The
two files must describe the same inputs and outputs: every modality the run uses with the same
kind and sample shape, the same task, and the same classes (in the same order: a class index
means the same label in both) or regression targets. Anything else is refused before the run
directory exists, naming the file, the field and the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from privkd.config.schema import RunConfig
from privkd.data import MultimodalDataset, read_info
from privkd.data.h5format import DatasetInfo
from privkd.data.opening import open_dataset, resolve_data_path
from privkd.errors import ConfigError
from privkd.training.feature_cache import frozen_backbone_tokens

__all__ = ["check_test_corpus", "open_test_corpus", "read_test_corpus"]


def read_test_corpus(cfg: RunConfig, info: DatasetInfo) -> DatasetInfo | None:
    """The description of ``data.test_path`` once it matches the training dataset ``info``
    (:func:`check_test_corpus`); None without ``data.test_path``."""
    if cfg.data.test_path is None:
        return None
    test_info = read_info(resolve_data_path(cfg.data.test_path, cfg.seed))
    check_test_corpus(cfg, info, test_info)
    return test_info


def check_test_corpus(cfg: RunConfig, info: DatasetInfo, test_info: DatasetInfo) -> None:
    """Refuse a test dataset whose task, used modalities (kind, sample shape) or classes /
    targets differ from the training dataset's, naming what differs in which file."""
    where = f"{test_info.path} (data.test_path) against {info.path} (data.path)"
    if test_info.task != info.task:
        raise ConfigError("data.test_path", f"{where}: a {test_info.task} task against a {info.task} one",
                          "test on a dataset of the same task")
    for name in (*cfg.data.prevalent, *cfg.data.privileged):
        train_modality, test_modality = info.modalities[name], test_info.modalities.get(name)
        if test_modality is None:
            raise ConfigError("data.test_path", f"{where}: modality {name!r} is missing from the test dataset, which "
                              f"holds {sorted(test_info.modalities)}",
                              f"import the test dataset with a modality named {name!r} (same kind and sample shape)")
        for field in ("kind", "sample_shape"):
            trained, tested = getattr(train_modality, field), getattr(test_modality, field)
            if trained != tested:
                raise ConfigError("data.test_path", f"{where}: modality {name!r} has {field} {tested} in the test "
                                  f"dataset but {trained} in the training one",
                                  f"re-import the test dataset so that {name!r} has {field} {trained} (same "
                                  "preprocessing, window length and channels)")
    field = "class_names" if info.task == "classification" else "target_names"
    trained, tested = getattr(info, field), getattr(test_info, field)
    if trained != tested:
        raise ConfigError("data.test_path", f"{where}: {field} {tested} in the test dataset but {trained} in the "
                          "training one (a label index must mean the same in both)",
                          f"re-import one of them with the same {field.replace('_', ' ')} in the same order, leaving "
                          "out the samples of a class the other lacks")


def open_test_corpus(cfg: RunConfig, test_info: DatasetInfo | None,
                     progress: Callable[[str], None]) -> MultimodalDataset | None:
    """The samples of ``data.test_path`` (with its own cached frozen-backbone tokens), or None
    without it."""
    if test_info is None:
        return None
    path = Path(test_info.path)
    return open_dataset(cfg, test_info, path, frozen_backbone_tokens(cfg, test_info, path, progress))
