"""Fusion of per-modality token embeddings into one joint representation (MT-PKDOT Fig. 3).

Every fusion takes one ``(batch, tokens, dim)`` tensor per fused modality, tokens on a common
time grid, and returns the ``(batch, out_dim)`` joint embedding whose batch similarity
structure the structural losses compare between teacher and student. Attention is always
batch-first over the token axis, so one sample's output never depends on the other samples
in its batch (the authors' transformer attended across the batch; a test guards this).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

FUSION_NAMES = ("concat", "joint_cross_attention", "multimodal_transformer")


def _projection(width: int, out_dim: int, dropout: float, layers: int) -> nn.Sequential:
    """``layers`` × (Linear → ReLU) from ``width`` to ``out_dim``, with Dropout between layers.

    The last layer's output is the joint embedding and has no dropout of its own: the
    network drops out what reaches its head (:class:`~privkd.models.network.PrivilegedNet`),
    so the embedding whose batch structure the structural losses compare is the same
    function of the inputs in training and in evaluation mode, for teacher and student alike.
    """
    blocks: list[nn.Module] = []
    for _ in range(layers):
        blocks += [nn.Linear(width, out_dim), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        width = out_dim
    return nn.Sequential(*blocks[:-1])


class ConcatFusion(nn.Module):
    """Feature concatenation followed by an MLP (Fig. 3a): tokens are averaged per modality,
    the modality embeddings concatenated. ``layers = 2`` gives AMID's 2-layer MLP teacher."""

    def __init__(self, n_modalities: int, dim: int, out_dim: int, dropout: float = 0.2, layers: int = 1) -> None:
        super().__init__()
        self.net = _projection(n_modalities * dim, out_dim, dropout, layers)

    def forward(self, embeddings: Sequence[Tensor]) -> Tensor:
        return self.net(torch.cat([x.mean(dim=1) for x in embeddings], dim=-1))


class JointCrossAttentionFusion(nn.Module):
    r"""Joint cross-attention (Fig. 3b; Praveen et al., CVPRW 2022, Eqs. 1-6), for any number of modalities.

    In the paper's notation, with modality features :math:`X_m \in \mathbb{R}^{d_m \times L}`
    (``L`` tokens) and the joint representation :math:`J = [X_1; \dots; X_M] \in \mathbb{R}^{d \times L}`:

    .. math::
        C_m = \tanh\big(X_m^\top W_{j,m} J / \sqrt{d}\big) \in \mathbb{R}^{L \times L}, \qquad
        H_m = \mathrm{ReLU}\big(W_m X_m + W_{c,m} C_m^\top\big) \in \mathbb{R}^{k \times L}, \qquad
        X_{att,m} = W_{h,m} H_m + X_m.

    Each modality is attended by its correlation with the joint representation, so a noisy
    modality is down-weighted per sample. The attended features are concatenated, averaged
    over tokens and projected to ``out_dim``. ``L`` is fixed at construction (``W_{c,m}``
    has one column per token).
    """

    def __init__(self, n_modalities: int, dim: int, out_dim: int, dropout: float = 0.2, layers: int = 1,
                 tokens: int = 1, hidden: int | None = None) -> None:
        super().__init__()
        k = hidden or dim
        joint = n_modalities * dim
        self.scale = 1.0 / math.sqrt(joint)
        self.joint_weights = nn.ParameterList(nn.Parameter(torch.randn(dim, joint) / math.sqrt(dim)) for _ in range(n_modalities))
        self.feature_maps = nn.ModuleList(nn.Linear(dim, k, bias=False) for _ in range(n_modalities))
        self.correlation_maps = nn.ModuleList(nn.Linear(tokens, k, bias=False) for _ in range(n_modalities))
        self.output_maps = nn.ModuleList(nn.Linear(k, dim, bias=False) for _ in range(n_modalities))
        self.net = _projection(joint, out_dim, dropout, layers)

    def attend(self, embeddings: Sequence[Tensor]) -> list[Tensor]:
        """The cross-attended features :math:`X_{att,m}`, batch-first ``(batch, tokens, dim)``."""
        joint = torch.cat(list(embeddings), dim=-1)  # (B, L, d): J transposed
        attended = []
        for x, w_j, w_m, w_c, w_h in zip(embeddings, self.joint_weights, self.feature_maps, self.correlation_maps, self.output_maps):
            correlation = torch.tanh(x @ w_j @ joint.transpose(1, 2) * self.scale)  # (B, L, L) = C_m
            hidden = torch.relu(w_m(x) + w_c(correlation))  # (B, L, k) = H_m transposed
            attended.append(w_h(hidden) + x)
        return attended

    def forward(self, embeddings: Sequence[Tensor]) -> Tensor:
        return self.net(torch.cat(self.attend(embeddings), dim=-1).mean(dim=1))


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention: queries from one modality, keys and values from another, then a feed-forward."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm_query, self.norm_context, self.norm_out = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.feed_forward = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))

    def forward(self, query: Tensor, context: Tensor) -> Tensor:
        kv = self.norm_context(context)
        x = query + self.attention(self.norm_query(query), kv, kv, need_weights=False)[0]
        return x + self.feed_forward(self.norm_out(x))


class MultimodalTransformerFusion(nn.Module):
    """Multimodal transformer (Fig. 3c; Waligora et al., 2024): per-modality transformer
    encoders, cross-attention each way between every pair of modalities (queries from one,
    keys and values from the other), and a learnt per-sample gate over the cross-attended
    features. A single fused modality attends to itself.
    """

    def __init__(self, n_modalities: int, dim: int, out_dim: int, dropout: float = 0.2, layers: int = 1,
                 tokens: int = 1, heads: int = 4) -> None:
        super().__init__()
        self.position = nn.Parameter(0.02 * torch.randn(n_modalities, tokens, dim))  # learnt token order
        self.encoders = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True, norm_first=True)
            for _ in range(n_modalities)
        )
        self.pairs = [(m, n) for m in range(n_modalities) for n in range(n_modalities) if m != n] or [(0, 0)]
        self.cross = nn.ModuleList(CrossAttentionBlock(dim, heads, dropout) for _ in self.pairs)
        self.gate = nn.Linear(len(self.pairs) * dim, len(self.pairs))
        self.net = _projection(dim, out_dim, dropout, layers)

    def forward(self, embeddings: Sequence[Tensor]) -> Tensor:
        encoded = [encoder(x + position) for encoder, x, position in zip(self.encoders, embeddings, self.position)]
        attended = torch.stack([block(encoded[m], encoded[n]).mean(dim=1) for block, (m, n) in zip(self.cross, self.pairs)], dim=1)
        weights = torch.softmax(self.gate(attended.flatten(1)), dim=-1)  # (B, pairs)
        return self.net((weights.unsqueeze(-1) * attended).sum(dim=1))


def build_fusion(name: str, n_modalities: int, dim: int, out_dim: int, *, dropout: float, layers: int = 1,
                 tokens: int = 1, heads: int = 4) -> nn.Module:
    """The fusion ``name`` for ``n_modalities`` inputs of ``(batch, tokens, dim)``."""
    if name == "concat":
        return ConcatFusion(n_modalities, dim, out_dim, dropout, layers)
    if name == "joint_cross_attention":
        return JointCrossAttentionFusion(n_modalities, dim, out_dim, dropout, layers, tokens)
    if name == "multimodal_transformer":
        return MultimodalTransformerFusion(n_modalities, dim, out_dim, dropout, layers, tokens, heads)
    raise ValueError(f"unknown fusion {name!r}; available: {list(FUSION_NAMES)}")
