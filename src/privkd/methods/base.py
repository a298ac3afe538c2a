"""The LightningModule every method shares: named loss terms in, logged metrics out.

A method only says which loss terms it optimises (``loss_terms``) and with which weights;
optimisation, validation metrics and logging are the same for all, so a difference between
two rows of a results table comes from the training signal and nothing else.

Besides training, a method answers the experiment runner through a few hooks, so that the
runner never needs to know which method it trains: ``from_config`` builds it from the run's
config, ``prepare_fold`` fits what it derives from the fold's samples before training,
``probe_recorders`` names what it records during training for the report,
``fold_record`` adds what it learnt about the fold to the row's record, and
``extra_test_metrics`` scores anything besides its network on the test subjects.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from privkd.config.schema import RunConfig, TrainingConfig
from privkd.data.dataset import Batch
from privkd.data.h5format import DatasetInfo
from privkd.data.loaders import make_loader
from privkd.evaluation.metrics import SELECTION_METRIC, resolve_metric, score
from privkd.losses.task import task_loss
from privkd.methods.distributed import gather
from privkd.methods.schedule import CONSTANT_LR, LRSchedule
from privkd.models.network import NetOutput, PrivilegedNet


def random_state() -> dict:
    """Python, NumPy and torch (CPU) random states as plain lists and tensors, which
    ``torch.load(weights_only=True)`` reads back."""
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss],
            "numpy": [kind, keys.tolist(), int(position), int(has_gauss), float(cached)],
            "torch": torch.get_rng_state()}


def restore_random_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])


SELECTION_KEY = "val/selection"
"""Logged each validation epoch: the task's selection metric (macro-F1 or CCC on the
validation subjects), or :data:`UNSELECTABLE` for epochs a method rules out."""
UNSELECTABLE = -1.0  # below any macro-F1 or CCC


@dataclass(frozen=True)
class FoldData:
    """The subjects of one fold as a method's record hooks see them."""

    train: Dataset
    val: Dataset
    test: Dataset
    training: TrainingConfig

    def loader(self, dataset: Dataset) -> DataLoader:
        """An evaluation loader (every sample, in file order) over one of the fold's parts."""
        return make_loader(dataset, self.training, train=False)


def common_arguments(cfg: RunConfig, info: DatasetInfo) -> dict[str, object]:
    """What every method's constructor takes from the run: the task and the optimiser settings."""
    return {"task": info.task, "n_outputs": info.n_outputs, "lr": cfg.training.lr, "weight_decay": cfg.training.weight_decay,
            "optimizer": cfg.training.optimizer, "selection_metric": resolve_metric(cfg.evaluation.metric, info.task),
            "lr_schedule": LRSchedule.of(cfg.training), "grad_clip": cfg.training.grad_clip}


OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}
"""``training.optimizer`` names: AdamW decouples the weight decay, Adam adds it to the gradient."""


