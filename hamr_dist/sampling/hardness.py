"""Hardness state (spec 1.8 and 2): EMA of post-meta weights, neighbour boost, epoch draws.

Plain numpy (float32 state) and picklable, so that a Ray actor can hold an
:class:`InMemoryHardness` and forward the :class:`HardnessStore` calls to it.
"""
from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np

from .groups import at_strength

__all__ = ["HardnessStore", "InMemoryHardness", "UPDATE_RULES", "ema_update", "epoch_size",
           "shard_for_rank", "sampling_entropy"]


@runtime_checkable
class HardnessStore(Protocol):
    """What the trainer needs from the hardness state, local or behind an actor."""

    def update(self, indices: np.ndarray, w_post: np.ndarray) -> None: ...
    def hardness(self) -> np.ndarray: ...
    def set_boost(self, b: np.ndarray) -> None: ...
    def boost(self) -> np.ndarray: ...
    def probabilities(self, tau: float, lam: float, eps: float = 1e-6,
                      prior: float = 1.0) -> np.ndarray: ...
    def draw(self, epoch: int, seed: int, ratio: float, tau: float, lam: float,
             uniform: bool = False, prior: float = 1.0) -> np.ndarray: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, d: dict) -> None: ...


def ema_update(h: np.ndarray, indices: np.ndarray, w: np.ndarray, gamma: float) -> np.ndarray:
    """In place ``h[i] <- gamma*h[i] + (1-gamma)*w`` once per occurrence, in array order.

    Repeated indices are handled in rounds: round r applies every index's r-th occurrence,
    and within a round all indices are distinct, so a fancy-indexed assignment is exact.
    The number of rounds is the largest multiplicity, not the array length.
    """
    idx = np.asarray(indices, dtype=np.int64).ravel()
    w = np.asarray(w, dtype=np.float32).ravel()
    if idx.shape != w.shape:
        raise ValueError(f"indices ({idx.size}) and weights ({w.size}) differ in length")
    if idx.size == 0:
        return h
    if idx.min() < 0 or idx.max() >= h.shape[0]:
        raise ValueError(f"index out of range [0, {h.shape[0]})")
    # rank of each occurrence among the occurrences of the same index (0 = first)
    order = np.argsort(idx, kind="stable")
    sorted_idx = idx[order]
    starts = np.flatnonzero(np.r_[True, sorted_idx[1:] != sorted_idx[:-1]])
    group_start = np.repeat(starts, np.diff(np.r_[starts, idx.size]))
    rank = np.empty_like(idx)
    rank[order] = np.arange(idx.size) - group_start
    g = np.float32(gamma)
    one_minus_g = np.float32(1.0) - g
    by_round = np.argsort(rank, kind="stable")
    bounds = np.cumsum(np.bincount(rank))
    for sel in np.split(by_round, bounds[:-1]):
        i = idx[sel]
        h[i] = g * h[i] + one_minus_g * w[sel]
    return h


def epoch_size(n: int, ratio: float) -> int:
    """``ceil(ratio * n)``, tolerant of float noise (1.2 * 10 must give 12, not 13)."""
    if ratio <= 0:
        raise ValueError(f"ratio must be > 0, got {ratio}")
    return max(1, math.ceil(round(ratio * n, 9))) if n > 0 else 0


UPDATE_RULES = ("ema", "debiased-ema", "epoch-ema", "decay-all")


