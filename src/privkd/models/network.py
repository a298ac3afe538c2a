"""The one network shape every method uses: modality encoders → fusion → head.

A network *sees* some modalities (it has encoders for them) and *fuses* an ordered list of
modalities. Modalities it fuses but cannot see are hallucinated by a T-Net from the ones it
sees. So the baseline sees and fuses the prevalent modalities, the teacher sees and fuses
all, and the PKDOT student sees the prevalent ones and fuses all through its frozen T-Net.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from privkd.models.backbones import ModalityEncoder
from privkd.models.fusion import build_fusion
from privkd.models.encoder_decoder import EncoderDecoder


@dataclass
class NetOutput:
    """What a forward pass yields: outputs (logits or regression values), the joint
    embedding and each modality's embedding (empty for an adapter's view)."""

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
    ) -> None:
        super().__init__()
        self.seen = [spec.name for spec in seen]
        self.fused = list(fused)
        self.tnet_inputs = list(tnet_inputs)
        self.tnet_outputs = list(tnet_outputs)
        self.embed_dim = embed_dim
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
        self.fusion = build_fusion(fusion, [embed_dim] * len(self.fused), fusion_dim, dropout, fusion_layers)
        self.head = nn.Linear(fusion_dim, n_outputs)
        unseen = [m for m in adapted if m not in self.seen]
        if unseen:
            raise ValueError(f"adapters need seen modalities; {unseen} are not seen")
        self.adapters = nn.ModuleDict({m: EncoderDecoder(embed_dim, fusion_dim, tnet_hidden, tnet_bottleneck) for m in adapted})
        self.adapter_heads = nn.ModuleDict({m: nn.Linear(fusion_dim, n_outputs) for m in adapted})

    def encode(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Embeddings of the seen modalities."""
        return {name: encoder(inputs[name]) for name, encoder in self.encoders.items()}

    def hallucinate(self, embeddings: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """T-Net estimates of the ``tnet_outputs`` embeddings from the ``tnet_inputs`` ones."""
        if self.tnet is None:
            return {}
        source = torch.cat([embeddings[name] for name in self.tnet_inputs], dim=-1)
        return dict(zip(self.tnet_outputs, self.tnet(source).split(self.embed_dim, dim=-1)))

    def fuse(self, embeddings: Mapping[str, Tensor]) -> NetOutput:
        joint = self.fusion([embeddings[name] for name in self.fused])
        return NetOutput(self.head(joint), joint, dict(embeddings))

    def adapt(self, embeddings: Mapping[str, Tensor]) -> dict[str, NetOutput]:
        """Each adapted modality's view: its embedding mapped into the joint space, and that
        view's own outputs (MT-PKDOT Sec. III-A)."""
        views = {}
        for name, adapter in self.adapters.items():
            aligned = adapter(embeddings[name])
            views[name] = NetOutput(self.adapter_heads[name](aligned), aligned)
        return views

    def forward(self, inputs: Mapping[str, Tensor]) -> NetOutput:
        embeddings = self.encode(inputs)
        if self.hallucinates:
            embeddings = {**self.hallucinate(embeddings), **embeddings}
        return self.fuse(embeddings)

    def share_modules(self, other: PrivilegedNet, head: bool = True) -> None:
        """Use ``other``'s encoders for the modalities both see (and its head): the very same
        modules, so training either network trains both (AMID's shared extractors and
        shared classifier, Sec. 3.3 and 4.2)."""
        for name in self.encoders:
            if name in other.encoders:
                self.encoders[name] = other.encoders[name]
        if head:
            self.head = other.head

    def fit_standardization(self, inputs: Mapping[str, Tensor]) -> None:
        """Fit each encoder's standardisation on training-fold samples."""
        for name, encoder in self.encoders.items():
            encoder.standardize.fit(inputs[name])

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
