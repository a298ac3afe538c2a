"""The frozen teacher's outputs computed once per sample: the same training as recomputing them."""

import pytest
import torch
from configs import fitted_config

from privkd.data import MultimodalDataset, read_info, subject_folds
from privkd.data.dataset import Batch
from privkd.methods.frozen_outputs import FrozenOutputCache
from privkd.methods.registry import build_module
from privkd.models.build import build_net
from privkd.models.network import NetOutput
from privkd.training.fit import fit, seed_everything

MODALITIES = ["accelerometer", "gyroscope"]


@pytest.fixture(scope="module")
def data(watch_path):
    return read_info(watch_path), MultimodalDataset(watch_path, modalities=MODALITIES, in_memory=True)


def test_a_samples_teacher_output_does_not_depend_on_its_batch(data):
    """The premise of the cache on the demo's networks: bit for bit, whatever else is in the batch."""
    info, dataset = data
    torch.manual_seed(0)
    teacher = build_net("teacher", fitted_config(), info).eval()
    rows = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(1))[:200].tolist()
    inputs = {m: torch.stack([dataset[i].inputs[m] for i in rows]) for m in MODALITIES}
    with torch.no_grad():
        whole = teacher(inputs)
        order = torch.randperm(200, generator=torch.Generator().manual_seed(2))
        shuffled = teacher({m: v[order] for m, v in inputs.items()})
        pieces = [teacher({m: v[s:s + 37] for m, v in inputs.items()}) for s in range(0, 200, 37)]
    assert torch.equal(whole.embedding[order], shuffled.embedding) and torch.equal(whole.logits[order], shuffled.logits)
    assert torch.equal(whole.embedding, torch.cat([p.embedding for p in pieces]))


def test_the_cache_computes_each_sample_once_and_returns_what_was_computed():
    calls = []

    def compute(inputs):
        calls.append(len(inputs["x"]))
        x = inputs["x"]
        return {"t": NetOutput(x * 2, x + 1), "view": NetOutput(-x, x * x)}

    cache = FrozenOutputCache(compute)
    x = torch.arange(12.0).reshape(6, 2)
    first = cache(Batch({"x": x[:4]}, torch.zeros(4), index=torch.tensor([7, 2, 9, 0])))
    assert calls == [4] and len(cache) == 4
    again = cache(Batch({"x": x[[1, 3]]}, torch.zeros(2), index=torch.tensor([2, 0])))  # both seen: no compute
    assert calls == [4]
    torch.testing.assert_close(again["t"].logits, first["t"].logits[[1, 3]], rtol=0, atol=0)
    torch.testing.assert_close(again["view"].embedding, first["view"].embedding[[1, 3]], rtol=0, atol=0)
    mixed = cache(Batch({"x": x[[0, 4]]}, torch.zeros(2), index=torch.tensor([7, 40])))  # one new, beyond capacity
    assert calls == [4, 2] and len(cache) == 5
    torch.testing.assert_close(mixed["t"].logits, torch.stack([x[0] * 2, x[4] * 2]), rtol=0, atol=0)
    off = FrozenOutputCache(compute, enabled=False)
    off(Batch({"x": x[:2]}, torch.zeros(2), index=torch.tensor([0, 1])))
    off(Batch({"x": x[:2]}, torch.zeros(2), index=torch.tensor([0, 1])))
    assert calls == [4, 2, 2, 2] and len(off) == 0


@pytest.mark.parametrize("method", ["pkdot", "mtpkdot"])
def test_cached_and_recomputed_teacher_outputs_train_the_same_student(data, tmp_path, method):
    info, dataset = data
    fold = subject_folds(dataset.subjects, n_folds=5, n_val_subjects=1, seed=0)[0]
    train, val = dataset.subset(fold.train[:600]), dataset.subset(fold.val[:200])
    base = {"model": {"embed_dim": 16, "fusion_dim": 16, "tnet_hidden": 16, "tnet_bottleneck": 8},
            "training": {"epochs": 2, "batch_size": 64, "progress_bar": False}, "structural": {"k": 10}}
    teacher_role = "mt_teacher" if method == "mtpkdot" else "teacher"
    seed_everything(0)
    cfg = fitted_config(base)
    teacher = fit(build_module(teacher_role, cfg, info), train, val, cfg.training, tmp_path / "teacher", seed=0).module.net
    students = {}
    for cached in (True, False):
        cfg = fitted_config({**base, "student": {"cache_teacher_outputs": cached}})
        seed_everything(1)
        module = build_module(method, cfg, info, teacher=teacher)
        result = fit(module, train, val, cfg.training, tmp_path / f"{method}-{cached}", seed=1)
        students[cached] = (result, module.teacher_outputs)
    (with_cache, cache), (without, no_cache) = students[True], students[False]
    # Every sample of the first epoch's 9 full batches of 64 was stored (the ragged rest is dropped per epoch).
    assert 9 * 64 <= len(cache) <= len(train) and len(no_cache) == 0
    assert with_cache.validation == without.validation
    for (name, a), (_, b) in zip(with_cache.module.net.state_dict().items(), without.module.net.state_dict().items()):
        assert torch.equal(a, b), name
