"""Which class (NER: which entity types) each training sample belongs to.

Used twice: the draw diagnostics compare each class's share of the epoch draw with its share
of the training set, and ``hamr-cb`` turns the class sizes into a sampling prior.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SampleGroups:
    names: list[str]              # class names (NER: entity types)
    member: np.ndarray            # [N, G] bool: sample i belongs to / contains group g
    primary: np.ndarray           # [N] int: one group per sample, -1 for none (NER: no entity)

    def train_share(self) -> np.ndarray:
        return self.member.mean(0)

    def draw_share(self, draw: np.ndarray) -> np.ndarray:
        draw = np.asarray(draw, dtype=np.int64)
        return self.member[draw].mean(0) if draw.size else np.zeros(len(self.names))


def sample_groups(records, task: str, label_names) -> SampleGroups:
    """CLS: the label. NER: every entity type a sentence contains (B- tags); its primary group
    is the rarest of them (by sentences containing it), so a sentence with a rare entity counts
    for that entity."""
    if task == "cls":
        y = np.asarray([r["label"] for r in records], dtype=np.int64)
        member = np.zeros((len(y), len(label_names)), dtype=bool)
        member[np.arange(len(y)), y] = True
        return SampleGroups(list(label_names), member, y)
    types = sorted({n[2:] for n in label_names if n[:2] in ("B-", "I-")})
    col = {t: j for j, t in enumerate(types)}
    tag_type = [col.get(n[2:]) if n[:2] in ("B-", "I-") else None for n in label_names]
    member = np.zeros((len(records), len(types)), dtype=bool)
    for i, r in enumerate(records):
        for t in r["tags"]:
            j = tag_type[t]
            if j is not None:
                member[i, j] = True
    return SampleGroups(types, member, rarest_group(member))


def rarest_group(member: np.ndarray) -> np.ndarray:
    """Per sample, the group it belongs to with the fewest members (-1 for none)."""
    rank = np.where(member, member.sum(0)[None, :], np.iinfo(np.int64).max)
    return np.where(member.any(1), rank.argmin(1), -1)


def effective_number(n: np.ndarray, beta: float) -> np.ndarray:
    """Cui et al. (CVPR 2019): (1 - beta^n) / (1 - beta), the expected number of distinct
    samples among n when each new one overlaps the earlier ones with probability beta. About n
    for n << 1/(1 - beta), saturating at 1/(1 - beta) above."""
    n = np.asarray(n, dtype=np.float64)
    return -np.expm1(n * np.log(beta)) / (1.0 - beta)


def class_prior(groups: SampleGroups, power: float, beta: float | None = None,
                reference: np.ndarray | None = None) -> np.ndarray:
    """Per-sample prior of the sample's primary (rarest) group g, rescaled to mean 1: n_g^-power,
    where n_g counts the training samples that belong to g. A sample in no group (NER: a
    sentence without entities) gets the smallest group prior, so it is never drawn more than a
    sentence with entities. CLS: with power 1 every class gets the same share of the draw; 0.5
    is square-root sampling; 0 is no prior. NER: a sentence weighs as its rarest entity type, so
    the share of sentences containing each type moves towards equal.

    n_g counts membership, not primaries: counting sentences by their primary type (as up to
    2026-12) made the rare types' counts large (every sentence holding one is its primary) and
    the no-entity sentences a group of their own; on TweetNER7 it drew the two rarest types
    less often than a uniform draw does (location 0.14 of the draw against 0.20 of the set).

    ``beta``: count each group by its effective number (:func:`effective_number`) instead of
    n_g, so that classes far above 1/(1 - beta) samples are treated as equally well covered and
    the prior re-balances only towards the small ones.

    ``reference``: per-group counts of the split the model is judged on (dev). The draw then
    aims at that split's class shares r_g tempered towards uniform, r_g^(1 - power): the prior
    is r_g^(1 - power) / n_g (r_g at least 1). Without it r_g = n_g, the formula above.
    With power 1 both are a class-balanced draw; below 1 the reference tells a training set
    that is imbalanced like its evaluation data (keep some of its imbalance) from one whose
    classes were cut in training only (re-balance them fully).
    """
    n_g = groups.member.sum(0).astype(np.float64)
    if beta is not None:
        n_g = effective_number(n_g, beta)      # 0 stays 0
    w_g = tempered_weights(n_g, power, reference)
    present = n_g > 0
    w_g = np.append(w_g, w_g[present].min() if present.any() else 1.0)
    prior = w_g[np.where(groups.primary < 0, len(groups.names), groups.primary)]
    return prior / prior.mean()


def tempered_weights(n, power: float, reference=None) -> np.ndarray:
    """Per class, w_c proportional to r_c^(1 - power) / n_c (0 where n_c = 0): weighted by w, the
    classes' shares of a draw or of a loss are their shares r_c of ``reference`` (per-class
    counts, e.g. on dev; default n itself, which gives n_c^-power) tempered towards equal ones.
    One formula for hamr-cb's sampling prior and hamr-icf's class weights; r_c is at least 1,
    so a class missing from the reference keeps a weight."""
    n = np.asarray(n, dtype=np.float64)
    present = n > 0
    n_safe = np.maximum(n, 1.0)
    ref = n_safe if reference is None else np.maximum(np.asarray(reference, np.float64), 1.0)
    w = (ref / ref[present].sum()) ** (1.0 - float(power)) / (n_safe / n_safe[present].sum())
    return np.where(present, w, 0.0)


def at_strength(prior, share: float):
    """A class prior of mean 1 (a sampling prior, class weights) at ``share`` of its strength,
    for ``--class-prior-warmup-ratio``: ``share * prior + (1 - share)``, still of mean 1.
    Works on numpy arrays and torch tensors alike."""
    return share * prior + (1.0 - share)
