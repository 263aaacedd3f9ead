"""The weighted epoch draw at corpus scale: ``m`` i.i.d. indices from ``p ∝ (h+eps)^tau (1+lam b)``
(times the sampling prior, if any).

``numpy.random.Generator.choice(n, m, p=p)`` is an inverse CDF whose binary searches jump
across the whole float64 CDF for every draw (18 s at n = 10^7 on the project's 2-core VM,
``benchmarks/results/hardness_scale.md``). An inverse CDF with a guide table (this module
until 2026-12) still took several dependent random reads per draw: 16.7 CPU s at n = 10^8
(``benchmarks/results/sampler_scale.md``). This module uses Walker's **alias table** instead:

- **One random read per draw.** Bucket ``j = floor(u n)`` of ``n`` equal buckets keeps sample
  ``j`` with probability ``prob[j]`` and otherwise gives ``alias[j]``; ``u n - j`` (the bits of
  ``u`` left over, ~26 at n = 10^8) is the second uniform. ``prob`` (float32) and ``alias``
  (uint32) share one 64-bit word, so a draw reads one word at a random place.
- **Built without a sequential loop.** Walker/Vose pair small and large samples one at a time.
  Its sweep order has a closed form (Hübschle-Schneider and Sanders, "Parallel weighted random
  sampling", 2019): with normalised weights ``w = n p``, light samples (``w <= 1``) and heavy
  ones in index order, ``D`` the running sum of the lights' deficits ``1 - w`` and ``E`` that
  of the heavies' excesses ``w - 1``, light ``i`` takes as alias the first heavy ``j`` with
  ``E_j > D_{i-1}``; heavy ``j`` keeps ``1 + E_j - D_{i*}`` (``i*`` the first light with
  ``D_{i*} >= E_j``) and takes the next heavy as alias. Two running sums and two merges of
  sorted arrays (``searchsorted`` on cache-sized pieces): streaming passes only.
- **Scores in float32, sums in float64.** ``(h+eps)^tau (1+lam b)`` in float32 (a SIMD ``pow``;
  relative error ~1e-7), the running sums in float64, so the table's probabilities match ``p``
  to ~1e-6 relative at 10^8 samples, far below what sampling can tell.
- **Fixed tiles of draws, each its own seeded stream.** Tile ``k`` (``TILE`` draws) takes its
  uniforms from ``default_rng([seed, epoch, k])``, so the draw is a pure function of
  ``(seed, epoch, h, b, tau, lam)``: identical on every rank and in every process, whatever the
  number of threads (tiles run on a thread pool; numpy releases the GIL in its array loops).

Memory while drawing n samples ``m`` times: the table (8n bytes), while building it also the
running sums and the light/heavy index lists (12n), and the output (8m, int64); e.g.
0.8 GB + 1.2 GB transient + 0.96 GB at n = 10^8, m = 1.2 x 10^8.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["TILE", "AliasTable", "build_table", "draw_indices", "weighted_draw"]

TILE = 1 << 16     # draws per seeded stream: part of the definition (changing it changes draws)
CHUNK = 1 << 20    # samples per cache-sized step while building the table
LOW32 = np.uint64(0xFFFFFFFF)


class AliasTable:
    """Walker's alias table over ``n`` samples, one uint64 word each: ``prob`` (float32 bits)
    in the high half, ``alias`` in the low half."""

    def __init__(self, packed: np.ndarray):
        self.packed = packed
        self.n = int(packed.shape[0])

    @property
    def prob(self) -> np.ndarray:
        return (self.packed >> np.uint64(32)).astype(np.uint32).view(np.float32)

    @property
    def alias(self) -> np.ndarray:
        return (self.packed & LOW32).astype(np.int64)

    def probabilities(self) -> np.ndarray:
        """The distribution the table draws from (float64, sums to 1): bucket ``j`` gives
        ``j`` with ``prob[j]`` and ``alias[j]`` with ``1 - prob[j]``, each bucket ``1/n``."""
        prob = self.prob.astype(np.float64)
        p = prob + np.bincount(self.alias, weights=1.0 - prob, minlength=self.n)
        return p / self.n

    def lookup(self, u: np.ndarray) -> np.ndarray:
        """The sample for each uniform ``u`` in [0, 1)."""
        x = u * self.n
        j = x.astype(np.intp)
        np.minimum(j, self.n - 1, out=j)      # u * n may round up to n
        x -= j                                 # the leftover bits: a uniform in [0, 1)
        word = self.packed[j]
        keep = x < (word >> np.uint64(32)).astype(np.uint32).view(np.float32)
        return np.where(keep, j, (word & LOW32).astype(np.intp)).astype(np.int64, copy=False)


def _scores(h, b, s, e, tau32, lam32, eps32, prior) -> np.ndarray:
    score = np.maximum(h[s:e], np.float32(0.0))
    score += eps32
    np.power(score, tau32, out=score)
    score *= np.float32(1.0) + lam32 * b[s:e]
    if prior is not None:
        score *= prior[s:e]
    if score.min() < 0:       # 1 + lam*b < 0; NaN and inf are caught by the total
        raise ValueError("sampling scores must be >= 0: 1 + lam*b is negative at some "
                         "sample (check lam and the boost)")
    return score


def _merge(keys: np.ndarray, into: np.ndarray, side: str) -> np.ndarray:
    """``searchsorted(into, keys, side)`` for sorted ``keys``: only the part of ``into`` that the
    first and last key bound takes part, and the two sorted runs are merged (a stable sort of
    two runs is one linear merge) instead of searched key by key."""
    if not into.size:
        return np.zeros(keys.shape[0], dtype=np.int64)
    lo = int(np.searchsorted(into, keys[0], side))
    hi = min(int(np.searchsorted(into, keys[-1], side)), into.size)
    part = into[lo:hi]
    # a stable sort keeps ties in concatenation order: into first counts into <= key (right),
    # keys first counts into < key (left)
    both = np.concatenate([part, keys] if side == "right" else [keys, part])
    order = np.argsort(both, kind="stable")
    is_key = order >= part.size if side == "right" else order < keys.size
    return np.flatnonzero(is_key) - np.arange(keys.shape[0]) + lo


def _chunks(n: int):
    return [(s, min(s + CHUNK, n)) for s in range(0, n, CHUNK)]


def build_table(h: np.ndarray, b: np.ndarray, tau: float, lam: float, eps: float = 1e-6,
                prior: np.ndarray | None = None, threads: int | None = None) -> AliasTable:
    """The alias table of ``p ∝ (max(h, 0) + eps)^tau * (1 + lam*b) [* prior]`` (length-n
    arrays), the score of ``InMemoryHardness.probabilities``. ``threads`` changes only the
    speed."""
    h = np.asarray(h, dtype=np.float32).ravel()
    b = np.asarray(b, dtype=np.float32).ravel()
    n = h.shape[0]
    if n == 0 or b.shape != h.shape or (prior is not None and np.shape(prior) != h.shape):
        raise ValueError(f"hardness ({h.size}), boost ({b.size}) and prior must be non-empty "
                         "and of equal length")
    if n >= 2 ** 32:
        raise ValueError(f"{n} samples: the alias table holds at most 2^32 - 1")
    # Every big array is written in place, chunk by chunk: fresh memory is expensive to touch
    # (page faults), so the table's own word array holds the scores until they become prob.
    packed = np.empty(n, dtype=np.uint64)
    halves = packed.view(np.uint32).reshape(n, 2)       # little-endian: [alias, prob bits]
    alias, prob = halves[:, 0], halves[:, 1].view(np.float32)
    pool = ThreadPoolExecutor(max_workers=threads or min(4, os.cpu_count() or 1))
    tau32, lam32, eps32 = np.float32(tau), np.float32(lam), np.float32(eps)

    def score(se):
        prob[se[0]:se[1]] = _scores(h, b, se[0], se[1], tau32, lam32, eps32, prior)
        return float(prob[se[0]:se[1]].sum(dtype=np.float64))

    with pool:
        total = sum(pool.map(score, _chunks(n)))
        if not np.isfinite(total) or total <= 0:
            raise ValueError("sampling scores do not sum to a positive finite number "
                             "(check tau, lam and the boost)")
        # Pass 1: normalised weights w = n p; lights keep w; the running sums of deficits D
        # (lights) and excesses E (heavies) in index order. Two rounds so that chunks run in
        # parallel: each chunk's counts and sums, then each chunk writes at its offsets.
        scale = n / total

        def split(se):
            w = prob[se[0]:se[1]].astype(np.float64)
            w *= scale
            li, hi = np.flatnonzero(w <= 1.0), np.flatnonzero(w > 1.0)
            return w, li, hi, np.cumsum(1.0 - w[li]), np.cumsum(w[hi] - 1.0)

        def sums(se):
            _, li, hi, d, x = split(se)
            return li.size, hi.size, float(d[-1]) if d.size else 0.0, float(x[-1]) if x.size else 0.0

        chunks = _chunks(n)
        starts, nl, nh, d_carry, e_carry = [], 0, 0, 0.0, 0.0
        for c_l, c_h, c_d, c_e in pool.map(sums, chunks):
            starts.append((nl, nh, d_carry, e_carry))
            nl, nh, d_carry, e_carry = nl + c_l, nh + c_h, d_carry + c_d, e_carry + c_e
        lights, heavies = np.empty(nl, dtype=np.uint32), np.empty(nh, dtype=np.uint32)
        D, E = np.empty(nl, dtype=np.float64), np.empty(nh, dtype=np.float64)

        def write(arg):
            (s, e), (ol, oh, dc, ec) = arg
            w, li, hi, d, x = split((s, e))
            prob[s + li] = w[li]
            d += dc             # the same additions as the carries: D and E stay monotone
            x += ec
            D[ol:ol + li.size], E[oh:oh + hi.size] = d, x
            lights[ol:ol + li.size], heavies[oh:oh + hi.size] = li + s, hi + s

        list(pool.map(write, zip(chunks, starts)))
        if not nh:                                # all weights equal: every bucket keeps
            def keep_all(se):
                prob[se[0]:se[1]] = 1.0
                alias[se[0]:se[1]] = np.arange(se[0], se[1], dtype=np.uint32)
            list(pool.map(keep_all, _chunks(n)))
            return AliasTable(packed)

        def light_alias(se):
            # light i's alias: the first heavy j with E_j > D_{i-1} (rounding can push the
            # last lights past E's end: they take the last heavy, whose tiny share that is)
            s, e = se
            d_prev = D[max(s - 1, 0):e - 1] if s else np.concatenate([[0.0], D[:e - 1]])
            j = np.minimum(_merge(d_prev, E, "right"), nh - 1)
            alias[lights[s:e]] = heavies[j]

        def heavy_keep(se):
            # heavy j keeps 1 + E_j - D_{i*} (i* the first light with D >= E_j; none: all of
            # its bucket) and hands the rest to the next heavy
            s, e = se
            i_star = _merge(E[s:e], D, "left")
            inside = i_star < nl
            keep = np.ones(e - s)
            keep[inside] = np.clip(1.0 + E[s:e][inside] - D[i_star[inside]], 0.0, 1.0)
            prob[heavies[s:e]] = keep
            alias[heavies[s:e]] = heavies[s + 1:e + 1] if e < nh else np.append(
                heavies[s + 1:e], heavies[nh - 1])

        list(pool.map(light_alias, _chunks(nl)))
        list(pool.map(heavy_keep, _chunks(nh)))
    prob[heavies[nh - 1]] = 1.0                    # the last heavy keeps its whole bucket
    return AliasTable(packed)


def tile_rng(seed: int, epoch: int, tile: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), int(tile)])


def draw_indices(table: AliasTable, m: int, seed: int, epoch: int,
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
    return draw_indices(build_table(h, b, tau, lam, eps, prior, threads), m, seed, epoch, threads)
