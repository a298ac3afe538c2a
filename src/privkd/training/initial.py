"""A row's score before its first optimiser step, on its training and on its validation
samples, in the selection metric its epochs are chosen by.

A start that already fits the training samples far better than unseen ones leans on an input
that does not generalise (a frozen T-Net fitted on the same training samples, a head copied
from the teacher): its training loss is low before it has learnt anything, so it learns little.
Scored once per row, with the module in eval mode and without gradient, on evaluation
loaders that draw nothing from the global random state, under a saved and restored random
state besides: training (its dropout masks, its shuffling, every trained weight) is the same
with the diagnostic as without it. A resumed training reads the first attempt's scores back
(``checkpoints/initial.json``) rather than scoring a network restored from a checkpoint.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from lightning.pytorch.loggers import Logger
from torch.utils.data import Dataset

from privkd.atomic import write_json_atomic
from privkd.config.schema import TrainingConfig
from privkd.data.loaders import make_loader
from privkd.evaluation.diagnostics import initial_fit
from privkd.evaluation.summary import (
    INITIAL_GAP_WARNING,
    leans_on_training_set,
    metric_label,
)
from privkd.methods.base import PrivkdModule, random_state, restore_random_state
from privkd.models.inference import evaluating

__all__ = ["InitialFitWarning", "initial_path", "initial_scores", "log_initial", "warn_if_leaning"]


class InitialFitWarning(UserWarning):
    """A row scored more than :data:`~privkd.evaluation.summary.INITIAL_GAP_WARNING` higher on
    its training samples than on its validation samples before its first training step."""


def initial_path(out_dir: Path) -> Path:
    """Where an unfinished training keeps its scores at initialisation, beside its resume checkpoint."""
    return out_dir / "checkpoints" / "initial.json"


@contextmanager
def unchanged_random_state() -> Iterator[None]:
    """Python's, NumPy's and torch's random states as they were before the block, whatever it drew."""
    state = random_state()
    try:
        yield
    finally:
        restore_random_state(state)


def initial_scores(module: PrivkdModule, train_set: Dataset, val_set: Dataset, cfg: TrainingConfig, out_dir: Path,
                   resuming: bool) -> dict[str, float]:
    """``module``'s selection metric as it is now (built, standardisation fitted, untrained) on
    ``train_set`` as its training steps see them and on ``val_set``, and their difference
    (``train``, ``val``, ``gap``); read back from the first attempt when ``resuming``."""
    path = initial_path(out_dir)
    if resuming and path.is_file():
        return json.loads(path.read_text())
    with unchanged_random_state(), evaluating(module):  # the whole module: a student's cross-fitted T-Nets too
        scores = initial_fit(module.net, make_loader(train_set, cfg, train=False), make_loader(val_set, cfg, train=False),
                             module.task, module.n_outputs, module.selection_metric, train_view=module.training_output,
                             val_groups=module.validation_groups)
    write_json_atomic(path, scores)  # data-parallel ranks write the same scores, each file whole
    return scores


def log_initial(loggers: Sequence[Logger], scores: Mapping[str, float]) -> None:
    """``initial/train`` and ``initial/val`` at step 0 in each of the row's trackers."""
    for logger in loggers:
        logger.log_metrics({f"initial/{part}": scores[part] for part in ("train", "val")}, step=0)


def warn_if_leaning(row: str, where: str, scores: Mapping[str, float], task: str, metric: str) -> None:
    """Warn (:class:`InitialFitWarning`) when ``row`` of ``where`` (its fold) starts leaning on its
    training set (:func:`~privkd.evaluation.summary.leans_on_training_set`)."""
    if leans_on_training_set(task, scores["train"], scores["val"]):
        warnings.warn(InitialFitWarning(
            f"{row}, {where}: before its first training step it scores {scores['train']:.4f} {metric_label(metric)} on "
            f"its training samples and {scores['val']:.4f} on its validation samples, more than "
            f"{INITIAL_GAP_WARNING:.2f} apart: it already fits the training set through an input that does not "
            "generalise (a frozen T-Net fitted on the same samples: student.hallucinate; the teacher's head and "
            "fusion: student.init_from_teacher), so it learns little from them"), stacklevel=2)
