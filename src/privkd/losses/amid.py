r"""AMID losses: Adversarial Mutual Information Distillation (Chen et al., CVPR 2023).

Notation of the paper: ``M`` full-modality teacher, ``S`` target-modality student, ``A``
auxiliary-modality model, all embedding a batch of ``b = N + k`` samples. AMID optimises (Eq. 1)

    O = α1 lb(I(M; S)) + α2 lb(I(M; A)) - α3 H(M | S)

with the final loss (Eq. 17)

    L = L_cls + L_JSD + α1 L_MIs + α2 L_MIa + α3 L_adv.

This module holds the pure pieces:

* :func:`label_aware_contrastive_mi` -- L_MIs / L_MIa, the label-aware lower bound on MI (Eq. 2-9);
* :func:`info_nce` -- the plain InfoNCE of the "AMID with L_nce" ablation (Table 4);
* :func:`jensen_shannon` -- L_JSD between the shared classifier's predictions (Eq. 15-16);
* :func:`repeated_class_mask`, :func:`discriminator_loss`, :func:`generator_loss`,
  :func:`amid_discriminator_loss`, :func:`amid_adversarial_loss` -- the conditional-entropy
  term as a two-discriminator GAN on embeddings (Eq. 10-13);
* :class:`AlignmentMeter`, :class:`DynamicDiscriminatorWeights` -- λ1, λ2 of Eq. 14.

Gradients. The contrastive and JSD terms reach *both* networks: AMID trains teacher and student
jointly ("online KD"; Table 5 shows a fixed teacher drops accuracy from 73.8 to 66.0), and the
point of L_MIa is to shape the teacher. The adversarial terms never reach the teacher (Sec. 3.2:
"no gradient back propagates to the teacher"): the discriminator loss detaches both embeddings,
and the generator loss has no teacher argument at all (Eq. 12 has no ``M`` in it).

Hyper-parameters reported by the paper (Sec. 4.2, Table 6): τ = 0.5 and batch 16 for video
(UCF51, ActivityNet), τ = 0.6 and batch 128 for IEMOCAP; α1, α2, α3 = 4, 1.6, 1; β = 0.9 (Eq. 14);
warm-up of T_start = 20 epochs (video) / 5 (emotion) with L = L_cls + L_JSD only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

__all__ = [
    "AlignmentMeter",
    "DynamicDiscriminatorWeights",
    "amid_adversarial_loss",
    "amid_discriminator_loss",
    "cross_cosine",
    "discriminator_loss",
    "generator_loss",
    "info_nce",
    "jensen_shannon",
    "label_aware_contrastive_mi",
    "repeated_class_mask",
]

LN2 = math.log(2.0)


def cross_cosine(anchor: Tensor, other: Tensor, eps: float = 1e-8) -> Tensor:
    """``Φ(anchor_i, other_u)`` for all pairs, ``(b, b')``; zero vectors get similarity 0, not NaN."""
    return F.normalize(anchor, dim=1, eps=eps) @ F.normalize(other, dim=1, eps=eps).T


def _log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, stable at both ends (Mächler 2012).

    ``x`` is clamped to ``-eps`` of its dtype so ``h = 1`` (possible only in degenerate
    batches) gives a large finite penalty instead of ``-inf``. Each branch only ever sees
    inputs where it is finite, so ``torch.where`` does not leak NaN gradients.
    """
    x = x.clamp(max=-torch.finfo(x.dtype).eps)
    near_zero = x > -LN2
    x_a = torch.where(near_zero, x, torch.full_like(x, -LN2))
    x_b = torch.where(near_zero, torch.full_like(x, -LN2), x)
    return torch.where(near_zero, torch.log(-torch.expm1(x_a)), torch.log1p(-torch.exp(x_b)))


def _check_batch(anchor: Tensor, other: Tensor, labels: Tensor | None = None) -> None:
    if anchor.dim() != 2 or anchor.shape != other.shape:
        shapes = f"{tuple(anchor.shape)}, {tuple(other.shape)}"
        raise ValueError(f"expected two (b, d) embeddings of one shape, got {shapes}")
    if labels is not None and labels.shape != (anchor.shape[0],):
        raise ValueError(f"labels must be shaped ({anchor.shape[0]},), got {tuple(labels.shape)}")


def label_aware_contrastive_mi(anchor: Tensor, other: Tensor, labels: Tensor, tau: float = 0.6,
                               reduction: str = "mean") -> Tensor:
    r"""Label-aware contrastive loss whose minimisation maximises a lower bound on MI (Eq. 7-9).

    With ``s_iu = Φ(anchor_i, other_u) / τ`` (cosine similarity),

        h(M_i, S_u) = exp(s_iu) / Σ_{j=1}^{N+k} exp(s_ij)                          (Eq. 7)

        L = -1/(N+k) Σ_i [ Σ_{u: y_u = y_i} log h(M_i, S_u)
                          + Σ_{u: y_u ≠ y_i} log(1 - h(M_i, S_u)) ]                 (Eq. 8)

    The positives of anchor ``i`` are itself (``η_0``) and the other samples of its class
    (``η_1..η_{k-1}``); the negatives are the ``N`` samples of other classes. ``L_MIs`` is
    ``label_aware_contrastive_mi(M, S, y, τ)`` and ``L_MIa`` (Eq. 9) is
    ``label_aware_contrastive_mi(M, A, y, τ)``. Why it bounds MI: Eq. 6 gives
    ``I(M; S) >= log(N/k) + I(h)`` for any classifier ``h`` of "same class or not", with the
    likelihood ``I(h)`` of Eq. 5; ``-L`` is the batch estimate of ``I(h)``. The constant
    ``log(N/k)`` has no gradient and is dropped.

    Readings of the paper (it gives no code):

    * Softmax direction: Eq. 7 normalises over the *other* model's batch, ``Σ_j exp(Φ(M_i,
      S_j)/τ)``, for a fixed teacher anchor ``M_i``; so the softmax runs along ``other`` and the
      teacher is the anchor. The loss is not symmetrised (the paper never swaps the roles).
    * Positives are *summed*, not averaged per anchor: Eq. 8 has ``Σ_{j=0}^{k-1} log h`` and
      ``Σ_{l=1}^{N} log(1-h)`` inside, matching the ``k E[·]`` and ``N E[·]`` weights of Eq. 5,
      and divides only by ``N + k``, the number of anchors (= batch size). A SupCon-style
      ``1/k`` is therefore *not* applied; anchors of large classes carry more terms. Because
      the positives share one softmax, the loss cannot reach 0: with ``k`` positives the best
      positive term is ``k log k``.
    * ``k`` and ``N`` depend on the anchor's class in a real batch; the paper writes them as
      if constant. We use each anchor's own positives/negatives; ``N + k = b`` for every anchor,
      so the outer normaliser is the batch size either way.
    * Φ is applied to the embeddings as given (the paper mentions no projection head).

    The defaults are the config's (``amid.tau``, ``amid.mi_reduction``): τ = 0.6, the paper's
    emotion setting, and ``reduction="mean"``; ``reduction="sum"`` is the literal Eq. 8.
    ``"mean"`` averages each anchor's positive terms over its
    ``k`` positives and its negative terms over its ``N`` negatives. With the literal sums the
    loss grows with batch size and class size (about 80 per anchor at batch 128 and 7
    classes), and alpha = 4 then drowns the classification loss; the mean keeps the term
    O(log b) whatever the batch.

    Gradients flow into both ``anchor`` and ``other`` (the teacher is trained jointly).
    """
    _check_batch(anchor, other, labels)
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' (Eq. 8) or 'mean', got {reduction!r}")
    log_h = (cross_cosine(anchor, other) / tau).log_softmax(dim=1)
    same_class = labels[:, None] == labels[None, :]
    positive = log_h.masked_fill(~same_class, 0.0).sum(dim=1)
    negative = _log1mexp(log_h).masked_fill(same_class, 0.0).sum(dim=1)
    if reduction == "mean":
        n_positive = same_class.sum(dim=1)
        positive = positive / n_positive
        negative = negative / (len(labels) - n_positive).clamp_min(1)
    return -(positive + negative).mean()


def info_nce(anchor: Tensor, other: Tensor, tau: float = 0.6) -> Tensor:
    """Plain InfoNCE: the only positive of ``anchor_i`` is ``other_i`` ("AMID with L_nce", Table 4).

    ``-1/b Σ_i log h(M_i, S_i)`` with ``h`` of Eq. 7: the same softmax as
    :func:`label_aware_contrastive_mi`, but labels are ignored, so same-class samples count as
    negatives and there is no ``log(1 - h)`` term. Kept as the ablation baseline.
    """
    _check_batch(anchor, other)
    logits = cross_cosine(anchor, other) / tau
    return F.cross_entropy(logits, torch.arange(anchor.shape[0], device=anchor.device))


def jensen_shannon(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    r"""Batch-mean Jensen-Shannon divergence between two categorical predictions (Eq. 16), in nats.

        JSD(P || Q) = ½ KL(P || m) + ½ KL(Q || m),   m = (P + Q) / 2,

    with ``P = softmax(p_logits)``, ``Q = softmax(q_logits)`` over the last axis. In AMID these are
    the student's and the teacher's outputs of the *shared* classifier (Eq. 15). JSD is symmetric
    and bounded by ``ln 2``, so unlike KL it cannot blow up when one model is confidently wrong
    early in joint training. Computed in log space (``log m`` by ``logaddexp``). The paper gives
    no temperature, so none is applied; gradients reach both inputs (both models learn).
    """
    log_p = p_logits.log_softmax(dim=-1)
    log_q = q_logits.log_softmax(dim=-1)
    log_m = torch.logaddexp(log_p, log_q) - LN2
    kl_pm = (log_p.exp() * (log_p - log_m)).sum(dim=-1)
    kl_qm = (log_q.exp() * (log_q - log_m)).sum(dim=-1)
    return (0.5 * (kl_pm + kl_qm)).mean()


def repeated_class_mask(labels: Tensor) -> Tensor:
    """``True`` for samples whose class occurs more than once in the batch: D2's inputs (Eq. 12-13)."""
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    return counts[inverse] > 1