class PrivkdModule(L.LightningModule):
    """Trains ``net`` on ``Σ weights[name] * loss_terms()[name]`` and scores it on validation data."""

    def __init__(self, net: PrivilegedNet, *, task: str, n_outputs: int, lr: float, weight_decay: float,
                 optimizer: str = "adamw", selection_metric: str | None = None, lr_schedule: LRSchedule = CONSTANT_LR,
                 grad_clip: float | None = None) -> None:
        super().__init__()
        self.net = net
        self.task = task
        self.n_outputs = n_outputs
        self.lr = lr
        self.weight_decay = weight_decay
        self.optimizer_name = optimizer
        self.lr_schedule = lr_schedule
        self.grad_clip = grad_clip
        """Largest gradient norm per optimiser step (``training.grad_clip``); ``None``: no clipping."""
        self.selection_metric = selection_metric or SELECTION_METRIC[task]
        self.class_weights: Tensor | None = None
        """Per-class weights of the task loss (``training.class_weights``, from the training subjects)."""
        self.weights: dict[str, float] = {"task": 1.0}
        self._val_outputs: list[tuple[Tensor, Tensor, Tensor]] = []
        self.validation_groups: dict[int, str] | None = None
        """File row → recording group of the validation samples, when the run scores
        regression per group (``evaluation.group_average``): the epoch is then selected on
        the same aggregation the test fold is reported with."""

    def task_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Eq. 8 for this method's task, with the run's class weights."""
        return task_loss(self.task, outputs, targets, self.class_weights)

    @classmethod
    def from_config(cls, cfg: RunConfig, info: DatasetInfo, *, teacher: PrivilegedNet | None, method: str) -> PrivkdModule:
        """The module a row of ``method`` trains, from the row's whole config; ``teacher`` is the
        fold's trained network of the method this one distils from (``None`` when it needs none)."""
        raise NotImplementedError(f"{cls.__name__} does not say how to build itself from a config")

    def probe_recorders(self, val_set: Dataset) -> dict[str, L.Callback]:
        """Callbacks that record what the report draws, by the file each saves to in the row's directory."""
        return {}

    def prepare_fold(self, fold: FoldData) -> None:
        """Fit what the method derives from the fold's samples before it trains (a student's
        cross-fitted T-Nets); seeded like the rest of the row."""

    def fit_directly(self, fold: FoldData) -> dict[str, float] | None:
        """Fit without Lightning and return the validation record (a closed-form or library
        model, selected on ``fold.val``), or ``None`` to be trained by gradient descent."""
        return None

    def fold_record(self, fold: FoldData) -> dict:
        """What the trained method learnt about the fold beyond its scores, for the row's record."""
        return {}

    def extra_test_metrics(self, loader: DataLoader) -> dict[str, float]:
        """Test-subject scores of anything besides ``net`` the method trained (an online teacher)."""
        return {}

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        return self.net(inputs).logits

    def training_output(self, batch: Batch) -> NetOutput:
        """``net``'s output on a training batch as its training steps score it (a student's
        cross-fitted hallucinations of its training samples); its own forward by default.
        The score at initialisation (:mod:`privkd.training.initial`) reads it."""
        return self.net(batch.inputs)

    def loss_terms(self, batch: Batch) -> dict[str, Tensor]:
        """Unweighted loss terms for a training batch; the base trains the task loss only."""
        return {"task": self.task_loss(self.net(batch.inputs).logits, batch.label)}

    def weighted_total(self, terms: Mapping[str, Tensor]) -> Tensor:
        """``Σ weights[name] * term`` over the terms whose weight is not zero.

        A switched-off term is left out of the graph entirely rather than multiplied by 0:
        a zero gradient is still a gradient, and AdamW's weight decay would then move
        parameters that only that term reaches.
        """
        return sum(self.weights[name] * value for name, value in terms.items() if self.weights[name] != 0)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        terms = self.loss_terms(batch)
        total = self.weighted_total(terms)
        self.log_training_terms(terms, total, batch_size=len(batch.label))
        diagnostics = self.step_diagnostics()
        if diagnostics:
            self.log_dict({f"train/{name}": value for name, value in diagnostics.items()}, on_step=False, on_epoch=True,
                          batch_size=len(batch.label))
        return total

    def step_diagnostics(self) -> dict[str, float]:
        """Numbers about the last training step that are not loss terms (a solver's marginal
        error), logged as epoch means beside the terms."""
        return {}

    def log_training_terms(self, terms: Mapping[str, Tensor], total: Tensor, batch_size: int) -> None:
        """Epoch means of every unweighted term and of the weighted total."""
        for name, value in terms.items():
            self.log(f"train/{name}", value.detach(), on_step=False, on_epoch=True, batch_size=batch_size, sync_dist=True)
        self.log("train/loss", total.detach(), on_step=False, on_epoch=True, prog_bar=True, batch_size=batch_size,
                 sync_dist=True)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        outputs = self.net(batch.inputs).logits
        self._val_outputs.append((outputs, batch.label, batch.index))

    def on_validation_epoch_end(self) -> None:
        """Validation metrics over the whole validation set (CCC is not a mean of batch CCCs).

        Under data parallelism each rank scored a share of the set, padded with repeats to
        equal sizes: the shares are gathered and each sample counted once, so every rank
        selects the epoch on the same, exact score.
        """
        outputs, labels, indices = (gather(torch.cat(parts)) for parts in zip(*self._val_outputs))
        self._val_outputs.clear()
        rows, first = np.unique(indices.cpu().numpy(), return_index=True)
        outputs, labels = outputs[first], labels[first]
        self.log("val/loss", self.task_loss(outputs, labels), prog_bar=True)
        groups = [self.validation_groups[int(row)] for row in rows] if self.validation_groups is not None else None
        metrics = score(self.task, outputs, labels, n_outputs=self.n_outputs, groups=groups)
        self.log_dict({f"val/{name}": value for name, value in metrics.items()}, prog_bar=True)
        selection = metrics[self.selection_metric] if self.epoch_is_selectable() else UNSELECTABLE
        self.log(SELECTION_KEY, selection)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Store the random state and the method's own bookkeeping, so that training resumed
        from this checkpoint draws the same dropout masks and keeps the same histories."""
        checkpoint["privkd"] = {"rng": random_state(), "method": self.training_state()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("privkd")
        if saved is not None:
            restore_random_state(saved["rng"])
            self.load_training_state(saved["method"])

    def training_state(self) -> dict:
        """Bookkeeping beyond parameters that a resumed run must carry on (per-epoch histories)."""
        return {}

    def load_training_state(self, state: dict) -> None:
        """Inverse of :meth:`training_state`."""

    def epoch_is_selectable(self) -> bool:
        """Whether this epoch's weights may be chosen as the result (all epochs, by default)."""
        return True

    def min_epochs(self) -> int:
        """Epochs to train before early stopping may end training."""
        return 0

    def frozen_modules(self) -> list[nn.Module]:
        """Modules that stay in eval mode while the rest trains (frozen teachers, T-Nets)."""
        return []

    def on_train_epoch_start(self) -> None:
        """Lightning never calls ``train()`` itself (it restores the modes it found after each
        validation), so the training mode with its frozen parts is set here."""
        self.train()

    def train(self, mode: bool = True) -> PrivkdModule:
        super().train(mode)
        frozen_backbones = [b for net in self.trained_networks() for b in net.frozen_backbones().values()]
        for module in self.frozen_modules() + frozen_backbones:
            module.eval()
        return self

    def trained_networks(self) -> list[PrivilegedNet]:
        """Networks this module trains from scratch, whose standardisation is fitted on the fold."""
        return [self.net]

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.parameters() if p.requires_grad)

    def make_optimizer(self, parameters: Iterator[nn.Parameter] | list[nn.Parameter]) -> torch.optim.Optimizer:
        """The configured optimiser (``training.optimizer``) over ``parameters``."""
        return OPTIMIZERS[self.optimizer_name](parameters, lr=self.lr, weight_decay=self.weight_decay)

    def make_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler | None:
        """The per-epoch ``training.lr_schedule`` of ``optimizer`` over this training's epochs, or
        ``None`` when the learning rate stays constant."""
        return None if self.lr_schedule.constant else self.lr_schedule.scheduler(optimizer, self.trainer.max_epochs)

    def configure_optimizers(self) -> torch.optim.Optimizer | dict:
        optimizer = self.make_optimizer(self.trainable_parameters())
        scheduler = self.make_scheduler(optimizer)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Clip the gradient norm to ``training.grad_clip`` with Lightning's norm clipping.

        Done in this hook rather than with ``Trainer(gradient_clip_val=...)`` because it runs
        in manual optimisation too (AMID steps its own optimisers, where the Trainer refuses
        to clip) and after mixed precision has unscaled the gradients.
        """
        if self.grad_clip is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
