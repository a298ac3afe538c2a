"""Keys a run fits to the dataset: the ``auto`` value and the check that none is left unresolved."""

from __future__ import annotations

from privkd.config.schema import RunConfig, TrainingConfig
from privkd.errors import ConfigError

__all__ = ["AUTO", "FITTED_KEYS", "require_resolved"]

AUTO = "auto"
"""The value of a key that the run fits to the dataset (:mod:`privkd.training.auto`)."""

FITTED_KEYS = ("training.batch_size", "training.epochs", "training.patience", "structural.k")
"""The ``auto`` keys a model and its training need as numbers (sized from the training set)."""


def require_resolved(cfg: RunConfig | TrainingConfig) -> None:
    """Refuse a config (or its training section) whose model or training keys are still ``auto``:
    they are sized from the training set, which only :func:`privkd.training.auto.resolve_training`
    is shown."""
    for key in FITTED_KEYS:
        section, name = key.split(".")
        if isinstance(cfg, TrainingConfig):
            if section != "training":
                continue
            value = getattr(cfg, name)
        else:
            value = getattr(getattr(cfg, section), name)
        if value == AUTO:
            raise ConfigError(key, "is still 'auto', which is sized from the training set",
                              "call privkd.training.auto.resolve_training(cfg, len(train_set)) first, or set a number")
