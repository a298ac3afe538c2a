"""Diagnostics of the methods' claims: T-Net fidelity and teacher-student structure gap."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from privkd.data.dataset import Batch
from privkd.evaluation.diagnostics import structure_gaps, tnet_fidelity
from privkd.losses.structural import StructuralOTLoss, anchored_similarities
from privkd.models.network import ModalitySpec, PrivilegedNet


def teacher_net() -> PrivilegedNet:
    torch.manual_seed(0)
    specs = [ModalitySpec(m, (6,), "mlp") for m in ("acc", "gyro")]
    return PrivilegedNet(specs, ["acc", "gyro"], 3, embed_dim=8, fusion="concat", fusion_dim=16, dropout=0.0,
                         tnet_inputs=["acc"], tnet_outputs=["gyro"]).eval()


def loader(n: int = 40, batch: int = 10) -> DataLoader:
    generator = torch.Generator().manual_seed(1)
    acc, gyro = torch.randn(n, 6, generator=generator), torch.randn(n, 6, generator=generator)
    data = [Batch({"acc": a, "gyro": g}, torch.tensor(i % 3), "s", i) for i, (a, g) in enumerate(zip(acc, gyro))]
    return DataLoader(data, batch_size=batch)


def test_tnet_fidelity_matches_a_numpy_r2_and_cosine():
    teacher = teacher_net()
    result = tnet_fidelity(teacher, loader())
    with torch.no_grad():
        real, fake = [], []
        for batch in loader():
            emb = teacher.encode(batch.inputs)
            real.append(emb["gyro"][:, 0].numpy())
            fake.append(teacher.hallucinate(emb)["gyro"][:, 0].numpy())
    real, fake = np.concatenate(real), np.concatenate(fake)
    r2 = 1 - ((fake - real) ** 2).sum() / ((real - real.mean(axis=0)) ** 2).sum()
    cosine = np.mean((fake * real).sum(1) / np.linalg.norm(fake, axis=1) / np.linalg.norm(real, axis=1))
    assert result["r2_gyro"] == pytest.approx(r2, rel=1e-5)
    assert result["cosine"] == pytest.approx(cosine, rel=1e-5)


def test_a_perfect_tnet_scores_one():
    teacher = teacher_net()
    teacher.hallucinate = lambda embeddings: {"gyro": embeddings["gyro"]}  # an oracle T-Net
    result = tnet_fidelity(teacher, loader())
    assert result["r2"] == pytest.approx(1.0) and result["cosine"] == pytest.approx(1.0)


def test_structure_gap_is_zero_for_the_teacher_itself_and_matches_the_loss_otherwise():
    teacher = teacher_net()
    ot = StructuralOTLoss(k=4, epsilon=0.01, mode="paired")
    same = structure_gaps(teacher, {"self": teacher}, loader(), ot)["self"]
    assert same["anchor_mad"] == pytest.approx(0.0, abs=1e-7) and same["ot"] == pytest.approx(0.0, abs=1e-6)
    torch.manual_seed(5)
    other = PrivilegedNet([ModalitySpec("acc", (6,), "mlp")], ["acc"], 3, embed_dim=8, fusion="concat", fusion_dim=16,
                          dropout=0.0).eval()
    gaps = structure_gaps(teacher, {"other": other, "self": teacher}, loader(), ot)
    assert gaps["self"] == same  # several students in one pass give what each gives alone
    gap = gaps["other"]
    mads, values = [], []
    with torch.no_grad():
        for batch in loader():
            x, y = anchored_similarities(teacher(batch.inputs).embedding, other(batch.inputs).embedding, 4)
            mads.append(float((x - y).abs().mean()))
            values.append(float(ot(teacher(batch.inputs).embedding, other(batch.inputs).embedding)))
    assert gap["anchor_mad"] == pytest.approx(np.mean(mads), rel=1e-6) and gap["anchor_mad"] > 0.01
    assert gap["ot"] == pytest.approx(np.mean(values), rel=1e-5) and gap["ot"] > 0
