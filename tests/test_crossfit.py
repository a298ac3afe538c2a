"""Cross-fitted T-Nets: each training sample is hallucinated by a T-Net that never saw its subject."""

import numpy as np
import pytest
import torch
from configs import fitted_config

from privkd.data.dataset import Batch, MultimodalDataset
from privkd.data.folds import official_split_fold
from privkd.data.synthetic import synthetic_dataset_path
from privkd.methods import crossfit
from privkd.methods.base import FoldData
from privkd.methods.crossfit import CrossFittedTNets, subject_parts
from privkd.methods.registry import build_module
from privkd.models.build import build_net

PATH = "synthetic:relevant_features?d=6&n_train=60&n_val=20&n_test=20&per_subject=4"


@pytest.fixture(scope="module")
def fold_and_config(tmp_path_factory):
    file = synthetic_dataset_path(PATH, run_seed=0, cache_dir=tmp_path_factory.mktemp("synthetic"))
    dataset = MultimodalDataset(file, modalities=["x", "x_star"])
    cfg = fitted_config({"data": {"path": str(file), "prevalent": ["x"], "privileged": ["x_star"]},
                         "model": {"embed_dim": 4, "fusion_dim": 8, "tnet_hidden": 8, "tnet_bottleneck": 4},
                         "training": {"batch_size": 16}, "teacher": {"tnet_refit_epochs": 3},
                         "student": {"tnet_crossfit": 3, "hallucinate": True}})
    split = official_split_fold(dataset.subjects, dataset.splits)
    fold = FoldData(dataset.subset(split.train), dataset.subset(split.val), dataset.subset(split.test), cfg.training)
    return fold, cfg, dataset.info


def test_parts_are_a_hash_of_the_subject_id():
    parts = subject_parts(["a", "b", "a", "c"], 3)
    assert parts.tolist()[0] == parts.tolist()[2] and all(0 <= p < 3 for p in parts.tolist())
    assert subject_parts(["a"], 3).tolist() == parts.tolist()[:1]  # the same in any batch


def test_each_part_is_fitted_on_the_other_parts_subjects_only(fold_and_config, monkeypatch):
    fold, cfg, info = fold_and_config
    torch.manual_seed(0)
    teacher = build_net("teacher", cfg, info)
    seen = []
    real_refit = crossfit.refit_tnet

    def recording(net, train_emb, val_emb, **kwargs):
        seen.append(train_emb["x"].clone())
        return real_refit(net, train_emb, val_emb, **kwargs)

    monkeypatch.setattr(crossfit, "refit_tnet", recording)
    tnets = CrossFittedTNets.fit(teacher, fold, 3, cfg.teacher)
    parts = subject_parts(fold.train.subjects, 3)
    samples = [fold.train[i].inputs for i in range(len(fold.train))]
    with torch.no_grad():
        everything = teacher.eval().encode({m: torch.stack([s[m] for s in samples]) for m in ("x", "x_star")})["x"]
    assert len(seen) == 3 == len(tnets.tnets)
    for part, embeddings in enumerate(seen):
        torch.testing.assert_close(embeddings, everything[parts != part])
    assert all(not p.requires_grad for p in tnets.parameters())


def test_a_training_sample_is_hallucinated_by_its_parts_tnet(fold_and_config):
    fold, cfg, info = fold_and_config
    torch.manual_seed(0)
    teacher = build_net("teacher", cfg, info)
    module = build_module("p2p_kl", cfg, info, teacher=teacher)
    module.prepare_fold(fold)
    batch = Batch({"x": torch.stack([fold.train[i].inputs["x"] for i in range(8)])}, torch.zeros(8, dtype=torch.long),
                  [fold.train[i].subject for i in range(8)])
    embeddings = module.net.encode(batch.inputs)
    parts = subject_parts(batch.subject, 3)
    expected = torch.stack([module.net.hallucinate({"x": embeddings["x"][[i]]}, module.crossfit.tnets[int(parts[i])])["x_star"][0]
                            for i in range(8)])
    module.train()
    module.net.eval()  # no dropout: compare the fused outputs exactly
    training = module.student_output(module.net, batch)
    own = module.net.fuse({"x": embeddings["x"], "x_star": expected})
    torch.testing.assert_close(training.logits, own.logits)
    module.eval()  # validation and deployment: the teacher's T-Net
    torch.testing.assert_close(module.student_output(module.net, batch).logits, module.net(batch.inputs).logits)
    assert len(np.unique(parts.numpy())) > 1  # the batch really mixes parts
