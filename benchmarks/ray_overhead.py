"""What Ray costs: step time of 1 Ray worker vs the in-process loop, 2 workers vs 1, and the
hardness actor's update latency and throughput.

    python -m benchmarks.ray_overhead            # frozen-encoder + full fine-tuning configs
    python -m benchmarks.ray_overhead --quick    # frozen-encoder config only

Step time is the median, over epochs, of the per-epoch median time between two successive
hardness updates of rank 0 (one update per step, so that is one training step including the
hardness submission and, with 2 workers, the gradient all-reduces). Every run uses one torch
thread per process (as each Ray worker does), so "1 worker vs in-process" isolates Ray.
Ray's start-up (worker processes, ~15 s here) is reported separately as the run's wall time.

Writes ``benchmarks/results/ray_overhead.json``: hardware, library versions, git commit,
configs, medians, ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import environment

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "ray_overhead.json"

CONFIGS = {
    # head-only training on cached features: steps of a few ms, where per-step overhead shows
    "frozen": dict(method="hamr", freeze_encoder=True, max_train_samples=1200,
                   max_eval_samples=200, num_train_epochs=3, per_device_train_batch_size=32,
                   seed=11, progress=False),
    # the second-order step through the whole MiniLM encoder (meta scope all): ~1 s steps
    "full": dict(method="hamr", freeze_encoder=False, meta_scope="all", max_train_samples=80,
                 max_eval_samples=40, num_train_epochs=1, per_device_train_batch_size=8,
                 max_seq_length=32, seed=11, progress=False),
}


def _median(xs):
    xs = [x for x in xs if x is not None]
    return float(statistics.median(xs)) if xs else None


def _pct(xs, q):
    return float(np.percentile(np.asarray(xs), q)) if len(xs) else None


def in_process(cfg):
    """Step times of the plain loop, with the same Instrumented store the Ray path uses."""
    import torch

    from hamr_dist.distributed.trainer import Instrumented
    from hamr_dist.sampling.hardness import InMemoryHardness
    from hamr_dist.train.loop import Runtime, train
    from hamr_dist.train.setup import build
    torch.set_num_threads(1)
    s = build(cfg)
    store = Instrumented(InMemoryHardness(len(s.train.batches), gamma=s.cfg.gamma))
    per_epoch = []
    rt = Runtime(hardness=store, progress=False,
                 report=lambda rec, state: per_epoch.append(_median(store.step_times())))
    t0 = time.perf_counter()
    res = train(cfg, rt, setup=s)
    return {"step_time_s": _median(per_epoch), "per_epoch_step_time_s": per_epoch,
            "wall_s": round(time.perf_counter() - t0, 2),
            "test_macro_f1": res.metrics["test"]["macro_f1"]}


def with_ray(cfg, workers: int):
    import dataclasses

    from hamr_dist.distributed.trainer import train_distributed
    tmp = Path(tempfile.mkdtemp(prefix="hamr-bench-"))
    c = dataclasses.replace(cfg, num_workers=workers, output_dir=str(tmp / "out"),
                            storage_path=str(tmp / "ray"), run_name="bench")
    t0 = time.perf_counter()
    m = train_distributed(c).metrics
    epochs = m["ray"]["epochs"]
    rank0 = [e["step_time_s"][0] for e in epochs]
    all_ranks = [e["step_time_s"] for e in epochs]
    return {"step_time_s": _median(rank0), "per_epoch_step_time_s": rank0,
            "per_epoch_per_rank_step_time_s": all_ranks,
            "wall_s": round(time.perf_counter() - t0, 2),
            "test_macro_f1": m["test"]["macro_f1"],
            "hardness_actor": {k: m["ray"].get("hardness_actor", {}).get(k)
                               for k in ("updates", "samples", "apply_s")}}


def step_benchmark(name: str, cfg_kw: dict, out_root: Path) -> dict:
    from hamr_dist.config import TrainConfig
    cfg = TrainConfig(output_dir=str(out_root / name / "inproc"), **cfg_kw)
    print(f"[{name}] in-process ...", flush=True)
    local = in_process(cfg)
    print(f"[{name}] 1 Ray worker ...", flush=True)
    one = with_ray(cfg, 1)
    print(f"[{name}] 2 Ray workers ...", flush=True)
    two = with_ray(cfg, 2)
    bs = cfg.per_device_train_batch_size
    out = {"config": cfg_kw, "in_process": local, "ray_1_worker": one, "ray_2_workers": two}
    if local["step_time_s"] and one["step_time_s"]:
        out["ratio_1_worker_vs_in_process"] = one["step_time_s"] / local["step_time_s"]
    if one["step_time_s"] and two["step_time_s"]:
        out["ratio_2_vs_1_worker_step_time"] = two["step_time_s"] / one["step_time_s"]
        out["samples_per_s"] = {"in_process": bs / local["step_time_s"],
                                "ray_1_worker": bs / one["step_time_s"],
                                "ray_2_workers": 2 * bs / two["step_time_s"]}
        out["speedup_2_vs_1_worker_throughput"] = (out["samples_per_s"]["ray_2_workers"]
                                                   / out["samples_per_s"]["ray_1_worker"])
    return out


def actor_benchmark(n: int = 100_000, batch: int = 32, rtt_calls: int = 500,
                    submit_calls: int = 3000) -> dict:
    """Update latency of the hardness actor: the non-blocking submission a worker pays per
    step, the blocking round trip, and sustained throughput (submissions until applied)."""
    import ray

    from hamr_dist.distributed.actors import HardnessClient, create_hardness_actor
    a = create_hardness_actor(f"bench-{os.getpid()}")
    try:
        rng = np.random.default_rng(0)
        idx = [rng.integers(0, n, batch) for _ in range(max(rtt_calls, submit_calls))]
        w = [rng.uniform(0.1, 8, batch).astype(np.float32) for _ in idx]
        gen = ray.get(a.begin.remote(n, 0.99, 1))
        for i in range(50):                                   # warm-up
            ray.get(a.update.remote(gen, 0, i, idx[i], w[i]))
        rtt = []
        for i in range(rtt_calls):
            t = time.perf_counter()
            ray.get(a.update.remote(gen, 0, 50 + i, idx[i], w[i]))
            rtt.append(time.perf_counter() - t)
        gen = ray.get(a.begin.remote(n, 0.99, 1))            # fresh session for the client
        c = HardnessClient(a, gen, 0)
        submit = []
        t0 = time.perf_counter()
        for i in range(submit_calls):
            t = time.perf_counter()
            c.update(idx[i], w[i])
            submit.append(time.perf_counter() - t)
        c.hardness()                                          # waits until all are applied
        total = time.perf_counter() - t0
        info = ray.get(a.info.remote())
        return {"n": n, "batch": batch,
                "round_trip_s": {"p50": _pct(rtt, 50), "p99": _pct(rtt, 99), "calls": rtt_calls},
                "submit_s": {"p50": _pct(submit, 50), "p99": _pct(submit, 99),
                             "calls": submit_calls},
                "throughput": {"updates_per_s": submit_calls / total,
                               "samples_per_s": submit_calls * batch / total,
                               "seconds": total},
                "actor_apply_s_per_update": info["apply_s"] / max(1, info["updates"])}
    finally:
        ray.kill(a)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="frozen-encoder config only")
    p.add_argument("--out", default=str(RESULTS), help=f"JSON output (default {RESULTS})")
    p.add_argument("--num-cpus", type=int, default=4, help="logical CPUs of the local Ray")
    args = p.parse_args(argv)

    import ray
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HAMR_MLFLOW", "0")      # measure Ray, not experiment tracking
    load_before = os.getloadavg()
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False,
             log_to_driver=False)
    out_root = Path(tempfile.mkdtemp(prefix="hamr-bench-out-"))
    t0 = time.time()
    try:
        report = {"benchmark": "ray_overhead", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                  **environment(), "torch_threads_per_process": 1,
                  "env": {k: os.environ.get(k) for k in ("HAMR_MLFLOW", "HAMR_CACHE")},
                  "method": "median over epochs of rank 0's per-epoch median step time"}
        report["steps"] = {}
        for name in (["frozen"] if args.quick else ["frozen", "full"]):
            report["steps"][name] = step_benchmark(name, CONFIGS[name], out_root)
        print("hardness actor ...", flush=True)
        report["hardness_actor"] = actor_benchmark()
    finally:
        ray.shutdown()
    report["load_average"] = {"before": load_before, "after": os.getloadavg()}
    report["total_s"] = round(time.time() - t0, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    summary = {k: {x: v.get(x) for x in ("ratio_1_worker_vs_in_process",
                                         "ratio_2_vs_1_worker_step_time",
                                         "speedup_2_vs_1_worker_throughput")}
               | {"step_ms": {r: round(1000 * v[r]["step_time_s"], 2)
                              for r in ("in_process", "ray_1_worker", "ray_2_workers")}}
               for k, v in report["steps"].items()}
    ha = report["hardness_actor"]
    print(json.dumps({"steps": summary,
                      "hardness_update_round_trip_ms": {q: round(1000 * ha["round_trip_s"][q], 3)
                                                        for q in ("p50", "p99")},
                      "hardness_update_submit_ms": {q: round(1000 * ha["submit_s"][q], 3)
                                                    for q in ("p50", "p99")},
                      "hardness_updates_per_s": round(ha["throughput"]["updates_per_s"], 1)},
                     indent=2))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