def _select(z: Tensor, mask: Tensor | None) -> Tensor:
    return z if mask is None else z[mask]


def _normaliser(n_selected: int, normalizer: float | None) -> float:
    if normalizer is not None:
        return float(normalizer)
    return float(max(n_selected, 1))  # empty selection: the sum is 0, avoid 0/0


def discriminator_loss(
    disc: nn.Module,
    teacher: Tensor,
    student: Tensor,
    mask: Tensor | None = None,
    normalizer: float | None = None,
) -> Tensor:
    r"""One discriminator's term of Eq. 13: ``-1/d Σ_v [log D(M_v) + log(1 - D(S_v))]``.

    ``disc`` maps one embedding to a logit (see :mod:`privkd.models.discriminators`); teacher
    embeddings are "real" (from the multimodal distribution), student embeddings "fake". Both
    are detached here, so this loss trains the discriminator only. ``mask`` picks the samples
    (all for D1, :func:`repeated_class_mask` for D2); ``d`` defaults to the number picked.
    ``-log D = softplus(-logit)`` and ``-log(1 - D) = softplus(logit)`` keep it finite.

    Reading: the paper's discriminators score *single* embeddings (``D(M_i)``, ``D(S_i)`` in
    Eq. 11-13), not (M, S) pairs or concatenations; the conditioning on ``S`` in ``H(M|S)``
    appears only in the derivation (Eq. 10), so no shuffled-pair "fake" is built.
    """
    teacher, student = _select(teacher.detach(), mask), _select(student.detach(), mask)
    total = F.softplus(-disc(teacher)).sum() + F.softplus(disc(student)).sum()
    return total / _normaliser(teacher.shape[0], normalizer)


