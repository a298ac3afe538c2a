"""Batch-structural losses see the global batch under data-parallel training.

PKDOT's similarity matrices and anchors, MT-PKDOT's teacher selection and centroid loss, and
AMID's contrastive and discriminator terms are functions of the whole batch. Computed on each
rank's share they would silently become a different method (a 128-sample batch on 4 GPUs
would give 32-sample similarity structures). So before those terms, every rank gathers all
ranks' embeddings *with gradient* and computes the term on the global batch.

Gradient bookkeeping: each rank's loss is then the same global term, the gather's backward
sums every rank's gradient onto the rank that owns each sample (``world_size`` equal
contributions), and DDP averages parameter gradients over ranks, dividing by
``world_size`` again. The result is exactly the single-process gradient of the term on the
global batch; a test with two gloo processes checks it.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from privkd.data.dataset import Batch
from privkd.models.network import NetOutput


def world_size() -> int:
    """Number of data-parallel processes (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(tensor: Tensor) -> Tensor:
    """Every rank's ``tensor`` concatenated along the batch axis, in rank order.

    Gradients flow back to each rank's own rows, summed over every rank's loss (each rank's
    loss depends on every row): torch's differentiable
    :func:`torch.distributed.nn.functional.all_gather`. All ranks must pass the same shape
    (training loaders drop the ragged last batch, and the distributed sampler pads).
    """
    if world_size() == 1:
        return tensor
    # imported only when distributed, as it needs a torch built with torch.distributed
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0)


def gather(tensor: Tensor) -> Tensor:
    """Every rank's ``tensor`` (labels, sample indices, detached outputs), in rank order, no gradient."""
    if world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def gather_output(output: NetOutput) -> NetOutput:
    """A forward pass's outputs and joint embedding over the global batch."""
    if world_size() == 1:
        return output
    return NetOutput(gather_with_grad(output.logits), gather_with_grad(output.embedding))


def global_batch(batch: Batch) -> Batch:
    """The batch's labels over all ranks (inputs stay local: terms take gathered outputs)."""
    return batch._replace(label=gather(batch.label))
