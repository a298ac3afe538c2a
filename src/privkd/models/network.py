"""The one network shape every method uses: modality encoders → fusion → head.

A network *sees* some modalities (it has encoders for them) and *fuses* an ordered list of
modalities. Modalities it fuses but cannot see are hallucinated by a T-Net from the ones it
sees. So the baseline sees and fuses the prevalent modalities, the teacher sees and fuses
all, and the papers' PKDOT student sees the prevalent ones and fuses all through its frozen
T-Net (privkd's students fuse the prevalent ones alone by default, ``student.hallucinate``).

Every modality is encoded to ``tokens`` embeddings along its time axis, ``(batch, tokens,
embed_dim)``, pooled to one common count so that time-aligned modalities line up token by
token: the T-Net hallucinates each privileged token from the prevalent tokens at the same
step, and attention fusion attends over the token axis. ``tokens = 1`` is one embedding per
modality.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from privkd.data.dataset import TOKENS_SUFFIX
from privkd.models.backbones import ModalityEncoder
from privkd.models.encoder_decoder import EncoderDecoder
from privkd.models.fusion import build_fusion


@dataclass
class NetOutput:
    """What a forward pass yields: outputs (logits or regression values), the joint
    embedding and each modality's token embeddings (empty for an adapter's view)."""

    logits: Tensor
    embedding: Tensor
    modality_embeddings: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class ModalitySpec:
    """What an encoder needs to know about a modality."""

    name: str
    sample_shape: tuple[int, ...]
    backbone: str


class PrivilegedNet(nn.Module):
    """Encoders for the ``seen`` modalities, a T-Net for the fused-but-unseen ones, fusion, head.

    The T-Net input is the concatenation of the embeddings of ``tnet_inputs`` and its
    output is split into the embeddings of ``tnet_outputs`` (both in the given order).
    ``adapted`` lists the seen modalities that get an MT-PKDOT adapter and head.
    """

    def __init__(
        self,
        seen: Sequence[ModalitySpec],
        fused: Sequence[str],
        n_outputs: int,
        *,
        embed_dim: int,
        fusion: str,
        fusion_dim: int,
        dropout: float,
        tnet_inputs: Sequence[str] = (),
        tnet_outputs: Sequence[str] = (),
        tnet_hidden: int = 128,
        tnet_bottleneck: int = 32,
        adapted: Sequence[str] = (),
        fusion_layers: int = 1,
        tokens: int = 1,
        heads: int = 4,
    ) -> None:
        super().__init__()
        self.seen = [spec.name for spec in seen]
        self.fused = list(fused)
        self.tnet_inputs = list(tnet_inputs)
        self.tnet_outputs = list(tnet_outputs)
        self.embed_dim = embed_dim
        self.tokens = tokens
        missing = [m for m in self.fused if m not in self.seen and m not in self.tnet_outputs]
        if missing:
            raise ValueError(f"fused modalities {missing} are neither seen nor produced by the T-Net")
        self.encoders = nn.ModuleDict({spec.name: ModalityEncoder(spec.backbone, spec.sample_shape, embed_dim) for spec in seen})
        self.tnet = (
            EncoderDecoder(embed_dim * len(self.tnet_inputs), embed_dim * len(self.tnet_outputs), tnet_hidden, tnet_bottleneck)
            if self.tnet_outputs
            else None
        )
        self.hallucinates = any(name not in self.seen for name in self.fused)
        self.fusion = build_fusion(fusion, len(self.fused), embed_dim, fusion_dim, dropout=dropout, layers=fusion_layers,
                                   tokens=tokens, heads=heads)
        self.head_dropout = nn.Dropout(dropout)
        self.head = nn.Linear(fusion_dim, n_outputs)
        unseen = [m for m in adapted if m not in self.seen]
        if unseen:
            raise ValueError(f"adapters need seen modalities; {unseen} are not seen")
        self.adapters = nn.ModuleDict({m: EncoderDecoder(embed_dim, fusion_dim, tnet_hidden, tnet_bottleneck) for m in adapted})
        self.adapter_heads = nn.ModuleDict({m: nn.Linear(fusion_dim, n_outputs) for m in adapted})

    def encode(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Token embeddings ``(batch, tokens, embed_dim)`` of the seen modalities, from raw
        inputs or from a frozen backbone's cached tokens when the batch carries them."""
        embeddings = {}
        for name, encoder in self.encoders.items():
            cached = inputs.get(name + TOKENS_SUFFIX)
            tokens = encoder.from_backbone(cached) if cached is not None else encoder(inputs[name])
            embeddings[name] = self._pool_tokens(tokens)
        return embeddings

    def _pool_tokens(self, tokens: Tensor) -> Tensor:
        """Average (or repeat) a modality's tokens onto the network's common token grid."""
        if tokens.shape[1] == self.tokens:
            return tokens
        return F.adaptive_avg_pool1d(tokens.transpose(1, 2), self.tokens).transpose(1, 2)

    def hallucinate(self, embeddings: Mapping[str, Tensor], tnet: nn.Module | None = None) -> dict[str, Tensor]:
        """T-Net estimates of the ``tnet_outputs`` tokens from the ``tnet_inputs`` tokens at the same step
        (by ``tnet``, one of the same shape as this network's, when given)."""
        tnet = tnet if tnet is not None else self.tnet
        if tnet is None:
            return {}
        source = torch.cat([embeddings[name] for name in self.tnet_inputs], dim=-1)
        return dict(zip(self.tnet_outputs, tnet(source).split(self.embed_dim, dim=-1)))

    def fuse(self, embeddings: Mapping[str, Tensor]) -> NetOutput:
        joint = self.fusion([embeddings[name] for name in self.fused])
        return NetOutput(self.head(self.head_dropout(joint)), joint, dict(embeddings))

    def adapt(self, embeddings: Mapping[str, Tensor]) -> dict[str, NetOutput]:
        """Each adapted modality's view: its embedding mapped into the joint space, and that
        view's own outputs (MT-PKDOT Sec. III-A)."""
        views = {}
        for name, adapter in self.adapters.items():
            aligned = adapter(embeddings[name].mean(dim=1))
            views[name] = NetOutput(self.adapter_heads[name](aligned), aligned)
        return views

    def forward(self, inputs: Mapping[str, Tensor]) -> NetOutput:
        embeddings = self.encode(inputs)
        if self.hallucinates:
            embeddings = {**self.hallucinate(embeddings), **embeddings}
        return self.fuse(embeddings)

    def forward_with(self, inputs: Mapping[str, Tensor], hallucinator: Callable[[dict[str, Tensor]], dict[str, Tensor]]) -> NetOutput:
        """:meth:`forward` with the unseen modalities' tokens from ``hallucinator(seen tokens)``
        instead of this network's T-Net (a student's cross-fitted T-Nets)."""
        embeddings = self.encode(inputs)
        return self.fuse({**hallucinator(embeddings), **embeddings})

    def freeze_backbones(self, names: Collection[str]) -> None:
        """Stop training the standardisation and backbone of the seen modalities in ``names``
        (their projection still trains); :meth:`frozen_backbones` keeps them in eval mode."""
        for name in names:
            if name in self.encoders:
                self.encoders[name].standardize.requires_grad_(False)
                self.encoders[name].backbone.requires_grad_(False)

    def frozen_backbones(self) -> dict[str, nn.Module]:
        """Seen modalities whose backbone does not train, and that backbone."""
        return {name: encoder.backbone for name, encoder in self.encoders.items()
                if not any(p.requires_grad for p in encoder.backbone.parameters())}

    def share_modules(self, other: PrivilegedNet, head: bool = True) -> None:
        """Use ``other``'s encoders for the modalities both see (and its head): the very same
        modules, so training either network trains both (AMID's shared extractors and
        shared classifier, Sec. 3.3 and 4.2)."""
        for name in self.encoders:
            if name in other.encoders:
                self.encoders[name] = other.encoders[name]
        if head:
            self.head = other.head

    def fit_standardization(self, batches: Callable[[str], Iterable[Tensor]], skip: Collection[str] = ()) -> None:
        """Fit each encoder's standardisation on training-fold samples; ``batches(name)``
        streams one modality's samples. Modalities in ``skip`` (frozen backbones, whose cached
        tokens must not depend on the fold) keep the identity."""
        for name, encoder in self.encoders.items():
            if name not in skip:
                encoder.standardize.fit(batches(name))

    def load_shared_weights(self, source: PrivilegedNet) -> None:
        """Copy every parameter and buffer this network shares with ``source`` by name.

        Starts the student from the teacher: the prevalent encoders, T-Net, fusion and head
        carry over; the privileged encoders, which the student lacks, are skipped.
        """
        own = self.state_dict()
        shared = {k: v for k, v in source.state_dict().items() if k in own and own[k].shape == v.shape}
        missing = sorted(set(own) - set(shared))
        if missing:
            raise ValueError(f"source network lacks weights {missing}")
        self.load_state_dict(shared)
