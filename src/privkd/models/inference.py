"""Running a network in eval mode over a dataset: predictions, embeddings, token embeddings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from privkd.models.network import PrivilegedNet

__all__ = ["Predictions", "encode_dataset", "evaluating", "predict"]


@dataclass
class Predictions:
    """A network's outputs on a dataset, with its joint embeddings, the labels and file rows."""

    outputs: Tensor
    embeddings: Tensor
    labels: Tensor
    indices: Tensor


@contextmanager
def evaluating(*nets: torch.nn.Module) -> Iterator[None]:
    """``nets`` in eval mode and without gradient inside the block, their modes restored after it."""
    modes = [net.training for net in nets]
    for net in nets:
        net.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for net, mode in zip(nets, modes):
            net.train(mode)


def predict(net: torch.nn.Module, loader: torch.utils.data.DataLoader) -> Predictions:
    """Predictions for every sample of ``loader`` (net in eval mode)."""
    outputs, embeddings, labels, indices = [], [], [], []
    with evaluating(net):
        for batch in loader:
            result = net(batch.inputs)
            outputs.append(result.logits)
            embeddings.append(result.embedding)
            labels.append(batch.label)
            indices.append(batch.index)
    return Predictions(torch.cat(outputs), torch.cat(embeddings), torch.cat(labels), torch.cat(indices))


def encode_dataset(net: PrivilegedNet, dataset: Dataset, batch_size: int = 512) -> dict[str, torch.Tensor]:
    """``net``'s token embeddings of its seen modalities for every sample of ``dataset``, in eval mode."""
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in net.seen}
    with evaluating(net):
        for batch in DataLoader(dataset, batch_size=batch_size):
            for name, value in net.encode(batch.inputs).items():
                chunks[name].append(value)
    return {name: torch.cat(parts) for name, parts in chunks.items()}
