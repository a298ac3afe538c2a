"""What a run records beyond its scores, for the report's figures: a fixed probe batch of
validation samples watched during training.

- Students (MT-PKDOT Fig. 4): the cosine-similarity matrix of the student's joint embeddings
  on the probe batch after every epoch (and before the first), next to the frozen teacher's.
- Teachers with modality adapters (MT-PKDOT Fig. 5): the joint embedding and every adapter's
  view of the probe batch before training and after it, for a t-SNE of the alignment.

The probe batch comes from the validation subjects, never the test subjects, and is sorted by
class so that class blocks show in the matrices.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from privkd.data.dataset import Batch
from privkd.losses.structural import cosine_similarity_matrix
from privkd.models.inference import evaluating
from privkd.models.network import PrivilegedNet

PROBE_SIZE = 48


def probe_batch(val_set: Dataset, size: int = PROBE_SIZE) -> Batch:
    """Up to ``size`` validation samples spread evenly over the set, sorted by label."""
    n = len(val_set)
    rows = np.unique(np.linspace(0, n - 1, num=min(size, n)).round().astype(int))
    batch = next(iter(DataLoader(torch.utils.data.Subset(val_set, rows.tolist()), batch_size=len(rows))))
    labels = batch.label
    order = torch.argsort(labels if labels.dim() == 1 else labels[:, 0], stable=True)
    return Batch({k: v[order] for k, v in batch.inputs.items()}, labels[order], [batch.subject[i] for i in order.tolist()],
                 batch.index[order])


def joint_similarity(net: PrivilegedNet, inputs: Mapping[str, Tensor]) -> np.ndarray:
    """Cosine-similarity matrix of ``net``'s joint embeddings (eval mode, restored afterwards)."""
    with evaluating(net):
        return cosine_similarity_matrix(net(inputs).embedding).numpy()


def teacher_views(net: PrivilegedNet, inputs: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """The teacher's joint embedding and each adapter's view of the same samples."""
    with evaluating(net):
        embeddings = net.encode(inputs)
        views = {"joint": net.fuse(embeddings).embedding.numpy()}
        views.update({name: view.embedding.numpy() for name, view in net.adapt(embeddings).items()})
    return views


class SimilarityRecorder(L.Callback):
    """Student and teacher similarity matrices on the probe batch, before training and after each epoch."""

    def __init__(self, probe: Batch, student: PrivilegedNet, teacher: PrivilegedNet) -> None:
        self.probe, self.student, self.teacher = probe, student, teacher
        self.epochs: list[np.ndarray] = []

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not self.epochs:  # a resumed run carries the epochs recorded before the interruption
            self.epochs = [joint_similarity(self.student, self.probe.inputs)]

    def state_dict(self) -> dict:
        return {"epochs": [torch.from_numpy(matrix) for matrix in self.epochs]}

    def load_state_dict(self, state_dict: dict) -> None:
        self.epochs = [matrix.numpy() for matrix in state_dict["epochs"]]

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.epochs.append(joint_similarity(self.student, self.probe.inputs))

    def save(self, path: Path) -> None:
        np.savez_compressed(path, teacher=joint_similarity(self.teacher, self.probe.inputs),
                            student=np.stack(self.epochs), labels=self.probe.label.numpy(),
                            indices=self.probe.index.numpy())


class AlignmentRecorder(L.Callback):
    """The teacher's joint and adapter views of the probe batch before training (MT-PKDOT Fig. 5, left)."""

    def __init__(self, probe: Batch, teacher: PrivilegedNet) -> None:
        self.probe, self.teacher = probe, teacher
        self.before: dict[str, np.ndarray] = {}

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not self.before:  # a resumed run carries the views recorded before the interruption
            self.before = teacher_views(self.teacher, self.probe.inputs)

    def state_dict(self) -> dict:
        return {"before": {name: torch.from_numpy(view) for name, view in self.before.items()}}

    def load_state_dict(self, state_dict: dict) -> None:
        self.before = {name: view.numpy() for name, view in state_dict["before"].items()}

    def save(self, path: Path) -> None:
        """Before and after (the selected weights, now loaded) views, keys ``before/<view>``, ``after/<view>``."""
        after = teacher_views(self.teacher, self.probe.inputs)
        arrays = {f"before/{k}": v for k, v in self.before.items()} | {f"after/{k}": v for k, v in after.items()}
        np.savez_compressed(path, labels=self.probe.label.numpy(), **arrays)
