"""The meta step's cost levers from evidence: dev/test macro-F1 of HAMR at scope head with a
smaller meta batch, a meta update every k steps, a reused meta-batch encoder output or the fused
forward, beside the step-time ratio of each (``benchmarks.step_time --options``).

    python -m benchmarks.meta_cost                       # runs (resumable), then the summary
    python -m benchmarks.meta_cost --no-run              # only re-summarise the recorded runs
    python -m benchmarks.meta_cost --variants head head-every4 --seeds 1 2 3 --datasets sst5

A variant is ``head`` (the plain meta step) or ``head-<options>`` with the option names of
``benchmarks.step_time`` (``mbs8``, ``every4``, ``reuse4``, ``fuse``, combined with ``-``).
Every run is full fine-tuning with the capped CPU budget of ``benchmarks.meta_scope`` (600
training samples, 500 dev/test, 3 epochs, sequence length 64, lr 1e-4), seeds outermost so that
an interrupted sweep leaves every variant with the same seeds; the JSON is rewritten after every
run. The recommendation is the rule of ``benchmarks.meta_scope``, on dev only: the cheapest
variant (step ratio) whose dev mean is within max(tolerance, its std) of the best variant's on
every dataset. Per-seed differences to ``head`` are reported too (same seed: same data order,
meta set and initial weights, so seed-to-seed spread cancels).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks.common import (RESULTS, environment, environment_md, fmt_ms, md_table, mean_std,
                               now_iso, read_json, write_json, write_text)
from benchmarks.meta_scope import recommend, step_ratios
from benchmarks.quality import resolve_dataset
from benchmarks.step_time import option_config

BASE = "head"
# the plain meta step, whatever the package's defaults for the levers: each variant states its own
PLAIN = {"meta_every": 1, "meta_reuse": 1, "meta_fuse": False}


def variant_options(variant: str) -> dict:
    if variant == BASE:
        return {}
    if not variant.startswith(BASE + "-"):
        raise SystemExit(f"variant {variant!r}: use head or head-<options> (e.g. head-every4)")
    return option_config(variant[len(BASE) + 1:])


def make_config(args, path: str | None, variant: str, seed: int, out: str):
    from hamr_dist.config import TrainConfig
    return TrainConfig(data=path, method="hamr", meta_scope=BASE, freeze_encoder=False, seed=seed,
                       num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
                       learning_rate=args.lr, max_train_samples=args.max_train_samples,
                       max_eval_samples=args.max_eval_samples, max_seq_length=args.max_seq_length,
                       cache_dir=args.cache_dir, output_dir=out, progress=False, mlflow=False,
                       **(PLAIN | variant_options(variant)))


def run_one(args, name: str, path: str | None, variant: str, seed: int) -> dict:
    out = tempfile.mkdtemp(prefix=f"meta-cost-{variant}-{seed}-")
    cfg = make_config(args, path, variant, seed, out)
    rec = {"key": f"{name}|{variant}|{seed}", "dataset": name, "variant": variant, "seed": seed,
           "options": variant_options(variant), "started": now_iso()}
    t0, cpu0 = time.time(), time.process_time()
    try:
        from hamr_dist.train.loop import train
        m = train(cfg).metrics
        rec.update(status="ok", dev=m["dev"]["macro_f1"], test=m["test"]["macro_f1"],
                   best_epoch=m["best_epoch"], skipped_steps=m.get("skipped_steps"),
                   history=[{k: h.get(k) for k in ("epoch", "loss", "dev_macro_f1", "weight_mean",
                                                   "weight_std")} for h in m["history"]],
                   config=cfg.resolved(m["task"]).to_dict())
    except Exception as e:   # noqa: BLE001 - one failed run must not stop the sweep
        rec.update(status="error", error=f"{type(e).__name__}: {e}",
                   traceback=traceback.format_exc())
    finally:
        rec["wall_time_s"] = round(time.time() - t0, 1)
        rec["cpu_time_s"] = round(time.process_time() - cpu0, 1)
        rec["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        shutil.rmtree(out, ignore_errors=True)
    return rec


def summarise(doc: dict, args) -> dict:
    ok = [r for r in doc["runs"] if r.get("status") == "ok"]
    datasets = list(doc["datasets"])
    per = {}
    for v in doc["variants"]:
        for d in datasets:
            rs = [r for r in ok if r["variant"] == v and r["dataset"] == d]
            if not rs:
                continue
            dev, test = mean_std(r["dev"] for r in rs), mean_std(r["test"] for r in rs)
            per.setdefault(v, {})[d] = {"dev_mean": dev[0], "dev_std": dev[1], "test_mean": test[0],
                                        "test_std": test[1], "seeds": sorted(r["seed"] for r in rs),
                                        "wall_mean_s": mean_std(r["wall_time_s"] for r in rs)[0]}
    paired = {}
    for v in doc["variants"]:
        if v == BASE:
            continue
        for d in datasets:
            for split in ("dev", "test"):
                a = {r["seed"]: r[split] for r in ok if r["variant"] == v and r["dataset"] == d}
                b = {r["seed"]: r[split] for r in ok if r["variant"] == BASE and r["dataset"] == d}
                common = sorted(set(a) & set(b))
                m, sd = mean_std(a[s] - b[s] for s in common)
                paired.setdefault(v, {}).setdefault(d, {})[split] = {"mean": m, "std": sd,
                                                                     "seeds": len(common)}
    ratios, src = step_ratios(args.step_time)
    # complete variants only: every dataset with every seed
    done = [v for v in doc["variants"] if v in per and all(
        d in per[v] and len(per[v][d]["seeds"]) == len(doc["seeds"]) for d in datasets)]
    rec = recommend(per, done, datasets, ratios, args.tolerance)
    return {"per_variant": per, "paired_vs_head": paired, "step_ratio_to_ce": ratios,
            "step_time_source": src, "recommendation": rec, "tolerance_points": args.tolerance,
            "complete_variants": done}


def render_md(doc: dict) -> str:
    s, ds = doc["summary"], list(doc["datasets"])
    rows = []
    for v in doc["variants"]:
        p = s["per_variant"].get(v, {})
        r = s["step_ratio_to_ce"].get(v)
        rows.append([v, ", ".join(f"{k}={x}" for k, x in doc["options"][v].items()) or "-"]
                    + [fmt_ms(p.get(d, {}).get("dev_mean"), p.get(d, {}).get("dev_std")) for d in ds]
                    + [fmt_ms(p.get(d, {}).get("test_mean"), p.get(d, {}).get("test_std")) for d in ds]
                    + ["-" if r is None else f"{r:.2f}"]
                    + [" / ".join(str(len(p[d]["seeds"])) for d in ds if d in p) or "0"])
    src = s["step_time_source"] or {}
    rec = s["recommendation"]
    L = [f"# Meta-step cost levers: quality beside step time (`{doc['name']}`)", "",
         f"HAMR at meta scope head, full fine-tuning, macro-F1 in points, mean ± std over seeds "
         f"{doc['seeds']}; budget: " + ", ".join(f"{k}={v}" for k, v in doc["budget"].items()), "",
         md_table(["variant", "options"] + [f"dev {d}" for d in ds] + [f"test {d}" for d in ds]
                  + [f"step / CE ({src.get('device', '?')}, batch {src.get('batch_size', '?')}, "
                     f"seq {src.get('seq_len', '?')})", "seeds done"], rows), ""]
    pr = s["paired_vs_head"]
    if pr:
        L += [f"Per-seed difference to `{BASE}` (points, mean ± std over seeds):", "",
              md_table(["variant"] + [f"{sp} {d}" for sp in ("dev", "test") for d in ds],
                       [[v] + [f"{fmt_ms(pr[v][d][sp]['mean'], pr[v][d][sp]['std'])} "
                               f"(n={pr[v][d][sp]['seeds']})" for sp in ("dev", "test") for d in ds]
                        for v in pr]), ""]
    L += [f"- step ratios from `{src.get('file', 'n/a')}` (medians of interleaved per-repeat "
          "ratios; every/reuse variants timed over a whole period)",
          (f"- recommendation (dev only): **{rec['scope']}**; within tolerance: "
           f"{', '.join(rec['candidates_within_tolerance'])}; rule: {rec['rule']} (tolerance "
           f"{s['tolerance_points']} points)") if rec else "- recommendation: not enough runs yet",
          "", "## Provenance", "", environment_md(doc["environment"]),
          f"- wall time of the runs: {sum(r['wall_time_s'] for r in doc['runs']) / 60:.1f} min "
          f"(load average at the end of each run in the JSON)", ""]
    return "\n".join(L)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.meta_cost",
                                description=__doc__.split("\n")[0])
    p.add_argument("--variants", nargs="+",
                   default=["head", "head-mbs8", "head-every4", "head-reuse4"])
    p.add_argument("--datasets", nargs="+", default=["sst5"])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-train-samples", type=int, default=600)
    p.add_argument("--max-eval-samples", type=int, default=500)
    p.add_argument("--max-seq-length", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--step-time", type=Path, default=RESULTS / "step_time_cpu.json")
    p.add_argument("--tolerance", type=float, default=1.0, help="points of dev macro-F1")
    p.add_argument("--name", default="meta_cost_cpu")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--no-run", action="store_true", help="only summarise the recorded runs")
    p.add_argument("--merge", nargs="*", type=Path, default=[],
                   help="result files of the same budget whose runs join this one (e.g. seeds "
                        "run in parallel under other --name)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    for v in args.variants:
        variant_options(v)                         # bad names fail before any run
    path = args.out_dir / f"{args.name}.json"
    old = read_json(path) or {}
    budget = {k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "max_train_samples",
                                            "max_eval_samples", "max_seq_length")}
    if old and old.get("budget") != budget:
        raise SystemExit(f"{path} was recorded with another budget ({old.get('budget')}); "
                         f"pass --name for a new file")
    runs = [r for r in old.get("runs", []) if r.get("status") == "ok"]
    seeds = sorted(set(old.get("seeds", [])) | set(args.seeds))
    variants = list(dict.fromkeys(old.get("variants", []) + args.variants))
    for other in map(read_json, args.merge):
        if not other or other.get("budget") != budget:
            raise SystemExit("--merge: a file is missing or was recorded with another budget")
        have = {r["key"] for r in runs}
        runs += [r for r in other["runs"] if r.get("status") == "ok" and r["key"] not in have]
        seeds = sorted(set(seeds) | set(other["seeds"]))
        variants = list(dict.fromkeys(variants + other["variants"]))
        old.setdefault("datasets", {}).update(other.get("datasets", {}))
    doc = {"name": args.name, "budget": budget, "seeds": seeds, "variants": variants,
           "options": {v: variant_options(v) for v in variants},
           "datasets": dict(old.get("datasets", {})), "runs": runs,
           "environment": environment()}
    done = {r["key"] for r in runs}
    resolved = [resolve_dataset(d) for d in args.datasets]
    for name, p in resolved:
        doc["datasets"][name] = {"path": p}

    def save():
        doc["updated"] = now_iso()
        doc["summary"] = summarise(doc, args)
        write_json(path, doc)
        write_text(args.out_dir / f"{args.name}.md", render_md(doc))

    if not args.no_run:
        for seed in args.seeds:
            for name, p in resolved:
                for v in args.variants:
                    if f"{name}|{v}|{seed}" in done:
                        continue
                    print(f"[meta_cost] {name} {v} seed {seed} ...", flush=True)
                    rec = run_one(args, name, p, v, seed)
                    doc["runs"] = [r for r in doc["runs"] if r["key"] != rec["key"]] + [rec]
                    print(f"[meta_cost]   {rec['status']} dev {rec.get('dev')} test "
                          f"{rec.get('test')} ({rec['wall_time_s']} s)", flush=True)
                    save()
    save()
    print(render_md(doc))
    return doc


if __name__ == "__main__":
    from benchmarks import quality
    quality.quiet_console("--verbose" in sys.argv)
    main()
