"""AMID (Enhanced Multimodal Representation Learning with Cross-modal KD, CVPR 2023).

Three models trained online, together (Fig. 2): the full-modality teacher M (prevalent +
privileged extractor features concatenated through a 2-layer MLP), the target-modality
student S (the prevalent modalities) and the auxiliary-modality model A (the privileged
ones). Extractors are shared (Sec. 4.2): S uses M's prevalent encoders and A its privileged
encoders; S and M share the classifier (Eq. 15). The loss is Eq. 17,

    L = L_cls + L_JSD + a1 L_MIs + a2 L_MIa + a3 L_adv,

with the label-aware contrastive MI bounds of Eq. 7-9 (or plain InfoNCE in the ablation),
the adversarial conditional-entropy term of Eq. 11-12 against two discriminators trained by
Eq. 13 in alternation (manual optimisation), their weights set per epoch by Eq. 14, and a
warm-up of ``warmup_epochs`` epochs with L_cls + L_JSD only (Sec. 4.2).

What "no gradient reaches the teacher through L_adv" means with shared extractors: L_adv
(Eq. 12) is a function of S alone, so the teacher's own modules (its fusion MLP, the
privileged encoders) receive none of it; the shared prevalent encoders are the student's
too and do receive it.
"""

from __future__ import annotations

from collections.abc import Mapping

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from privkd.config.schema import AMIDConfig, RunConfig
from privkd.data.dataset import Batch
from privkd.data.h5format import DatasetInfo
from privkd.evaluation.method_figures import AMID_GAP, SIMILARITY_EVOLUTION
from privkd.evaluation.metrics import score
from privkd.losses.amid import (
    AlignmentMeter,
    DynamicDiscriminatorWeights,
    amid_adversarial_loss,
    amid_discriminator_loss,
    info_nce,
    jensen_shannon,
    label_aware_contrastive_mi,
)
from privkd.methods.base import FoldData, PrivkdModule, common_arguments
from privkd.methods.distributed import gather, gather_with_grad
from privkd.methods.probes import SimilarityRecorder, probe_batch
from privkd.methods.registry import register_method
from privkd.models.build import build_net
from privkd.models.discriminators import (
    enhanced_discriminator,
    fundamental_discriminator,
)
from privkd.models.inference import predict
from privkd.models.network import NetOutput, PrivilegedNet

D1_ONLY_WEIGHTS = (1.0, 0.0)
FIXED_WEIGHTS = (0.5, 0.5)


@register_method("amid_teacher", role="amid_teacher", provides_teacher=True, tasks=("classification",),
                 needs_privileged=True)
class AMIDTeacherModule(PrivkdModule):
    """AMID's full-modality teacher M trained on the task alone (the extractors' features
    concatenated through a 2-layer MLP, Sec. 4.2): the fixed, pre-trained teacher of the
    ablation in Table 5, trained once per fold before the rows that distil from it."""

    @classmethod
    def from_config(cls, cfg: RunConfig, info: DatasetInfo, *, teacher: PrivilegedNet | None, method: str) -> AMIDTeacherModule:
        return cls(build_net("amid_teacher", cfg, info), **common_arguments(cfg, info))


def _teacher(cfg: RunConfig) -> str | None:
    """AMID trains its teacher online; its fixed-teacher ablation distils from a pre-trained AMID teacher."""
    return None if cfg.amid.online_teacher else "amid_teacher"


@register_method("amid", role="baseline", teacher=_teacher, tasks=("classification",), sections=("amid",),
                 needs_privileged=True, figures=(AMID_GAP, SIMILARITY_EVOLUTION),
                 paper={"amid.contrastive": "label_aware", "amid.mi_reduction": "sum", "amid.discriminators": "both",
                        "amid.dynamic_weights": True, "amid.online_teacher": True})
