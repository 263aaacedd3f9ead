"""Hardness bookkeeping at corpus scale: the Ray hardness actor's update latency (p50, p99) and
throughput, plus the in-process store's update and epoch-draw cost, at N = 10^6 and 10^7;
``--throughput``: sustained updates/s with many simulated senders for hardness shards x steps
per message (``distributed/hardness_shards.py``), with where the time goes.

    python -m benchmarks.hardness_scale [--sizes 1000000 10000000]
    python -m benchmarks.hardness_scale --throughput --senders 8 32 --configs 1x1 1x8 2x8 4x8
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from hamr_dist.sampling.hardness import InMemoryHardness

from .common import RESULTS, environment, environment_md, md_table, write_json, write_text
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


def throughput(args) -> dict:
    """Every sender is one rank of a ``senders``-rank run (a Ray actor, like a training
    worker); all send ``steps`` updates of ``batch`` indices as fast as they can, then read h,
    which waits until everything is applied. Configs run interleaved, ``repeats`` times."""
    import os

    import ray

    from hamr_dist.distributed.hardness_shards import (ShardedHardnessClient,
                                                       create_hardness_shards)

    @ray.remote(num_cpus=0)
    class Sender:
        def run(self, shards, gens, rank, steps, batch_steps, n, batch, go):
            rng = np.random.default_rng(rank)
            idx = rng.integers(0, n, (steps, batch))
            w = rng.uniform(0.1, 8, (steps, batch)).astype(np.float32)
            c = ShardedHardnessClient(shards, gens, rank, batch_steps=batch_steps)
            while time.time() < go:
                time.sleep(0.001)
            c0 = time.process_time()
            for i in range(steps):
                c.update(idx[i], w[i])
            sent, cpu = time.time(), time.process_time() - c0
            c.hardness()
            return {"end": time.time(), "sent": sent, "send_cpu_s": cpu}

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
             log_to_driver=False)
    rows = []
    try:
        for senders in args.senders:
            pool = [Sender.remote() for _ in range(senders)]
            for rep in range(args.repeats):
                for batch, cfg in [(b, c) for b in args.batches for c in args.configs]:
                    shards, batch_steps = map(int, cfg.split("x"))
                    sh = create_hardness_shards(f"tp-{senders}-{cfg}-{rep}", args.n, shards)
                    gens = sh.begin(0.99, senders)
                    go = time.time() + 2.0                       # every sender starts together
                    steps = args.total_updates // senders
                    out = ray.get([p.run.remote(sh, gens, r, steps, batch_steps, args.n,
                                                batch, go) for r, p in enumerate(pool)])
                    info = sh.info()
                    sh.kill()
                    elapsed = max(o["end"] for o in out) - go
                    rows.append({
                        "senders": senders, "batch": batch, "shards": shards,
                        "batch_steps": batch_steps,
                        "repeat": rep, "updates": senders * steps, "seconds": elapsed,
                        "updates_per_s": senders * steps / elapsed,
                        "send_s": max(o["sent"] for o in out) - go,
                        "send_cpu_s": sum(o["send_cpu_s"] for o in out),
                        "messages": sum(i["messages"] for i in info),
                        "actor_apply_s": [round(i["apply_s"], 3) for i in info],
                        "actor_busy_s": [round(i["busy_s"], 3) for i in info],
                        "applied": [i["updates"] for i in info]})
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            for p in pool:
                ray.kill(p)
    finally:
        ray.shutdown()
    return {"rows": rows}


def render_throughput(res) -> str:
    groups = {}
    for r in res["rows"]:
        groups.setdefault((r["senders"], r["batch"], r["shards"], r["batch_steps"]), []).append(r)
    rows = []
    for (senders, batch, shards, k), xs in groups.items():
        med = lambda key: float(np.median([x[key] for x in xs]))
        busy = np.median([x["actor_busy_s"] for x in xs], axis=0)
        apply = np.median([x["actor_apply_s"] for x in xs], axis=0)
        rows.append([senders, batch, shards, k, xs[0]["updates"], f"{med('updates_per_s'):,.0f}",
                     f"{med('seconds'):.2f}", f"{med('send_s'):.2f}", f"{med('send_cpu_s'):.2f}",
                     int(med("messages")), ", ".join(f"{x:.2f}" for x in busy),
                     ", ".join(f"{x:.2f}" for x in apply)])
    c = res["config"]
    return "\n".join([
        f"# Hardness updates: sustained throughput with simulated senders (N = {c['n']:,}, "
        f"{c['total_updates']} updates split over the senders, median of {c['repeats']} "
        "interleaved repeats)", "",
        md_table(["senders", "indices per step", "shards", "steps per message", "updates", "updates/s",
                  "seconds", "all sent after (s)", "senders' CPU sending (s, sum)",
                  "messages (all shards)", "actor busy (s, per shard)",
                  "of which applying (s, per shard)"], rows), "",
        "Seconds: from the common start until the last sender's read of h (which waits until "
        "every update is applied). Steps per message: K, the client's --hardness-batch-steps; "
        "with S shards a worker sends each shard its parts of S x K steps at once (one Ray call "
        "per K steps on average). Actor busy: wall time inside update messages (awaits "
        "included), applying: the store update itself (wall time; the shards share the cores "
        "with the senders).", ""])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--num-cpus", type=int, default=2)
    p.add_argument("--throughput", action="store_true",
                   help="sustained updates/s with simulated senders, shards x steps per message")
    p.add_argument("--senders", type=int, nargs="+", default=[8, 32])
    p.add_argument("--configs", nargs="+", default=["1x1", "1x8", "2x8", "4x8", "1x32", "4x32"],
                   help="SHARDSxSTEPS_PER_MESSAGE")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--total-updates", type=int, default=3200,
                   help="updates of all senders together (each sends its share)")
    p.add_argument("--batches", type=int, nargs="+", default=[32, 2048],
                   help="indices per step (a worker's batch), one measurement each")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--name", default="hardness_throughput")
    args = p.parse_args(argv)
    if args.throughput:
        t0 = time.time()
        res = {"config": vars(args), "environment": environment(), **throughput(args)}
        res["wall_time_s"] = round(time.time() - t0, 1)
        write_json(RESULTS / f"{args.name}.json", res)
        md = render_throughput(res) + "\n## Provenance\n\n" + environment_md(res["environment"]) + "\n"
        write_text(RESULTS / f"{args.name}.md", md)
        print(md)
        return
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
