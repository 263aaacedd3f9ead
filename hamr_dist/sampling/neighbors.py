"""Embedding index (FAISS, inner product on unit vectors) and the kNN boost of spec 2.

The embeddings may be any ``[N, d]`` array, a memory-mapped float16 ``.npy`` included
(:func:`load_embeddings`): the index is trained on a normalised sample and filled chunk by
chunk, and the boost normalises only the queries, so nothing here holds a float32 copy of all
N rows besides what the index itself stores (flat and IVF: 4d bytes per row; IVF-PQ: ``m``
bytes per row, e.g. 48 for d = 384, so 10^7 rows take 0.5 GB instead of 15 GB).
"""
from __future__ import annotations

import logging
import math

import numpy as np

try:
    import faiss
except ImportError:  # faiss is an extra ([cpu] or [gpu]); exact search works without it
    faiss = None

__all__ = ["normalize", "load_embeddings", "build_index", "hard_indices", "neighbour_boost",
           "recall_at_k", "INDEX_KINDS"]

INDEX_KINDS = ("flat", "ivf", "ivfpq")
ADD_CHUNK = 1 << 16        # rows normalised and added to an index at a time
RERANK_CHUNK = 1 << 11     # queries re-ranked at a time (their candidates' rows are read)

log = logging.getLogger(__name__)


def normalize(emb: np.ndarray) -> np.ndarray:
    """A contiguous float32 copy with unit rows (zero rows stay zero)."""
    x = np.array(emb, dtype=np.float32, order="C", copy=True)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D [N, d], got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def load_embeddings(path) -> np.ndarray:
    """A ``[N, d]`` ``.npy`` (float16 or float32) opened memory-mapped: pages are read when the
    index is filled or a query row is needed, and shared by the processes of a node."""
    from ..errors import DataError
    try:
        emb = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read embeddings: {e}", file=path,
                        hint="give a .npy file of shape [N, d]") from None
    if emb.ndim != 2 or emb.dtype.kind != "f":
        raise DataError(f"embeddings must be a 2-D float array, got shape {emb.shape} "
                        f"({emb.dtype})", file=path, hint="give a .npy file of shape [N, d]")
    return emb


def _rows(emb, lo: int, hi: int) -> np.ndarray:
    return normalize(np.asarray(emb[lo:hi]))


TRAIN_POINTS_PER_LIST = 64


