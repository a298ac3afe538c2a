"""The multimodal teachers and their T-Net, trained before the students that distil from them.

Two teachers, one per paper: PKDOT's (``teacher``, the upper bound of a results table) is the
fused network trained on the task with its T-Net; MT-PKDOT's (``mt_teacher``) is that network
self-distilled into modality adapters (MT-PKDOT Alg. 1), whose gradients reach the modality
encoders, so it is another network and PKDOT never distils from it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from privkd.config.schema import RunConfig, TeacherConfig
from privkd.data.dataset import Batch
from privkd.data.h5format import DatasetInfo
from privkd.evaluation.diagnostics import tnet_fidelity
from privkd.evaluation.method_figures import ALIGNMENT_TSNE
from privkd.losses.mmd import gaussian_mmd2
from privkd.methods.base import FoldData, PrivkdModule, common_arguments
from privkd.methods.probes import AlignmentRecorder, probe_batch
from privkd.methods.registry import register_method
from privkd.models.build import build_net
from privkd.models.inference import encode_dataset
from privkd.models.network import NetOutput, PrivilegedNet


@register_method("teacher", role="teacher", provides_teacher=True, bound="upper", sections=("teacher",),
                 needs_privileged=True)
class TeacherModule(PrivkdModule):
    """PKDOT's teacher: a fused model over prevalent + privileged modalities and its T-Net.

    The T-Net regresses the privileged embeddings from the prevalent ones. Its targets are
    detached: the teacher's privileged features are shaped by the task alone, and the T-Net
    follows them, instead of both drifting towards features that are merely easy to predict.
    """

    role = "teacher"

    def __init__(self, net: PrivilegedNet, *, settings: TeacherConfig, **kwargs: object) -> None:
        super().__init__(net, **kwargs)
        if net.tnet is None:
            raise ValueError("the teacher network needs a T-Net (privileged modalities to hallucinate)")
        self.settings = settings
        self.weights["tnet"] = settings.tnet_weight

    @classmethod
    def from_config(cls, cfg: RunConfig, info: DatasetInfo, *, teacher: PrivilegedNet | None, method: str) -> TeacherModule:
        return cls(build_net(cls.role, cfg, info), settings=cfg.teacher, **common_arguments(cfg, info))

    def fold_record(self, fold: FoldData) -> dict:
        """The T-Net refitted on the selected teacher, and its fidelity on the test subjects."""
        batch_size = fold.training.batch_size
        refit = refit_tnet(self.net, encode_dataset(self.net, fold.train, batch_size), encode_dataset(self.net, fold.val, batch_size),
                           loss=self.settings.tnet_loss, epochs=self.settings.tnet_refit_epochs,
                           lr=self.settings.tnet_refit_lr, batch_size=batch_size)
        return {"tnet": refit, "tnet_test": tnet_fidelity(self.net, fold.loader(fold.test))}

    def loss_terms(self, batch: Batch) -> dict[str, Tensor]:
        embeddings = self.net.encode(batch.inputs)
        output = self.net.fuse(embeddings)
        return self.teacher_terms(batch, embeddings, output)

    def teacher_terms(self, batch: Batch, embeddings: Mapping[str, Tensor], output: NetOutput) -> dict[str, Tensor]:
        """The task loss of the fused output and the T-Net objective on detached embeddings."""
        hallucinated = self.net.hallucinate({k: v.detach() for k, v in embeddings.items()})
        return {
            "task": self.task_loss(output.logits, batch.label),
            "tnet": tnet_objective(self.settings.tnet_loss, hallucinated, embeddings),
        }


@register_method("mt_teacher", role="mt_teacher", provides_teacher=True, sections=("teacher",), needs_privileged=True,
                 figures=(ALIGNMENT_TSNE,))
class SelfDistilledTeacherModule(TeacherModule):
    """MT-PKDOT's teacher: PKDOT's teacher plus one adapter and head per modality (Alg. 1).

    The adapters are aligned to the detached joint embedding by Eq. 1 (``align_weight``) and
    trained on the task through their own heads (``adapter_task_weight``); their gradient
    reaches the modality encoders, which is the self-distillation of the joint representation
    into earlier layers, and makes each adapted view a teacher the student can pick.
    """

    role = "mt_teacher"

    def __init__(self, net: PrivilegedNet, *, settings: TeacherConfig, **kwargs: object) -> None:
        super().__init__(net, settings=settings, **kwargs)
        self.weights.update(align=settings.align_weight, adapter_task=settings.adapter_task_weight)

    def teacher_terms(self, batch: Batch, embeddings: Mapping[str, Tensor], output: NetOutput) -> dict[str, Tensor]:
        terms = super().teacher_terms(batch, embeddings, output)
        views = self.net.adapt(embeddings)
        if views:
            terms["align"] = alignment_loss([view.embedding for view in views.values()], output.embedding)
            terms["adapter_task"] = sum(self.task_loss(view.logits, batch.label) for view in views.values())
        return terms

    def probe_recorders(self, val_set: Dataset) -> dict[str, L.Callback]:
        """The adapters' views before and after alignment (MT-PKDOT Fig. 5)."""
        return {"alignment.npz": AlignmentRecorder(probe_batch(val_set), self.net)} if self.net.adapters else {}


