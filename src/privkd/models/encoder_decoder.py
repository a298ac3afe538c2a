"""Encoder-decoder MLPs: the T-Net (PKDOT) and the modality adapters (MT-PKDOT)."""

from __future__ import annotations

from torch import Tensor, nn


class EncoderDecoder(nn.Module):
    """MLP ``in_dim -> hidden -> bottleneck -> hidden -> out_dim`` mapping one embedding space to another.

    The bottleneck keeps the map from memorising individual samples. Used as the T-Net
    (concatenated prevalent embeddings -> concatenated privileged embeddings, trained with
    the teacher, then frozen so a student without the privileged sensors can still feed
    the fusion layer) and as MT-PKDOT's modality adapters (one modality's embedding ->
    the joint embedding space, Eq. 1).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 128, bottleneck: int = 32) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, bottleneck))
        self.decoder = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(bottleneck, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))