class AMIDModule(PrivkdModule):
    """Online teacher-student-auxiliary training with AMID's losses; ``self.net`` is the student.

    With ``settings.online_teacher`` false, ``teacher`` is a frozen pre-trained teacher
    (the ablation of Table 5): only the student and the discriminators train, L_MIa (which
    only shapes the teacher and A) is skipped, and the student keeps its own classifier.
    """

    def __init__(
        self, student: PrivilegedNet, teacher: PrivilegedNet, auxiliary: PrivilegedNet | None, *, settings: AMIDConfig, **kwargs: object
    ) -> None:
        super().__init__(student, **kwargs)
        self.automatic_optimization = False
        self.settings = settings
        self.teacher = teacher
        self.auxiliary = auxiliary
        if not settings.online_teacher:
            teacher.requires_grad_(False).eval()
        dim = teacher.head.in_features
        self.d1 = fundamental_discriminator(dim)
        self.d2 = enhanced_discriminator(dim) if settings.discriminators == "both" else None
        self.lambdas = DynamicDiscriminatorWeights(beta=0.9)
        self.alignment = AlignmentMeter()
        self.weights.update(jsd=1.0, mi_s=settings.alpha_mi_s, mi_a=settings.alpha_mi_a, adv=settings.alpha_adv)
        self.gap_history: list[dict[str, float]] = []
        self._epoch_correct = {"teacher": 0, "student": 0, "total": 0}

    @classmethod
    def from_config(cls, cfg: RunConfig, info: DatasetInfo, *, teacher: PrivilegedNet | None, method: str) -> AMIDModule:
        """AMID's three models with shared extractors and classifier, or, for the fixed-teacher
        ablation, a fresh student against the fold's pre-trained AMID ``teacher``."""
        student = build_net("baseline", cfg, info)
        common = common_arguments(cfg, info)
        if not cfg.amid.online_teacher:
            if teacher is None:
                raise ValueError("AMID with a fixed teacher needs the fold's trained AMID teacher")
            return cls(student, teacher, None, settings=cfg.amid, **common)
        online_teacher = build_net("amid_teacher", cfg, info)
        student.share_modules(online_teacher)
        auxiliary = build_net("auxiliary", cfg, info)
        auxiliary.share_modules(online_teacher, head=False)
        return cls(student, online_teacher, auxiliary, settings=cfg.amid, **common)

    def probe_recorders(self, val_set: Dataset) -> dict[str, L.Callback]:
        """The student's similarity matrix beside its teacher's, per epoch."""
        return {"similarity.npz": SimilarityRecorder(probe_batch(val_set), self.net, self.teacher)}

    def fold_record(self, fold: FoldData) -> dict:
        """Training accuracy of teacher and student per epoch (AMID Fig. 4)."""
        return {"teacher_student_gap": self.gap_history}

    def extra_test_metrics(self, loader: DataLoader) -> dict[str, float]:
        """The teacher's scores on the test subjects beside the student's (AMID Table 4)."""
        teacher = predict(self.teacher, loader)
        scores = score(self.task, teacher.outputs, teacher.labels, n_outputs=self.n_outputs)
        return {f"teacher_{name}": value for name, value in scores.items()}

    def frozen_modules(self) -> list[torch.nn.Module]:
        return [] if self.settings.online_teacher else [self.teacher]

    def trained_networks(self) -> list[PrivilegedNet]:
        return [self.net, self.teacher] if self.settings.online_teacher else [self.net]

    @property
    def discriminator_weights(self) -> tuple[float, float]:
        """lambda_1, lambda_2 of Eq. 12-13 for the current epoch."""
        if self.d2 is None:
            return D1_ONLY_WEIGHTS
        return self.lambdas.weights if self.settings.dynamic_weights else FIXED_WEIGHTS

    def in_warmup(self) -> bool:
        return self.current_epoch < self.settings.warmup_epochs

    def epoch_is_selectable(self) -> bool:
        """Only epochs trained with the full Eq. 17 may be the result: a warm-up checkpoint
        (L_cls + L_JSD only) would report plain joint training under AMID's name."""
        return not self.in_warmup()

    def min_epochs(self) -> int:
        return self.settings.warmup_epochs + 1

    def contrastive(self, anchor: Tensor, other: Tensor, labels: Tensor) -> Tensor:
        """Eq. 8/9 (label-aware MI lower bound) or the plain InfoNCE of the ablation."""
        if self.settings.contrastive == "infonce":
            return info_nce(anchor, other, self.settings.tau)
        return label_aware_contrastive_mi(anchor, other, labels, self.settings.tau, self.settings.mi_reduction)

    def forward_models(self, inputs: Mapping[str, Tensor]) -> tuple[NetOutput, NetOutput]:
        """Teacher and student outputs (the teacher without gradient when it is fixed).

        The online teacher's extractors are the student's and the auxiliary model's too, so
        they run once per batch and every model fuses the same embeddings (the student and
        the auxiliary model their own modalities' of them, :meth:`auxiliary_output`); a
        second pass would repeat the same work, with the same result, for the same gradient,
        and move the extractors' batch-norm statistics twice per batch."""
        if not self.settings.online_teacher:
            with torch.no_grad():
                teacher = self.teacher(inputs)
            return teacher, self.net(inputs)
        embeddings = self.teacher.encode(inputs)
        return self.teacher.fuse(embeddings), self.net.fuse(_own(self.net, embeddings))

    def auxiliary_output(self, teacher: NetOutput) -> NetOutput:
        """The auxiliary model A on the privileged embeddings the teacher's pass computed."""
        return self.auxiliary.fuse(_own(self.auxiliary, teacher.modality_embeddings))

    def loss_terms(self, batch: Batch) -> dict[str, Tensor]:
        teacher, student = self.forward_models(batch.inputs)
        return self.generator_terms(batch, teacher, student)

    def generator_terms(self, batch: Batch, teacher: NetOutput, student: NetOutput) -> dict[str, Tensor]:
        """Unweighted terms of Eq. 17 for the teacher/student/auxiliary step."""
        labels = batch.label
        online = self.settings.online_teacher
        terms = {"task": self.task_loss(student.logits, labels)}
        if online:
            terms["task"] = terms["task"] + self.task_loss(teacher.logits, labels)  # Eq. 15
        terms["jsd"] = jensen_shannon(student.logits, teacher.logits)  # Eq. 16
        if self.in_warmup():
            return terms
        # batch-structural terms on the global batch of all data-parallel ranks
        labels, teacher_embedding = gather(labels), gather_with_grad(teacher.embedding)
        student_embedding = gather_with_grad(student.embedding)
        if self.weights["mi_s"]:
            terms["mi_s"] = self.contrastive(teacher_embedding, student_embedding, labels)  # Eq. 8
        if online and self.auxiliary is not None and self.weights["mi_a"]:
            auxiliary = gather_with_grad(self.auxiliary_output(teacher).embedding)
            terms["mi_a"] = self.contrastive(teacher_embedding, auxiliary, labels)  # Eq. 9
        if self.weights["adv"]:
            terms["adv"] = amid_adversarial_loss(self.d1, self._d2, student_embedding, labels, self.discriminator_weights)
        return terms

    @property
    def _d2(self) -> torch.nn.Module:
        """D2, or D1 standing in with lambda_2 = 0 when D2 is ablated (its term then vanishes)."""
        return self.d2 if self.d2 is not None else self.d1

    def discriminator_step(self, teacher_embedding: Tensor, student_embedding: Tensor, labels: Tensor) -> Tensor:
        """Eq. 13 on detached embeddings: only the discriminators learn from it."""
        _, disc_optimizer = self.optimizers()
        loss = amid_discriminator_loss(self.d1, self._d2, teacher_embedding, student_embedding, labels, self.discriminator_weights)
        disc_optimizer.zero_grad()
        self.manual_backward(loss)
        disc_optimizer.step()
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Generator step on Eq. 17, then (after warm-up) the discriminator step on Eq. 13."""
        main_optimizer, _ = self.optimizers()
        labels = batch.label
        teacher, student = self.forward_models(batch.inputs)
        self._count_correct(teacher.logits, student.logits, labels)
        terms = self.generator_terms(batch, teacher, student)
        total = self.weighted_total(terms)
        main_optimizer.zero_grad()
        self.manual_backward(total)
        main_optimizer.step()
        if not self.in_warmup():
            teacher_embedding = gather_with_grad(teacher.embedding.detach())
            student_embedding, labels = gather_with_grad(student.embedding.detach()), gather(labels)
            self.alignment.add(teacher_embedding, student_embedding, labels)
            if self.weights["adv"]:
                terms["discriminator"] = self.discriminator_step(teacher_embedding, student_embedding, labels)
        self.log_training_terms(terms, total, batch_size=len(labels))
        return total

    def _count_correct(self, teacher_logits: Tensor, student_logits: Tensor, labels: Tensor) -> None:
        """Training accuracy of teacher and student this epoch (the gap of AMID Fig. 4)."""
        self._epoch_correct["teacher"] += int((teacher_logits.argmax(-1) == labels).sum())
        self._epoch_correct["student"] += int((student_logits.argmax(-1) == labels).sum())
        self._epoch_correct["total"] += len(labels)

    def on_train_epoch_end(self) -> None:
        """Eq. 14 update of lambda from this epoch's alignment, the teacher-student gap (Fig. 4),
        and the epoch's step of ``training.lr_schedule`` (manual optimisation steps it here)."""
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        if self.settings.dynamic_weights and self.d2 is not None and not self.in_warmup():
            self.lambdas.update(self.alignment.means())
        self.alignment.reset()
        total = max(self._epoch_correct["total"], 1)
        record = {name: self._epoch_correct[name] / total for name in ("teacher", "student")}
        record["lambda_1"], record["lambda_2"] = self.discriminator_weights
        self.gap_history.append(record)
        self.log_dict({"train/teacher_accuracy": record["teacher"], "train/student_accuracy": record["student"]})
        self._epoch_correct = {"teacher": 0, "student": 0, "total": 0}

    def training_state(self) -> dict:
        """Eq. 14's smoothed alignments (they set lambda for the next epoch) and the Fig. 4 history."""
        return {"smoothed": list(self.lambdas.smoothed), "gap_history": self.gap_history,
                "epoch_correct": dict(self._epoch_correct),
                "alignment": {"sums": list(self.alignment.sums), "counts": list(self.alignment.counts)}}

    def load_training_state(self, state: dict) -> None:
        self.lambdas.smoothed = list(state["smoothed"])
        self.gap_history = list(state["gap_history"])
        self._epoch_correct = dict(state["epoch_correct"])
        self.alignment.sums, self.alignment.counts = list(state["alignment"]["sums"]), list(state["alignment"]["counts"])

    def configure_optimizers(self) -> list[torch.optim.Optimizer] | tuple[list[torch.optim.Optimizer], list]:
        """The networks' optimiser, scheduled by ``training.lr_schedule``, and the discriminators'
        Adam at ``amid.discriminator_lr``, which the schedule leaves alone."""
        discriminators = list(self.d1.parameters()) + (list(self.d2.parameters()) if self.d2 is not None else [])
        disc_ids = {id(p) for p in discriminators}
        main = self.make_optimizer([p for p in self.trainable_parameters() if id(p) not in disc_ids])
        optimizers = [main, torch.optim.Adam(discriminators, lr=self.settings.discriminator_lr, betas=(0.5, 0.999))]
        scheduler = self.make_scheduler(main)
        return optimizers if scheduler is None else (optimizers, [scheduler])


def _own(net: PrivilegedNet, embeddings: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The embeddings of the modalities ``net`` encodes itself."""
    return {name: embeddings[name] for name in net.encoders}
