"""Per-sample losses for classification and NER, and the baselines' losses.

Every function returns one loss per sample (shape [B]) so that the HAMR weights, the hardness
signal and the baselines all share one reduction: ``weights @ losses / B``.

NER logits are [B, T, C] with labels -100 on ignored positions (padding, non-first sub-tokens).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .sampling.groups import at_strength

IGNORE = -100


def token_ce(logits: torch.Tensor, labels: torch.Tensor, class_weights=None) -> torch.Tensor:
    """Cross-entropy per position; 0 where ignored. logits [..., C], labels [...]."""
    flat = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           weight=class_weights, ignore_index=IGNORE, reduction="none")
    return flat.reshape(labels.shape)


def _gold_prob(logits, labels):
    safe = labels.clamp_min(0)
    return logits.softmax(-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)


def focal(logits, labels, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss per position: -(1-p)^gamma log p (Lin et al., 2017)."""
    logp = -token_ce(logits, labels)
    p = logp.exp()
    return -((1 - p) ** gamma) * logp * (labels != IGNORE)


def dice(logits, labels, alpha: float = 0.01, smooth: float = 1e-4) -> torch.Tensor:
    """Self-adjusting Dice loss per position (Li et al., ACL 2020), as their released code
    computes it for C classes: with q_c = (1 - p_c)^alpha p_c the softmax probability damped for
    easy positions, y_c the one-hot gold label and sums Q_c, Y_c over the batch's labelled
    positions, a position's loss is sum_c 1 - (2 q_c y_c + smooth) / (Q_c + Y_c + smooth).
    The batch sums make it F1-like (a set-level Dice); a position's loss falls as its gold
    probability rises (up to p = 1/(1+alpha), where the damping takes over)."""
    mask = (labels != IGNORE).unsqueeze(-1).to(logits.dtype)
    p = logits.softmax(-1) * mask
    y = F.one_hot(labels.clamp_min(0), logits.shape[-1]).to(logits.dtype) * mask
    # (1-p)^alpha has an infinite slope at p = 1, which a saturated float32 softmax reaches
    q = (1 - p).clamp_min(1e-6) ** alpha * p
    dims = tuple(range(q.dim() - 1))
    denom = q.sum(dims) + y.sum(dims) + smooth                    # [C]
    per_class = 1 - (2 * q * y + smooth) / denom
    return (per_class * mask).sum(-1)


def position_loss(kind: str, logits, labels, class_weights=None, *, dice_alpha: float = 0.01,
                  dice_smooth: float = 1e-4) -> torch.Tensor:
    if kind == "ce":
        return token_ce(logits, labels, class_weights)
    if kind == "focal":
        return focal(logits, labels)
    if kind == "dice":
        return dice(logits, labels, dice_alpha, dice_smooth)
    raise ValueError(f"unknown loss {kind!r}")