def generator_loss(
    disc: nn.Module, student: Tensor, mask: Tensor | None = None, normalizer: float | None = None
) -> Tensor:
    r"""One discriminator's term of Eq. 11/12 for the student: ``-1/d Σ_v log D(S_v)``.

    The non-saturating form written in the paper (the student maximises ``log D(S)`` rather than
    minimising ``log(1 - D(S))``). The teacher does not appear, so no gradient can reach it. The
    discriminator is evaluated with detached copies of its parameters (``functional_call``), so
    the student's step leaves ``disc``'s ``.grad`` untouched: each loss moves only its own player.
    """
    student = _select(student, mask)
    frozen = {name: p.detach() for name, p in disc.named_parameters()}
    logits = functional_call(disc, frozen, (student,))
    return F.softplus(-logits).sum() / _normaliser(student.shape[0], normalizer)


def amid_discriminator_loss(
    d1: nn.Module,
    d2: nn.Module,
    teacher: Tensor,
    student: Tensor,
    labels: Tensor,
    weights: Sequence[float] = (0.5, 0.5),
    d: float | None = None,
) -> Tensor:
    r"""``L_D`` of Eq. 13: λ1-weighted D1 over the batch plus λ2-weighted D2 over repeated classes.

        L_D = -λ1/(N+k) Σ_i [log D1(M_i) + log(1 - D1(S_i))]
              - λ2/d    Σ_v [log D2(M_v) + log(1 - D2(S_v^{η_1}))]

    Readings: ``{M_v}`` are the samples of classes with more than one sample in the batch. Since
    D2 scores single embeddings, which same-class partner ``η_1`` denotes in ``S_v^{η_1}`` only
    reorders the summands, so D2 sees the student embeddings of the same samples as ``{M_v}``.
    "``d`` ... we set it by the frequency of the data with samples of the same classes" is read
    as ``d = w``, the number of such samples in the batch (a mean, on the scale of D1's term);
    pass ``d`` to use another value (e.g. a dataset-level count). A batch with no repeated class
    gives a D2 term of 0.
    """
    mask = repeated_class_mask(labels)
    lam1, lam2 = weights
    return lam1 * discriminator_loss(d1, teacher, student) + lam2 * discriminator_loss(d2, teacher, student, mask, d)


