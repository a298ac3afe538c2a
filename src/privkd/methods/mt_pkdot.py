"""MT-PKDOT student (Alg. 2): per batch, distil from the most confident teacher of the pool.

The pool is the joint teacher plus each adapted modality's view (its backbone embedding
mapped into the joint space by its adapter, with its own head). On every batch each
candidate's task loss is computed and the lowest wins (Alg. 2 line 7); the joint teacher is
kept unless a modality teacher is strictly better (negative-transfer fallback). The student
loss is Eq. 10: alpha * task + beta * OT + gamma * centroid (Eq. 9).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from privkd.config.schema import MTPKDOTConfig, RunConfig
from privkd.data.dataset import Batch
from privkd.data.h5format import DatasetInfo
from privkd.errors import ConfigError
from privkd.evaluation.method_figures import SIMILARITY_EVOLUTION, TEACHER_SELECTION
from privkd.losses.distillation import centroid_loss, select_teacher
from privkd.methods.base import FoldData
from privkd.methods.distributed import gather, gather_output, gather_with_grad
from privkd.methods.registry import register_method
from privkd.methods.student import StudentModule, build_student, student_arguments
from privkd.models.network import NetOutput, PrivilegedNet

JOINT = "joint"


@register_method("mtpkdot", role="student", teacher="mt_teacher", sections=("mtpkdot", "structural", "student"),
                 needs_privileged=True, figures=(TEACHER_SELECTION, SIMILARITY_EVOLUTION),
                 paper={"structural.ot_mode": "paper", "mtpkdot.centroid": "features",
                        "student.hallucinate": True})
class MTPKDOTModule(StudentModule):
    """Structural OT + centroid distillation from a per-batch selected teacher.

    ``selection_history`` holds one ``{teacher: batches}`` count per training epoch (the
    paper's Fig. 6), saved with the run.
    """

    def __init__(self, student: PrivilegedNet, teacher: PrivilegedNet, *, settings: MTPKDOTConfig, **kwargs: object) -> None:
        super().__init__(student, teacher, **kwargs)
        self.weights.update(task=settings.alpha, ot=settings.beta, centroid=settings.gamma)
        self.centroid = settings.centroid
        self.selection_history: list[dict[str, int]] = []
        self._epoch_selection: Counter[str] = Counter()

    @classmethod
    def from_config(cls, cfg: RunConfig, info: DatasetInfo, *, teacher: PrivilegedNet | None, method: str) -> MTPKDOTModule:
        student = build_student(cfg, info, teacher)
        if not teacher.adapters:
            raise ConfigError("teacher.align_weight", "mtpkdot needs a teacher with modality adapters", "set align_weight > 0")
        return cls(student, teacher, settings=cfg.mtpkdot, **student_arguments(cfg, info))

    def fold_record(self, fold: FoldData) -> dict:
        """The structure gaps, and how often each teacher was chosen per epoch (MT-PKDOT Fig. 6)."""
        return {**super().fold_record(fold), "teacher_selection": self.selection_history}

    def teacher_views(self, inputs: Mapping[str, Tensor]) -> dict[str, NetOutput]:
        """The pool: the joint teacher and every adapter view, for one batch (no gradient)."""
        with torch.no_grad():
            embeddings = self.teacher.encode(inputs)
            return {JOINT: self.teacher.fuse(embeddings), **self.teacher.adapt(embeddings)}

    def loss_terms(self, batch: Batch) -> dict[str, Tensor]:
        """Teacher selection, anchors, OT and centroid over the global batch (all ranks)."""
        pool = {name: gather_output(view) for name, view in self.teacher_outputs(batch).items()}
        labels = gather(batch.label)
        losses = {name: self.task_loss(view.logits, labels) for name, view in pool.items()}
        chosen = select_teacher(losses, fallback=JOINT)
        if self.training:
            self._epoch_selection[chosen] += 1
        student = self.student_output(self.net, batch)
        teacher_features, student_features = pool[chosen].embedding, gather_with_grad(student.embedding)
        teacher_rows, student_rows = self.structure.anchored(teacher_features, student_features)
        terms = {"task": self.task_loss(student.logits, batch.label)}
        if self.weights["ot"]:
            terms["ot"] = self.structure.transport_loss(teacher_rows, student_rows)
        if self.weights["centroid"]:
            terms["centroid"] = centroid_loss(*self.centroid_inputs(teacher_features, student_features,
                                                                     teacher_rows, student_rows))
        return terms

    def centroid_inputs(self, teacher_features: Tensor, student_features: Tensor, teacher_rows: Tensor,
                        student_rows: Tensor) -> tuple[Tensor, Tensor]:
        """What ``mtpkdot.centroid`` takes the centroids of: the features (Eq. 9), the anchored
        similarity rows, or the L2-normalised features."""
        if self.centroid == "similarities":
            return teacher_rows, student_rows
        if self.centroid == "normalized":
            return F.normalize(teacher_features, dim=-1), F.normalize(student_features, dim=-1)
        return teacher_features, student_features

    def training_state(self) -> dict:
        return {"selection_history": self.selection_history, "epoch_selection": dict(self._epoch_selection)}

    def load_training_state(self, state: dict) -> None:
        self.selection_history = list(state["selection_history"])
        self._epoch_selection = Counter(state["epoch_selection"])

    def on_train_epoch_end(self) -> None:
        names = [JOINT, *self.teacher.adapters.keys()]
        counts = {name: self._epoch_selection.get(name, 0) for name in names}
        self.selection_history.append(counts)
        total = max(sum(counts.values()), 1)
        self.log_dict({f"select/{name}": count / total for name, count in counts.items()})
        self._epoch_selection.clear()
