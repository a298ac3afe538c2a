"""The multimodal teacher (upper bound) and its T-Net, trained together (PKDOT, teacher stage)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from privkd.losses.mmd import gaussian_mmd2
from privkd.losses.task import task_loss
from privkd.methods.base import PrivkdModule
from privkd.models.network import PrivilegedNet


class TeacherModule(PrivkdModule):
    """Fused classifier over prevalent + privileged modalities plus the T-Net objective.

    The T-Net regresses the privileged embeddings from the prevalent ones. Its targets are
    detached: the teacher's privileged features are shaped by the task alone, and the T-Net
    follows them, instead of both drifting towards features that are merely easy to predict.
    """

    def __init__(self, net: PrivilegedNet, *, tnet_loss: str, tnet_weight: float, **kwargs: object) -> None:
        super().__init__(net, **kwargs)
        if net.tnet is None:
            raise ValueError("the teacher network needs a T-Net (privileged modalities to hallucinate)")
        self.tnet_loss = tnet_loss
        self.weights["tnet"] = tnet_weight

    def loss_terms(self, batch: Mapping[str, object]) -> dict[str, Tensor]:
        embeddings = self.net.encode(batch["inputs"])
        output = self.net.fuse(embeddings)
        hallucinated = self.net.hallucinate({k: v.detach() for k, v in embeddings.items()})
        return {
            "task": task_loss(self.task, output.logits, batch["label"]),
            "tnet": tnet_objective(self.tnet_loss, hallucinated, embeddings),
        }


def tnet_objective(kind: str, hallucinated: Mapping[str, Tensor], real: Mapping[str, Tensor]) -> Tensor:
    """Mean over privileged modalities of MSE or MMD² between T-Net output and detached real embeddings."""
    losses = []
    for name, estimate in hallucinated.items():
        target = real[name].detach()
        if kind == "mse":
            losses.append((estimate - target).pow(2).mean())
        elif kind == "mmd":
            losses.append(gaussian_mmd2(estimate, target))
        else:
            raise ValueError(f"unknown T-Net loss {kind!r}; use 'mse' or 'mmd'")
    return sum(losses) / len(losses)
