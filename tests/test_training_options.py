"""``training.lr_schedule``, ``training.grad_clip`` and ``training.loggers``: what each does to a
real training on the embedded data, and that the defaults change nothing."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from configs import fitted_config
from lightning.pytorch.loggers import CSVLogger

import privkd
from privkd.config.loading import config_from_dict
from privkd.data import MultimodalDataset, read_info, subject_folds
from privkd.errors import ConfigError
from privkd.methods.registry import build_module
from privkd.methods.schedule import LRSchedule
from privkd.training import loggers as logger_module
from privkd.training.fit import fit, seed_everything

SMALL = {"model": {"embed_dim": 16, "fusion_dim": 24}, "amid": {"warmup_epochs": 0}}


@pytest.fixture(scope="module")
def fold(watch_path):
    info = read_info(watch_path)
    dataset = MultimodalDataset(watch_path, modalities=["accelerometer", "gyroscope"], in_memory=True)
    split = subject_folds(dataset.subjects, n_folds=5, n_val_subjects=1, seed=0)[0]
    return info, dataset.subset(split.train), dataset.subset(split.val)


def train(method: str, training: dict, fold, tmp_path, callbacks=()):
    info, train_set, val_set = fold
    cfg = fitted_config({**SMALL, "training": {"batch_size": 64, "patience": 20, "progress_bar": False, **training}})
    seed_everything(0)
    module = build_module(method, cfg, info)
    return module, cfg, lambda: fit(module, train_set, val_set, cfg.training, tmp_path, seed=0, callbacks=list(callbacks))


class LearningRates(L.Callback):
    """Every optimiser's learning rate at the start of each epoch (what that epoch trains with)."""

    def __init__(self) -> None:
        self.per_epoch: list[list[float]] = []

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.per_epoch.append([group["lr"] for optimizer in trainer.optimizers for group in optimizer.param_groups])


def test_schedule_factors():
    cosine = LRSchedule("cosine", warmup_epochs=2)
    assert [cosine.factor(e, 6) for e in range(6)] == pytest.approx(
        [1 / 3, 2 / 3, 1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2])
    assert [LRSchedule("step", step_epochs=2, gamma=0.5).factor(e, 6) for e in range(6)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    assert [LRSchedule("none", warmup_epochs=1).factor(e, 3) for e in range(3)] == [0.5, 1.0, 1.0]
    assert LRSchedule().constant and not LRSchedule("none", warmup_epochs=1).constant


@pytest.mark.parametrize("method", ["baseline", "amid"])
def test_the_schedule_sets_the_optimizer_learning_rate_each_epoch(method, fold, tmp_path):
    """Cosine after 1 warm-up epoch over 4 epochs at lr 2e-3, read from the optimiser during
    training; AMID steps its own optimisers, and its discriminators' rate is left alone."""
    rates = LearningRates()
    _, cfg, run = train(method, {"epochs": 4, "lr": 2e-3, "limit_train_batches": 1, "lr_schedule": "cosine",
                                 "lr_warmup_epochs": 1}, fold, tmp_path, [rates])
    run()
    main = [epoch[0] for epoch in rates.per_epoch]
    assert main == pytest.approx([1e-3, 2e-3, 0.75 * 2e-3, 0.25 * 2e-3], rel=1e-9)  # (1 + cos(pi t / 3)) / 2
    if method == "amid":
        assert {epoch[-1] for epoch in rates.per_epoch} == {cfg.amid.discriminator_lr}


def test_step_schedule_and_the_default_constant_rate(fold, tmp_path):
    rates = LearningRates()
    _, _, run = train("baseline", {"epochs": 5, "limit_train_batches": 1, "lr_schedule": "step", "lr_step_epochs": 2,
                                   "lr_step_gamma": 0.5}, fold, tmp_path / "step", [rates])
    run()
    assert [epoch[0] for epoch in rates.per_epoch] == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4])
    module, _, _ = train("baseline", {"epochs": 5}, fold, tmp_path / "constant")
    assert isinstance(module.configure_optimizers(), torch.optim.AdamW)  # no scheduler at all: nothing moves


