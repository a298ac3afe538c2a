"""Mixed precision: the structural OT runs in float32 whatever autocast does around it."""

import json
import math

import torch

from privkd.losses.structural import StructuralOTLoss, anchored_similarities


def embeddings():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(32, 16, generator=generator), torch.randn(32, 16, generator=generator, requires_grad=True)


def test_structural_loss_ignores_autocast_and_stays_float32():
    teacher, student = embeddings()
    loss = StructuralOTLoss(k=8, epsilon=0.01, mode="paper")
    reference = loss(teacher, student)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss(teacher, student)
        matmul = teacher @ student.T  # autocast is really on around the loss
    assert matmul.dtype == torch.bfloat16
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, reference)
    mixed.backward()
    assert student.grad.dtype == torch.float32 and torch.isfinite(student.grad).all()


def test_half_precision_embeddings_are_upcast_before_the_similarities():
    teacher, student = embeddings()
    x16, y16 = anchored_similarities(teacher.bfloat16(), student.detach().bfloat16(), 8)
    x32, y32 = anchored_similarities(teacher.bfloat16().float(), student.detach().bfloat16().float(), 8)
    assert x16.dtype == y16.dtype == torch.float32
    torch.testing.assert_close((x16, y16), (x32, y32))
    value = StructuralOTLoss(k=8, mode="paired")(teacher.half(), student.detach().half())
    assert value.dtype == torch.float32 and math.isfinite(float(value))


def test_bf16_mixed_training_runs_end_to_end_on_cpu(run_config):
    result, run_dir = run_config({
        "methods": ["baseline", "teacher", "pkdot"], "evaluation": {"max_folds": 1},
        "training": {"epochs": 1, "progress_bar": False, "limit_train_batches": 3, "precision": "bf16-mixed"},
        "teacher": {"tnet_refit_epochs": 1},
    })
    assert result.exit_code == 0, result.output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert all(math.isfinite(row["f1"]["mean"]) for row in summary["methods"].values())
