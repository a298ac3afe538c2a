"""What every distilled student shares: a frozen teacher and a prevalent-only network.

Subclasses only say which distillation terms they add to the task loss
(``distillation_terms``). The teacher, and the student's T-Net, stay frozen and in eval
mode throughout: the student must not change what it is being taught, and batch-norm
statistics of the teacher must not drift with the student's batches.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from privkd.losses.task import task_loss
from privkd.methods.base import PrivkdModule
from privkd.models.network import NetOutput, PrivilegedNet
from privkd.training.distributed import gather_output, global_batch


class StudentModule(PrivkdModule):
    """Trains ``student`` on ``task + Σ weighted distillation terms`` against a frozen ``teacher``."""

    def __init__(self, student: PrivilegedNet, teacher: PrivilegedNet, **kwargs: object) -> None:
        super().__init__(student, **kwargs)
        self.teacher = teacher.requires_grad_(False).eval()
        if student.tnet is not None:
            student.tnet.requires_grad_(False)

    def frozen_modules(self) -> list[torch.nn.Module]:
        return [self.teacher] + ([self.net.tnet] if self.net.tnet is not None else [])

    def loss_terms(self, batch: Mapping[str, object]) -> dict[str, Tensor]:
        with torch.no_grad():
            teacher = self.teacher(batch["inputs"])
        student = self.net(batch["inputs"])
        terms = {"task": task_loss(self.task, student.logits, batch["label"])}
        terms.update(self.distillation_terms(global_batch(batch), gather_output(teacher), gather_output(student)))
        return terms

    def distillation_terms(self, batch: Mapping[str, object], teacher: NetOutput, student: NetOutput) -> dict[str, Tensor]:
        """Unweighted distillation terms on the global batch (all data-parallel ranks'
        outputs and labels, see :mod:`privkd.training.distributed`); their weights live in
        ``self.weights``."""
        raise NotImplementedError
