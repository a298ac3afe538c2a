"""Per-modality feature extractors, built by name from a registry.

Every backbone maps a batch of one modality's samples to a sequence of feature *tokens*
``(batch, tokens, width)`` along the sample's own time axis (signal windows, spectrogram
columns, video frames after temporal striding; a feature vector is one token). Attention
fusion attends over that axis; concatenation fusion averages it. A
:class:`ModalityEncoder` wraps a backbone with the fold-fitted standardisation before it and
a trainable projection to the shared ``embed_dim`` after it, so fusion and distillation never
need to know which kind of input produced a token.

Video and spectrogram backbones are torchvision's R3D-18, R(2+1)D-18 and ResNet-18, randomly
initialised; a user's weights file can be loaded into them (:func:`load_backbone_weights`),
nothing is ever downloaded.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models import resnet18
from torchvision.models.video import r2plus1d_18, r3d_18

from privkd.errors import ConfigError
from privkd.plugins import load_plugins, unknown_part

BackboneFactory = Callable[[Sequence[int]], "Backbone"]
_REGISTRY: dict[str, BackboneFactory] = {}

DEFAULT_BACKBONE_FOR_KIND = {"signal": "signal_cnn", "features": "mlp", "spectrogram": "resnet18", "video": "r3d_18"}


class Backbone(nn.Module):
    """A feature extractor: ``(batch, *sample_shape)`` in, ``(batch, tokens, width)`` out."""

    width: int


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator adding a factory ``(sample_shape) -> Backbone`` to the registry."""

    def add(factory: BackboneFactory) -> BackboneFactory:
        _REGISTRY[name] = factory
        return factory

    return add


def backbone_names() -> list[str]:
    """Registered backbones, those of installed plugins included (:mod:`privkd.plugins`)."""
    load_plugins()
    return sorted(_REGISTRY)


def token_count(backbone: Backbone, sample_shape: Sequence[int]) -> int:
    """How many tokens ``backbone`` gives a sample of ``sample_shape``, from shapes alone: a copy
    on PyTorch's meta device runs on a meta batch, so no weight is touched and nothing computed."""
    with torch.no_grad():
        probe = copy.deepcopy(backbone).to("meta").eval()
        return int(probe(torch.zeros(2, *sample_shape, device="meta")).shape[1])


def build_backbone(name: str, sample_shape: Sequence[int]) -> Backbone:
    """Instantiate the backbone ``name`` for inputs of ``sample_shape`` (no batch axis)."""
    if name not in backbone_names():
        raise unknown_part("backbone", name, "model.backbones", backbone_names())
    return _REGISTRY[name](tuple(sample_shape))


def _require_rank(name: str, sample_shape: Sequence[int], rank: int, layout: str) -> None:
    if len(sample_shape) != rank:
        raise ValueError(f"{name} expects samples shaped {layout}, got {tuple(sample_shape)}")


class _FirstOfPairMax(torch.autograd.Function):
    """The maximum of each pair of steps of an even-length last axis, whose gradient goes to
    the first of the pair on a tie (``torch.maximum``'s own backward would split it in half,
    and a ReLU leaves many tied zeros), scattered as ``max``'s backward scatters it."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        even, odd = x[..., 0::2], x[..., 1::2]
        ctx.save_for_backward((even < odd).unsqueeze(-1).long())  # which of the pair is the maximum
        return torch.maximum(even, odd)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (winner,) = ctx.saved_tensors
        return grad.new_zeros((*grad.shape, 2)).scatter_(-1, winner, grad.unsqueeze(-1)).flatten(-2)


class PairMaxPool1d(nn.Module):
    """``nn.MaxPool1d(2, ceil_mode=True)`` as an elementwise maximum of even and odd steps.

    The same values (a ragged last step is its own maximum) and the same gradient (to the
    first of tied values, as ``max_pool1d``), in a fraction of the time: on CPU ``max_pool1d``
    runs through the 2-D pooling kernel with indices (a fifth of a training step of the demo's
    network in a profile), and a max over a trailing axis of two is a slow reduction (still
    a tenth); an elementwise maximum of two strided views is neither. Without a gradient to
    record (inference, export) it is the plain ``torch.maximum``.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % 2:
            x = F.pad(x, (0, 1), value=float("-inf"))
        if torch.is_grad_enabled() and x.requires_grad:
            return _FirstOfPairMax.apply(x)
        return torch.maximum(x[..., 0::2], x[..., 1::2])


