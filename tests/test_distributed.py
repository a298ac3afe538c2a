"""Two CPU processes (gloo) on halves of a batch compute the same loss and the same student
gradients as one process on the whole batch: the batch-structural terms (PKDOT's anchors and
OT, MT-PKDOT's teacher selection and centroid, AMID's contrastive and adversarial terms) see
the global batch, gathered with gradient, and DDP averages the rest."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from configs import fitted_config
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from privkd.data.dataset import Batch
from privkd.methods.registry import build_module, method_spec

BATCH = 16
WORLD = 2


class FakeInfo:
    """Tabular modalities with MLP backbones: no batch norm, whose per-rank statistics would
    (rightly) differ from single-process ones unless ``sync_batchnorm`` is on."""

    task, n_outputs, n_classes = "classification", 3, 3
    modalities = {m: type("M", (), {"kind": "features", "sample_shape": (6,)})() for m in ("accelerometer", "gyroscope")}


def make_module(method: str) -> torch.nn.Module:
    cfg = fitted_config({"model": {"embed_dim": 8, "fusion_dim": 16, "dropout": 0.0}, "structural": {"k": 5},
                            "amid": {"warmup_epochs": 0}, "teacher": {"align_weight": 1.0}})
    torch.manual_seed(0)
    teacher = build_module(method_spec(method).teacher_for(cfg) or "teacher", cfg, FakeInfo()).net.eval()
    torch.manual_seed(1)
    module = build_module(method, cfg, FakeInfo(), teacher=teacher)
    module.train()
    return module


def global_batch() -> dict:
    generator = torch.Generator().manual_seed(2)
    inputs = {m: torch.randn(BATCH, 6, generator=generator) for m in FakeInfo.modalities}
    return Batch(inputs, torch.randint(0, 3, (BATCH,), generator=generator))


def shard(batch: dict, rank: int) -> dict:
    rows = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
    return Batch({m: x[rows] for m, x in batch.inputs.items()}, batch.label[rows])


class TotalLoss(nn.Module):
    """What Lightning's DDP wrapper does: forward = the method's weighted training loss."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, batch: dict) -> torch.Tensor:
        return self.module.weighted_total(self.module.loss_terms(batch))


def student_gradients(module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in module.net.named_parameters() if p.grad is not None}


def worker(rank: int, method: str, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        module = make_module(method)
        ddp = DistributedDataParallel(TotalLoss(module), find_unused_parameters=True)
        loss = ddp(shard(global_batch(), rank))
        loss.backward()
        losses = [torch.zeros(()) for _ in range(WORLD)]
        dist.all_gather(losses, loss.detach())
        torch.save({"loss": torch.stack(losses).mean(), "grads": student_gradients(module)}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("method", ["pkdot", "mtpkdot", "amid"])
def test_two_gloo_ranks_match_one_process_on_the_global_batch(method, tmp_path):
    single = make_module(method)
    loss = single.weighted_total(single.loss_terms(global_batch()))
    loss.backward()
    expected = student_gradients(single)

    mp.spawn(worker, args=(method, free_port(), str(tmp_path)), nprocs=WORLD)
    for rank in range(WORLD):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(result["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
        assert result["grads"].keys() == expected.keys()
        for name, grad in expected.items():
            torch.testing.assert_close(result["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=f"{method} {name}")


def test_per_rank_structural_loss_would_differ_from_the_global_one():
    """The check above has teeth: without gathering, halves give another OT value."""
    module = make_module("pkdot")
    with torch.no_grad():
        batch = global_batch()
        whole = module.loss_terms(batch)["ot"]
        halves = torch.stack([module.loss_terms(shard(batch, r))["ot"] for r in range(WORLD)]).mean()
    assert abs(float(whole) - float(halves)) > 1e-3


def test_privkd_run_on_two_cpu_processes_writes_one_run(tmp_path, watch_path):
    """``privkd run --devices 2 --strategy ddp``: Lightning re-launches the command for rank 1,
    which trains alongside rank 0 but writes nothing and prints nothing."""
    import json
    import subprocess
    import sys

    import yaml

    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump({
        "name": "ddp", "methods": ["baseline", "teacher", "pkdot"], "evaluation": {"max_folds": 1},
        "training": {"epochs": 1, "progress_bar": False, "limit_train_batches": 2}, "teacher": {"tnet_refit_epochs": 1},
    }))
    env = {**os.environ, "PRIVKD_CACHE": str(watch_path.parent), "OMP_NUM_THREADS": "1"}
    env.pop("PRIVKD_RUN_DIR", None)
    result = subprocess.run([sys.executable, "-m", "privkd", "run", str(config), "--out", str(tmp_path / "runs"),
                             "--devices", "2", "--strategy", "ddp"], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert list(json.loads((run_dir / "summary.json").read_text())["methods"]) == ["baseline", "teacher", "pkdot"]
    assert result.stdout.count("results in") == 1
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["training"]["devices"] == 2
