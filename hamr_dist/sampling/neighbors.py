"""Embedding index (FAISS, inner product on unit vectors) and the kNN boost of spec 2."""
from __future__ import annotations

import logging
import math

import numpy as np

try:
    import faiss
except ImportError:  # faiss is an extra ([cpu] or [gpu]); exact search works without it
    faiss = None

__all__ = ["normalize", "build_index", "hard_indices", "neighbour_boost", "recall_at_k"]

log = logging.getLogger(__name__)


def normalize(emb: np.ndarray) -> np.ndarray:
    """A contiguous float32 copy with unit rows (zero rows stay zero)."""
    x = np.array(emb, dtype=np.float32, order="C", copy=True)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D [N, d], got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


TRAIN_POINTS_PER_LIST = 64


def _default_nlist(n: int) -> int:
    # ~4*sqrt(N) lists, but at least 39 training points per list (faiss' k-means minimum)
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def _make(kind: str, d: int, nlist: int, nprobe: int | None, train: np.ndarray):
    if kind == "flat":
        return faiss.IndexFlatIP(d)
    if kind != "ivf":
        raise ValueError(f"unknown index kind {kind!r} (use 'flat' or 'ivf')")
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    # k-means on a bounded random sample: its cost grows with sample x nlist, and 64 points
    # per list place the centroids well enough (faiss itself caps at 256 per list)
    cap = TRAIN_POINTS_PER_LIST * nlist
    if len(train) > cap:
        rows = np.sort(np.random.default_rng(0).choice(len(train), cap, replace=False))
        train = train[rows]
    index.train(train)
    # a tenth of the lists (>= 10): recall near 1 for the boost at a fraction of flat's cost
    index.nprobe = min(nlist, nprobe or max(10, nlist // 10))
    return index


class ExactIndex:
    """Brute-force inner-product search in numpy (chunked), used when FAISS is not installed."""

    def __init__(self, x: np.ndarray):
        self.x, self.ntotal = x, len(x)

    def search(self, q: np.ndarray, k: int, chunk: int = 1024):
        dist, ids = [], []
        for s in range(0, len(q), chunk):
            sims = q[s:s + chunk] @ self.x.T
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            part = np.take_along_axis(sims, top, 1)
            order = np.argsort(-part, axis=1, kind="stable")
            ids.append(np.take_along_axis(top, order, 1))
            dist.append(np.take_along_axis(part, order, 1))
        return np.concatenate(dist), np.concatenate(ids)


def build_index(emb: np.ndarray, num_shards: int = 1, use_gpu: bool = False,
                kind: str = "flat", nlist: int | None = None, nprobe: int | None = None):
    """Inner-product index over the L2-normalised rows of ``emb``; ids are row numbers.

    ``num_shards > 1``: a CPU ``IndexShards`` over contiguous row slices (successive ids),
    IVF shards sharing one trained coarse quantizer. ``use_gpu`` with GPUs present: the
    unsharded index cloned across all GPUs with ``shard=True`` (the GPUs are the shards,
    ``num_shards`` is ignored); without GPUs it warns and stays on CPU.
    """
    x = normalize(emb)
    n, d = x.shape
    if n == 0:
        raise ValueError("cannot index zero embeddings")
    if faiss is None:
        log.warning("faiss is not installed (pip install 'hamr-dist[cpu]' or '[gpu]'): "
                    "using exact numpy search, one index, no shards")
        return ExactIndex(x)
    nlist = min(nlist or _default_nlist(n), n)  # k-means needs >= nlist points
    gpu = use_gpu and faiss.get_num_gpus() > 0
    if use_gpu and not gpu:
        log.warning("use_gpu requested but FAISS sees no GPU; building the index on CPU")
    if num_shards <= 1 or gpu:
        index = _make(kind, d, nlist, nprobe, x)
        index.add(x)
        if gpu:
            co = faiss.GpuMultipleClonerOptions()
            co.shard = True
            index = faiss.index_cpu_to_all_gpus(index, co=co)
        return index
    num_shards = min(num_shards, n)
    template = _make(kind, d, nlist, nprobe, x)  # train once so shards agree on the lists
    shards = faiss.IndexShards(d, False, True)  # not threaded, successive ids
    for rows in np.array_split(np.arange(n), num_shards):
        sub = faiss.clone_index(template)
        if kind == "ivf":
            sub.nprobe = template.nprobe  # clone_index keeps it, but be explicit
        sub.add(x[rows[0]:rows[-1] + 1])
        shards.add_shard(sub)  # faiss' wrapper keeps a Python reference to sub
    return shards


def hard_indices(h: np.ndarray, rho: float) -> np.ndarray:
    """The ``ceil(rho*N)`` largest-h indices, hardest first, ties to the lower index."""
    h = np.asarray(h).ravel()
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho must be in [0, 1], got {rho}")
    k = min(h.size, math.ceil(round(rho * h.size, 9)))
    return np.argsort(-h.astype(np.float64), kind="stable")[:k]


def neighbour_boost(index, emb: np.ndarray, h: np.ndarray, rho: float = 0.2,
                    k: int = 10) -> np.ndarray:
    """b_i = occurrences of i among the k nearest neighbours of the hard samples, / max.

    Searches k+1 and drops the query's own id; if an approximate index missed the query
    itself (or exact duplicates pushed it out), the last hit is dropped instead.
    """
    h = np.asarray(h).ravel()
    n = h.size
    b = np.zeros(n, dtype=np.float32)
    q = hard_indices(h, rho)
    if q.size == 0 or k <= 0:
        return b
    x = normalize(np.asarray(emb)[q])
    _, ids = index.search(x, min(k + 1, index.ntotal))
    drop = ids == q[:, None]
    no_self = ~drop.any(axis=1)
    drop[no_self, -1] = True
    keep = ~drop
    keep &= np.cumsum(keep, axis=1) <= k
    keep &= ids >= 0  # -1 = fewer hits than asked (IVF with sparse lists)
    b += np.bincount(ids[keep], minlength=n)[:n].astype(np.float32)
    top = b.max()
    return b / top if top > 0 else b


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean over queries of |approx ∩ exact| / k, with k = exact_ids.shape[1]."""
    a, e = np.asarray(approx_ids), np.asarray(exact_ids)
    if a.shape[0] != e.shape[0] or e.ndim != 2 or e.shape[1] == 0:
        raise ValueError(f"id arrays disagree: {a.shape} vs {e.shape}")
    hits = sum(len(set(ra[ra >= 0].tolist()) & set(re[re >= 0].tolist())) for ra, re in zip(a, e))
    return hits / (e.shape[0] * e.shape[1])
