"""Neighbour-boost time for exact and approximate FAISS indexes, with recall@10 of the
approximate one against exact (synthetic clustered embeddings, d = 384, 20 % hard, k = 10).

    python -m benchmarks.neighbours [--sizes 100000 1000000] [--repeats 3]

Exact search at N = 10^6 costs 2*10^5 queries x 10^6 rows; on a small CPU it would take most
of an hour, so above --exact-query-cap queries the exact time is measured on a random sample
of the hard queries and scaled linearly (search cost is linear in the number of queries); the
result file says when that happened. Recall is always computed on the sampled queries.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from hamr_dist.sampling.neighbors import build_index, hard_indices, neighbour_boost, normalize, recall_at_k

from .common import RESULTS, environment, md_table, write_json, write_text


def clustered(n: int, d: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, d)).astype(np.float32)
    return normalize(x)


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def one_size(n, args, rng):
    emb = clustered(n, args.dim, max(10, n // 1000), seed=n)
    h = rng.random(n).astype(np.float32)
    q = hard_indices(h, args.hard_ratio)
    sample = q if len(q) <= args.exact_query_cap else rng.choice(q, args.exact_query_cap, replace=False)
    row = {"n": n, "hard_queries": int(len(q)), "sampled_queries": int(len(sample))}

    t = time.perf_counter()
    flat = build_index(emb, kind="flat")
    row["flat_build_s"] = time.perf_counter() - t
    t_exact, exact_ids = timed(lambda: flat.search(emb[sample], args.k + 1)[1], args.repeats)
    row["flat_boost_s"] = t_exact * len(q) / len(sample)
    row["flat_boost_extrapolated"] = len(sample) < len(q)
    if not row["flat_boost_extrapolated"]:
        row["flat_boost_s"], _ = timed(lambda: neighbour_boost(flat, emb, h, args.hard_ratio, args.k),
                                      args.repeats)

    t = time.perf_counter()
    ivf = build_index(emb, kind="ivf")
    row["ivf_build_s"] = time.perf_counter() - t
    row["ivf_nlist"], row["ivf_nprobe"] = int(ivf.nlist), int(ivf.nprobe)
    row["ivf_boost_s"], _ = timed(lambda: neighbour_boost(ivf, emb, h, args.hard_ratio, args.k),
                                  args.repeats)
    approx_ids = ivf.search(emb[sample], args.k + 1)[1]
    row["ivf_recall_at_10"] = recall_at_k(approx_ids[:, 1:], exact_ids[:, 1:])
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--hard-ratio", type=float, default=0.2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--exact-query-cap", type=int, default=20_000)
    p.add_argument("--name", default="neighbours")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    t0 = time.time()
    rows = [one_size(n, args, rng) for n in args.sizes]
    res = {"config": vars(args), "environment": environment(), "rows": rows,
           "wall_time_s": round(time.time() - t0, 1)}
    write_json(RESULTS / f"{args.name}.json", res)
    table = md_table(
        ["N", "hard queries", "exact boost (s)", "IVF boost (s)", "IVF nlist/nprobe", "recall@10 (IVF vs exact)"],
        [[r["n"], r["hard_queries"],
          f"{r['flat_boost_s']:.2f}" + (" (extrapolated)" if r["flat_boost_extrapolated"] else ""),
          f"{r['ivf_boost_s']:.2f}", f"{r['ivf_nlist']}/{r['ivf_nprobe']}", f"{r['ivf_recall_at_10']:.3f}"]
         for r in rows])
    write_text(RESULTS / f"{args.name}.md", table + "\n")
    print(table)


if __name__ == "__main__":
    main()