class InMemoryHardness:
    """Hardness h, neighbour boost b (init 0) and an optional per-sample sampling prior.

    How w_post becomes h (``rule``; docs/hardness.md compares them):

    - ``ema``: the paper's per-visit EMA from h = 1. A sample is visited about 1.2 times an
      epoch, so with gamma = 0.99 h stays within a few per cent of 1: the draw is uniform.
    - ``debiased-ema``: the same EMA started from 0 and divided by 1 - gamma^visits (Adam's bias
      correction), so h is the (recency-weighted) mean of the sample's own w_post from its first
      visit on; samples not visited yet sit at the mean of the visited ones.
    - ``epoch-ema``: each epoch's mean w_post of a visited sample enters
      h <- epoch_gamma h + (1 - epoch_gamma) mean_w at :meth:`end_epoch` (a decay per epoch,
      not per visit); unvisited samples keep h.
    - ``decay-all``: the accumulator of the authors' code: every update decays *all* entries by
      gamma, adds (1 - gamma) w to the visited ones and rescales h to mean 1. It favours the
      samples of the last ~1/(1-gamma) updates, not the hard ones; kept for comparison.

    ``prior`` (one positive value per sample, rescaled to mean 1) multiplies the sampling score;
    hamr-cb passes a class-balanced prior that the hardness then refines.
    """

    def __init__(self, n: int, gamma: float = 0.99, init: float = 1.0, rule: str = "ema",
                 epoch_gamma: float = 0.5, prior=None):
        if n <= 0:
            raise ValueError(f"n must be > 0, got {n}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        if rule not in UPDATE_RULES:
            raise ValueError(f"unknown hardness rule {rule!r} (one of {', '.join(UPDATE_RULES)})")
        self.n, self.gamma, self.rule = int(n), float(gamma), rule
        self.epoch_gamma = float(epoch_gamma)
        self._h = np.full(self.n, init, dtype=np.float32)
        self._b = np.zeros(self.n, dtype=np.float32)
        # debiased-ema: EMA from 0 (m) and visit counts; epoch-ema: this epoch's sums and counts
        self._m = np.zeros(self.n, dtype=np.float32) if rule == "debiased-ema" else None
        counts = rule in ("debiased-ema", "epoch-ema")
        self._visits = np.zeros(self.n, dtype=np.int64) if counts else None
        self._esum = np.zeros(self.n, dtype=np.float64) if rule == "epoch-ema" else None
        self._prior, self._stale = None, False
        self._mixed = None          # (share, prior mixed at that share), see _prior_at
        if prior is not None:
            prior = np.asarray(prior, dtype=np.float64).ravel()
            if prior.shape != (self.n,) or not (np.isfinite(prior).all() and (prior > 0).all()):
                raise ValueError(f"prior must hold {self.n} positive finite values")
            self._prior = prior / prior.mean()

    def _checked(self, indices, w_post):
        idx = np.asarray(indices, dtype=np.int64).ravel()
        w = np.asarray(w_post, dtype=np.float32).ravel()
        if idx.shape != w.shape:
            raise ValueError(f"indices ({idx.size}) and weights ({w.size}) differ in length")
        if idx.size and (idx.min() < 0 or idx.max() >= self.n):
            raise ValueError(f"index out of range [0, {self.n})")
        return idx, w

    def update(self, indices: np.ndarray, w_post: np.ndarray) -> None:
        if self.rule == "ema":
            ema_update(self._h, indices, w_post, self.gamma)
            return
        idx, w = self._checked(indices, w_post)
        if self.rule == "debiased-ema":
            ema_update(self._m, idx, w, self.gamma)
            np.add.at(self._visits, idx, 1)
            self._stale = True                  # h is derived on read: an update stays O(batch)
        elif self.rule == "epoch-ema":
            np.add.at(self._esum, idx, w)
            np.add.at(self._visits, idx, 1)
        else:                                   # decay-all
            self._h *= np.float32(self.gamma)
            np.add.at(self._h, idx, np.float32(1.0 - self.gamma) * w)
            self._h /= self._h.mean()

    def end_epoch(self, epoch: int | None = None) -> None:
        """Close an epoch (``epoch-ema`` folds the epoch's mean weights into h; others: no-op)."""
        if self.rule != "epoch-ema":
            return
        seen = self._visits > 0
        mean_w = self._esum[seen] / self._visits[seen]
        self._h[seen] = (self.epoch_gamma * self._h[seen]
                         + (1.0 - self.epoch_gamma) * mean_w).astype(np.float32)
        self._esum[:] = 0
        self._visits[:] = 0

    def _current(self) -> np.ndarray:
        if self.rule == "debiased-ema" and self._stale:
            seen = self._visits > 0
            if seen.any():
                self._h[seen] = self._m[seen] / (1.0 - self.gamma ** self._visits[seen])
                self._h[~seen] = self._h[seen].mean()
            self._stale = False
        return self._h

    def hardness(self) -> np.ndarray:
        return self._current().copy()

    def prior(self) -> np.ndarray | None:
        return None if self._prior is None else self._prior.copy()

    def _prior_at(self, share: float) -> np.ndarray | None:
        """The sampling prior at ``share`` of its strength (``--class-prior-warmup-ratio``)."""
        if self._prior is None or share <= 0:
            return None
        if share >= 1:
            return self._prior
        # an epoch's draw, probabilities and stats share one share: mix once, not per call
        if self._mixed is None or self._mixed[0] != share:
            self._mixed = (share, at_strength(self._prior, share))
        return self._mixed[1]

    def stats(self, tau: float, lam: float, prior: float = 1.0) -> dict:
        """The draw diagnostics that need the whole h (computed where h lives: the actor)."""
        from .diagnostics import sampler_stats
        return sampler_stats(self._current(), self.probabilities(tau, lam, prior=prior))

    def set_boost(self, b: np.ndarray) -> None:
        b = np.asarray(b, dtype=np.float32).ravel()
        if b.shape != (self.n,):
            raise ValueError(f"boost has length {b.size}, expected {self.n}")
        self._b = b.copy()

    def boost(self) -> np.ndarray:
        return self._b.copy()

    def probabilities(self, tau: float, lam: float, eps: float = 1e-6,
                      prior: float = 1.0) -> np.ndarray:
        """``p ∝ (h + eps)^tau * (1 + lam * b) [* the prior at share prior]`` in float64,
        summing to 1."""
        h = np.maximum(self._current().astype(np.float64), 0.0)  # w_post > 0, so h < 0 is only noise
        score = (h + eps) ** tau * (1.0 + lam * self._b.astype(np.float64))
        pr = self._prior_at(prior)
        if pr is not None:
            score *= pr
        total = score.sum()
        if not np.isfinite(total) or total <= 0:
            raise ValueError("sampling scores do not sum to a positive finite number")
        return score / total

    def draw(self, epoch: int, seed: int, ratio: float, tau: float, lam: float,
             uniform: bool = False, prior: float = 1.0) -> np.ndarray:
        """One epoch's ``ceil(ratio*n)`` indices, a pure function of (seed, epoch, state).

        Weighted: i.i.d. with replacement from :meth:`probabilities`. Uniform: fresh seeded
        permutations of ``range(n)`` concatenated and truncated, so every sample appears
        ``floor`` or ``ceil(ratio)`` times (the usual shuffled-epoch baseline).
        """
        m = epoch_size(self.n, ratio)
        rng = np.random.default_rng([int(seed), int(epoch)])
        if uniform:
            reps = -(-m // self.n)
            return np.concatenate([rng.permutation(self.n) for _ in range(reps)])[:m]
        from .draw import weighted_draw     # inverse CDF + guide table: 10^8 samples in seconds
        return weighted_draw(self._current(), self._b, m, seed, epoch, tau, lam,
                             prior=self._prior_at(prior))

    def state_dict(self) -> dict:
        d = {"n": self.n, "gamma": self.gamma, "rule": self.rule, "h": self._current().copy(),
             "b": self._b.copy()}
        for k in ("_m", "_visits", "_esum"):
            if getattr(self, k) is not None:
                d[k[1:]] = getattr(self, k).copy()
        return d

    def load_state_dict(self, d: dict) -> None:
        h = np.asarray(d["h"], dtype=np.float32)
        b = np.asarray(d["b"], dtype=np.float32)
        if h.shape != (self.n,) or b.shape != (self.n,):
            raise ValueError(f"state is for {h.size} samples, this store has {self.n}")
        if d.get("rule", "ema") != self.rule:
            raise ValueError(f"state was written with hardness rule {d.get('rule', 'ema')!r}, "
                             f"this store uses {self.rule!r}")
        self.gamma = float(d.get("gamma", self.gamma))
        self._h, self._b = h.copy(), b.copy()
        for k in ("_m", "_visits", "_esum"):
            if getattr(self, k) is not None:
                setattr(self, k, np.asarray(d[k[1:]], dtype=getattr(self, k).dtype).copy())
        self._stale = self.rule == "debiased-ema"


def shard_for_rank(indices: np.ndarray, rank: int, world_size: int,
                   batch_size: int) -> np.ndarray:
    """The part of an epoch draw that ``rank`` trains on.

    The draw is consumed in global steps of ``world_size * batch_size`` positions; inside
    a step, rank r takes the r-th contiguous block of ``batch_size``. So global step t sees
    exactly the draw's t-th chunk, as a single process with batch ``world_size*batch_size``
    would. The remainder (< one global step) is split into equal contiguous blocks of
    ``len(rem) // world_size``, dropping at most ``world_size - 1`` samples. All ranks get
    the same length, hence the same number of batches (the last one possibly partial), so
    collective ops never wait on a rank that has run out of data.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} not in [0, {world_size})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    indices = np.asarray(indices).ravel()
    step = world_size * batch_size
    full = indices.size // step
    head = indices[: full * step].reshape(full, world_size, batch_size)[:, rank, :].ravel()
    part = (indices.size - full * step) // world_size
    start = full * step + rank * part
    return np.concatenate([head, indices[start:start + part]])


def sampling_entropy(p) -> float:
    """Shannon entropy (nats) of p, normalised to sum 1 first; ``log(N)`` means uniform."""
    p = np.asarray(p, dtype=np.float64).ravel()
    p = p / p.sum()
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum())
