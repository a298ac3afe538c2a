"""PKDOT student: prevalent encoders (+ the frozen T-Net when it hallucinates) + fusion, trained with task + beta * structural OT.

Student loss = L_task + beta * L_OT (PKDOT's objective; MT-PKDOT Eq. 10 with one teacher and
gamma = 0), where L_OT compares the batch cosine-similarity structure of the student's joint
embedding with the frozen teacher's over the teacher's top-k most dissimilar anchors (Eq. 2-7).
"""

from __future__ import annotations

from torch import Tensor

from privkd.config.schema import RunConfig
from privkd.data.dataset import Batch
from privkd.data.h5format import DatasetInfo
from privkd.evaluation.method_figures import SIMILARITY_EVOLUTION
from privkd.methods.registry import register_method
from privkd.methods.student import StudentModule, build_student, student_arguments
from privkd.models.network import NetOutput, PrivilegedNet


@register_method("pkdot", role="student", teacher="teacher", sections=("pkdot", "structural", "student"),
                 needs_privileged=True, figures=(SIMILARITY_EVOLUTION,), paper={"structural.ot_mode": "paper", "student.hallucinate": True})
class PKDOTModule(StudentModule):
    """Distils the joint teacher's relational structure into a prevalent-only student."""

    def __init__(self, student: PrivilegedNet, teacher: PrivilegedNet, *, beta: float, **kwargs: object) -> None:
        super().__init__(student, teacher, **kwargs)
        self.weights["ot"] = beta

    @classmethod
    def from_config(cls, cfg: RunConfig, info: DatasetInfo, *, teacher: PrivilegedNet | None, method: str) -> PKDOTModule:
        return cls(build_student(cfg, info, teacher), teacher, beta=cfg.pkdot.beta, **student_arguments(cfg, info))

    def distillation_terms(self, batch: Batch, teacher: NetOutput, student: NetOutput) -> dict[str, Tensor]:
        return {"ot": self.structure(teacher.embedding, student.embedding)}