def per_sample(pos_loss: torch.Tensor, labels: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce position losses to one per sample. CLS ([B]) passes through; NER ([B, T]):
    'max' = the sentence's largest token loss (HAMR's l_i), 'mean' = mean over labelled tokens,
    'mix' = the average of the two: every token gets a gradient and the hardest one more."""
    if pos_loss.dim() == 1:
        return pos_loss
    mask = labels != IGNORE
    if reduction == "max":
        return pos_loss.masked_fill(~mask, float("-inf")).amax(-1).clamp_min(0)
    mean = (pos_loss * mask).sum(-1) / mask.sum(-1).clamp_min(1)
    if reduction == "mix":
        return 0.5 * (mean + per_sample(pos_loss, labels, "max"))
    return mean


def class_loss_sums(logits: torch.Tensor, labels: torch.Tensor, groups=None, n: int | None = None):
    """(sum, count) of the position CE per class over the labelled positions, [n] each;
    ``groups`` (a tensor, one group id per label) pools labels into one class first; ``n``
    defaults to the largest class present + 1."""
    mask = labels != IGNORE
    pos = token_ce(logits, labels)[mask]
    y = labels[mask]
    if groups is not None:
        y = groups.to(y.device)[y]
    if n is None:
        n = int(y.max()) + 1 if y.numel() else 1
    sums = pos.new_zeros(n).index_add(0, y, pos)
    counts = pos.new_zeros(n).index_add(0, y, torch.ones_like(pos))
    return sums, counts


def balanced_ce(logits: torch.Tensor, labels: torch.Tensor, groups=None) -> torch.Tensor:
    """Class-balanced mean cross-entropy: the mean over the classes present in the batch of
    each class's mean position loss. ``groups`` (a tensor, one group id per label) pools
    labels into one class first (NER: B-X and I-X -> type X, O its own class). Plain mean CE
    lets the majority class (NER: O tokens) dominate a meta objective whose target is
    macro-F1; this weights every class the same."""
    sums, counts = class_loss_sums(logits, labels, groups)
    present = counts > 0
    return (sums[present] / counts[present]).mean()


def icf_weights(counts, groups=None, reference=None, power: float = 1.0) -> torch.Tensor:
    """Inverse class frequency w_c = N / (C * n_c); classes absent from train get weight 0
    (they cannot occur as targets).

    ``groups`` (one group id per label) pools labels into one class first: for NER the class
    of B-X and I-X is the entity type X (O is its own class), so the weight follows how rare
    the type is, not how rare its I- continuation tag is.

    ``reference`` (per-label counts on dev, ``--class-prior-reference dev``) and ``power``
    (``--class-prior-power``): w_c proportional to r_c^(1 - power) / n_c
    (:func:`~hamr_dist.sampling.groups.tempered_weights`; without a reference r = n, giving
    n_c^-power), scaled so that the training positions' mean weight stays 1: the loss then sees
    the classes in dev's shares tempered towards equal ones, as hamr-cb's draw does. With power 1
    it is ICF whatever the reference."""
    from .sampling.groups import tempered_weights
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if groups is not None:
        g = torch.as_tensor(groups, dtype=torch.long)
        k = int(g.max()) + 1
        pooled = torch.zeros(k, dtype=torch.float64).index_add_(0, g, counts)
        ref = None if reference is None else torch.zeros(k, dtype=torch.float64).index_add_(
            0, g, torch.as_tensor(reference, dtype=torch.float64))
        return icf_weights(pooled, reference=ref, power=power)[g] * (counts > 0)
    ref = None if reference is None else torch.as_tensor(reference, dtype=torch.float64).numpy()
    w = torch.as_tensor(tempered_weights(counts.numpy(), power, ref))
    return (w * counts.sum() / (counts @ w)).float()


def logit_offsets(weights: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """The logit adjustment of Menon et al. (ICLR 2021) from class weights: -tau log w_c, added
    to the training logits. With ICF's weights (w_c ~ 1 / n_c) it is tau log pi_c, their loss;
    with tempered weights w_c ~ t_c / pi_c it shifts the prediction from the training shares pi
    to the target shares t. Labels absent from train (w_c = 0) get the largest offset present:
    they are never targets, and an infinite offset would leave their logits untrained."""
    w = weights.double()
    off = -tau * w.clamp_min(torch.finfo(torch.float64).tiny).log()
    present = w > 0
    off = torch.where(present, off, off[present].max() if present.any() else off.new_zeros(()))
    return (off - off[present].mean() if present.any() else off).float()


def class_weights_at(weights: torch.Tensor | None, share: float) -> torch.Tensor | None:
    """Class weights at ``share`` of their strength (:func:`at_strength`). ICF's weights average
    1 over the training positions, so the mix does too and the loss keeps its scale while the
    prior ramps in (``--class-prior-warmup-ratio``)."""
    if weights is None or share >= 1:
        return weights
    return at_strength(weights, share)


def entity_groups(label_names) -> list[int]:
    """Group id per NER tag: O -> 0, B-X and I-X -> the same id per type X."""
    ids: dict[str, int] = {}
    return [ids.setdefault(_tag_class(n), len(ids)) for n in label_names]


def entity_group_names(label_names) -> list[str]:
    """The name of each :func:`entity_groups` id: O and the entity types, in id order."""
    return list(dict.fromkeys(_tag_class(n) for n in label_names))


def _tag_class(tag: str) -> str:
    return tag[2:] if tag[:2] in ("B-", "I-") else tag
