"""AMID losses (Chen et al., CVPR 2023) against hand computations, in float64 unless stated."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from privkd.losses.amid import (
    AlignmentMeter,
    DynamicDiscriminatorWeights,
    amid_adversarial_loss,
    amid_discriminator_loss,
    info_nce,
    jensen_shannon,
    label_aware_contrastive_mi,
    repeated_class_mask,
)
from privkd.models.discriminators import (
    Discriminator,
    enhanced_discriminator,
    fundamental_discriminator,
)

F64 = torch.float64
LABELS = [0, 0, 1, 1, 2, 0]


def clustered_batch(
    labels: list[int], dim: int = 8, seed: int = 0, noise: float = 0.3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher embeddings around per-class centres, student embeddings unrelated."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(max(labels) + 1, dim, dtype=F64, generator=gen)
    teacher = centres[labels] + noise * torch.randn(len(labels), dim, dtype=F64, generator=gen)
    student = torch.randn(len(labels), dim, dtype=F64, generator=gen)
    return teacher, student


def reference_lmi(teacher: np.ndarray, student: np.ndarray, labels: list[int], tau: float) -> float:
    """Eq. 7-8 written out with loops: softmax over the student batch for each teacher anchor."""
    b = len(labels)

    def cos(u: np.ndarray, v: np.ndarray) -> float:
        return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))

    total = 0.0
    for i in range(b):
        scores = [math.exp(cos(teacher[i], student[j]) / tau) for j in range(b)]
        denom = sum(scores)
        for u in range(b):
            h = scores[u] / denom
            total += math.log(h) if labels[u] == labels[i] else math.log(1.0 - h)
    return -total / b


@pytest.mark.parametrize("tau", [0.5, 0.1, 1.0])
def test_label_aware_mi_matches_loop(tau: float) -> None:
    teacher, student = clustered_batch(LABELS)
    ours = label_aware_contrastive_mi(teacher, student, torch.tensor(LABELS), tau, reduction="sum")
    assert ours.item() == pytest.approx(reference_lmi(teacher.numpy(), student.numpy(), LABELS, tau), rel=1e-10)


def test_label_aware_mi_softmax_runs_over_other_modality() -> None:
    teacher, student = clustered_batch(LABELS, seed=3)
    labels = torch.tensor(LABELS)
    swapped = label_aware_contrastive_mi(student, teacher, labels, 0.5, reduction="sum").item()
    assert swapped == pytest.approx(reference_lmi(student.numpy(), teacher.numpy(), LABELS, 0.5), rel=1e-10)
    assert swapped != pytest.approx(label_aware_contrastive_mi(teacher, student, labels, 0.5, reduction="sum").item(), rel=1e-3)


def test_label_aware_mi_decreases_as_positives_approach() -> None:
    teacher, student = clustered_batch(LABELS, seed=1)
    labels = torch.tensor(LABELS)
    # each student embedding moves towards the mean teacher embedding of its class
    target = torch.stack([teacher[labels == y].mean(dim=0) for y in labels])
    moved = [(1 - t) * student + t * target for t in np.linspace(0, 1, 6)]
    losses = [label_aware_contrastive_mi(s, teacher, labels, 0.5, reduction="sum").item() for s in moved]
    losses_ms = [label_aware_contrastive_mi(teacher, s, labels, 0.5, reduction="sum").item() for s in moved]
    assert all(a > b for a, b in zip(losses, losses[1:]))
    assert all(a > b for a, b in zip(losses_ms, losses_ms[1:]))


def test_label_aware_mi_finite_when_confident() -> None:
    teacher, _ = clustered_batch(LABELS, noise=0.0)
    student = teacher.clone().float().requires_grad_(True)
    loss = label_aware_contrastive_mi(teacher.float(), student, torch.tensor(LABELS), tau=0.01, reduction="sum")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()


def test_info_nce_is_cross_entropy_on_cosines() -> None:
    teacher, student = clustered_batch(LABELS, seed=2)
    cos = F.cosine_similarity(teacher[:, None, :], student[None, :, :], dim=-1)
    expected = F.cross_entropy(cos / 0.5, torch.arange(len(LABELS)))
    assert info_nce(teacher, student, 0.5).item() == pytest.approx(expected.item(), rel=1e-10)


def numpy_jsd(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    def softmax(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p, q = softmax(p_logits), softmax(q_logits)
    m = 0.5 * (p + q)
    kl_pm = (p * np.log(p / m)).sum(axis=1)
    kl_qm = (q * np.log(q / m)).sum(axis=1)
    return float((0.5 * kl_pm + 0.5 * kl_qm).mean())


def test_jensen_shannon_matches_numpy_and_properties() -> None:
    gen = torch.Generator().manual_seed(0)
    p, q = torch.randn(5, 4, dtype=F64, generator=gen) * 2, torch.randn(5, 4, dtype=F64, generator=gen) * 2
    value = jensen_shannon(p, q).item()
    assert value == pytest.approx(numpy_jsd(p.numpy(), q.numpy()), rel=1e-10)
    assert jensen_shannon(q, p).item() == pytest.approx(value, rel=1e-12)
    assert jensen_shannon(p, p).item() == pytest.approx(0.0, abs=1e-14)
    assert 0.0 < value < math.log(2)
    # disjoint one-hot predictions reach the ln 2 bound
    disjoint = jensen_shannon(torch.tensor([[60.0, 0.0]], dtype=F64), torch.tensor([[0.0, 60.0]], dtype=F64)).item()
    assert disjoint == pytest.approx(math.log(2), rel=1e-12)
    assert disjoint <= math.log(2) + 1e-15


def test_repeated_class_mask() -> None:
    mask = repeated_class_mask(torch.tensor([0, 1, 1, 2, 3, 3, 3]))
    assert mask.dtype == torch.bool
    assert mask.tolist() == [False, True, True, False, True, True, True]
    assert repeated_class_mask(torch.tensor([5, 2, 5])).tolist() == [True, False, True]


def test_dynamic_weights_follow_eq14() -> None:
    weights = DynamicDiscriminatorWeights(beta=0.9)
    assert weights.weights == (0.5, 0.5)
    sims = [(0.2, 0.5), (0.4, 0.3), (0.9, 0.1), (0.95, 0.05)]
    smoothed = [0.0, 0.0]
    for s1, s2 in sims:
        smoothed = [0.9 * smoothed[0] + 0.1 * (1 - s1), 0.9 * smoothed[1] + 0.1 * (1 - s2)]
        e1, e2 = math.exp(smoothed[0]), math.exp(smoothed[1])
        got = weights.update((s1, s2))
        assert got == pytest.approx((e1 / (e1 + e2), e2 / (e1 + e2)), rel=1e-12)
        assert sum(got) == pytest.approx(1.0)
    # D1 is now far better aligned, so it gets the smaller weight
    assert weights.weights[0] < weights.weights[1]

    restored = DynamicDiscriminatorWeights()
    restored.load_state_dict(weights.state_dict())
    assert restored.weights == weights.weights
    assert all(isinstance(v, float) for v in restored.state_dict()["smoothed"])

    by_name = DynamicDiscriminatorWeights()
    by_name.update({"d1": 0.2, "d2": 0.5})
    assert by_name.weights == pytest.approx(DynamicDiscriminatorWeights().update((0.2, 0.5)))
    by_name.update({"d1": 0.6, "d2": None})  # no same-class pairs this epoch: D2's EMA is kept
    assert by_name.smoothed == pytest.approx([0.9 * 0.08 + 0.04, 0.05])


def test_alignment_meter_averages_pairs() -> None:
    teacher, student = clustered_batch(LABELS, seed=4)
    meter = AlignmentMeter()
    meter.add(teacher, student, torch.tensor(LABELS))
    cos = F.cosine_similarity(teacher[:, None, :], student[None, :, :], dim=-1).numpy()
    partners = [cos[i, j] for i in range(6) for j in range(6) if i != j and LABELS[i] == LABELS[j]]
    m1, m2 = meter.means()
    assert m1 == pytest.approx(np.diag(cos).mean(), rel=1e-10)
    assert m2 == pytest.approx(np.mean(partners), rel=1e-10) and len(partners) == 8


def discriminators(dim: int = 8) -> tuple[Discriminator, Discriminator]:
    torch.manual_seed(0)
    return fundamental_discriminator(dim).double(), enhanced_discriminator(dim).double()


def test_discriminator_losses_match_eq12_eq13() -> None:
    d1, d2 = discriminators()
    teacher, student = clustered_batch(LABELS, seed=5)
    labels = torch.tensor(LABELS)
    lam = (0.3, 0.7)
    with torch.no_grad():
        pairs = ((d1, teacher), (d1, student), (d2, teacher), (d2, student))
        dm1, ds1, dm2, ds2 = (torch.sigmoid(d(z)).tolist() for d, z in pairs)
    repeated = [i for i, y in enumerate(LABELS) if LABELS.count(y) > 1]  # w = 5
    w = len(repeated)
    expected_d = -lam[0] / 6 * sum(math.log(dm1[i]) + math.log(1 - ds1[i]) for i in range(6))
    expected_d -= lam[1] / w * sum(math.log(dm2[v]) + math.log(1 - ds2[v]) for v in repeated)
    expected_g = -lam[0] / 6 * sum(math.log(ds1[i]) for i in range(6))
    expected_g -= lam[1] / w * sum(math.log(ds2[v]) for v in repeated)
    assert amid_discriminator_loss(d1, d2, teacher, student, labels, lam).item() == pytest.approx(expected_d, rel=1e-10)
    assert amid_adversarial_loss(d1, d2, student, labels, lam).item() == pytest.approx(expected_g, rel=1e-10)
    # no repeated class: the D2 term vanishes and backward still works
    distinct = torch.arange(6)
    only_d1 = amid_adversarial_loss(d1, d2, student, distinct, lam)
    assert only_d1.item() == pytest.approx(-lam[0] / 6 * sum(math.log(s) for s in ds1), rel=1e-10)


def test_adversarial_gradients_reach_only_their_player() -> None:
    d1, d2 = discriminators()
    teacher_net = nn.Linear(8, 8).double()
    x, student_leaf = clustered_batch(LABELS, seed=6)
    teacher = teacher_net(x)
    student = student_leaf.clone().requires_grad_(True)
    teacher_leaf = teacher.detach().clone().requires_grad_(True)
    labels = torch.tensor(LABELS)

    # discriminator step: only D1 and D2 receive gradient
    amid_discriminator_loss(d1, d2, teacher, student, labels).backward()
    amid_discriminator_loss(d1, d2, teacher_leaf, student, labels).backward()
    assert teacher_net.weight.grad is None and teacher_leaf.grad is None and student.grad is None
    for disc in (d1, d2):
        assert all(p.grad is not None for p in disc.parameters())
        assert disc.net[0].weight.grad.abs().sum() > 0

    # student step: gradient reaches the student only, discriminators' grads untouched
    d1.zero_grad(set_to_none=True)
    d2.zero_grad(set_to_none=True)
    loss = amid_adversarial_loss(d1, d2, student, labels) + 0.0 * teacher_leaf.sum()
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher_leaf.grad is None or teacher_leaf.grad.abs().sum() == 0
    assert teacher_net.weight.grad is None
    assert all(p.grad is None for disc in (d1, d2) for p in disc.parameters())


@pytest.mark.parametrize(("factory", "n_linear"), [(fundamental_discriminator, 5), (enhanced_discriminator, 3)])
def test_discriminator_depth(factory, n_linear: int) -> None:
    disc = factory(512)
    linears = [m for m in disc.modules() if isinstance(m, nn.Linear)]
    activations = [m for m in disc.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Tanh, nn.Sigmoid))]
    assert len(linears) == n_linear
    assert linears[0].in_features == 512 and linears[-1].out_features == 1
    assert len(activations) == n_linear - 1 and all(isinstance(a, nn.LeakyReLU) for a in activations)
    assert disc(torch.randn(4, 512)).shape == (4,)


def test_mean_reduction_averages_each_anchors_positive_and_negative_terms():
    torch.manual_seed(3)
    m, s = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 0])
    h = torch.softmax(F.cosine_similarity(m[:, None], s[None], dim=-1) / 0.5, dim=1)
    expected = 0.0
    for i in range(6):
        pos = [u for u in range(6) if labels[u] == labels[i]]
        neg = [u for u in range(6) if labels[u] != labels[i]]
        expected -= sum(torch.log(h[i, u]) for u in pos) / len(pos) + sum(torch.log(1 - h[i, u]) for u in neg) / len(neg)
    got = label_aware_contrastive_mi(m, s, labels, 0.5, reduction="mean")
    assert got.item() == pytest.approx(expected.item() / 6, rel=1e-10)
