"""The weighted epoch draw at corpus scale: ``m`` i.i.d. indices from ``p ∝ (h+eps)^tau (1+lam b)``
(times the sampling prior, if any).

``numpy.random.Generator.choice(n, m, p=p)`` is an inverse CDF whose binary searches jump
across the whole float64 CDF for every draw (18 s at n = 10^7 on the project's 2-core VM,
``benchmarks/results/hardness_scale.md``); it also computes ``p`` in float64 with libm's scalar
``pow``. This module keeps the inverse CDF -- the index drawn for a uniform ``u`` is the first
``i`` with ``cdf[i] > u * top`` (``top``: the float just below the total), exactly what a
binary search returns -- and makes it cheap:

- **Scores in float32, summed in float64.** ``(h+eps)^tau (1+lam b)`` in float32 (a SIMD
  ``pow``, 16x faster than float64's; relative error ~1e-7, far below what sampling can tell),
  cumulated chunk by chunk into a float64 CDF, so the sum keeps its precision at 10^8 terms.
- **A guide table instead of binary search.** With ``G = n`` equal cells over ``[0, total)``,
  ``guide[c]`` is the number of CDF values below cell ``c``; a target ``t`` in cell ``c``
  has its answer in ``[guide[c], guide[c+1]]``, found by stepping from ``guide[c]`` through
  the CDF values inside that cell. One random read of the guide and about 1.5 of the CDF per
  draw, instead of ~27 dependent reads of a search. Built in two streaming passes (cumulative
  sum; then each CDF value's cell, the guide filled by ``np.repeat`` since cells only rise):
  no sort, no search.
- **Fixed tiles of draws, each its own seeded stream.** Tile ``k`` (``TILE`` draws) takes its
  uniforms from ``default_rng([seed, epoch, k])``, so the draw is a pure function of
  ``(seed, epoch, h, b, tau, lam)``: identical on every rank and in every process, whatever the
  number of threads (tiles run on a thread pool; numpy releases the GIL in its array loops).

Memory while drawing n samples ``m`` times: the CDF (8n bytes), the guide table (4n, int32)
and the output (8m, int64); e.g. 1.2 GB + 0.96 GB at n = 10^8, m = 1.2 x 10^8. Nothing but
the output outlives the call.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["TILE", "GuideTable", "build_table", "draw_indices", "weighted_draw"]

TILE = 1 << 16     # draws per seeded stream: part of the definition (changing it changes draws)
CHUNK = 1 << 20    # samples per cache-sized step while building the table


class GuideTable:
    """Float64 CDF of the scores plus the guide table over ``len(cdf)`` equal cells."""

    def __init__(self, cdf: np.ndarray, guide: np.ndarray):
        self.cdf, self.guide = cdf, guide
        self.n = int(cdf.shape[0])
        self.total = float(cdf[-1])
        self.scale = self.n / self.total               # cell of a value x: floor(x * scale)
        self.top = float(np.nextafter(self.total, 0))  # targets are u * top: below total

    def lookup(self, u: np.ndarray) -> np.ndarray:
        """Inverse CDF of uniforms ``u`` in [0, 1): the first ``i`` with ``cdf[i] > u * top``
        (``top``: the float just below ``total``, so that no product rounds up to it)."""
        t = u * self.top                     # < total: the scan below always ends before n
        c = (t * self.scale).astype(np.intp)
        i = self.guide[c].astype(np.intp)
        # Every CDF value of a cell before c is < t, and every one of a cell after c is > t
        # (x -> floor(x * scale) is monotone in floating point), so the answer is guide[c] or
        # one of the following values inside cell c: step while cdf[i] <= t. The step stops
        # by itself at the first value of a later cell, and before n (cdf[n-1] = total > t).
        act = np.flatnonzero(self.cdf[i] <= t)
        while act.size:
            i[act] += 1
            act = act[self.cdf[i[act]] <= t[act]]
        return i


def build_table(h: np.ndarray, b: np.ndarray, tau: float, lam: float, eps: float = 1e-6,
                prior: np.ndarray | None = None) -> GuideTable:
    """The guide table of ``p ∝ (max(h, 0) + eps)^tau * (1 + lam*b) [* prior]`` (length-n
    arrays), the score of ``InMemoryHardness.probabilities``."""
    h = np.asarray(h, dtype=np.float32).ravel()
    b = np.asarray(b, dtype=np.float32).ravel()
    n = h.shape[0]
    if n == 0 or b.shape != h.shape or (prior is not None and np.shape(prior) != h.shape):
        raise ValueError(f"hardness ({h.size}), boost ({b.size}) and prior must be non-empty "
                         "and of equal length")
    tau32, lam32, eps32 = np.float32(tau), np.float32(lam), np.float32(eps)
    cdf = np.empty(n, dtype=np.float64)
    carry = 0.0
    for s in range(0, n, CHUNK):
        score = np.maximum(h[s:s + CHUNK], np.float32(0.0))
        score += eps32
        np.power(score, tau32, out=score)
        score *= np.float32(1.0) + lam32 * b[s:s + CHUNK]
        if prior is not None:
            score *= prior[s:s + CHUNK]
        if score.min() < 0:       # 1 + lam*b < 0; NaN and inf are caught by the sum below
            raise ValueError("sampling scores must be >= 0: 1 + lam*b is negative at some "
                             "sample (check lam and the boost)")
        part = np.cumsum(score, dtype=np.float64)
        part += carry
        cdf[s:s + CHUNK] = part
        carry = float(part[-1])
    if not np.isfinite(carry) or carry <= 0:
        raise ValueError("sampling scores do not sum to a positive finite number "
                         "(check tau, lam and the boost)")
    # guide[c] = #{i: cell_i < c}. Cells rise with i, so for c in (cell_{i-1}, cell_i] it is i:
    # each i is repeated cell_i - cell_{i-1} times, chunk by chunk (no search, no sort)
    scale = n / carry
    guide = np.empty(n + 2, dtype=np.int32)
    last = -1                                    # cell of the previous CDF value
    for s in range(0, n, CHUNK):
        cells = (cdf[s:s + CHUNK] * scale).astype(np.intp)
        np.minimum(cells, n, out=cells)          # total * (n / total) may round above n
        reps = np.diff(cells, prepend=last)
        guide[last + 1:cells[-1] + 1] = np.repeat(np.arange(s, s + cells.size, dtype=np.int32),
                                                  reps)
        last = int(cells[-1])
    guide[last + 1:] = n
    return GuideTable(cdf, guide)


def tile_rng(seed: int, epoch: int, tile: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), int(tile)])


def draw_indices(table: GuideTable, m: int, seed: int, epoch: int,
                 threads: int | None = None) -> np.ndarray:
    """``m`` indices (int64), tile ``k`` from the uniforms of ``tile_rng(seed, epoch, k)``."""
    out = np.empty(int(m), dtype=np.int64)
    tiles = math.ceil(m / TILE)

    def one(k: int) -> None:
        s = k * TILE
        size = min(TILE, m - s)
        out[s:s + size] = table.lookup(tile_rng(seed, epoch, k).random(size))

    threads = threads or min(4, os.cpu_count() or 1)
    if threads == 1 or tiles == 1:
        for k in range(tiles):
            one(k)
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(one, range(tiles)))
    return out


def weighted_draw(h: np.ndarray, b: np.ndarray, m: int, seed: int, epoch: int, tau: float,
                  lam: float, eps: float = 1e-6, prior: np.ndarray | None = None,
                  threads: int | None = None) -> np.ndarray:
    """One epoch's ``m`` i.i.d. indices from ``p ∝ (h+eps)^tau (1+lam b) [* prior]``, a pure
    function of its arguments (``threads`` changes only the speed)."""
    return draw_indices(build_table(h, b, tau, lam, eps, prior), m, seed, epoch, threads)
