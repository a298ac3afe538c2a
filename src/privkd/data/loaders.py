"""Loaders over a fold's samples: a shuffling order that depends only on (seed, epoch),
full training batches, and evaluation in file order."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from privkd.config.schema import TrainingConfig
from privkd.interrupt import STOP_SIGNALS

__all__ = ["EpochShuffler", "leave_stops_to_the_main_process", "make_loader", "modality_batches"]


class EpochShuffler(Sampler[int]):
    """A random order that depends only on ``(seed, epoch)``.

    A shared generator would make epoch ``e``'s order depend on how many epochs this process
    has drawn; here a run resumed at epoch ``e`` replays exactly the orders of an
    uninterrupted one. Lightning calls :meth:`set_epoch` before every epoch.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def make_loader(dataset: Dataset, cfg: TrainingConfig, *, train: bool, seed: int = 0) -> DataLoader:
    """Training loaders shuffle by :class:`EpochShuffler` and drop a ragged last batch, so every
    structural loss sees full batches; evaluation loaders keep every sample in order. The
    loader's own generator only seeds worker processes, so iterating never draws from the
    global random state that dropout uses."""
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=EpochShuffler(len(dataset), seed) if train else None,
        drop_last=train and len(dataset) > cfg.batch_size,
        generator=torch.Generator().manual_seed(seed),
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        worker_init_fn=leave_stops_to_the_main_process if cfg.num_workers > 0 else None,
    )


def leave_stops_to_the_main_process(worker_id: int) -> None:
    """A loader worker ignores the stop signals (SIGTERM, Ctrl-C, a closed terminal's SIGHUP...).
    A scheduler's SIGTERM (or a terminal's Ctrl-C) reaches the whole process group; a worker killed by it would make the main process fail the
    row with "DataLoader worker killed by signal" and go on to the next one. Ignored here, the
    stop is the main process's alone: it stops the run, says how to resume, and shuts its
    workers down (which also exit by themselves once the main process is gone)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def modality_batches(dataset: Dataset, name: str, batch_size: int = 512) -> Iterator[torch.Tensor]:
    """The samples of modality ``name`` in ``dataset``, a batch at a time (never all at once)."""
    for batch in DataLoader(dataset, batch_size=batch_size):
        yield batch.inputs[name]