def amid_adversarial_loss(
    d1: nn.Module,
    d2: nn.Module,
    student: Tensor,
    labels: Tensor,
    weights: Sequence[float] = (0.5, 0.5),
    d: float | None = None,
) -> Tensor:
    r"""``L_adv`` of Eq. 12, minimised by the student (weighted by α3 in Eq. 17).

        L_adv = -λ1/(N+k) Σ_i log D1(S_i) - λ2/d Σ_v log D2(S_v^{η_1})

    Same readings of ``{S_v^{η_1}}`` and ``d`` as :func:`amid_discriminator_loss`.
    """
    mask = repeated_class_mask(labels)
    lam1, lam2 = weights
    return lam1 * generator_loss(d1, student) + lam2 * generator_loss(d2, student, mask, d)


class AlignmentMeter:
    r"""Accumulates ``Avg_t(Φ(M, S))`` of Eq. 14 over an epoch, one average per discriminator.

    * D1: same-sample pairs ``Φ(M_i, S_i^{η_0})``;
    * D2: same-class pairs of *different* samples, ``Φ(M_v, S_v^{η_j})``, ``j ≠ 0`` (Sec. 3.2:
      "Φ(M_i, S_i^{η0}) and Φ(M_v, S_v^{η1}), j ≠ 0 in Eq. (7)"; Fig. 5 plots the same quantity
      as "the average of all Φ(M_v, S_v^{η_j}), j ≠ 0").

    Averages are over pairs of the whole epoch (sums and counts, not a mean of batch means).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums = [0.0, 0.0]
        self.counts = [0, 0]

    @torch.no_grad()
    def add(self, teacher: Tensor, student: Tensor, labels: Tensor) -> None:
        _check_batch(teacher, student, labels)
        cos = cross_cosine(teacher, student)
        same_class = labels[:, None] == labels[None, :]
        partners = same_class & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        self.sums[0] += cos.diagonal().sum().item()
        self.counts[0] += len(labels)
        self.sums[1] += cos[partners].sum().item()
        self.counts[1] += int(partners.sum().item())

    def means(self) -> tuple[float | None, float | None]:
        """Epoch averages for (D1, D2); ``None`` where no pair was seen."""
        return tuple(s / c if c > 0 else None for s, c in zip(self.sums, self.counts))  # type: ignore[return-value]


class DynamicDiscriminatorWeights:
    r"""λ1, λ2 of Eq. 14: EMA of each discriminator's misalignment, then a softmax over the two.

        λ̃_m(t+1) = β λ̃_m(t) + (1 - β) (1 - Avg_t(Φ(M, S))_m),   m ∈ {D1, D2}
        (λ1, λ2)(t+1) = softmax(λ̃_1(t+1), λ̃_2(t+1))

    Call :meth:`update` once per epoch with the epoch's mean cosine similarities (e.g.
    :meth:`AlignmentMeter.means`); the new weights apply to the next epoch. A pair that is
    already well aligned (large cosine) gets the smaller weight, as the paper intends.

    Readings: σ is "the softmax function" with no temperature, so none is applied (with
    ``1 - Φ ∈ [0, 2]`` the weights stay within about [0.12, 0.88]). The paper does not give
    ``λ̃(0)``; we start it at (0, 0), i.e. uniform weights (0.5, 0.5), the "w/o dynamic weight"
    setting of Table 5. A ``None``/NaN similarity (e.g. an epoch without same-class pairs)
    leaves that component's EMA unchanged. State is plain floats, so checkpoints carry it.
    """

    KEYS = ("d1", "d2")

    def __init__(self, beta: float = 0.9) -> None:
        if not 0.0 < beta < 1.0:
            raise ValueError(f"beta must lie in (0, 1), got {beta}")
        self.beta = float(beta)
        self.smoothed = [0.0, 0.0]

    def update(self, similarities: Mapping[str, float | None] | Sequence[float | None]) -> tuple[float, float]:
        """Fold in one epoch's mean cosine similarities for (D1, D2); returns the new weights."""
        if isinstance(similarities, Mapping):
            lowered = {str(key).lower(): value for key, value in similarities.items()}
            unknown = set(lowered) - set(self.KEYS)
            if unknown:
                raise ValueError(f"unknown discriminator keys {sorted(unknown)}; expected {self.KEYS}")
            values = [lowered.get(key) for key in self.KEYS]
        else:
            values = list(similarities)
        if len(values) != 2:
            raise ValueError(f"expected two similarities (D1, D2), got {len(values)}")
        for m, sim in enumerate(values):
            if sim is None or math.isnan(float(sim)):
                continue
            self.smoothed[m] = self.beta * self.smoothed[m] + (1.0 - self.beta) * (1.0 - float(sim))
        return self.weights

    @property
    def weights(self) -> tuple[float, float]:
        top = max(self.smoothed)
        exp = [math.exp(v - top) for v in self.smoothed]
        return exp[0] / sum(exp), exp[1] / sum(exp)

    def state_dict(self) -> dict[str, float | list[float]]:
        return {"beta": self.beta, "smoothed": list(self.smoothed)}

    def load_state_dict(self, state: Mapping[str, float | list[float]]) -> None:
        self.beta = float(state["beta"])  # type: ignore[arg-type]
        self.smoothed = [float(v) for v in state["smoothed"]]  # type: ignore[union-attr]