class SignalCNN1d(Backbone):
    """A small 1D-CNN for multichannel time series (``(batch, channels, time)``).

    Three conv blocks with batch norm and max pooling; each remaining time step is a token.
    """

    def __init__(self, in_channels: int, width: int = 32) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv1d(c_in, c_out, kernel_size=5, padding=2, bias=False),
                nn.BatchNorm1d(c_out),
                nn.ReLU(inplace=True),
                PairMaxPool1d(),
            )

        self.features = nn.Sequential(block(in_channels, width), block(width, 2 * width), block(2 * width, 2 * width))
        self.width = 2 * width

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x).transpose(1, 2)


class MLPBackbone(Backbone):
    """A hidden layer for tabular feature vectors (any sample shape is flattened): one token."""

    def __init__(self, in_features: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(inplace=True))
        self.width = hidden

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).unsqueeze(1)


class LinearBackbone(Backbone):
    """The standardised feature vector itself as one token (any sample shape is flattened): the
    encoder's projection is then the modality's only layer, a linear map of the features.

    On small tables (hundreds of samples) a hidden layer per modality over-fits where a
    linear model does not; this backbone keeps the rest of the network (fusion, head, T-Net)
    as it is."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.width = in_features

    def forward(self, x: Tensor) -> Tensor:
        return self.flatten(x).unsqueeze(1)


class VideoResNet(Backbone):
    """torchvision's R3D-18 or R(2+1)D-18 without its classifier, for ``(batch, 3, frames, H, W)`` clips.

    Spatial positions are averaged; the temporal positions left after the network's
    striding (frames / 8, at least one) are the tokens.
    """

    def __init__(self, arch: Callable[..., nn.Module]) -> None:
        super().__init__()
        net = arch(weights=None)
        self.stem, self.layer1, self.layer2, self.layer3, self.layer4 = net.stem, net.layer1, net.layer2, net.layer3, net.layer4
        self.width = 512

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return x.mean(dim=(3, 4)).transpose(1, 2)


class SpectrogramResNet(Backbone):
    """torchvision's ResNet-18 with its stem taking ``in_channels`` planes (1 for one spectrogram).

    Input ``(batch, channels, freq, time)``; frequency positions are averaged and the time
    positions left after striding (time / 32, at least one) are the tokens.
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        net = resnet18(weights=None)
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
        self.width = 512

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x).mean(dim=2).transpose(1, 2)


@register_backbone("signal_cnn")
def _signal_cnn(sample_shape: Sequence[int]) -> Backbone:
    _require_rank("signal_cnn", sample_shape, 2, "(channels, time)")
    return SignalCNN1d(sample_shape[0])


@register_backbone("mlp")
def _mlp(sample_shape: Sequence[int]) -> Backbone:
    return MLPBackbone(math.prod(sample_shape))


@register_backbone("linear")
def _linear(sample_shape: Sequence[int]) -> Backbone:
    return LinearBackbone(math.prod(sample_shape))


@register_backbone("r3d_18")
def _r3d_18(sample_shape: Sequence[int]) -> Backbone:
    _require_rank("r3d_18", sample_shape, 4, "(3, frames, height, width)")
    return VideoResNet(r3d_18)


@register_backbone("r2plus1d_18")
def _r2plus1d_18(sample_shape: Sequence[int]) -> Backbone:
    _require_rank("r2plus1d_18", sample_shape, 4, "(3, frames, height, width)")
    return VideoResNet(r2plus1d_18)


