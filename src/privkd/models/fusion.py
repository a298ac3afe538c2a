"""Fusion of per-modality embeddings into one joint representation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class ConcatFusion(nn.Module):
    """Feature concatenation followed by an MLP layer (MT-PKDOT Fig. 3a).

    The output is the joint representation whose batch similarity structure the structural
    losses compare between teacher and student.
    """

    def __init__(self, in_dims: Sequence[int], out_dim: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(sum(in_dims), out_dim), nn.ReLU(inplace=True), nn.Dropout(dropout))

    def forward(self, embeddings: Sequence[Tensor]) -> Tensor:
        return self.net(torch.cat(list(embeddings), dim=-1))


def build_fusion(name: str, in_dims: Sequence[int], out_dim: int, dropout: float) -> nn.Module:
    if name == "concat":
        return ConcatFusion(in_dims, out_dim, dropout)
    raise ValueError(f"unknown fusion {name!r}; available: ['concat']")
