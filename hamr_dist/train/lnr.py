"""Label-noise-based re-balancing (LNR; Hu et al., ICML 2025), for classification.

What is implemented of their algorithm: after a warm-up of plain CE, the model's class
probabilities p_ik of every training sample are z-scored per class k against the samples *not*
labelled k; a sample of class c may be flipped to a class k that is rarer than c, with the rate
tanh(z_ik - t) * max(r_k - r_c, 0), where r = 1 - (n - n_min) / (n_max - n_min) is 1 for the
rarest class and 0 for the largest; one uniform draw per (sample, class) decides, and among the
classes that fire the one with the highest rate wins. The flips are drawn once (seeded) and kept
for the rest of training. Not implemented: their two-stage setup with a separately pre-trained
model and its averaging over two passes of augmented views (we use the warm-up model, one pass).
"""
from __future__ import annotations

import numpy as np


def flip_labels(probs: np.ndarray, labels: np.ndarray, threshold: float, seed: int) -> np.ndarray:
    """New labels (a copy); ``probs`` [N, C] are the model's softmax outputs."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n, c = probs.shape
    counts = np.bincount(labels, minlength=c).astype(np.float64)
    span = counts.max() - counts.min()
    r = 1.0 - (counts - counts.min()) / span if span > 0 else np.zeros(c)
    mean, std = np.zeros(c), np.full(c, np.inf)
    for k in range(c):
        other = probs[labels != k, k]
        if other.size > 1:
            mean[k], std[k] = other.mean(), max(other.std(), 1e-12)
    z = (probs - mean) / std                                   # [N, C]
    prior_gap = np.maximum(r[None, :] - r[labels][:, None], 0.0)
    rate = np.tanh(z - threshold) * prior_gap
    u = np.random.default_rng([seed, 11]).random((n, c))
    fire = rate > u
    best = np.where(fire, rate, -np.inf).argmax(1)
    out = labels.copy()
    hit = fire.any(1)
    out[hit] = best[hit]
    return out
