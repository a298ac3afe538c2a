"""A frozen teacher's outputs, computed once per sample and looked up in every later step.

A distilled student's teacher (and its T-Net) is frozen and in eval mode for the whole of the
student's training, and privkd's inputs are never randomly augmented, so the teacher's output
for a sample is the same at every epoch: recomputing it costs a forward pass the size of
the student's on every step. :class:`FrozenOutputCache` keeps, per file row of the dataset
(``Batch.index``), the logits and joint embedding of each network the student reads (the
joint teacher, and MT-PKDOT's adapter views), filled the first time a batch holds the sample.

Exactness: a batch with any unseen sample is run through the teacher whole, as the
uncached step would run it, and only its unseen rows are stored; a sample's stored output is
therefore the one its first batch gave. On the demo's networks a sample's output does not
depend on the other samples of its batch (bit for bit, ``tests/test_frozen_outputs.py``), so
cached and recomputed training are identical; a backbone whose CPU kernels do depend on the
batch's composition would differ only in the last bits of later epochs.

The store lives on the module's device, outside its ``state_dict`` (a checkpoint need not
carry it: a resumed run refills it with the same values). Each data-parallel rank stores the
samples its own batches hold; the gather of outputs across ranks is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from privkd.data.dataset import Batch
from privkd.models.network import NetOutput

__all__ = ["FrozenOutputCache"]

Compute = Callable[[Mapping[str, Tensor]], Mapping[str, NetOutput]]


class FrozenOutputCache:
    """``compute(inputs) -> {name: NetOutput}`` of a frozen network, per file row.

    ``enabled=False`` makes every call compute (the uncached path, for comparisons).
    """

    def __init__(self, compute: Compute, *, enabled: bool = True) -> None:
        self.compute = compute
        self.enabled = enabled
        self._filled: Tensor | None = None
        self._stores: dict[str, tuple[Tensor, Tensor]] = {}

    def __len__(self) -> int:
        """Samples stored so far."""
        return 0 if self._filled is None else int(self._filled.sum())

    def clear(self) -> None:
        self._filled, self._stores = None, {}

    @torch.no_grad()
    def __call__(self, batch: Batch) -> dict[str, NetOutput]:
        """The outputs for ``batch``: looked up, or computed (and stored) when a sample is new."""
        if not self.enabled or batch.index is None:
            return dict(self.compute(batch.inputs))
        index = torch.as_tensor(batch.index, dtype=torch.long)
        some_input = next(iter(batch.inputs.values()))
        index = index.to(some_input.device)
        self._reserve(int(index.max()) + 1, some_input.device)
        new = ~self._filled[index]
        if bool(new.any()):
            outputs = self.compute(batch.inputs)  # the whole batch, as the uncached step computes it
            for name, output in outputs.items():
                self._store(name, output, index[new], new)
            self._filled[index[new]] = True
            if bool(new.all()):
                return {name: NetOutput(output.logits, output.embedding) for name, output in outputs.items()}
        return {name: NetOutput(logits[index], embedding[index]) for name, (logits, embedding) in self._stores.items()}

    def _reserve(self, size: int, device: torch.device) -> None:
        """Room for file rows ``0 .. size - 1`` (grown by doubling, so rarely)."""
        if self._filled is not None and len(self._filled) >= size:
            return
        capacity = max(size, 2 * (0 if self._filled is None else len(self._filled)))
        filled = torch.zeros(capacity, dtype=torch.bool, device=device)
        if self._filled is not None:
            filled[: len(self._filled)] = self._filled
        self._filled = filled
        for name, (logits, embedding) in self._stores.items():
            self._stores[name] = (_grown(logits, capacity), _grown(embedding, capacity))

    def _store(self, name: str, output: NetOutput, rows: Tensor, new: Tensor) -> None:
        if name not in self._stores:
            capacity = len(self._filled)
            self._stores[name] = (output.logits.new_zeros(capacity, *output.logits.shape[1:]),
                                  output.embedding.new_zeros(capacity, *output.embedding.shape[1:]))
        logits, embedding = self._stores[name]
        logits[rows] = output.logits[new]
        embedding[rows] = output.embedding[new]


def _grown(store: Tensor, capacity: int) -> Tensor:
    grown = store.new_zeros(capacity, *store.shape[1:])
    grown[: len(store)] = store
    return grown
