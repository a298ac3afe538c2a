"""Fusion of per-modality embeddings into one joint representation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class ConcatFusion(nn.Module):
    """Feature concatenation followed by an MLP layer (MT-PKDOT Fig. 3a).

    The output is the joint representation whose batch similarity structure the structural
    losses compare between teacher and student. ``layers`` = 2 gives AMID's 2-layer MLP teacher.
    """

    def __init__(self, in_dims: Sequence[int], out_dim: int, dropout: float = 0.2, layers: int = 1) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = sum(in_dims)
        for _ in range(layers):
            blocks += [nn.Linear(width, out_dim), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = out_dim
        self.net = nn.Sequential(*blocks)

    def forward(self, embeddings: Sequence[Tensor]) -> Tensor:
        return self.net(torch.cat(list(embeddings), dim=-1))


def build_fusion(name: str, in_dims: Sequence[int], out_dim: int, dropout: float, layers: int = 1) -> nn.Module:
    if name == "concat":
        return ConcatFusion(in_dims, out_dim, dropout, layers)
    raise ValueError(f"unknown fusion {name!r}; available: ['concat']")
