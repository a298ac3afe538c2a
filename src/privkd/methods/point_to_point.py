"""Point-to-point distillation baselines (MT-PKDOT Table II): each student sample matches
its own teacher sample, with no batch structure.

- ``cosine``: 1 - cos between joint embeddings, weighted per batch by the teacher's
  confidence exp(-L_task^T) (dynamic weighting after Aslam et al. CVPRW'23);
- ``mse``: mean squared error between joint embeddings (Makantasis et al. TAC'23);
- ``kl``: T² KL between temperature-softened teacher and student outputs (Hinton et al.;
  classification only).
"""

from __future__ import annotations

from torch import Tensor

from privkd.config.schema import RunConfig
from privkd.data.dataset import Batch
from privkd.data.h5format import DatasetInfo
from privkd.evaluation.method_figures import SIMILARITY_EVOLUTION
from privkd.losses.distillation import (
    confidence_weight,
    cosine_matching,
    mse_matching,
    softened_kl,
)
from privkd.methods.registry import register_method
from privkd.methods.student import StudentModule, build_student, student_arguments
from privkd.models.network import NetOutput, PrivilegedNet

KINDS = ("cosine", "mse", "kl")

_facts = dict(role="student", teacher="teacher", sections=("p2p", "student"), needs_privileged=True,
              figures=(SIMILARITY_EVOLUTION,))


@register_method("p2p_kl", tasks=("classification",), **_facts)  # decorators run bottom-up: cosine registers first
@register_method("p2p_mse", **_facts)
@register_method("p2p_cosine", **_facts)
class PointToPointModule(StudentModule):
    """``task_weight * task + beta * match`` with one of the :data:`KINDS` of matching."""

    def __init__(self, student: PrivilegedNet, teacher: PrivilegedNet, *, kind: str, beta: float, temperature: float,
                 task_weight: float = 1.0, **kwargs: object) -> None:
        super().__init__(student, teacher, **kwargs)
        if kind not in KINDS:
            raise ValueError(f"unknown point-to-point kind {kind!r}; use one of {KINDS}")
        if kind == "kl" and self.task != "classification":
            raise ValueError("p2p_kl matches class distributions and needs a classification task; use p2p_mse or p2p_cosine")
        self.kind = kind
        self.temperature = temperature
        self.weights["match"] = beta
        self.weights["task"] = task_weight

    @classmethod
    def from_config(cls, cfg: RunConfig, info: DatasetInfo, *, teacher: PrivilegedNet | None, method: str) -> PointToPointModule:
        return cls(build_student(cfg, info, teacher), teacher, kind=method.removeprefix("p2p_"), beta=cfg.p2p.beta,
                   temperature=cfg.p2p.temperature, task_weight=cfg.p2p.task_weight, **student_arguments(cfg, info))

    def distillation_terms(self, batch: Batch, teacher: NetOutput, student: NetOutput) -> dict[str, Tensor]:
        if self.kind == "cosine":
            weight = confidence_weight(self.task_loss(teacher.logits, batch.label))
            return {"match": weight * cosine_matching(teacher.embedding, student.embedding)}
        if self.kind == "mse":
            return {"match": mse_matching(teacher.embedding, student.embedding)}
        return {"match": softened_kl(student.logits, teacher.logits, self.temperature)}
