"""Diagnostics that test the methods' own claims on held-out subjects.

- The T-Net claims to hallucinate the privileged embedding from the prevalent one: its R²
  (1 − SSE / SST around the test mean) and mean cosine against the teacher's real privileged
  tokens on the test subjects.
- Structural distillation claims to bring the student's batch similarity structure closer to
  the teacher's: on test batches, the mean absolute difference between the teacher's and the
  student's anchored similarity rows (MT-PKDOT Eq. 2-5, as the row's OT loss reads them) and
  the structural OT value, before distillation (the student as initialised) and after.
- A distilled student is meant to learn from its training samples: its score as initialised
  on the training and on the validation subjects. A start that already fits the training
  samples far better than unseen subjects (a frozen T-Net that memorised the training set, a
  head copied from the teacher) has a low training loss through an input that does not
  generalise, and learns little.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from privkd.data.dataset import Batch
from privkd.evaluation.metrics import score
from privkd.losses.structural import StructuralOTLoss
from privkd.models.inference import evaluating
from privkd.models.network import NetOutput, PrivilegedNet


def tnet_fidelity(teacher: PrivilegedNet, loader: DataLoader) -> dict[str, float]:
    """R² and mean cosine of the T-Net's privileged tokens against the real ones, per privileged modality and overall."""
    real: dict[str, list[torch.Tensor]] = {name: [] for name in teacher.tnet_outputs}
    fake: dict[str, list[torch.Tensor]] = {name: [] for name in teacher.tnet_outputs}
    with evaluating(teacher):
        for batch in loader:
            embeddings = teacher.encode(batch.inputs)
            for name, estimate in teacher.hallucinate(embeddings).items():
                real[name].append(embeddings[name].flatten(0, 1))
                fake[name].append(estimate.flatten(0, 1))
    result = {}
    for name in teacher.tnet_outputs:
        target, estimate = torch.cat(real[name]), torch.cat(fake[name])
        sse = (estimate - target).pow(2).sum()
        sst = (target - target.mean(dim=0)).pow(2).sum().clamp_min(1e-12)
        result[f"r2_{name}"] = float(1 - sse / sst)
        result[f"cosine_{name}"] = float(F.cosine_similarity(estimate, target, dim=-1).mean())
    result["r2"] = sum(result[f"r2_{n}"] for n in teacher.tnet_outputs) / max(len(teacher.tnet_outputs), 1)
    result["cosine"] = sum(result[f"cosine_{n}"] for n in teacher.tnet_outputs) / max(len(teacher.tnet_outputs), 1)
    return result


MAX_STRUCTURE_BATCHES = 64
"""Test batches :func:`structure_gaps` averages over (the first, in file order): a mean over a
few thousand samples is as good an estimate as over all, and a large test set (10,000 samples
of a known-answer task) would otherwise cost more Sinkhorn solves than the training did."""


def structure_gaps(teacher: PrivilegedNet, students: Mapping[str, PrivilegedNet], loader: DataLoader,
                   ot_loss: StructuralOTLoss) -> dict[str, dict[str, float]]:
    """Per student: mean |X − Y| of teacher/student anchored similarity rows and the mean OT value
    over the first :data:`MAX_STRUCTURE_BATCHES` test batches (the teacher runs once per batch
    for all students)."""
    differences: dict[str, list[float]] = {name: [] for name in students}
    values: dict[str, list[float]] = {name: [] for name in students}
    with evaluating(teacher, *students.values()):
        for index, batch in enumerate(loader):
            if index == MAX_STRUCTURE_BATCHES:
                break
            if len(batch.label) < 2:
                continue
            z_teacher = teacher(batch.inputs).embedding
            for name, student in students.items():
                x, y = ot_loss.anchored(z_teacher, student(batch.inputs).embedding)
                differences[name].append(float((x - y).abs().mean()))
                values[name].append(float(ot_loss.transport_loss(x, y)))
    return {name: {"anchor_mad": sum(differences[name]) / max(len(differences[name]), 1),
                   "ot": sum(values[name]) / max(len(values[name]), 1)} for name in students}


def initial_fit(student: PrivilegedNet, train: DataLoader, val: DataLoader, task: str, n_outputs: int,
                metric: str, train_view: Callable[[Batch], NetOutput] | None = None,
                val_groups: Mapping[int, str] | None = None) -> dict[str, float]:
    """The selection ``metric`` of ``student`` as initialised on the training and validation
    samples, and their difference (``gap``); ``train_view(batch)`` gives the student's outputs
    on training samples as its training steps see them (default: its own forward), and
    ``val_groups`` (file row -> recording group) scores the validation samples per group, as the
    epoch selection does (``evaluation.group_average``)."""
    values = {}
    with evaluating(student):
        for part, loader, view in (("train", train, train_view), ("val", val, None)):
            outputs, labels, rows = [], [], []
            for batch in loader:
                outputs.append((view(batch) if view is not None else student(batch.inputs)).logits)
                labels.append(batch.label)
                rows += batch.index.tolist()
            groups = [val_groups[row] for row in rows] if part == "val" and val_groups is not None else None
            values[part] = float(score(task, torch.cat(outputs), torch.cat(labels), n_outputs=n_outputs,
                                       groups=groups)[metric])
    return {**values, "gap": values["train"] - values["val"]}
