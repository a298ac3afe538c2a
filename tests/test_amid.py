"""AMID as a method: what L_adv may touch, and the row it adds to a run."""

import json

import torch
from configs import fitted_config

from privkd.data.dataset import Batch
from privkd.methods.registry import build_module


class FakeInfo:
    task, n_outputs, n_classes = "classification", 3, 3
    modalities = {m: type("M", (), {"kind": "signal", "sample_shape": (3, 20)})() for m in ("accelerometer", "gyroscope")}


def amid_module(**amid):
    cfg = fitted_config({"model": {"embed_dim": 8, "fusion_dim": 16}, "amid": {"warmup_epochs": 0, **amid}})
    return build_module("amid", cfg, FakeInfo())


def test_extractors_and_classifier_are_shared():
    module = amid_module()
    assert module.net.encoders["accelerometer"] is module.teacher.encoders["accelerometer"]
    assert module.net.head is module.teacher.head
    assert module.auxiliary.encoders["gyroscope"] is module.teacher.encoders["gyroscope"]


def test_adversarial_step_changes_student_not_teacher():
    torch.manual_seed(0)
    module = amid_module()
    module.weights.update(task=0.0, jsd=0.0, mi_s=0.0, mi_a=0.0, adv=1.0)
    batch = Batch({m: torch.randn(8, 3, 20) for m in FakeInfo.modalities}, torch.tensor([0, 0, 1, 1, 2, 2, 0, 1]))
    teacher_only = {n: p.detach().clone() for n, p in module.teacher.named_parameters() if not n.startswith("encoders.accelerometer")}
    student_only = {n: p.detach().clone() for n, p in module.net.fusion.named_parameters()}
    main_optimizer, _ = module.configure_optimizers()
    terms = module.loss_terms(batch)
    total = module.weighted_total(terms)
    main_optimizer.zero_grad()
    total.backward()
    main_optimizer.step()
    assert terms["adv"].item() > 0
    for name, before in teacher_only.items():
        assert torch.equal(before, dict(module.teacher.named_parameters())[name]), name
    assert any(not torch.equal(before, dict(module.net.fusion.named_parameters())[n]) for n, before in student_only.items())
    assert all(p.grad is None for p in module.d1.parameters())  # discriminators learn only in their own step


def test_warmup_trains_only_classification_and_jsd():
    module = amid_module(warmup_epochs=5)
    batch = Batch({m: torch.randn(6, 3, 20) for m in FakeInfo.modalities}, torch.tensor([0, 1, 2, 0, 1, 2]))
    assert set(module.loss_terms(batch)) == {"task", "jsd"}


def test_amid_row_reports_its_teacher_beside_the_student(run_config):
    result, run_dir = run_config(
        {
            "name": "amid",
            "methods": ["amid"],
            "evaluation": {"max_folds": 1},
            "training": {"epochs": 2, "progress_bar": False},
            "amid": {"warmup_epochs": 2},
        }
    )
    assert result.exit_code == 0, result.output
    row = json.loads((run_dir / "summary.json").read_text())["methods"]["amid"]
    assert {"accuracy", "f1", "teacher_accuracy", "teacher_f1"} <= set(row)
    assert row["accuracy"]["mean"] > 1 / 7 and row["teacher_accuracy"]["mean"] > 1 / 7
    record = json.loads((run_dir / "fold_0" / "amid" / "metrics.json").read_text())
    # Training runs past the warm-up even when fewer epochs are asked for, and the selected
    # epoch is one trained with the full objective (warm-up epochs score as unselectable -1).
    assert len(record["teacher_student_gap"]) == 3  # one entry per epoch (AMID Fig. 4)
    assert record["validation"]["val/f1"] > 0
    assert "Teacher Accuracy" in (run_dir / "summary.md").read_text()


def test_shared_extractors_run_once_for_the_same_losses_and_gradients():
    """Teacher, student and auxiliary model fuse one pass of the shared extractors: the terms
    and every gradient equal those of three separate forward passes (train mode, dropout and
    batch norm active), and each extractor's batch-norm statistics move once per batch."""
    module = amid_module()
    module.train()
    batch = Batch({m: torch.randn(8, 3, 20) for m in FakeInfo.modalities}, torch.tensor([0, 0, 1, 1, 2, 2, 0, 1]))

    def terms_and_gradients(separate: bool):
        if separate:
            module.forward_models = lambda inputs: (module.teacher(inputs), module.net(inputs))
            module.auxiliary_output = lambda teacher: module.auxiliary(batch.inputs)
        torch.manual_seed(0)
        module.zero_grad()
        terms = module.loss_terms(batch)
        module.weighted_total(terms).backward()
        for attribute in ("forward_models", "auxiliary_output"):
            module.__dict__.pop(attribute, None)
        return terms, {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}

    tracked = module.teacher.encoders["gyroscope"].backbone.features[0][1].num_batches_tracked
    before = int(tracked)
    shared_terms, shared_gradients = terms_and_gradients(separate=False)
    assert int(tracked) == before + 1
    separate_terms, separate_gradients = terms_and_gradients(separate=True)
    assert int(tracked) == before + 3  # the teacher's pass and the auxiliary model's
    assert set(shared_terms) == {"task", "jsd", "mi_s", "mi_a", "adv"}
    for name in shared_terms:
        torch.testing.assert_close(shared_terms[name], separate_terms[name], rtol=1e-6, atol=1e-7)
    assert shared_gradients.keys() == separate_gradients.keys()
    for name, gradient in shared_gradients.items():
        torch.testing.assert_close(gradient, separate_gradients[name], rtol=1e-5, atol=1e-7, msg=name)
