"""Per-modality feature extractors, built by name from a registry.

Every backbone maps one modality's sample (``(channels, time)`` for signals, ``(features,)``
for tabular features) to an ``embed_dim`` vector, so fusion and distillation never need to
know which kind of input produced an embedding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

BackboneFactory = Callable[[Sequence[int], int], nn.Module]
_REGISTRY: dict[str, BackboneFactory] = {}

DEFAULT_BACKBONE_FOR_KIND = {"signal": "signal_cnn", "features": "mlp"}


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator adding a factory ``(sample_shape, embed_dim) -> nn.Module`` to the registry."""

    def add(factory: BackboneFactory) -> BackboneFactory:
        _REGISTRY[name] = factory
        return factory

    return add


def backbone_names() -> list[str]:
    return sorted(_REGISTRY)


def build_backbone(name: str, sample_shape: Sequence[int], embed_dim: int) -> nn.Module:
    """Instantiate the backbone ``name`` for inputs of ``sample_shape`` (no batch axis)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; available: {backbone_names()}")
    return _REGISTRY[name](tuple(sample_shape), embed_dim)


class SignalCNN1d(nn.Module):
    """A small 1D-CNN for multichannel time series (``(batch, channels, time)``).

    Three conv blocks with batch norm and max pooling, then global average pooling so the
    embedding does not depend on the window length.
    """

    def __init__(self, in_channels: int, embed_dim: int, width: int = 32) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv1d(c_in, c_out, kernel_size=5, padding=2, bias=False),
                nn.BatchNorm1d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool1d(2, ceil_mode=True),
            )

        self.features = nn.Sequential(block(in_channels, width), block(width, 2 * width), block(2 * width, 2 * width))
        self.project = nn.Linear(2 * width, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.project(self.features(x).mean(dim=-1))


class MLPBackbone(nn.Module):
    """Two-layer MLP for tabular feature vectors (any sample shape is flattened)."""

    def __init__(self, in_features: int, embed_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, embed_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@register_backbone("signal_cnn")
def _signal_cnn(sample_shape: Sequence[int], embed_dim: int) -> nn.Module:
    if len(sample_shape) != 2:
        raise ValueError(f"signal_cnn expects samples shaped (channels, time), got {tuple(sample_shape)}")
    return SignalCNN1d(sample_shape[0], embed_dim)


@register_backbone("mlp")
def _mlp(sample_shape: Sequence[int], embed_dim: int) -> nn.Module:
    return MLPBackbone(math.prod(sample_shape), embed_dim)


class Standardize(nn.Module):
    """Per-channel standardisation with statistics fitted on the training fold only.

    The statistics are buffers, so they travel with a saved model and a deployed student
    applies exactly the preprocessing it was trained with.
    """

    def __init__(self, sample_shape: Sequence[int]) -> None:
        super().__init__()
        channels = sample_shape[0] if len(sample_shape) > 0 else 1
        stat_shape = (channels,) + (1,) * max(len(sample_shape) - 1, 0)
        self.register_buffer("mean", torch.zeros(stat_shape))
        self.register_buffer("std", torch.ones(stat_shape))

    @torch.no_grad()
    def fit(self, samples: Tensor) -> None:
        """Fit on ``(n, channels, ...)`` training samples; constant channels keep std 1."""
        reduce_dims = [0] + list(range(2, samples.dim()))
        self.mean.copy_(samples.mean(dim=reduce_dims).reshape(self.mean.shape))
        std = samples.std(dim=reduce_dims).reshape(self.std.shape)
        self.std.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class ModalityEncoder(nn.Sequential):
    """Standardisation followed by a backbone: raw modality sample in, embedding out."""

    def __init__(self, backbone_name: str, sample_shape: Sequence[int], embed_dim: int) -> None:
        super().__init__(Standardize(sample_shape), build_backbone(backbone_name, sample_shape, embed_dim))

    @property
    def standardize(self) -> Standardize:
        return self[0]
