"""Hardness bookkeeping at corpus scale: the Ray hardness actor's update latency (p50, p99) and
throughput, plus the in-process store's update and epoch-draw cost, at N = 10^6 and 10^7.

    python -m benchmarks.hardness_scale [--sizes 1000000 10000000]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from hamr_dist.sampling.hardness import InMemoryHardness

from .common import RESULTS, environment, md_table, write_json, write_text
from .ray_overhead import actor_benchmark


def in_process(n: int, batch: int = 32, calls: int = 2000) -> dict:
    store, rng = InMemoryHardness(n), np.random.default_rng(0)
    idx = rng.integers(0, n, (calls, batch))
    w = rng.uniform(0.1, 8, (calls, batch)).astype(np.float32)
    times = []
    for i in range(calls):
        t = time.perf_counter()
        store.update(idx[i], w[i])
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    store.draw(epoch=1, seed=0, ratio=1.2, tau=0.7, lam=0.7)
    return {"update_p50_s": float(np.percentile(times, 50)), "update_p99_s": float(np.percentile(times, 99)),
            "epoch_draw_s": time.perf_counter() - t}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--num-cpus", type=int, default=2)
    args = p.parse_args(argv)
    import ray
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    t0 = time.time()
    try:
        rows = [{"n": n, "actor": actor_benchmark(n=n, rtt_calls=300, submit_calls=2000),
                 "in_process": in_process(n)} for n in args.sizes]
    finally:
        ray.shutdown()
    res = {"config": vars(args), "environment": environment(), "rows": rows,
           "wall_time_s": round(time.time() - t0, 1)}
    write_json(RESULTS / "hardness_scale.json", res)
    ms = lambda s: f"{1e3 * s:.2f}"
    table = md_table(
        ["N", "actor submit p50/p99 (ms)", "actor round trip p50/p99 (ms)", "actor throughput (updates/s)",
         "in-process update p50/p99 (ms)", "epoch draw (s)"],
        [[r["n"], f"{ms(r['actor']['submit_s']['p50'])} / {ms(r['actor']['submit_s']['p99'])}",
          f"{ms(r['actor']['round_trip_s']['p50'])} / {ms(r['actor']['round_trip_s']['p99'])}",
          f"{r['actor']['throughput']['updates_per_s']:.0f}",
          f"{ms(r['in_process']['update_p50_s'])} / {ms(r['in_process']['update_p99_s'])}",
          f"{r['in_process']['epoch_draw_s']:.2f}"] for r in rows])
    write_text(RESULTS / "hardness_scale.md", table + "\n")
    print(table)


if __name__ == "__main__":
    main()
