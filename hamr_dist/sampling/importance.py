"""Importance weights that undo part of the hardness draw's shift (``--draw-correction``).

A draw ``p_i ∝ s_i`` (``s_i = (h_i + eps)^tau (1 + lam b_i)``, times the class prior) both
chooses which samples a step visits and, through how often it visits them, re-weights the
objective. Multiplying a drawn sample's loss by ``(s_i / mean s)^-beta`` (prioritised replay's
correction, Schaul et al. 2016) separates the two: with beta = 1 the hardness part of the draw
leaves the expected gradient as a uniform draw's (hard samples are visited more often, each
visit counting less), with beta = 0 the draw shifts the objective fully. The class prior is not
corrected: it is meant to shift the objective.
"""
from __future__ import annotations

import numpy as np

__all__ = ["importance_weights", "importance_stats"]


def importance_weights(h: np.ndarray, b: np.ndarray, drawn: np.ndarray, tau: float, lam: float,
                       beta: float, eps: float = 1e-6) -> np.ndarray:
    """``(s_i / mean_j s_j)^-beta`` (float32) for each drawn index ``i``, the mean over the
    whole training set; ``h`` and ``b`` the store's hardness and boost."""
    score = (np.maximum(np.asarray(h, dtype=np.float64), 0.0) + eps) ** tau
    score *= 1.0 + lam * np.asarray(b, dtype=np.float64)
    rel = score[np.asarray(drawn, dtype=np.int64)] / score.mean()
    return (rel ** -beta).astype(np.float32)


def importance_stats(u: np.ndarray) -> dict:
    """Quantiles of an epoch's importance weights relative to their mean: how much less a
    visit of a hard sample counts than one of an easy sample (the epoch's diagnostics)."""
    q = np.quantile(np.asarray(u, dtype=np.float64) / float(np.mean(u)), [0.01, 0.5, 0.99])
    return {"importance_p1": float(q[0]), "importance_p50": float(q[1]),
            "importance_p99": float(q[2])}
