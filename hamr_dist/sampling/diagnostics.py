"""Does HAMR act? Per-epoch numbers on the sampler, the hardness and the weights (issue 9).

All plain numpy on arrays the loop (or the hardness actor) already has; each function returns a
flat dict of floats so that metrics.json, MLflow and the epoch log line share the same keys.
"""
from __future__ import annotations

import numpy as np

from .groups import SampleGroups

QUANTILES = (1, 50, 99)


def _quantiles(prefix: str, x) -> dict:
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size == 0:
        return {}
    return {f"{prefix}_p{q}": float(v) for q, v in zip(QUANTILES, np.percentile(x, QUANTILES))}


def sampler_stats(h: np.ndarray, p: np.ndarray) -> dict:
    """Hardness quantiles; max/min ratio of the sampling probabilities; effective sample size
    of the draw over N, ESS/N = 1 / (N sum p_i^2) (1 = uniform, 1/N = one sample)."""
    p = np.asarray(p, dtype=np.float64).ravel()
    n = p.size
    out = _quantiles("hardness", h)
    out["hardness_mean"], out["hardness_std"] = float(np.mean(h)), float(np.std(h))
    out["p_max_min_ratio"] = float(p.max() / p.min()) if p.min() > 0 else float("inf")
    out["ess_frac"] = float(1.0 / (n * np.square(p).sum()))
    nz = p[p > 0]
    out["sampling_entropy"] = float(-(nz * np.log(nz)).sum())
    return out


def draw_stats(draw: np.ndarray, n: int, groups: SampleGroups | None) -> tuple[dict, dict]:
    """Coverage (share of the training samples drawn at least once) and, per class, its share
    of the draw next to its share of the training set (NER: sentences containing the type)."""
    draw = np.asarray(draw, dtype=np.int64)
    flat = {"coverage": float(np.unique(draw).size / n) if n else 0.0}
    shares = {}
    if groups is not None:
        ds, ts = groups.draw_share(draw), groups.train_share()
        shares = {name: {"draw": float(d), "train": float(t)}
                  for name, d, t in zip(groups.names, ds, ts)}
    return flat, shares


def weight_stats(w, w_min: float, w_max: float) -> dict:
    """Quantiles of the post-meta weights and the shares clipped at w_min and at w_max."""
    w = np.asarray(w, dtype=np.float64).ravel()
    if w.size == 0:
        return {}
    out = _quantiles("weight", w)
    tol = 1e-4
    out["weight_clip_min_share"] = float(np.mean(w <= w_min * (1 + tol) + tol * 1e-3))
    out["weight_clip_max_share"] = float(np.mean(w >= w_max * (1 - tol)))
    return out


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties); nan when either side is constant."""
    from scipy.stats import rankdata
    ra, rb = rankdata(np.asarray(a, dtype=np.float64)), rankdata(np.asarray(b, dtype=np.float64))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def probe_indices(n: int, size: int, seed: int) -> np.ndarray:
    """The fixed subset of training samples on which h is compared with the current loss."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 7]).choice(n, size, replace=False))
