"""MT-PKDOT's centroid loss, teacher selection, the point-to-point terms and the CCC task
loss, each against an independent computation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional import concordance_corrcoef

from privkd.losses.distillation import (
    centroid_loss,
    confidence_weight,
    cosine_matching,
    mse_matching,
    select_teacher,
    softened_kl,
)
from privkd.losses.task import concordance_cc, task_loss


def test_centroid_loss_hand_computed():
    teacher = torch.tensor([[1.0, 0.0], [0.0, 2.0], [2.0, 1.0]])  # centroid (1, 1)
    student = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, -1.0]])  # centroid (1, 0)
    assert centroid_loss(teacher, student).item() == pytest.approx(1.0)
    assert centroid_loss(teacher, teacher + torch.tensor([0.5, -2.0])).item() == pytest.approx(0.25 + 4.0)


def test_point_to_point_terms_match_numpy():
    rng = np.random.default_rng(0)
    t, s = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    cos = (t * s).sum(1) / np.linalg.norm(t, axis=1) / np.linalg.norm(s, axis=1)
    assert cosine_matching(torch.tensor(t), torch.tensor(s)).item() == pytest.approx(np.mean(1 - cos))
    assert mse_matching(torch.tensor(t), torch.tensor(s)).item() == pytest.approx(np.mean((t - s) ** 2))
    assert confidence_weight(torch.tensor(0.0)) == 1.0
    assert confidence_weight(1.0) == pytest.approx(np.exp(-1.0))


def test_softened_kl_matches_formula_and_kl_div():
    rng = np.random.default_rng(1)
    zs, zt, temperature = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) * 3, 4.0

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    p_t, p_s = softmax(zt / temperature), softmax(zs / temperature)
    expected = temperature**2 * np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1))
    got = softened_kl(torch.tensor(zs), torch.tensor(zt), temperature)
    assert got.item() == pytest.approx(expected, rel=1e-10)
    via_kl_div = F.kl_div(
        F.log_softmax(torch.tensor(zs) / temperature, 1), F.softmax(torch.tensor(zt) / temperature, 1), reduction="batchmean"
    ) * temperature**2
    assert got.item() == pytest.approx(via_kl_div.item(), rel=1e-12)
    assert softened_kl(torch.tensor(zt), torch.tensor(zt), temperature).item() == pytest.approx(0.0, abs=1e-12)


def test_selection_picks_lowest_loss_and_falls_back_to_joint():
    assert select_teacher({"joint": 0.9, "video": 0.4, "eda": 0.6}) == "video"
    assert select_teacher({"joint": 0.3, "video": 0.4, "eda": 0.6}) == "joint"
    assert select_teacher({"joint": 0.4, "video": 0.4}) == "joint"  # a tie does not replace the joint teacher


def test_ccc_matches_numpy_and_torchmetrics():
    rng = np.random.default_rng(2)
    y = rng.normal(size=(50, 2))
    x = 0.7 * y + rng.normal(scale=0.5, size=(50, 2)) + np.array([0.3, -0.2])
    mx, my = x.mean(0), y.mean(0)
    expected = 2 * ((x - mx) * (y - my)).mean(0) / (x.var(0) + y.var(0) + (mx - my) ** 2)
    got = concordance_cc(torch.tensor(x), torch.tensor(y))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    # The test-fold metric (torchmetrics) uses n - 1 moments; the loss uses population moments.
    unbiased = 2 * ((x - mx) * (y - my)).sum(0) / 49 / (x.var(0, ddof=1) + y.var(0, ddof=1) + (mx - my) ** 2)
    np.testing.assert_allclose(concordance_corrcoef(torch.tensor(x), torch.tensor(y)).numpy(), unbiased, rtol=1e-10)
    assert task_loss("regression", torch.tensor(x), torch.tensor(y)).item() == pytest.approx(1 - expected.mean())
    assert task_loss("regression", torch.tensor(y), torch.tensor(y)).item() == pytest.approx(0.0, abs=1e-12)


def test_ccc_loss_gradient_matches_finite_differences():
    torch.manual_seed(0)
    x = torch.randn(12, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(12, 2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: task_loss("regression", p, y), (x,))


def test_retrieval_recall_and_unweighted_accuracy_hand_computed():
    from privkd.evaluation.metrics import retrieval_recall, score

    gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.7, 0.7]])
    gallery_labels = torch.tensor([0, 1, 2, 1])
    query = torch.tensor([[0.9, 0.1], [0.1, 0.9], [-0.8, -0.6]])
    query_labels = torch.tensor([1, 1, 0])
    # nearest by cosine: q0 -> g0 (0), g3 (1); q1 -> g1 (1); q2 -> g2 (2), then g1 (1) / g0 (0) by angle
    recall = retrieval_recall(query, query_labels, gallery, gallery_labels, ks=(1, 2))
    assert recall == {"recall@1": pytest.approx(1 / 3), "recall@2": pytest.approx(2 / 3)}
    logits = torch.eye(3)[torch.tensor([0, 0, 0, 1, 2, 2])]
    labels = torch.tensor([0, 0, 1, 1, 2, 2])  # per-class recall 1, 1/2, 1 -> UA 5/6; accuracy (WA) 5/6
    metrics = score("classification", logits, labels, n_outputs=3)
    assert metrics["ua"] == pytest.approx(5 / 6) and metrics["accuracy"] == pytest.approx(5 / 6)
    imbalanced = torch.tensor([0, 0, 0, 0, 1, 2])
    assert score("classification", torch.eye(3)[torch.zeros(6, dtype=torch.long)], imbalanced, n_outputs=3)["ua"] == pytest.approx(1 / 3)
