"""PKDOT student: prevalent encoders + frozen T-Net + fusion, trained with task + beta * structural OT.

Student loss = L_task + beta * L_OT (PKDOT's objective; MT-PKDOT Eq. 10 with one teacher and
gamma = 0), where L_OT compares the batch cosine-similarity structure of the student's joint
embedding with the frozen teacher's over the teacher's top-k most dissimilar anchors (Eq. 2-7).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from privkd.losses.structural import StructuralOTLoss
from privkd.methods.student import StudentModule
from privkd.models.network import NetOutput, PrivilegedNet


class PKDOTModule(StudentModule):
    """Distils the joint teacher's relational structure into a prevalent-only student."""

    def __init__(self, student: PrivilegedNet, teacher: PrivilegedNet, *, ot_loss: StructuralOTLoss, beta: float, **kwargs: object) -> None:
        super().__init__(student, teacher, **kwargs)
        self.ot_loss = ot_loss
        self.weights["ot"] = beta

    def distillation_terms(self, batch: Mapping[str, object], teacher: NetOutput, student: NetOutput) -> dict[str, Tensor]:
        return {"ot": self.ot_loss(teacher.embedding, student.embedding)}
