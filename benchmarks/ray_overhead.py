"""What Ray costs: step time of 1 Ray worker vs the in-process loop, 2 workers vs 1, and the
hardness actor's update latency and throughput.

    python -m benchmarks.ray_overhead            # frozen-encoder + full fine-tuning configs
    python -m benchmarks.ray_overhead --quick    # frozen-encoder config only
    python -m benchmarks.ray_overhead --quick --repeats 5

Step time is the median, over epochs, of the per-epoch median time between two successive
hardness updates of rank 0 (one update per step, so that is one training step including the
hardness submission and, with 2 workers, the gradient all-reduces). Every run uses one torch
thread per process (as each Ray worker does), so "1 worker vs in-process" isolates Ray.

Side by side: each repeat runs, in turn, the in-process loop with the in-memory store, the
in-process loop with the hardness *actor* behind the same client the workers use, one message
per step (what that message costs without Ray Train), 1 Ray Train worker as ``hamr train``
runs it, 1 worker with one hardness message per step (``--hardness-batch-steps 1``, the
default before 16), and 1 worker with Ray Train's own defaults for the controller's poll
interval and the preemption watcher (``trainer.ray_train_env``); ratios are taken per repeat
and reported as medians, so slow drifts of a shared machine cancel.

Start-up: the in-process run is split into setup (``build``: data, tokenizer, encoder,
features) and training; the Ray run into the phases of a timeline that rank 0 stamps
(``metrics["ray"]["workers"]``): driver start -> worker entered (actors, Ray Train controller,
worker process, process group) -> setup done (imports and ``build`` in the worker) -> training
done -> the driver has the result (final report and checkpoint, the controller noticing the
end, teardown).

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

RAY_VARIANTS = ("ray_1_worker", "ray_1_worker_per_step_messages",
                "ray_1_worker_ray_train_defaults")

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


# Ray Train's defaults, which trainer.ray_train_env changes unless the user set them
RAY_TRAIN_DEFAULTS = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2.0",
                      "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "1"}


def _median(xs):
    xs = [x for x in xs if x is not None]
    return float(statistics.median(xs)) if xs else None


def _pct(xs, q):
    return float(np.percentile(np.asarray(xs), q)) if len(xs) else None


def in_process(cfg, actor=None):
    """Step times of the plain loop, with the same Instrumented store the Ray path uses; with
    ``actor``, the store is the hardness actor behind the workers' client."""
    import ray
    import torch

    from hamr_dist.distributed.actors import HardnessClient
    from hamr_dist.distributed.trainer import Instrumented
    from hamr_dist.sampling.hardness import InMemoryHardness
    from hamr_dist.train.loop import Runtime, train
    from hamr_dist.train.setup import build
    import dataclasses
    torch.set_num_threads(1)
    # a fresh output folder per run (a run refuses another run's outputs)
    cfg = dataclasses.replace(cfg, output_dir=tempfile.mkdtemp(prefix="hamr-bench-inproc-"))
    t_setup = time.perf_counter()
    s = build(cfg)
    setup_s = time.perf_counter() - t_setup
    if actor is None:
        base = InMemoryHardness(len(s.train.batches), gamma=s.cfg.gamma)
    else:
        base = HardnessClient(actor, ray.get(actor.begin.remote(len(s.train.batches),
                                                                s.cfg.gamma, 1)), 0)
    store = Instrumented(base)
    per_epoch = []
    rt = Runtime(hardness=store, progress=False,
                 report=lambda rec, state: per_epoch.append(_median(store.step_times())))
    t0 = time.perf_counter()
    res = train(cfg, rt, setup=s)
    return {"step_time_s": _median(per_epoch), "per_epoch_step_time_s": per_epoch,
            "setup_s": round(setup_s, 2), "wall_s": round(time.perf_counter() - t0, 2),
            "test_macro_f1": res.metrics["test"]["macro_f1"]}


def timeline(m: dict) -> dict | None:
    """Start-up phases of a Ray run from the driver's start and rank 0's stamps (seconds)."""
    ray_info = m.get("ray", {})
    w = next((x for x in ray_info.get("workers", []) if x.get("rank") == 0), {})
    t0 = ray_info.get("driver_t0")
    if t0 is None or "t_worker_start" not in w:
        return None
    end = t0 + ray_info["driver_wall_time_s"]
    return {"to_worker_start_s": round(w["t_worker_start"] - t0, 2),
            "worker_setup_s": round(w["t_setup_done"] - w["t_worker_start"], 2),
            "train_s": round(w["t_train_done"] - w["t_setup_done"], 2),
            "finish_s": round(end - w["t_train_done"], 2)}


