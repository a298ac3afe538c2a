"""Structural OT distillation loss (PKDOT / MT-PKDOT Eq. 2-7)."""

from __future__ import annotations

import pytest
import torch
from geomloss import SamplesLoss

from privkd.losses.structural import (
    StructuralOTLoss,
    anchored_similarities,
    cosine_similarity_matrix,
    select_anchors,
)

F64 = torch.float64
TIGHT = dict(tol=1e-12, max_iter=100_000)
# Enough for equalities between runs that follow the same iterates.
MODERATE = dict(tol=1e-6, max_iter=2_000)

# Hand-worked example. Norms 1, 5, 2, 5, so
#   s01 = 3/5 = 0.6,  s02 = 0/2 = 0,  s03 = -4/5 = -0.8,
#   s12 = 8/10 = 0.8, s13 = (-12-12)/25 = -0.96, s23 = -6/10 = -0.6.
HAND_Z = torch.tensor([[1.0, 0.0], [3.0, 4.0], [0.0, 2.0], [-4.0, -3.0]], dtype=F64)
HAND_S = torch.tensor(
    [
        [1.0, 0.6, 0.0, -0.8],
        [0.6, 1.0, 0.8, -0.96],
        [0.0, 0.8, 1.0, -0.6],
        [-0.8, -0.96, -0.6, 1.0],
    ],
    dtype=F64,
)
# Off-diagonal entries of each row sorted ascending (most dissimilar first):
#   row 0: 3 (-0.8), 2 (0), 1 (0.6)      row 1: 3 (-0.96), 0 (0.6), 2 (0.8)
#   row 2: 3 (-0.6), 0 (0), 1 (0.8)      row 3: 1 (-0.96), 0 (-0.8), 2 (-0.6)
HAND_ANCHORS_ALL = torch.tensor([[3, 2, 1], [3, 0, 2], [3, 0, 1], [1, 0, 2]])


def clustered_embeddings(b: int, dim: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, dim, dtype=F64, generator=gen)
    return centres[torch.randint(0, 4, (b,), generator=gen)] + 0.5 * torch.randn(b, dim, dtype=F64, generator=gen)


def test_cosine_similarity_matrix_on_hand_worked_example() -> None:
    torch.testing.assert_close(cosine_similarity_matrix(HAND_Z), HAND_S, rtol=0, atol=1e-12)


def test_cosine_similarity_of_a_zero_vector_is_zero_not_nan() -> None:
    s = cosine_similarity_matrix(torch.tensor([[0.0, 0.0], [2.0, 0.0]]))
    torch.testing.assert_close(s, torch.tensor([[0.0, 0.0], [0.0, 1.0]]))


def test_anchors_on_hand_worked_example() -> None:
    assert select_anchors(HAND_S, 2).tolist() == [[3, 2], [3, 0], [3, 0], [1, 0]]
    assert select_anchors(HAND_S, 3).tolist() == HAND_ANCHORS_ALL.tolist()


def test_anchored_similarities_on_hand_worked_example() -> None:
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]], dtype=F64)
    x, y = anchored_similarities(HAND_Z, student, k=2)
    torch.testing.assert_close(x, torch.tensor([[-0.8, 0.0], [-0.96, 0.6], [-0.6, 0.0], [-0.96, -0.8]], dtype=F64))
    # Student cosines read at the teacher's anchors [[3, 2], [3, 0], [3, 0], [1, 0]]:
    #   s03 = -1, s02 = 1/sqrt2; s13 = 0, s10 = 0; s23 = -1/sqrt2, s20 = 1/sqrt2; s31 = 0, s30 = -1.
    r = 2**-0.5
    torch.testing.assert_close(y, torch.tensor([[-1.0, r], [0.0, 0.0], [-r, r], [0.0, -1.0]], dtype=F64))


def test_k_is_clipped_to_batch_minus_one() -> None:
    assert select_anchors(HAND_S, 10).tolist() == HAND_ANCHORS_ALL.tolist()
    z = clustered_embeddings(5, 8, seed=0)
    loss = StructuralOTLoss(k=30)(z, z + 0.3)
    assert loss.shape == () and torch.isfinite(loss) and loss > 0


def test_batch_of_one_raises() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        select_anchors(torch.ones(1, 1), 3)
    with pytest.raises(ValueError, match="at least 2"):
        StructuralOTLoss()(torch.ones(1, 4), torch.ones(1, 4))


def test_invalid_mode_names_the_allowed_values() -> None:
    with pytest.raises(ValueError, match="paper.*paired"):
        StructuralOTLoss(mode="rowwise")  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["paper", "paired"])