def _default_nlist(n: int) -> int:
    # ~4*sqrt(N) lists, but at least 39 training points per list (faiss' k-means minimum)
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def default_pq_m(d: int) -> int:
    """Sub-quantizers of IVF-PQ by default: 8 dimensions per byte of code (48 for d = 384),
    or the largest divisor of d at most d/8."""
    return max(m for m in range(1, max(1, d // 8) + 1) if d % m == 0)


def check_pq_m(d: int, m: int) -> None:
    from ..errors import ConfigError
    if m < 1 or d % m:
        divisors = [x for x in range(1, d + 1) if d % x == 0 and x <= 96]
        raise ConfigError(f"--knn-pq-m {m} does not divide the embedding dimension {d}: use "
                          f"one of {', '.join(map(str, divisors))}")


def _make(kind: str, d: int, nlist: int, nprobe: int | None, sample, pq_m: int | None = None):
    if kind == "flat":
        return faiss.IndexFlatIP(d)
    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index kind {kind!r} (use {', '.join(INDEX_KINDS)})")
    if kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        m = pq_m or default_pq_m(d)
        check_pq_m(d, m)
        # 8 bits per sub-quantizer (256 centroids) once the sample allows ~39 points each
        # (faiss' k-means minimum); fewer bits for tiny sets (tests)
        nbits = max(1, min(8, int(math.log2(max(2, len(sample) // 39)))))
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, m, nbits,
                                 faiss.METRIC_INNER_PRODUCT)
    # k-means on a bounded random sample: its cost grows with sample x nlist, and 64 points
    # per list place the centroids well enough (faiss itself caps at 256 per list)
    index.train(sample)
    # a tenth of the lists (>= 10): recall near 1 for the boost at a fraction of flat's cost
    index.nprobe = min(nlist, nprobe or max(10, nlist // 10))
    return index


def _train_sample(emb, nlist: int, kind: str) -> np.ndarray:
    """Normalised random rows for k-means (sorted, so a memory-mapped file is read in order)."""
    n = len(emb)
    cap = TRAIN_POINTS_PER_LIST * nlist
    if kind == "ivfpq":
        cap = max(cap, 256 * 64)              # the PQ codebooks: 64 points per centroid
    if n <= cap:
        return _rows(emb, 0, n)
    rows = np.sort(np.random.default_rng(0).choice(n, cap, replace=False))
    return normalize(np.asarray(emb[rows]))


def _fill(index, emb, lo: int, hi: int) -> None:
    for s in range(lo, hi, ADD_CHUNK):
        index.add(_rows(emb, s, min(s + ADD_CHUNK, hi)))


def _to_gpus(index, kind: str):
    """The index cloned across all GPUs, sharded (each GPU holds a slice of the rows); on a
    failure (GPU memory, an IVF-PQ code size or metric the GPU kernels do not support) the CPU
    index is kept, with a warning."""
    co = faiss.GpuMultipleClonerOptions()
    co.shard = True                    # rows split over the GPUs, not replicated
    if kind == "ivfpq":
        co.useFloat16 = True           # float16 lookup tables: what large m needs on a GPU
    try:
        return faiss.index_cpu_to_all_gpus(index, co=co)
    except (RuntimeError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        log.warning("could not move the %s index to the GPUs (%s); searching on the CPU",
                    kind, first)
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
                kind: str = "flat", nlist: int | None = None, nprobe: int | None = None,
                pq_m: int | None = None):
    """Inner-product index over the L2-normalised rows of ``emb``; ids are row numbers.

    ``emb`` may be memory-mapped (float16 is fine): rows are normalised and added in chunks.
    ``kind``: ``flat`` (exact), ``ivf`` (inverted lists of full vectors) or ``ivfpq``
    (inverted lists of product-quantised codes, ``pq_m`` bytes per row; default d/8).
    ``num_shards > 1``: a CPU ``IndexShards`` over contiguous row slices (successive ids),
    IVF shards sharing one trained coarse quantizer. ``use_gpu`` with GPUs present: the
    unsharded index cloned across all GPUs with ``shard=True`` (the GPUs are the shards,
    ``num_shards`` is ignored); without GPUs, or if the GPUs refuse the index, it warns and
    stays on CPU.
    """
    if getattr(emb, "ndim", 2) != 2:
        raise ValueError(f"embeddings must be 2-D [N, d], got shape {np.shape(emb)}")
    n, d = emb.shape
    if n == 0:
        raise ValueError("cannot index zero embeddings")
    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index kind {kind!r} (use {', '.join(INDEX_KINDS)})")
    if faiss is None:
        log.warning("faiss is not installed (pip install 'hamr-dist[cpu]' or '[gpu]'): "
                    "using exact numpy search, one index, no shards")
        return ExactIndex(normalize(np.asarray(emb)))
    nlist = min(nlist or _default_nlist(n), n)  # k-means needs >= nlist points
    gpu = use_gpu and faiss.get_num_gpus() > 0
    if use_gpu and not gpu:
        log.warning("use_gpu requested but FAISS sees no GPU; building the index on CPU")
    sample = _train_sample(emb, nlist, kind) if kind != "flat" else None
    if num_shards <= 1 or gpu:
        index = _make(kind, d, nlist, nprobe, sample, pq_m)
        _fill(index, emb, 0, n)
        return _to_gpus(index, kind) if gpu else index
    num_shards = min(num_shards, n)
    template = _make(kind, d, nlist, nprobe, sample, pq_m)  # trained once: shards agree
    shards = faiss.IndexShards(d, False, True)  # not threaded, successive ids
    for rows in np.array_split(np.arange(n), num_shards):
        sub = faiss.clone_index(template)
        if kind != "flat":
            sub.nprobe = template.nprobe  # clone_index keeps it, but be explicit
        _fill(sub, emb, int(rows[0]), int(rows[-1]) + 1)
        shards.add_shard(sub)  # faiss' wrapper keeps a Python reference to sub
    return shards


def hard_indices(h: np.ndarray, rho: float) -> np.ndarray:
    """The ``ceil(rho*N)`` largest-h indices, hardest first, ties to the lower index."""
    h = np.asarray(h).ravel()
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho must be in [0, 1], got {rho}")
    k = min(h.size, math.ceil(round(rho * h.size, 9)))
    return np.argsort(-h.astype(np.float64), kind="stable")[:k]


def _rerank(x: np.ndarray, cand: np.ndarray, emb, kk: int) -> np.ndarray:
    """The ``kk`` best of each query's candidate ids by exact inner product with the rows of
    ``emb`` (read once per distinct id, in file order)."""
    rows, inv = np.unique(np.maximum(cand, 0), return_inverse=True)
    vec = normalize(np.asarray(emb[rows]))
    sims = np.einsum("qd,qkd->qk", x, vec[inv.reshape(cand.shape)])
    sims[cand < 0] = -np.inf                      # -1: fewer hits than asked
    best = np.argsort(-sims, axis=1, kind="stable")[:, :kk]
    return np.take_along_axis(cand, best, axis=1)


def neighbour_boost(index, emb: np.ndarray, h: np.ndarray, rho: float = 0.2,
                    k: int = 10, rerank: int = 0) -> np.ndarray:
    """b_i = occurrences of i among the k nearest neighbours of the hard samples, / max.

    Searches k+1 and drops the query's own id; if an approximate index missed the query
    itself (or exact duplicates pushed it out), the last hit is dropped instead.
    ``rerank`` R > 1: the index proposes R (k+1) candidates per query and the k+1 nearest of
    them by exact inner product with ``emb`` are kept (for IVF-PQ, whose code distances are
    coarse where neighbours are close together).
    """
    h = np.asarray(h).ravel()
    n = h.size
    b = np.zeros(n, dtype=np.float32)
    q = hard_indices(h, rho)
    if q.size == 0 or k <= 0:
        return b
    kk = min(k + 1, index.ntotal)
    kc = min(kk * rerank, index.ntotal) if rerank > 1 else kk
    # queries in chunks, rows read in file order (a memory-mapped emb) and put back in q's order
    ids = np.empty((q.size, kk), dtype=np.int64)
    step = RERANK_CHUNK if kc > kk else ADD_CHUNK
    for s in range(0, q.size, step):
        part = q[s:s + step]
        order = np.argsort(part, kind="stable")
        x = np.empty((part.size, emb.shape[1]), dtype=np.float32)
        x[order] = normalize(np.asarray(emb[part[order]]))
        found = index.search(x, kc)[1]
        ids[s:s + part.size] = _rerank(x, found, emb, kk) if kc > kk else found
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
