"""Fitting one method on one fold with Lightning, selecting the epoch on validation data."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger
from torch.utils.data import Dataset

from privkd.atomic import write_atomic
from privkd.config.fitted import require_resolved
from privkd.config.schema import TrainingConfig
from privkd.data.loaders import make_loader, modality_batches
from privkd.errors import PrivkdError, SplitError
from privkd.methods.base import SELECTION_KEY, PrivkdModule
from privkd.training.initial import initial_path, initial_scores, log_initial

logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*number of training batches.*is smaller than the logging interval.*")
warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode at the start of training.*")  # frozen teachers
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
warnings.filterwarnings("ignore", message=".*exists and is not empty.*")  # resuming into its own directory


LAST_CHECKPOINT = "last.ckpt"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (and DataLoader workers) for a reproducible step."""
    L.seed_everything(seed, workers=True, verbose=False)


def epoch_log_path(out_dir: Path) -> Path:
    return out_dir / "logs" / "metrics.csv"


def read_epoch_log(out_dir: Path) -> pd.DataFrame | None:
    path = epoch_log_path(out_dir)
    return pd.read_csv(path) if path.is_file() else None


def keep_earlier_epochs(out_dir: Path, earlier: pd.DataFrame) -> None:
    """Lightning's CSV logger starts a fresh file on resume: put back the epochs logged
    before the interruption, so the training curves stay whole."""
    resumed = read_epoch_log(out_dir)
    if resumed is None or resumed.empty:
        return
    merged = pd.concat([earlier[earlier["epoch"] < resumed["epoch"].min()], resumed], ignore_index=True)
    write_atomic(epoch_log_path(out_dir), lambda tmp: merged.to_csv(tmp, index=False))


class NonFiniteLoss(PrivkdError):
    """A row's training loss became NaN or inf: it is stopped rather than trained and scored on."""


class StopOnNonFiniteLoss(L.Callback):
    """Stop a row at the end of the first epoch whose training loss (a term, or the weighted
    total) is NaN or inf, naming the terms.

    Lightning trains on through NaN losses, and a row selected on a validation score of NaN
    outputs still writes results (AMID with a zero temperature once scored every row so and
    exited 0). The epoch means of the terms the module logs (``train/<term>``) are checked, so
    no step waits on the accelerator for it.
    """

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: PrivkdModule) -> None:
        logged = trainer.callback_metrics
        terms = [*pl_module.weights, "loss"]
        bad = [name for name in terms
               if f"train/{name}" in logged and not bool(torch.isfinite(logged[f"train/{name}"]).all())]
        if bad:
            values = ", ".join(f"{name} = {float(logged[f'train/{name}'])}" for name in bad)
            raise NonFiniteLoss(f"the training loss term{'s' if len(bad) > 1 else ''} {bad} became non-finite in "
                                f"epoch {trainer.current_epoch} ({values}); the row was stopped",
                                "lower training.lr, set training.grad_clip, check the weights and temperatures of "
                                "the method's terms in the config, and check the data for extreme values")


@dataclass
class FitResult:
    """A trained module (weights of its selected epoch), that epoch's validation score, and the
    module's score before its first step (:func:`~privkd.training.initial.initial_scores`)."""

    module: PrivkdModule
    validation: dict[str, float]
    initial: dict[str, float]


def fit(
    module: PrivkdModule, train_set: Dataset, val_set: Dataset, cfg: TrainingConfig, out_dir: Path, seed: int,
    callbacks: Sequence[L.Callback] = (), loggers: Sequence[Logger] = (),
) -> FitResult:
    """Train ``module`` and return it with the weights of its best validation epoch.

    ``seed`` drives dropout and the shuffling order; seed the global generators before
    building ``module`` too (see :func:`seed_everything`) so its initialisation is fixed.

    Every epoch also writes ``checkpoints/last.ckpt`` (weights, optimiser, loop and callback
    state, random state); when that file exists the interrupted training continues from it
    and ends exactly where an uninterrupted one would. It is removed once training is over.
    The epoch metrics go to ``logs/metrics.csv`` and to every one of ``loggers`` besides, which
    also get the score before the first step (``initial/train``, ``initial/val``).
    """
    require_resolved(cfg)
    monitor = SELECTION_KEY  # validation subjects only, never the test fold
    if len(train_set) < 2 or len(val_set) < 1:
        raise SplitError(f"this fold has {len(train_set)} training and {len(val_set)} validation samples; training needs "
                         "at least 2 and selection at least 1", "use fewer folds or fewer validation subjects, or more data")
    seed_everything(seed)
    for net in module.trained_networks():
        net.fit_standardization(lambda name: modality_batches(train_set, name), skip=net.frozen_backbones())
    resume = out_dir / "checkpoints" / LAST_CHECKPOINT
    resuming = resume.is_file()
    initial = initial_scores(module, train_set, val_set, cfg, out_dir, resuming)
    log_initial(loggers, initial)
    checkpoint = ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="best", monitor=monitor, mode="max", save_weights_only=True)
    last = ModelCheckpoint(dirpath=out_dir / "checkpoints", filename=LAST_CHECKPOINT.removesuffix(".ckpt"), save_top_k=1,
                           enable_version_counter=False)
    trainer = L.Trainer(
        max_epochs=max(cfg.epochs, module.min_epochs()),
        min_epochs=module.min_epochs(),
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        precision=cfg.precision,
        sync_batchnorm=cfg.sync_batchnorm,
        deterministic=True,
        logger=[CSVLogger(out_dir, name="logs", version=""), *loggers],  # the CSV first: its log is the one read back
        callbacks=[StopOnNonFiniteLoss(), checkpoint, last, EarlyStopping(monitor=monitor, mode="max",
                                                                            patience=cfg.patience), *callbacks],
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False,
        log_every_n_steps=10,
        num_sanity_val_steps=0,
        limit_train_batches=cfg.limit_train_batches,
    )
    if not resuming:  # trained again from its start: an earlier attempt's best.ckpt would push this one to best-v1.ckpt
        for stale in (out_dir / "checkpoints").glob("best*.ckpt"):
            stale.unlink(missing_ok=True)  # data-parallel ranks share the directory
    earlier_log = read_epoch_log(out_dir) if resuming else None
    trainer.fit(module, make_loader(train_set, cfg, train=True, seed=seed), make_loader(val_set, cfg, train=False),
                ckpt_path=resume if resuming else None, weights_only=True)  # whatever TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD says
    if earlier_log is not None:
        keep_earlier_epochs(out_dir, earlier_log)
    state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    resume.unlink(missing_ok=True)
    initial_path(out_dir).unlink(missing_ok=True)  # the row's record keeps the scores
    validation = {f"val/{module.selection_metric}": float(checkpoint.best_model_score), "epochs_trained": int(trainer.current_epoch)}
    return FitResult(module.cpu().eval(), validation, initial)
