"""T-Net: hallucinates privileged-modality embeddings from prevalent ones (PKDOT, Sec. 3)."""

from __future__ import annotations

from torch import Tensor, nn


class TNet(nn.Module):
    """Encoder-decoder MLP mapping the concatenated prevalent embeddings to the
    concatenated privileged embeddings.

    The bottleneck keeps the map from memorising individual samples; it is trained during
    the teacher stage and then frozen, so that a student without the privileged sensors
    can still feed the fusion layer with plausible privileged features.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 128, bottleneck: int = 32) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, bottleneck))
        self.decoder = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(bottleneck, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))

    def forward(self, prevalent: Tensor) -> Tensor:
        return self.decoder(self.encoder(prevalent))