@pytest.mark.parametrize("method", ["baseline", "amid"])
@pytest.mark.parametrize("clip", [None, 1.0])
def test_grad_clip_bounds_the_gradient_norm_of_a_huge_loss(method, clip, fold, tmp_path):
    """The weighted loss times 1e6: its gradient norm is in the thousands unclipped, and exactly
    ``grad_clip`` at every step with clipping (also under AMID's manual optimisation)."""
    module, _, run = train(method, {"epochs": 1, "limit_train_batches": 3, "grad_clip": clip}, fold, tmp_path)
    unscaled, clipping = module.weighted_total, module.on_before_optimizer_step
    norms: list[float] = []

    def record(optimizer: torch.optim.Optimizer) -> None:
        clipping(optimizer)
        if optimizer is module.trainer.optimizers[0]:  # the networks', not AMID's discriminators'
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    module.weighted_total = lambda terms: 1e6 * unscaled(terms)
    module.on_before_optimizer_step = record
    run()
    assert len(norms) == 3
    if clip is None:
        assert min(norms) > 1e3
    else:
        assert norms == pytest.approx([clip] * 3, rel=1e-5)


@pytest.mark.parametrize("key, value", [
    ("grad_clip", "nan"), ("grad_clip", float("inf")), ("grad_clip", 0), ("lr_step_gamma", float("nan")),
    ("lr_step_gamma", 1.5), ("lr_step_epochs", 0), ("lr_warmup_epochs", -1), ("lr_schedule", "linear"),
    ("loggers", ["csv", "wandb"]), ("loggers", ["tensorboard", "tensorboard"]),
])
def test_the_new_training_keys_are_checked(key, value):
    with pytest.raises(ConfigError, match=f"training.{key}"):
        config_from_dict({"training": {key: value}})


def test_the_new_training_keys_default_to_off():
    with pytest.raises(ConfigError, match="training.lr_warmup_epochs"):
        config_from_dict({"training": {"epochs": 3, "lr_warmup_epochs": 3}})
    defaults = config_from_dict({}).training
    assert (defaults.lr_schedule, defaults.lr_warmup_epochs, defaults.grad_clip, defaults.loggers) == ("none", 0, None, ("csv",))


TINY = {"name": "tiny", "methods": ["baseline"], "evaluation": {"max_folds": 1, "n_val_subjects": 1},
        "training": {"epochs": 2, "limit_train_batches": 2, "batch_size": 64, "progress_bar": False}}


class EpochCounter(L.Callback):
    def __init__(self) -> None:
        self.epochs = 0

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.epochs += 1


def test_tensorboard_and_mlflow_get_the_metrics_of_the_csv_log(tmp_path, monkeypatch, watch_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("PRIVKD_CACHE", str(watch_path.parent))
    mine, counter = CSVLogger(tmp_path / "mine", name="", version=""), EpochCounter()
    values = {**TINY, "training": {**TINY["training"], "loggers": ["csv", "tensorboard", "mlflow"]}}
    run = privkd.run(values, tmp_path / "runs", loggers=[mine], callbacks=[counter])
    row = run.dir / "fold_0" / "baseline"
    csv = pd.read_csv(row / "logs" / "metrics.csv")
    selection = csv["val/selection"].dropna().to_numpy()
    assert len(selection) == 2 and counter.epochs == 2

    events = EventAccumulator(str(row / "tensorboard"))
    events.Reload()
    np.testing.assert_allclose([e.value for e in events.Scalars("val/selection")], selection, rtol=1e-6)

    client = MlflowClient(tracking_uri=(run.dir / "mlruns").as_uri())
    (mlflow_run,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert mlflow_run.info.run_name == "fold_0/baseline" and mlflow_run.data.tags["row"] == "baseline"
    assert float(mlflow_run.data.params["training/lr"]) == 1e-3
    history = client.get_metric_history(mlflow_run.info.run_id, "val/selection")
    np.testing.assert_allclose([m.value for m in sorted(history, key=lambda m: m.step)], selection, rtol=1e-6)

    own = pd.read_csv(tmp_path / "mine" / "metrics.csv")
    np.testing.assert_allclose(own["val/selection"].dropna().to_numpy(), selection)


def test_a_missing_logger_package_stops_the_run_before_it_trains(tmp_path, monkeypatch):
    monkeypatch.setitem(logger_module.LOGGER_PACKAGES, "mlflow", (("privkd_not_installed",), "pip install mlflow"))
    values = {**TINY, "training": {**TINY["training"], "loggers": ["csv", "mlflow"]}}
    with pytest.raises(ConfigError, match=r"training.loggers.*mlflow.*pip install mlflow"):
        privkd.run(values, tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