def test_loss_is_zero_for_identical_structure_and_grows_with_perturbation(mode: str) -> None:
    teacher = clustered_embeddings(32, 16, seed=1)
    noise = torch.randn(32, 16, dtype=F64, generator=torch.Generator().manual_seed(2))
    loss_fn = StructuralOTLoss(k=10, mode=mode)
    assert loss_fn(teacher, teacher.clone()).item() < 1e-6
    assert loss_fn(teacher, 3.0 * teacher).item() < 1e-6  # cosine structure ignores scale
    losses = [loss_fn(teacher, teacher + scale * noise).item() for scale in (0.1, 0.5, 1.0)]
    assert 0 < losses[0] < losses[1] < losses[2]


def test_paper_mode_equals_geomloss_on_the_same_anchored_similarities() -> None:
    """Same X, Y, geomloss SamplesLoss(p=2, blur=0.1) as the authors ran, but annealed slowly
    (scaling 0.999) so it is nearly converged: its residual lag measured ~1e-5 relative."""
    teacher = clustered_embeddings(48, 16, seed=3)
    student = teacher + 0.7 * torch.randn(48, 16, dtype=F64, generator=torch.Generator().manual_seed(4))
    ours = StructuralOTLoss(k=12, epsilon=0.01, mode="paper", **TIGHT)(teacher, student)
    x, y = anchored_similarities(teacher, student, k=12)
    reference = SamplesLoss("sinkhorn", p=2, blur=0.1, scaling=0.999, debias=True, backend="tensorized")(x, y)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-4)


def test_paired_mode_equals_rowwise_geomloss_on_1d_clouds() -> None:
    """epsilon 0.05 rather than 0.01: on 1-D clouds with an isolated point Sinkhorn at 0.01 needs
    ~1e5 iterations to reach a tight tolerance (a weakly coupled block), too slow for a unit test."""
    teacher = clustered_embeddings(16, 8, seed=5)
    student = teacher + 0.5 * torch.randn(16, 8, dtype=F64, generator=torch.Generator().manual_seed(6))
    ours = StructuralOTLoss(k=8, epsilon=0.05, mode="paired", **TIGHT)(teacher, student)
    x, y = anchored_similarities(teacher, student, k=8)
    loss = SamplesLoss("sinkhorn", p=2, blur=0.05**0.5, scaling=0.999, debias=True, backend="tensorized")
    assert ours.item() == pytest.approx(loss(x.unsqueeze(-1), y.unsqueeze(-1)).mean().item(), rel=1e-4)


@pytest.mark.parametrize("mode", ["paper", "paired"])
def test_permuting_the_batch_consistently_leaves_the_loss_unchanged(mode: str) -> None:
    teacher = clustered_embeddings(24, 8, seed=7)
    student = teacher + 0.5 * torch.randn(24, 8, dtype=F64, generator=torch.Generator().manual_seed(8))
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(9))
    loss_fn = StructuralOTLoss(k=6, mode=mode, **MODERATE)
    assert loss_fn(teacher[perm], student[perm]).item() == pytest.approx(loss_fn(teacher, student).item(), rel=1e-8)


def test_paper_mode_ignores_which_student_row_meets_which_teacher_row_and_paired_mode_does_not() -> None:
    teacher = clustered_embeddings(24, 8, seed=10)
    student = teacher + 0.5 * torch.randn(24, 8, dtype=F64, generator=torch.Generator().manual_seed(11))
    x, y = anchored_similarities(teacher, student, k=6)
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(12))
    paper = StructuralOTLoss(k=6, mode="paper", **MODERATE)
    paired = StructuralOTLoss(k=6, mode="paired", **MODERATE)
    assert paper.transport_loss(x, y[perm]).item() == pytest.approx(paper.transport_loss(x, y).item(), rel=1e-8)
    assert paired.transport_loss(x, y[perm]).item() > 1.5 * paired.transport_loss(x, y).item()


@pytest.mark.parametrize("mode", ["paper", "paired"])
def test_gradient_reaches_the_student_and_not_the_teacher(mode: str) -> None:
    teacher = clustered_embeddings(16, 8, seed=13).float().requires_grad_(True)
    student = (teacher.detach() + 0.5 * torch.randn(16, 8, generator=torch.Generator().manual_seed(14)))
    student.requires_grad_(True)
    StructuralOTLoss(k=5, mode=mode)(teacher, student).backward()
    assert teacher.grad is None
    assert student.grad is not None and torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
