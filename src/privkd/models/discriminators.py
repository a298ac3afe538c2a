"""Embedding discriminators for AMID's conditional-entropy term (Chen et al., CVPR 2023, Sec. 3.2).

A discriminator sees a *single* embedding, teacher (full-modality ``M``) or student (target-modality
``S``), and scores how likely it is to come from the multimodal distribution (Eq. 11-13 write
``D(M_i)`` and ``D(S_i)``, never a pair). It returns a logit, not a probability, so the losses in
:mod:`privkd.losses.amid` can use ``softplus``/log-sigmoid, which stay finite when the
discriminator is confident.

Depths follow Sec. 4.2: "The two discriminators are 5-layer MLP and 3-layer MLP respectively",
with all activations Leaky ReLU "because it gives better training stability compared to the ReLU".
We count layers as ``nn.Linear`` layers. The paper defers widths to its supplementary material,
which is not public, so the hidden widths here are our choice: a halving pyramid starting at the
embedding width (512 -> 512, 256, 128, 64 -> 1 for the paper's 512-d representations), floored at
``MIN_HIDDEN`` so small embeddings keep a usable width. The Leaky ReLU slope 0.2 is the usual GAN
value (also not given in the paper).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["Discriminator", "enhanced_discriminator", "fundamental_discriminator", "halving_widths"]

MIN_HIDDEN = 16
NEGATIVE_SLOPE = 0.2


class Discriminator(nn.Module):
    """MLP ``(b, in_dim) -> (b,)`` logits, Leaky ReLU between the ``len(hidden) + 1`` linear layers.

    No normalisation layers: batch statistics would let the discriminator compare a sample with
    the rest of its batch, and D1 and D2 are fed batches of different composition (all samples vs
    samples of repeated classes), so per-sample scoring keeps their outputs comparable.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], negative_slope: float = NEGATIVE_SLOPE) -> None:
        super().__init__()
        widths = [in_dim, *hidden]
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(w_in, w_out), nn.LeakyReLU(negative_slope)]
        layers.append(nn.Linear(widths[-1], 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).squeeze(-1)


def halving_widths(in_dim: int, n_hidden: int, floor: int = MIN_HIDDEN) -> list[int]:
    """Hidden widths ``in_dim, in_dim/2, ...`` (``n_hidden`` of them), none below ``floor``."""
    return [max(in_dim // 2**i, floor) for i in range(n_hidden)]


def fundamental_discriminator(in_dim: int) -> Discriminator:
    """D1, 5 linear layers: tells teacher from student embeddings over the whole batch (Eq. 12-13)."""
    return Discriminator(in_dim, halving_widths(in_dim, 4))


def enhanced_discriminator(in_dim: int) -> Discriminator:
    """D2, 3 linear layers: same task restricted to samples whose class repeats in the batch."""
    return Discriminator(in_dim, halving_widths(in_dim, 2))
