"""PKDOT student: prevalent encoders + frozen T-Net + fusion, trained with task + beta * structural OT.

Student loss = L_task + beta * L_OT (MT-PKDOT Eq. 10 with gamma = 0; PKDOT's objective),
where L_OT compares the batch cosine-similarity structure of the student's joint embedding
with the frozen teacher's over the teacher's top-k most dissimilar anchors (Eq. 2-7).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from privkd.losses.structural import StructuralOTLoss
from privkd.losses.task import task_loss
from privkd.methods.base import PrivkdModule
from privkd.models.network import PrivilegedNet


class PKDOTModule(PrivkdModule):
    """Distils the teacher's relational structure into a student that sees prevalent modalities only.

    The teacher (and the student's T-Net) stay frozen and in eval mode throughout: the
    student must not change what it is being taught.
    """

    def __init__(self, student: PrivilegedNet, teacher: PrivilegedNet, *, ot_loss: StructuralOTLoss, beta: float, **kwargs: object) -> None:
        super().__init__(student, **kwargs)
        self.teacher = teacher.requires_grad_(False).eval()
        if student.tnet is not None:
            student.tnet.requires_grad_(False)
        self.ot_loss = ot_loss
        self.weights["ot"] = beta

    def train(self, mode: bool = True) -> PKDOTModule:
        super().train(mode)
        self.teacher.eval()
        if self.net.tnet is not None:
            self.net.tnet.eval()
        return self

    def loss_terms(self, batch: Mapping[str, object]) -> dict[str, Tensor]:
        with torch.no_grad():
            teacher_embedding = self.teacher(batch["inputs"]).embedding
        student = self.net(batch["inputs"])
        return {
            "task": task_loss(self.task, student.logits, batch["label"]),
            "ot": self.ot_loss(teacher_embedding, student.embedding),
        }
