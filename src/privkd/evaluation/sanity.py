"""Results that are not what they look like: models that collapsed, and teachers with nothing to teach.

A classifier that predicts the majority class for every sample still scores its share in
accuracy, and a regressor that outputs a constant still has a CCC near 0 that reads like a
weak model; a distilled row whose teacher does not beat the prevalent-only baseline has
nothing to distil. Such rows are flagged in the record, the summary, the table and the report,
with what usually causes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["COLLAPSE_SHARE", "collapse", "collapse_hint", "teacher_margin"]

COLLAPSE_SHARE = 0.95
"""A classifier whose most frequent prediction covers this share of the samples (while the
labels do not) has collapsed onto that class."""

CONSTANT_RATIO = 1e-3
"""A regressor whose outputs vary less than this fraction of the targets' spread is constant."""


def collapse(task: str, outputs: Tensor, labels: Tensor, class_names: Sequence[str] | None = None) -> str | None:
    """Why the predictions are degenerate, or ``None`` when they are not."""
    if len(labels) < 2:
        return None
    if task == "classification":
        predicted = outputs.argmax(dim=-1)
        counts = torch.bincount(predicted)
        top = int(counts.argmax())
        share = float(counts[top]) / len(predicted)
        label_share = float(torch.bincount(labels.long()).max()) / len(labels)
        if share >= COLLAPSE_SHARE and label_share < COLLAPSE_SHARE:
            name = class_names[top] if class_names is not None and top < len(class_names) else str(top)
            return f"predicts class {name} for {share:.0%} of the samples ({label_share:.0%} of them are the largest class)"
        return None
    spread_out = outputs.reshape(len(outputs), -1).float().std(dim=0)
    spread_in = labels.reshape(len(labels), -1).float().std(dim=0)
    constant = spread_out < CONSTANT_RATIO * spread_in.clamp_min(1e-12)
    if bool(constant.any()):
        return f"outputs a constant for {int(constant.sum())} of {len(constant)} target(s)"
    return None


def collapse_hint(steps_per_epoch: int, epochs: int) -> str:
    """What usually makes a model collapse, with the number of optimiser steps it had."""
    return (f"{steps_per_epoch * epochs} optimiser steps ({steps_per_epoch} per epoch x {epochs} epochs): too few steps "
            "(lower training.batch_size or raise training.epochs / training.min_steps), a learning rate too high or "
            "too low (training.lr), or class imbalance (training.class_weights: balanced)")


def teacher_margin(records: Mapping[str, Sequence[Mapping]], baseline: str | None, teacher: str | None,
                   metric: str) -> float | None:
    """Mean over folds of the teacher's validation score minus the baseline's, ``None`` without both."""
    key = f"val/{metric}"
    baselines = {record["fold"]: record for record in records.get(baseline, [])}
    pairs = [(t["validation"][key], baselines[t["fold"]]["validation"][key])
             for t in records.get(teacher, []) if t["fold"] in baselines]
    if not pairs:
        return None
    return sum(t - b for t, b in pairs) / len(pairs)
