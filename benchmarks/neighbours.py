"""Neighbour-boost time for exact and approximate (IVF, IVF-PQ) FAISS indexes, with recall@10 of
the approximate ones against exact (synthetic clustered embeddings, d = 384, 20 % hard, k = 10)
and the memory each index holds.

    python -m benchmarks.neighbours --sizes 100000 1000000 --nlist 1000 --nprobes 8 32
    python -m benchmarks.neighbours --kinds ivf ivfpq --pq-m 48 96 --sizes 100000

Exact search at N = 10^6 costs 2*10^5 queries x 10^6 rows; on a small CPU it would take most
of an hour, so above --exact-query-cap queries the exact time is measured on a random sample
of the hard queries and scaled linearly (search cost is linear in the number of queries); the
result file says when that happened. Recall is always computed on the sampled queries.
Index build times are reported apart from the boost: the embeddings of a run do not change,
so an index is built once and searched every F epochs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from hamr_dist.sampling.neighbors import (_rerank, build_index, hard_indices, load_embeddings,
                                         neighbour_boost, normalize, recall_at_k)

from .common import RESULTS, environment, environment_footer, environment_md, md_table, save_png, write_json, write_text


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
    if args.embeddings:        # real embeddings (a .npy, memory-mapped), in memory as float32
        emb = normalize(load_embeddings(args.embeddings))
        n = len(emb)
    else:
        emb = clustered(n, args.dim, max(10, n // 1000), seed=n)
    h = rng.random(n).astype(np.float32)
    q = hard_indices(h, args.hard_ratio)
    sample = q if len(q) <= args.exact_query_cap else rng.choice(q, args.exact_query_cap, replace=False)
    row = {"n": n, "hard_queries": int(len(q)), "sampled_queries": int(len(sample))}

    t = time.perf_counter()
    flat = build_index(emb, kind="flat")
    row["flat_build_s"] = time.perf_counter() - t
    t_exact, exact_ids = timed(lambda: flat.search(emb[sample], args.k + 1)[1], args.repeats)
    row["flat_boost_extrapolated"] = len(sample) < len(q)
    if row["flat_boost_extrapolated"]:
        row["flat_boost_s"] = t_exact * len(q) / len(sample)
    else:
        row["flat_boost_s"], _ = timed(lambda: neighbour_boost(flat, emb, h, args.hard_ratio, args.k),
                                      args.repeats)

    row["flat_index_mib"] = index_mib(flat)
    row["ivf"] = []
    variants = [(kind, None) for kind in args.kinds if kind != "ivfpq"]
    variants += [("ivfpq", m) for m in (args.pq_m or [None]) if "ivfpq" in args.kinds]
    for kind, pq_m in variants:
        t = time.perf_counter()
        ivf = build_index(emb, kind=kind, nlist=args.nlist, pq_m=pq_m)
        build_s = time.perf_counter() - t
        default_nprobe = int(ivf.nprobe)
        reranks = (args.rerank or [0]) if kind == "ivfpq" else [0]
        for nprobe, rr in [(p, r) for p in (args.nprobes or [default_nprobe]) for r in reranks]:
            label = kind if kind != "ivfpq" else f"ivfpq m={ivf.pq.M}" + (f", rerank {rr}" if rr > 1 else "")
            ivf.nprobe = nprobe
            boost_s, _ = timed(lambda ivf=ivf, rr=rr: neighbour_boost(ivf, emb, h, args.hard_ratio, args.k, rerank=rr),
                               args.repeats)
            x = emb[sample]
            approx_ids = ivf.search(x, (args.k + 1) * max(1, rr))[1]
            if rr > 1:
                approx_ids = _rerank(x, approx_ids, emb, args.k + 1)
            row["ivf"].append({"index": label, "nlist": int(ivf.nlist), "nprobe": nprobe, "rerank": rr,
                               "default": nprobe == default_nprobe, "build_s": build_s,
                               "boost_s": boost_s, "index_mib": index_mib(ivf),
                               "speedup_vs_exact": row["flat_boost_s"] / boost_s,
                               "recall_at_10": recall_at_k(approx_ids[:, 1:], exact_ids[:, 1:])})
            print(f"N={n} {label} nprobe={nprobe}: {boost_s:.2f} s, recall@10 "
                  f"{row['ivf'][-1]['recall_at_10']:.3f}", file=sys.stderr)
        del ivf
    return row


def index_mib(index) -> float:
    """What the index holds in memory, as FAISS serialises it (vectors or codes, ids, lists)."""
    import faiss
    return faiss.serialize_index(index).nbytes / 2**20


def render_md(res) -> str:
    rows = []
    for r in res["rows"]:
        exact = f"{r['flat_boost_s']:.2f}" + (" (extrapolated)" if r["flat_boost_extrapolated"] else "")
        for v in r["ivf"]:
            rows.append([r["n"], r["hard_queries"], exact, f"{r['flat_index_mib']:,.0f}", v["index"],
                         f"{v['nlist']}/{v['nprobe']}", f"{v['build_s']:.1f}", f"{v['boost_s']:.2f}",
                         f"{v['speedup_vs_exact']:.1f}x", f"{v['recall_at_10']:.3f}",
                         f"{v['index_mib']:,.0f}"])
    c = res["config"]
    return "\n".join([
        f"# Neighbour boost: exact vs IVF and IVF-PQ ({'embeddings ' + c['embeddings'] if c.get('embeddings') else 'synthetic clustered, d=' + str(c['dim'])}, "
        f"k={c['k']}, hard ratio {c['hard_ratio']}, median of {c['repeats']} repeat(s))", "",
        md_table(["N", "hard queries", "exact boost (s)", "exact index (MiB)", "approximate index",
                  "nlist/nprobe", "build (s)", "boost (s)", "speed-up", "recall@10 vs exact",
                  "index (MiB)"], rows), "",
        f"Exact times marked extrapolated were measured on {c['exact_query_cap']} sampled hard "
        "queries and scaled linearly; recall is measured on the same sampled queries.", "",
        "## Provenance", "", environment_md(res["environment"]),
        f"- wall time: {res['wall_time_s']:.0f} s; command: `{res['command']}`", ""])


def render_png(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ns = [r["n"] for r in res["rows"]]
    ax.plot(ns, [r["flat_boost_s"] for r in res["rows"]], "o-k", label="exact (flat)")
    for key in sorted({(v["index"], v["nprobe"]) for r in res["rows"] for v in r["ivf"]}):
        pts = [(r["n"], v) for r in res["rows"] for v in r["ivf"] if (v["index"], v["nprobe"]) == key]
        ax.plot([p[0] for p in pts], [p[1]["boost_s"] for p in pts], "s--",
                label=f"{key[0]} nprobe={key[1]}")
        for n, v in pts:
            ax.annotate(f"R={v['recall_at_10']:.2f}", (n, v["boost_s"]), fontsize=7,
                        textcoords="offset points", xytext=(4, -10))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N (indexed embeddings)")
    ax.set_ylabel("neighbour boost time (s)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("kNN boost, 20 % hard queries, k=10 (R = recall@10 vs exact)", fontsize=9)
    fig.text(0.01, -0.03, environment_footer(res["environment"]), fontsize=7)
    save_png(fig, path, {k: res[k] for k in ("config", "environment", "wall_time_s", "command")})
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--hard-ratio", type=float, default=0.2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--exact-query-cap", type=int, default=20_000)
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default: the package's 4*sqrt(N))")
    p.add_argument("--nprobes", type=int, nargs="+", default=None,
                   help="IVF lists searched per query, one measurement each (default: the package's)")
    p.add_argument("--kinds", nargs="+", default=["ivf"], choices=["ivf", "ivfpq"],
                   help="approximate indexes to measure against exact")
    p.add_argument("--pq-m", type=int, nargs="+", default=None,
                   help="IVF-PQ bytes per vector, one measurement each (default: the package's d/8)")
    p.add_argument("--rerank", type=int, nargs="+", default=None,
                   help="IVF-PQ: candidates re-ranked by exact inner product, R*(k+1) per query "
                        "(one measurement each; default: none)")
    p.add_argument("--embeddings", default=None,
                   help="a [N, d] .npy of real embeddings to measure on instead of synthetic ones "
                        "(--sizes is then ignored)")
    p.add_argument("--name", default="neighbours")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    t0 = time.time()
    rows = [one_size(n, args, rng) for n in (args.sizes if not args.embeddings else [0])]
    res = {"config": vars(args), "environment": environment(), "rows": rows,
           "wall_time_s": round(time.time() - t0, 1),
           "command": "python -m benchmarks.neighbours " + " ".join(argv if argv is not None else sys.argv[1:])}
    write_json(RESULTS / f"{args.name}.json", res)
    write_text(RESULTS / f"{args.name}.md", render_md(res))
    render_png(res, RESULTS / f"{args.name}.png")
    print(render_md(res))


if __name__ == "__main__":
    main()