def with_ray(cfg, workers: int, env: dict | None = None, **changes):
    """A run with ``workers`` Ray Train workers; ``env``: variables set in the driver for it."""
    import dataclasses

    from hamr_dist.distributed.trainer import train_distributed
    tmp = Path(tempfile.mkdtemp(prefix="hamr-bench-"))
    c = dataclasses.replace(cfg, num_workers=workers, output_dir=str(tmp / "out"),
                            storage_path=str(tmp / "ray"), run_name="bench", **changes)
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    t0 = time.perf_counter()
    try:
        m = train_distributed(c).metrics
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    epochs = m["ray"]["epochs"]
    rank0 = [e["step_time_s"][0] for e in epochs]
    all_ranks = [e["step_time_s"] for e in epochs]
    return {"step_time_s": _median(rank0), "per_epoch_step_time_s": rank0,
            "per_epoch_per_rank_step_time_s": all_ranks,
            "wall_s": round(time.perf_counter() - t0, 2), "startup_timeline": timeline(m),
            "test_macro_f1": m["test"]["macro_f1"],
            "hardness_actor": {k: m["ray"].get("hardness_actor", {}).get(k)
                               for k in ("updates", "samples", "apply_s")}}


def step_benchmark(name: str, cfg_kw: dict, out_root: Path, repeats: int = 1,
                   diagnose: bool = False) -> dict:
    import ray

    from hamr_dist.config import TrainConfig
    from hamr_dist.distributed.actors import create_hardness_actor
    cfg = TrainConfig(output_dir=str(out_root / name / "inproc"), **cfg_kw)
    actor = create_hardness_actor(f"bench-inproc-{os.getpid()}")
    runs = {"in_process": [], "in_process_actor": [], "ray_1_worker": [],
            "ray_1_worker_per_step_messages": [], "ray_1_worker_ray_train_defaults": []}
    if diagnose:   # which epoch-boundary work slows the later epochs' steps?
        runs.update(ray_1_worker_no_knn=[], in_process_no_knn=[], ray_1_worker_last_ckpt=[])
    try:
        for rep in range(repeats):     # side by side: every variant once per repeat
            print(f"[{name}] repeat {rep + 1}/{repeats}: in-process ...", flush=True)
            runs["in_process"].append(in_process(cfg))
            print(f"[{name}] in-process, hardness actor ...", flush=True)
            runs["in_process_actor"].append(in_process(cfg, actor))
            print(f"[{name}] 1 Ray worker ...", flush=True)
            runs["ray_1_worker"].append(with_ray(cfg, 1))
            print(f"[{name}] 1 Ray worker, one hardness message per step ...", flush=True)
            runs["ray_1_worker_per_step_messages"].append(with_ray(cfg, 1,
                                                                   hardness_batch_steps=1))
            print(f"[{name}] 1 Ray worker, Ray Train's poll interval and preemption watcher ...",
                  flush=True)
            runs["ray_1_worker_ray_train_defaults"].append(with_ray(cfg, 1, env=RAY_TRAIN_DEFAULTS))
            if diagnose:
                import dataclasses
                print(f"[{name}] diagnosis: no neighbour actor, one checkpoint ...", flush=True)
                no_knn = dataclasses.replace(cfg, method="hamr-no-knn")
                runs["in_process_no_knn"].append(in_process(no_knn))
                runs["ray_1_worker_no_knn"].append(with_ray(no_knn, 1))
                runs["ray_1_worker_last_ckpt"].append(with_ray(cfg, 1, checkpoint_every=10_000))
    finally:
        ray.kill(actor)
    print(f"[{name}] 2 Ray workers ...", flush=True)
    two = with_ray(cfg, 2)
    bs = cfg.per_device_train_batch_size
    med = {k: _median(r["step_time_s"] for r in v) for k, v in runs.items()}
    out = {"config": cfg_kw, "repeats": repeats, "runs": runs, "ray_2_workers": two,
           "step_time_median_s": med,
           # kept under their old names: the first repeat's runs
           "in_process": runs["in_process"][0], "ray_1_worker": runs["ray_1_worker"][0]}
    base = [r["step_time_s"] for r in runs["in_process"]]
    out["ratio_vs_in_process_median"] = {
        k: _median(r["step_time_s"] / b for r, b in zip(v, base) if r["step_time_s"] and b)
        for k, v in runs.items() if k != "in_process"}
    # per epoch: in the committed runs the first epoch was at parity and the later ones not
    out["per_epoch_ratio_median"] = {
        k: [_median(r["per_epoch_step_time_s"][e] / b["per_epoch_step_time_s"][e]
                    for r, b in zip(v, runs["in_process"])
                    if e < len(r["per_epoch_step_time_s"]) and r["per_epoch_step_time_s"][e])
            for e in range(len(runs["in_process"][0]["per_epoch_step_time_s"]))]
        for k, v in runs.items() if k != "in_process"}
    if diagnose and runs["in_process_no_knn"]:
        out["ratio_no_knn_1_worker_vs_in_process_median"] = _median(
            a["step_time_s"] / b["step_time_s"]
            for a, b in zip(runs["ray_1_worker_no_knn"], runs["in_process_no_knn"]))
    out["ratio_1_worker_vs_in_process"] = out["ratio_vs_in_process_median"]["ray_1_worker"]
    out["startup_s"] = {
        "in_process_setup_plus_train": _median(r["setup_s"] + r["wall_s"] for r in runs["in_process"]),
        "in_process_setup": _median(r["setup_s"] for r in runs["in_process"]),
        **{f"{v}_total": _median(r["wall_s"] for r in runs[v]) for v in RAY_VARIANTS},
        **{f"{v}_timeline": {k: _median((r["startup_timeline"] or {}).get(k) for r in runs[v])
                             for k in ("to_worker_start_s", "worker_setup_s", "train_s",
                                       "finish_s")}
           for v in RAY_VARIANTS}}
    one = med["ray_1_worker"]
    if one and two["step_time_s"]:
        out["ratio_2_vs_1_worker_step_time"] = two["step_time_s"] / one
        out["samples_per_s"] = {"in_process": bs / med["in_process"], "ray_1_worker": bs / one,
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
    p.add_argument("--repeats", type=int, default=3,
                   help="side-by-side repeats of the 1-process / 1-worker comparison")
    p.add_argument("--diagnose", action="store_true",
                   help="also 1 worker without the neighbour actor (hamr-no-knn, against its own "
                        "in-process run) and with one checkpoint at the end instead of one per epoch")
    args = p.parse_args(argv)

    import ray
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HAMR_MLFLOW", "0")      # measure Ray, not experiment tracking
    load_before = os.getloadavg()
    for attempt in range(3):   # a loaded machine can miss Ray's fixed 30 s raylet start-up wait
        try:
            ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False,
                     log_to_driver=False)
            break
        except Exception as e:   # noqa: BLE001 - Ray raises a bare Exception here
            ray.shutdown()
            if attempt == 2:
                raise
            print(f"ray.init failed ({str(e).splitlines()[0]}); retrying", flush=True)
    out_root = Path(tempfile.mkdtemp(prefix="hamr-bench-out-"))
    t0 = time.time()
    try:
        report = {"benchmark": "ray_overhead", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                  **environment(), "torch_threads_per_process": 1,
                  "env": {k: os.environ.get(k) for k in ("HAMR_MLFLOW", "HAMR_CACHE")},
                  "method": "median over epochs of rank 0's per-epoch median step time"}
        report["steps"] = {}
        for name in (["frozen"] if args.quick else ["frozen", "full"]):
            report["steps"][name] = step_benchmark(name, CONFIGS[name], out_root, args.repeats,
                                                   args.diagnose)
        print("hardness actor ...", flush=True)
        report["hardness_actor"] = actor_benchmark()
    finally:
        ray.shutdown()
    report["load_average"] = {"before": load_before, "after": os.getloadavg()}
    report["total_s"] = round(time.time() - t0, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    summary = {k: {x: v.get(x) for x in ("ratio_vs_in_process_median",
                                         "ratio_2_vs_1_worker_step_time",
                                         "speedup_2_vs_1_worker_throughput", "startup_s")}
               | {"step_ms": {r: round(1000 * t, 2) for r, t in v["step_time_median_s"].items()
                              if t}}
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
