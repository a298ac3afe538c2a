"""MT-PKDOT: adapter alignment with the teacher, and per-batch teacher selection in the student."""

import torch
import torch.nn.functional as F
from configs import fitted_config

from privkd.config.schema import MTPKDOTConfig, StructuralConfig
from privkd.data import MultimodalDataset, read_info, subject_folds
from privkd.data.dataset import Batch
from privkd.methods.mt_pkdot import MTPKDOTModule
from privkd.methods.registry import build_module
from privkd.models.build import build_net
from privkd.models.inference import encode_dataset
from privkd.models.network import NetOutput
from privkd.training.fit import fit, seed_everything


def held_out_alignment(watch_path, tmp_path, align_weight):
    cfg = fitted_config({"training": {"epochs": 3, "progress_bar": False}, "teacher": {"align_weight": align_weight}})
    info = read_info(watch_path)
    data = MultimodalDataset(watch_path, modalities=["accelerometer", "gyroscope"], in_memory=True)
    fold = subject_folds(data.subjects, n_folds=5, n_val_subjects=1, seed=0)[1]
    seed_everything(0)
    module = build_module("mt_teacher", cfg, info)
    teacher = fit(module, data.subset(fold.train), data.subset(fold.val), cfg.training, tmp_path / str(align_weight), seed=0).module.net
    with torch.no_grad():
        embeddings = encode_dataset(teacher, data.subset(fold.test))
        joint = teacher.fuse(embeddings).embedding
        views = teacher.adapt(embeddings)
    return {name: F.cosine_similarity(view.embedding, joint).mean().item() for name, view in views.items()}


def test_alignment_raises_adapter_cosine_to_joint_on_held_out_subjects(watch_path, tmp_path):
    aligned = held_out_alignment(watch_path, tmp_path, align_weight=1.0)
    unaligned = held_out_alignment(watch_path, tmp_path, align_weight=0.0)  # adapters trained by their heads only
    for name in ("accelerometer", "gyroscope"):
        assert aligned[name] > 0.8, aligned
        assert aligned[name] > unaligned[name] + 0.1, (aligned, unaligned)


class RiggedPool(MTPKDOTModule):
    """An MT-PKDOT student whose teacher pool outputs are set by the test."""

    pool_logits: dict[str, torch.Tensor]

    def teacher_views(self, inputs):
        return {name: NetOutput(logits, torch.randn(len(logits), 8)) for name, logits in self.pool_logits.items()}


def rigged_student(pool_logits):
    cfg = fitted_config({"model": {"embed_dim": 8, "fusion_dim": 8}, "student": {"hallucinate": True}})
    info = type("Info", (), {"modalities": {m: type("M", (), {"kind": "signal", "sample_shape": (3, 20)})() for m in ("accelerometer", "gyroscope")}, "n_outputs": 3})()
    teacher, student = build_net("mt_teacher", cfg, info), build_net("student", cfg, info)
    module = RiggedPool(
        student, teacher, settings=MTPKDOTConfig(alpha=1.0, beta=1.0, gamma=1.0), structural=StructuralConfig(k=3, ot_mode="paper"),
        task="classification", n_outputs=3, lr=1e-3, weight_decay=0.0,
    )
    module.pool_logits = pool_logits
    return module


def test_student_distils_from_lowest_loss_teacher_and_counts_it():
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    right, wrong = F.one_hot(labels, 3).float() * 10, F.one_hot((labels + 1) % 3, 3).float() * 10
    module = rigged_student({"joint": wrong, "accelerometer": wrong * 0.1, "gyroscope": right})
    batch = Batch({"accelerometer": torch.randn(6, 3, 20)}, labels, ["s"] * 6, torch.arange(6))
    module.train()
    terms = module.loss_terms(batch)
    assert set(terms) == {"task", "ot", "centroid"}
    module.loss_terms(batch)
    module.log_dict = lambda *args, **kwargs: None  # outside a Trainer
    module.on_train_epoch_end()
    assert module.selection_history == [{"joint": 0, "accelerometer": 0, "gyroscope": 2}]


def test_joint_teacher_kept_when_no_modality_teacher_beats_it():
    labels = torch.tensor([0, 1, 2, 0])
    right = F.one_hot(labels, 3).float() * 10
    module = rigged_student({"joint": right, "accelerometer": right, "gyroscope": right * 0.5})
    module.train()
    module.loss_terms(Batch({"accelerometer": torch.randn(4, 3, 20)}, labels))
    assert module._epoch_selection == {"joint": 1}


def test_switched_off_terms_are_not_computed():
    labels = torch.tensor([0, 1, 2, 0])
    module = rigged_student({"joint": F.one_hot(labels, 3).float()})
    module.weights.update(ot=0.0, centroid=0.0)
    terms = module.loss_terms(Batch({"accelerometer": torch.randn(4, 3, 20)}, labels))
    assert set(terms) == {"task"}


def test_teacher_and_tnet_stay_in_eval_mode_while_the_student_trains():
    module = rigged_student({"joint": torch.zeros(2, 3)})
    module.train()
    assert not module.teacher.training and not module.net.tnet.training
    assert module.net.training and module.net.encoders["accelerometer"].training
