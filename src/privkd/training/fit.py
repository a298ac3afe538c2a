"""Fitting one method on one fold with Lightning, selecting the epoch on validation data."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from privkd.config import TrainingConfig
from privkd.errors import SplitError
from privkd.evaluation.metrics import SELECTION_METRIC
from privkd.methods.base import SELECTION_KEY, PrivkdModule
from privkd.models.network import PrivilegedNet

logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*number of training batches.*is smaller than the logging interval.*")
warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode at the start of training.*")  # frozen teachers
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (and DataLoader workers) for a reproducible step."""
    L.seed_everything(seed, workers=True, verbose=False)


def make_loader(dataset: Dataset, cfg: TrainingConfig, *, train: bool, seed: int = 0) -> DataLoader:
    """Training loaders shuffle with a seeded generator and drop a ragged last batch, so every
    structural loss sees full batches; evaluation loaders keep every sample in order."""
    generator = torch.Generator().manual_seed(seed) if train else None
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=train,
        drop_last=train and len(dataset) > cfg.batch_size,
        generator=generator,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
    )


def modality_batches(dataset: Dataset, name: str, batch_size: int = 512) -> Iterator[torch.Tensor]:
    """The samples of modality ``name`` in ``dataset``, a batch at a time (never all at once)."""
    for batch in DataLoader(dataset, batch_size=batch_size):
        yield batch["inputs"][name]


@torch.no_grad()
def encode_dataset(net: PrivilegedNet, dataset: Dataset, batch_size: int = 512) -> dict[str, torch.Tensor]:
    """``net``'s token embeddings of its seen modalities for every sample of ``dataset``, in eval mode."""
    net.eval()
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in net.seen}
    for batch in DataLoader(dataset, batch_size=batch_size):
        for name, value in net.encode(batch["inputs"]).items():
            chunks[name].append(value)
    return {name: torch.cat(parts) for name, parts in chunks.items()}


@dataclass
class FitResult:
    """A trained module (weights of its selected epoch) and that epoch's validation score."""

    module: PrivkdModule
    validation: dict[str, float]


def fit(
    module: PrivkdModule, train_set: Dataset, val_set: Dataset, cfg: TrainingConfig, out_dir: Path, seed: int,
    callbacks: Sequence[L.Callback] = (),
) -> FitResult:
    """Train ``module`` and return it with the weights of its best validation epoch.

    ``seed`` drives dropout and the shuffling order; seed the global generators before
    building ``module`` too (see :func:`seed_everything`) so its initialisation is fixed.
    """
    monitor = SELECTION_KEY  # validation subjects only, never the test fold
    if len(train_set) < 2 or len(val_set) < 1:
        raise SplitError(f"this fold has {len(train_set)} training and {len(val_set)} validation samples; training needs "
                         "at least 2 and selection at least 1", "use fewer folds or fewer validation subjects, or more data")
    seed_everything(seed)
    for net in module.trained_networks():
        net.fit_standardization(lambda name: modality_batches(train_set, name), skip=net.frozen_backbones())
    checkpoint = ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="best", monitor=monitor, mode="max", save_weights_only=True)
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
        logger=CSVLogger(out_dir, name="logs", version=""),
        callbacks=[checkpoint, EarlyStopping(monitor=monitor, mode="max", patience=cfg.patience), *callbacks],
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False,
        log_every_n_steps=10,
        num_sanity_val_steps=0,
        limit_train_batches=cfg.limit_train_batches,
    )
    trainer.fit(module, make_loader(train_set, cfg, train=True, seed=seed), make_loader(val_set, cfg, train=False))
    state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    validation = {f"val/{SELECTION_METRIC[module.task]}": float(checkpoint.best_model_score), "epochs_trained": int(trainer.current_epoch)}
    return FitResult(module.cpu().eval(), validation)
