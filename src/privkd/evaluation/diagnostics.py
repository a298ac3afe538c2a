"""Diagnostics that test the methods' own claims on held-out subjects.

- The T-Net claims to hallucinate the privileged embedding from the prevalent one: its R²
  (1 − SSE / SST around the test mean) and mean cosine against the teacher's real privileged
  tokens on the test subjects.
- Structural distillation claims to bring the student's batch similarity structure closer to
  the teacher's: on test batches, the mean absolute difference between the teacher's and the
  student's anchored similarity rows (MT-PKDOT Eq. 2-5) and the structural OT value, before
  distillation (the student as initialised) and after.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from privkd.losses.structural import StructuralOTLoss, anchored_similarities
from privkd.models.network import PrivilegedNet


@torch.no_grad()
def tnet_fidelity(teacher: PrivilegedNet, loader: DataLoader) -> dict[str, float]:
    """R² and mean cosine of the T-Net's privileged tokens against the real ones, per privileged modality and overall."""
    teacher.eval()
    real: dict[str, list[torch.Tensor]] = {name: [] for name in teacher.tnet_outputs}
    fake: dict[str, list[torch.Tensor]] = {name: [] for name in teacher.tnet_outputs}
    for batch in loader:
        embeddings = teacher.encode(batch["inputs"])
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


@torch.no_grad()
def structure_gap(teacher: PrivilegedNet, student: PrivilegedNet, loader: DataLoader, ot_loss: StructuralOTLoss) -> dict[str, float]:
    """Mean |X − Y| of teacher/student anchored similarity rows and the mean OT value over full test batches."""
    teacher.eval()
    was_training = student.training
    student.eval()
    differences, values = [], []
    for batch in loader:
        if len(batch["label"]) < 2:
            continue
        z_teacher, z_student = teacher(batch["inputs"]).embedding, student(batch["inputs"]).embedding
        x, y = anchored_similarities(z_teacher, z_student, ot_loss.k)
        differences.append(float((x - y).abs().mean()))
        values.append(float(ot_loss.transport_loss(x, y)))
    student.train(was_training)
    return {"anchor_mad": sum(differences) / max(len(differences), 1), "ot": sum(values) / max(len(values), 1)}