def alignment_loss(aligned: list[Tensor], joint: Tensor) -> Tensor:
    r"""MT-PKDOT Eq. 1: :math:`\sum_i 1 - \cos(F_i, F_{Joint})`, averaged over the batch.

    The joint embedding is the target and is detached: the adapters move towards it, not
    it towards them.
    """
    target = joint.detach()
    return sum((1.0 - F.cosine_similarity(view, target, dim=-1)).mean() for view in aligned)


def tnet_objective(kind: str, hallucinated: Mapping[str, Tensor], real: Mapping[str, Tensor]) -> Tensor:
    """Mean over privileged modalities of MSE or MMD² between T-Net output and detached real embeddings."""
    losses = []
    for name, estimate in hallucinated.items():
        target = real[name].detach()
        if kind == "mse":
            losses.append((estimate - target).pow(2).mean())
        elif kind == "mmd":
            losses.append(gaussian_mmd2(estimate.flatten(1), target.flatten(1)))
        else:
            raise ValueError(f"unknown T-Net loss {kind!r}; use 'mse' or 'mmd'")
    return sum(losses) / len(losses)


def refit_tnet(
    net: PrivilegedNet,
    train_emb: Mapping[str, Tensor],
    val_emb: Mapping[str, Tensor],
    *,
    loss: str,
    epochs: int,
    lr: float,
    batch_size: int,
    patience: int = 10,
    tnet: torch.nn.Module | None = None,
) -> dict[str, float]:
    """Fit the T-Net again on the *selected* teacher's frozen embeddings; keep its best validation epoch.

    During the teacher stage the T-Net chases embeddings that change every step, and the
    checkpoint is chosen for the teacher's accuracy, not the T-Net's. Once the teacher is
    fixed its embeddings are a stationary regression target, so a short fit on precomputed
    embeddings (seconds) gives the student a T-Net matched to the teacher it distils from.
    ``train_emb`` / ``val_emb`` are the teacher's token embeddings of the training and
    validation subjects. ``tnet``: fit this T-Net of the same shape instead of ``net``'s own (a
    student's cross-fitted ones, :mod:`privkd.methods.crossfit`). Returns the validation
    objective before and after.
    """
    tnet = tnet if tnet is not None else net.tnet

    def val_objective() -> float:
        tnet.eval()
        with torch.no_grad():
            return float(tnet_objective(loss, net.hallucinate(val_emb, tnet), val_emb))

    best_value, best_state, stale = val_objective(), copy.deepcopy(tnet.state_dict()), 0
    before = best_value
    optimizer = torch.optim.Adam(tnet.parameters(), lr=lr)
    n = next(iter(train_emb.values())).shape[0]
    for _ in range(epochs):
        tnet.train()
        for idx in torch.randperm(n).split(batch_size):
            batch = {name: value[idx] for name, value in train_emb.items()}
            objective = tnet_objective(loss, net.hallucinate(batch, tnet), batch)
            optimizer.zero_grad()
            objective.backward()
            optimizer.step()
        value = val_objective()
        if value < best_value:
            best_value, best_state, stale = value, copy.deepcopy(tnet.state_dict()), 0
        else:
            stale += 1
            if stale >= patience:
                break
    tnet.load_state_dict(best_state)
    tnet.eval()
    return {"tnet_val_before_refit": before, "tnet_val_after_refit": best_value}