@register_backbone("resnet18")
def _resnet18(sample_shape: Sequence[int]) -> Backbone:
    _require_rank("resnet18", sample_shape, 3, "(channels, freq, time)")
    return SpectrogramResNet(sample_shape[0])


def _torchvision_key(key: str) -> str:
    """Map a plain torchvision ResNet-18 key (``conv1.weight``) to :class:`SpectrogramResNet`'s."""
    order = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    head, _, rest = key.partition(".")
    return f"body.{order.index(head)}.{rest}" if head in order else key


def load_backbone_weights(backbone: Backbone, path: str | Path, key: str) -> None:
    """Load a user's weights file (a torchvision-style ``state_dict``) into ``backbone``.

    Read with ``weights_only=True``. Classifier weights (``fc.*``) are ignored; a
    3-channel ImageNet stem loaded into a 1-channel spectrogram stem is summed over its
    input channels, the usual way to reuse RGB filters on one plane. Any other missing or
    mismatched tensor is an error naming the config ``key`` and the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(key, f"weights file {path} does not exist", "give the path of a saved state_dict, or remove the entry")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(key, f"cannot read weights file {path}: {exc}", "save it with torch.save(model.state_dict(), path)") from exc
    state = state.get("state_dict", state) if isinstance(state, Mapping) else state
    if isinstance(backbone, SpectrogramResNet):
        state = {_torchvision_key(k): v for k, v in state.items()}
    own = backbone.state_dict()
    stem = "body.0.weight"
    if stem in state and stem in own and state[stem].shape[1] != own[stem].shape[1]:
        state[stem] = state[stem].sum(dim=1, keepdim=True).expand_as(own[stem]).clone()
    usable = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing = sorted(set(own) - set(usable))
    mismatched = sorted(k for k in set(own) & set(usable) if own[k].shape != usable[k].shape)
    if missing or mismatched:
        problem = f"missing tensors {missing[:3]}" if missing else f"shape mismatch for {mismatched[:3]}"
        raise ConfigError(key, f"{path} does not fit the backbone: {problem}", "use weights saved from the same architecture")
    backbone.load_state_dict({k: usable[k] for k in own})


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
    def fit(self, batches: Iterable[Tensor]) -> None:
        """Fit on batches ``(n, channels, ...)`` of training samples, streamed so that a video
        fold never has to sit in memory; constant channels keep std 1."""
        count, total, squares = 0, 0.0, 0.0
        for samples in batches:
            flat = samples.double().transpose(0, 1).reshape(samples.shape[1] if samples.dim() > 1 else 1, -1)
            count += flat.shape[1]
            total = total + flat.sum(dim=1)
            squares = squares + flat.pow(2).sum(dim=1)
        mean = total / count
        var = (squares - count * mean.pow(2)).clamp_min(0) / max(count - 1, 1)
        std = var.sqrt()
        self.mean.copy_(mean.reshape(self.mean.shape))
        self.std.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)).reshape(self.std.shape))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class ModalityEncoder(nn.Module):
    """Standardisation, a backbone and a per-token projection: raw sample in, ``(batch, tokens, embed_dim)`` out.

    ``from_backbone`` starts after the backbone, for tokens precomputed by a frozen backbone
    (see :mod:`privkd.training.feature_cache`).
    """

    def __init__(self, backbone_name: str, sample_shape: Sequence[int], embed_dim: int) -> None:
        super().__init__()
        self.standardize = Standardize(sample_shape)
        self.backbone = build_backbone(backbone_name, sample_shape)
        self.project = nn.Linear(self.backbone.width, embed_dim)

    def backbone_tokens(self, x: Tensor) -> Tensor:
        return self.backbone(self.standardize(x))

    def from_backbone(self, tokens: Tensor) -> Tensor:
        return self.project(tokens)

    def forward(self, x: Tensor) -> Tensor:
        return self.project(self.backbone_tokens(x))
