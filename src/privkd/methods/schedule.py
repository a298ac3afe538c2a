"""The learning-rate schedule of ``training.lr_schedule``: one factor on ``training.lr`` per epoch.

The factor is a pure function of the epoch, so a resumed training (whose scheduler state
Lightning restores with the epoch) continues the same curve, and the default (``none``
without warm-up) builds no scheduler at all: a run that does not ask for a schedule takes
exactly the steps it took before schedules existed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from privkd.config.schema import TrainingConfig

__all__ = ["CONSTANT_LR", "LRSchedule"]


@dataclass(frozen=True)
class LRSchedule:
    """``training.lr_schedule`` with its parameters (see :class:`~privkd.config.schema.TrainingConfig`)."""

    kind: Literal["none", "cosine", "step"] = "none"
    warmup_epochs: int = 0
    step_epochs: int = 10
    gamma: float = 0.1

    @classmethod
    def of(cls, cfg: TrainingConfig) -> LRSchedule:
        """The schedule a training section asks for."""
        return cls(cfg.lr_schedule, cfg.lr_warmup_epochs, cfg.lr_step_epochs, cfg.lr_step_gamma)

    @property
    def constant(self) -> bool:
        """Whether the factor is 1 at every epoch (no scheduler is built)."""
        return self.kind == "none" and self.warmup_epochs == 0

    def factor(self, epoch: int, max_epochs: int) -> float:
        """The multiplier of the base learning rate during ``epoch`` (0-based) of ``max_epochs``.

        Warm-up rises linearly, ``(epoch + 1) / (warmup + 1)``, so that no epoch trains at a
        learning rate of 0; the schedule proper starts at 1 on the first epoch after it.
        Cosine reaches ``(1 + cos(pi (E - 1 - w) / (E - w))) / 2`` on the last epoch, small but
        above 0, so the last epoch still learns.
        """
        if epoch < self.warmup_epochs:
            return (epoch + 1) / (self.warmup_epochs + 1)
        since = epoch - self.warmup_epochs
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * since / max(max_epochs - self.warmup_epochs, 1)))
        if self.kind == "step":
            return self.gamma ** (since // self.step_epochs)
        return 1.0

    def scheduler(self, optimizer: torch.optim.Optimizer, max_epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
        """A scheduler stepped once per epoch that sets every group of ``optimizer`` to its
        initial learning rate times :meth:`factor`."""
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: self.factor(epoch, max_epochs))


CONSTANT_LR = LRSchedule()
"""``training.lr_schedule: none`` without warm-up: the learning rate never changes."""
