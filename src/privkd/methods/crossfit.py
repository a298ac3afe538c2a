"""Cross-fitted T-Net hallucinations for a student's training samples.

The teacher's T-Net is fitted on the very samples a student then trains on. On a small
training set it memorises them: its hallucinated privileged tokens are far more telling on
those samples than on any new one (on a known-answer task, a student started from the
teacher scored .98 on its training samples and .80 on validation before its first step). A
student fed those hallucinations reaches a low training loss through an input that does not
generalise, and learns little from the samples themselves.

Cross-fitting (as in double machine learning) removes the leak: the training subjects are
cut into ``parts`` by a hash of the subject id, and for each part a T-Net is fitted on the
teacher's embeddings of the other parts (early-stopped on the validation subjects, like the
teacher's own refit). During training every sample is hallucinated by the T-Net that never
saw its subject, so the hallucinations of training samples are as good as those of unseen
subjects and no better. Validation, test and the deployed student use the teacher's T-Net,
fitted on every training subject. The cross-fitted T-Nets are frozen and live beside the
student (in its module, not its network), so a saved student is unchanged.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from privkd.config.schema import TeacherConfig
from privkd.methods.base import FoldData
from privkd.methods.teacher import refit_tnet
from privkd.models.inference import encode_dataset
from privkd.models.network import PrivilegedNet

__all__ = ["CrossFittedTNets", "subject_parts"]


def subject_parts(subjects: Sequence[str], parts: int) -> Tensor:
    """The cross-fitting part of each subject: a hash of its id, so that a batch's parts need no
    lookup table and a subject is in the same part in every fold."""
    return torch.tensor([zlib.crc32(str(subject).encode()) % parts for subject in subjects], dtype=torch.long)


class CrossFittedTNets(nn.Module):
    """One frozen T-Net per part, each fitted without that part's subjects."""

    def __init__(self, tnets: list[nn.Module]) -> None:
        super().__init__()
        self.tnets = nn.ModuleList(tnets).requires_grad_(False).eval()

    @classmethod
    def fit(cls, teacher: PrivilegedNet, fold: FoldData, parts: int, settings: TeacherConfig) -> CrossFittedTNets:
        """Fit one T-Net per part on ``teacher``'s embeddings of the other parts' training
        subjects. A part with no training subject keeps an unused copy of the teacher's
        T-Net; when every training subject falls into one part (two or three subjects),
        that part has nothing else to learn from and keeps the teacher's T-Net too."""
        assert teacher.tnet is not None
        batch_size = fold.training.batch_size
        train = encode_dataset(teacher, fold.train, batch_size)
        val = encode_dataset(teacher, fold.val, batch_size)
        part_of = subject_parts(fold.train.subjects, parts)
        tnets = []
        for part in range(parts):
            others = part_of != part
            tnet = copy.deepcopy(teacher.tnet)
            if bool(others.all()) or not bool(others.any()):
                tnets.append(tnet)
                continue
            for module in tnet.modules():
                if isinstance(module, nn.Linear):
                    module.reset_parameters()
            tnet.requires_grad_(True)  # a copy of the frozen teacher's
            refit_tnet(teacher, {name: value[others] for name, value in train.items()}, val, loss=settings.tnet_loss,
                       epochs=settings.tnet_refit_epochs, lr=settings.tnet_refit_lr, batch_size=batch_size, tnet=tnet)
            tnets.append(tnet)
        return cls(tnets)

    def hallucinate(self, net: PrivilegedNet, embeddings: dict[str, Tensor], subjects: Sequence[str]) -> dict[str, Tensor]:
        """Each sample's unseen-modality tokens by the T-Net fitted without its subject."""
        part_of = subject_parts(subjects, len(self.tnets)).to(next(iter(embeddings.values())).device)
        rows = torch.arange(len(part_of), device=part_of.device)
        by_part = [net.hallucinate(embeddings, tnet) for tnet in self.tnets]
        return {name: torch.stack([h[name] for h in by_part])[part_of, rows] for name in by_part[0]}
