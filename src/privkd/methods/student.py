"""What every distilled student shares: a frozen teacher and a prevalent-only network.

Subclasses only say which distillation terms they add to the task loss
(``distillation_terms``). The teacher, and the student's T-Net, stay frozen and in eval
mode throughout: the student must not change what it is being taught, and batch-norm
statistics of the teacher must not drift with the student's batches.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import Dataset

from privkd.config.schema import RunConfig, StructuralConfig, TeacherConfig
from privkd.data.dataset import Batch
from privkd.data.h5format import DatasetInfo
from privkd.evaluation.diagnostics import structure_gaps
from privkd.losses.structural import StructuralOTLoss
from privkd.methods.base import FoldData, PrivkdModule, common_arguments
from privkd.methods.crossfit import CrossFittedTNets
from privkd.methods.distributed import gather_output, global_batch
from privkd.methods.frozen_outputs import FrozenOutputCache
from privkd.methods.probes import SimilarityRecorder, probe_batch
from privkd.models.build import build_net
from privkd.models.network import NetOutput, PrivilegedNet


def build_student(cfg: RunConfig, info: DatasetInfo, teacher: PrivilegedNet | None) -> PrivilegedNet:
    """The prevalent-only network of a distilled student, with its teacher's trained T-Net when
    it hallucinates (``student.hallucinate``), started from the teacher's other weights too
    when ``student.init_from_teacher`` says so.

    The T-Net belongs to the teacher stage (trained with the teacher, refitted on it): a
    student from scratch must hallucinate with it too, never with a random, untrained one."""
    if teacher is None:
        raise ValueError("a distilled student needs the fold's trained teacher")
    student = build_net("student", cfg, info)
    if cfg.student.init_from_teacher:
        student.load_shared_weights(teacher)
    elif student.tnet is not None:
        student.tnet.load_state_dict(teacher.tnet.state_dict())
    return student


def student_arguments(cfg: RunConfig, info: DatasetInfo) -> dict[str, object]:
    """What every distilled student's constructor takes from the run, beside its own settings."""
    return {**common_arguments(cfg, info), "structural": cfg.structural, "cache_teacher": cfg.student.cache_teacher_outputs,
            "crossfit_parts": cfg.student.tnet_crossfit, "tnet_settings": cfg.teacher}


class StudentModule(PrivkdModule):
    """Trains ``student`` on ``task + Σ weighted distillation terms`` against a frozen ``teacher``.

    ``structure`` is the structural OT loss of the run's ``structural`` settings: the
    structural methods train with it, and every student is measured with it on the test
    subjects (:func:`~privkd.evaluation.diagnostics.structure_gaps`), as initialised and as
    trained. The teacher's outputs a step reads (:meth:`teacher_views`) are computed once per
    sample (``cache_teacher``, :mod:`privkd.methods.frozen_outputs`).
    """

    def __init__(self, student: PrivilegedNet, teacher: PrivilegedNet, *, structural: StructuralConfig,
                 cache_teacher: bool = True, crossfit_parts: int = 0, tnet_settings: TeacherConfig | None = None,
                 **kwargs: object) -> None:
        super().__init__(student, **kwargs)
        self.teacher = teacher.requires_grad_(False).eval()
        self.teacher_outputs = FrozenOutputCache(self.teacher_views, enabled=cache_teacher)
        if student.tnet is not None:
            student.tnet.requires_grad_(False)
        self.structure = StructuralOTLoss(k=structural.k, epsilon=structural.epsilon, mode=structural.ot_mode)
        self._initial = (copy.deepcopy(student),)  # a tuple: kept out of the module's parameters and checkpoints
        self.crossfit_parts = crossfit_parts
        self.tnet_settings = tnet_settings or TeacherConfig()
        self.crossfit: CrossFittedTNets | None = None
        """The cross-fitted T-Nets that hallucinate the training samples (:meth:`prepare_fold`)."""

    def prepare_fold(self, fold: FoldData) -> None:
        """Fit the cross-fitted T-Nets (``student.tnet_crossfit`` parts) on the teacher's
        embeddings of the training subjects, when the student hallucinates and the teacher's
        T-Net is refitted (``teacher.tnet_refit_epochs`` > 0, the schedule they follow)."""
        if self.crossfit_parts > 1 and self.net.tnet is not None and self.tnet_settings.tnet_refit_epochs > 0:
            self.crossfit = CrossFittedTNets.fit(self.teacher, fold, self.crossfit_parts, self.tnet_settings)

    def frozen_modules(self) -> list[torch.nn.Module]:
        tnets = [self.net.tnet] if self.net.tnet is not None else []
        return [self.teacher, *tnets, *([self.crossfit] if self.crossfit is not None else [])]

    def student_output(self, net: PrivilegedNet, batch: Batch, training: bool | None = None) -> NetOutput:
        """``net`` on a batch as training sees it: its training samples hallucinated by the
        cross-fitted T-Nets (when there are any, in training mode or with ``training``), else
        its own forward."""
        if self.crossfit is None or not (self.training if training is None else training):
            return net(batch.inputs)
        return net.forward_with(batch.inputs, lambda seen: self.crossfit.hallucinate(net, seen, batch.subject))

    def training_output(self, batch: Batch) -> NetOutput:
        """The student on a training batch as its steps see it, cross-fitted hallucinations included."""
        return self.student_output(self.net, batch, training=True)

    def teacher_views(self, inputs: Mapping[str, Tensor]) -> dict[str, NetOutput]:
        """The frozen teacher's outputs a training step reads, by name (here: the joint teacher's)."""
        return {"teacher": self.teacher(inputs)}

    def loss_terms(self, batch: Batch) -> dict[str, Tensor]:
        teacher = self.teacher_outputs(batch)["teacher"]
        student = self.student_output(self.net, batch)
        terms = {"task": self.task_loss(student.logits, batch.label)}
        terms.update(self.distillation_terms(global_batch(batch), gather_output(teacher), gather_output(student)))
        return terms

    def distillation_terms(self, batch: Batch, teacher: NetOutput, student: NetOutput) -> dict[str, Tensor]:
        """Unweighted distillation terms on the global batch (all data-parallel ranks'
        outputs and labels, see :mod:`privkd.methods.distributed`); their weights live in
        ``self.weights``."""
        raise NotImplementedError

    def step_diagnostics(self) -> dict[str, float]:
        """How well the step's Sinkhorn solves converged (``sinkhorn_marginal_error``,
        ``sinkhorn_converged``, ``sinkhorn_iterations``), when the step solved any."""
        return self.structure.solver_metrics(prefix="sinkhorn_") if self.structure.last_report is not None else {}

    def probe_recorders(self, val_set: Dataset) -> dict[str, L.Callback]:
        """The student's similarity matrix beside the teacher's, per epoch (MT-PKDOT Fig. 4)."""
        return {"similarity.npz": SimilarityRecorder(probe_batch(val_set), self.net, self.teacher)}

    def initial_student(self) -> PrivilegedNet:
        """The student as initialised, with the input standardisation it was trained with
        (fitted on the training subjects after the snapshot was taken)."""
        initial = self._initial[0]
        for name, encoder in self.net.encoders.items():
            initial.encoders[name].standardize.load_state_dict(encoder.standardize.state_dict())
        return initial

    def fold_record(self, fold: FoldData) -> dict:
        """How far the student's anchored similarity structure is from the teacher's on the
        test subjects, before and after distillation."""
        students = {"before": self.initial_student(), "after": self.net}
        return {"structure_test": structure_gaps(self.teacher, students, fold.loader(fold.test), self.structure)}
