"""Configs for tests that build modules and fit them by hand, outside the experiment runner.

The runner sizes ``auto`` keys from the training set (:mod:`privkd.training.auto`); these
tests were written for the values that sizing gives on the embedded data, so they fix them.
"""

from typing import Any

from privkd.config.loading import config_from_dict
from privkd.config.schema import RunConfig
from privkd.training.auto import resolve_training

EMBEDDED_TRAINING_SET = 3600
"""About the training samples of an embedded-data fold: ``auto`` gives batch 128, 30 epochs,
patience 8 and 30 anchors there, the papers' values."""


def fitted_config(values: dict[str, Any] | None = None) -> RunConfig:
    """``config_from_dict(values)`` with its ``auto`` keys sized as on the embedded data."""
    return resolve_training(config_from_dict(values or {}), EMBEDDED_TRAINING_SET)[0]
