"""Quality benchmark: macro-F1 of HAMR, its ablations and the baselines, several seeds per dataset.

    python -m benchmarks.quality --tier probe                      # the full table (4 x 9 x 3)
    python -m benchmarks.quality --tier probe --datasets DIR ... --methods ce hamr --seeds 1
    python -m benchmarks.quality --tier finetune --max-train-samples 500 --epochs 1
    python -m benchmarks.quality --tier probe --resume             # skip runs already recorded

Tiers:
- ``probe``: frozen bundled encoder (``freeze_encoder=True``); encoder features and kNN
  embeddings are computed once per dataset (the "prepare" step, timed on its own) and cached
  under ``$HAMR_CACHE``; every run trains a head.
- ``finetune``: the whole encoder trains (``freeze_encoder=False``), meta scope as configured
  (default: the package default); meant to be capped with ``--max-train-samples``/``--epochs``
  on CPU.

Every method gets the same budget (epochs, batch size, learning rate, schedule). The model of
each run is the epoch with the best dev macro-F1; the test split is only evaluated once at the
end of a run. The best baseline of a dataset is chosen by its dev mean and reported on test.

Writes ``benchmarks/results/<name>.json`` (after every run, atomically: a crash loses nothing),
``<name>.md`` and ``<name>.png``; each records the hardware, library versions, git commit, the
full configs, seeds and wall times. A failed run is recorded with its error and the table
goes on; ``--resume`` keeps the successful runs already in the JSON whose config is unchanged.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

from benchmarks.common import (RESULTS, Stopwatch, code_fingerprint, environment,
                               environment_footer, environment_md, fmt_ms, md_table, mean_std,
                               now_iso, portable, read_json, save_png, write_json, write_text)

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
DEFAULT_DATASETS = ("sst5", "hurricane_irma_2017", "mit_restaurant", "tweetner7_2020")
SYNTHETIC = "synthetic"   # the built-in generated corpus (TrainConfig.data=None)
BASELINES = ("ce", "icf", "focal", "dice", "mwn", "lnr", "la")
ABLATIONS = (("full HAMR", "hamr"), ("w/o resampling", "hamr-no-resample"),
             ("w/o meta weights", "hamr-no-meta"), ("w/o kNN boost", "hamr-no-knn"))
ALL_METHODS = BASELINES + tuple(m for _, m in ABLATIONS) + ("hamr-cb", "hamr-la")
TIERS = {"probe": {"freeze_encoder": True}, "finetune": {"freeze_encoder": False}}
# config fields that do not change what a run computes (ignored when --resume compares configs)
VOLATILE = ("output_dir", "cache_dir", "progress")

log = logging.getLogger("benchmarks.quality")


# ------------------------------------------------------------------ datasets and configs

def resolve_dataset(spec: str) -> tuple[str, str | None]:
    """(display name, path or None for the synthetic corpus)."""
    if spec == SYNTHETIC:
        return SYNTHETIC, None
    from benchmarks.longtail import make_long_tail, parse
    if (lt := parse(spec)) is not None:       # e.g. sst5@lt100: a long-tailed copy
        base = resolve_dataset(lt[0])[1]
        return spec, str(make_long_tail(base, lt[1], natural=lt[2]))
    p = Path(spec)
    if not p.exists() and (SHARED_DATASETS / spec).exists():
        p = SHARED_DATASETS / spec
    return p.name or spec, str(p.resolve()) if p.exists() else spec


def parse_variants(specs) -> dict:
    """``LABEL=METHOD[:key=value,...]`` -> {label: (method, {field: value})}: a row of the table
    that runs ``METHOD`` with other options (values parsed as YAML scalars)."""
    import yaml
    out = {}
    for spec in specs or []:
        label, _, rest = spec.partition("=")
        method, _, opts = rest.partition(":")
        if not label or not method:
            raise SystemExit(f"--variant {spec!r}: expected LABEL=METHOD[:key=value,...]")
        kv = {}
        for item in filter(None, opts.split(",")):
            k, _, v = item.partition("=")
            kv[k.strip().replace("-", "_")] = yaml.safe_load(v)
        out[label] = (method, kv)
    return out


def make_config(args, data_path: str | None, method: str, seed: int, output_dir: str):
    from hamr_dist.config import TrainConfig
    kw = dict(TIERS[args.tier])
    method, extra = args.variants.get(method, (method, {}))
    if getattr(args, "patience", None):
        kw["early_stopping_patience"] = args.patience
    kw.update(extra)
    if args.tier == "finetune" and args.meta_scope:
        kw["meta_scope"] = args.meta_scope
    if args.lr is not None:
        kw["learning_rate"] = args.lr
    if "mlflow" in TrainConfig.__dataclass_fields__:
        kw["mlflow"] = False          # benchmark runs are recorded here, not in MLflow
    return TrainConfig(data=data_path, method=method, seed=seed, output_dir=output_dir,
                       num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
                       max_train_samples=args.max_train_samples,
                       max_eval_samples=args.max_eval_samples, max_seq_length=args.max_seq_length,
                       cache_dir=args.cache_dir, progress=False, **kw)


def same_run(prev: dict, want: dict) -> bool:
    """A recorded run still stands for ``want`` (a comparable config): equal configs, where an
    option added to TrainConfig after the run was recorded counts as equal at its default (it
    did not exist, so the run behaved as its default does). Methods whose code changed since
    (dice) are not kept: a recorded run of a method newer than its record is re-run."""
    from hamr_dist.config import FIELDS
    old = comparable(prev["config"])
    if prev.get("method") in RECOMPUTE and prev.get("recorded_with", 0) < CODE_VERSION:
        return False
    added = {k for k in want if k not in old}
    if any(want[k] != FIELDS[k].default for k in added if k in FIELDS):
        return False
    return old == {k: v for k, v in want.items() if k not in added}


# bumped when a method's computation changes; RECOMPUTE lists the methods it concerns
CODE_VERSION = 2
RECOMPUTE = ("dice",)


def comparable(cfg: dict) -> dict:
    # recorded configs hold portable paths (common.portable): compare fresh ones the same way
    return {k: portable(v) if isinstance(v, str) else v for k, v in cfg.items() if k not in VOLATILE}


def class_counts(data) -> dict[str, int]:
    """Training count per class (CLS) or entity mentions per type (NER, B- tags after IOB2)."""
    if data.task == "cls":
        c = Counter(r["label"] for r in data.train)
        return {n: int(c[k]) for k, n in enumerate(data.label_names)}
    begin = {i: n[2:] for i, n in enumerate(data.label_names) if n.startswith("B-")}
    c = Counter(begin[t] for r in data.train for t in r["tags"] if t in begin)
    return {t: int(c[t]) for t in data.entity_types}


def describe_dataset(args, name: str, path: str | None) -> dict:
    from hamr_dist.train.setup import load_corpus
    data = load_corpus(make_config(args, path, "ce", 0, "unused"))
    counts = class_counts(data)
    rarest = sorted(counts, key=lambda k: (counts[k], k))[:2]
    return {"path": path, "task": data.task, "n_train": len(data.train), "n_dev": len(data.dev),
            "n_test": len(data.test), "train_counts": counts, "rarest": rarest}


def prepare(args, path: str | None, methods: list[str], seeds: list[int]) -> dict:
    """Fill the caches a run reads: encoder features (probe tier; the meta split differs per seed)
    and the kNN sentence embeddings. Timed separately from the runs."""
    from hamr_dist.train.setup import build, train_embeddings
    sw, cpu0 = Stopwatch(), time.process_time()
    s = None
    if TIERS[args.tier]["freeze_encoder"]:
        for seed in seeds:
            s = build(make_config(args, path, methods[0], seed, "unused"))
    from hamr_dist.methods import get_method
    if any(get_method(args.variants.get(m, (m, {}))[0]).knn for m in methods):
        s = s or build(make_config(args, path, methods[0], seeds[0], "unused"))
        train_embeddings(s)      # computed once and cached (the prepared folder's texts)
    return {"status": "ok", "wall_s": sw(), "cpu_s": round(time.process_time() - cpu0, 1)}


# ------------------------------------------------------------------ one run

def split_metrics(m: dict) -> dict:
    keep = ("macro_f1", "accuracy", "micro_f1", "per_class_f1")
    return {k: m[k] for k in keep if k in m}


def run_one(args, name: str, path: str | None, method: str, seed: int, runs_dir: Path) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"{name}-{method}-{seed}-", dir=runs_dir))
    cfg = make_config(args, path, method, seed, str(out))
    rec = {"key": run_key(name, method, seed), "dataset": name, "method": method, "seed": seed,
           "started": now_iso(), "config": cfg.to_dict(), "recorded_with": CODE_VERSION,
           "code": code_fingerprint()}
    sw, cpu0 = Stopwatch(), time.process_time()
    try:
        from hamr_dist.train.loop import train   # inside: an import error is this run's error
        r = train(cfg)
        m = r.metrics
        task = m["task"]
        rec.update(status="ok", config=cfg.resolved(task).to_dict(), task=task,
                   best_epoch=m["best_epoch"], epochs_run=len(m["history"]),
                   dev=split_metrics(m["dev"]), test=split_metrics(m["test"]),
                   history=slim_history(m["history"]), meta_set=m.get("meta_set"),
                   skipped_steps=m.get("skipped_steps"), truncated=m.get("truncated"),
                   train_wall_time_s=m.get("wall_time_s"))
    except Exception as e:   # noqa: BLE001 - one failed run must not stop the table
        rec.update(status="error", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
    finally:
        rec["wall_time_s"], rec["cpu_time_s"] = sw(), round(time.process_time() - cpu0, 1)
        try:   # other load on the machine inflates wall (and, with spinning threads, CPU) time
            rec["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        except OSError:
            pass
        if not args.keep_runs:
            shutil.rmtree(out, ignore_errors=True)
    return rec


def slim_history(history: list) -> list:
    """What a result file keeps of a run's epochs: the numbers rounded to 4 digits, the draw
    shares of the last epoch only (per-class dev F1 is in the run's dev record). The full
    history stays in the run's own metrics.json; this keeps a 4x13x3 table under 1 MiB."""
    out = []
    for i, h in enumerate(history):
        e = {k: round(v, 4) if isinstance(v, float) else v for k, v in h.items()
             if k not in ("dev_per_class_f1", "draw_share")}
        if i == len(history) - 1 and h.get("draw_share"):
            e["draw_share"] = {c: {k: round(x, 4) for k, x in d.items()}
                               for c, d in h["draw_share"].items()}
        out.append(e)
    return out


def run_key(dataset: str, method: str, seed: int) -> str:
    return f"{dataset}|{method}|{seed}"


# ------------------------------------------------------------------ summaries

def summarize(doc: dict) -> dict:
    ok = [r for r in doc["runs"] if r.get("status") == "ok"]
    out = {}
    for name, info in doc["datasets"].items():
        per = {}
        for method in doc["methods"]:
            rs = [r for r in ok if r["dataset"] == name and r["method"] == method]
            if not rs:
                continue
            dev_m, dev_s = mean_std(r["dev"]["macro_f1"] for r in rs)
            test_m, test_s = mean_std(r["test"]["macro_f1"] for r in rs)
            rare = {}
            for cls in info.get("rarest", []):
                rare[cls] = mean_std(r["test"]["per_class_f1"].get(cls) for r in rs)
            per[method] = {"n": len(rs), "seeds": sorted(r["seed"] for r in rs),
                           "dev_mean": dev_m, "dev_std": dev_s, "test_mean": test_m,
                           "test_std": test_s, "rarest_test_f1": rare,
                           "best_epochs": [r["best_epoch"] for r in rs],
                           "wall_mean_s": mean_std(r["wall_time_s"] for r in rs)[0],
                           "cpu_mean_s": mean_std(r.get("cpu_time_s") for r in rs)[0]}
        out[name] = {"methods": per, "hamr_vs_best_baseline": gain(per, ok, name),
                     "vs_best_baseline": {m: gain(per, ok, name, m) for m in per
                                          if m not in BASELINES}}
    return out


def gain(per: dict, ok: list, name: str, who: str = "hamr") -> dict | None:
    base = [m for m in BASELINES if m in per]
    if who not in per or not base:
        return None
    best = max(base, key=lambda m: per[m]["dev_mean"])
    oracle = max(base, key=lambda m: per[m]["test_mean"])
    by_seed = lambda m: {r["seed"]: r["test"]["macro_f1"] for r in ok  # noqa: E731
                         if r["dataset"] == name and r["method"] == m}
    h, b = by_seed(who), by_seed(best)
    paired = mean_std(h[s] - b[s] for s in sorted(set(h) & set(b)))
    return {"best_baseline": best, "best_baseline_dev_mean": per[best]["dev_mean"],
            "best_baseline_test_mean": per[best]["test_mean"],
            "best_baseline_test_std": per[best]["test_std"],
            "hamr_test_mean": per[who]["test_mean"], "hamr_test_std": per[who]["test_std"],
            "gain_test": per[who]["test_mean"] - per[best]["test_mean"],
            "paired_gain_mean": paired[0], "paired_gain_std": paired[1],
            "hamr_wins_seeds": sum(h[s] > b[s] for s in set(h) & set(b)),
            "paired_seeds": len(set(h) & set(b)),
            "best_baseline_on_test_for_reference": oracle}


def common_config(runs: list[dict]) -> tuple[dict, list[str]]:
    """Config fields equal across all runs, and the names of those that vary."""
    cfgs = [comparable(r["config"]) for r in runs if r.get("config")]
    if not cfgs:
        return {}, []
    keys = sorted(set().union(*cfgs))
    same = {k: cfgs[0].get(k) for k in keys if all(c.get(k) == cfgs[0].get(k) for c in cfgs)}
    return same, [k for k in keys if k not in same]


def pts(x, digits=1, sign=False):
    if x is None:
        return "-"
    return f"{x * 100:+.{digits}f}" if sign else f"{x * 100:.{digits}f}"


def wall_line(doc: dict) -> str:
    t = doc["timing"]
    line = (f"- wall time: {t['total_wall_s'] / 60:.1f} min in all (sessions: "
            + ", ".join(f"{s['elapsed_s'] / 60:.1f} min" for s in doc["sessions"])
            + f"); prepare (feature + embedding caches) {t['prepare_wall_s'] / 60:.1f} min; "
              f"runs {t['runs_wall_s'] / 60:.1f} min")
    if t["run_wall_mean_s"] is not None:
        line += f" (mean {t['run_wall_mean_s']:.1f} s per successful run)"
    return line


def code_line(doc: dict) -> str:
    """Which code the runs ran: the fingerprint of hamr_dist's sources per run (benchmarks.common),
    so a table mixing code versions says so."""
    n = Counter(r.get("code", "not recorded") for r in doc["runs"] if r.get("status") == "ok")
    now = code_fingerprint()
    parts = [f"{c}{' (the code that wrote this file)' if c == now else ''}: {k} runs"
             for c, k in n.most_common()]
    return "- code (hash of hamr_dist's sources per run): " + ("; ".join(parts) or "no runs")


def render_md(doc: dict) -> str:
    summ, names = doc["summary"], list(doc["datasets"])
    methods = doc["methods"]
    t = doc["timing"]
    L = [f"# Quality benchmark `{doc['name']}` (tier {doc['tier']})", "",
         f"Macro-F1 in points (x100), mean ± sample std over seeds {doc['seeds']}. Classification: "
         "sklearn macro-F1; NER: entity-level macro-F1 (mean of per-type seqeval F1). Each run keeps "
         "the epoch with the best dev macro-F1; test is evaluated once per run. Same budget for every "
         "method; nothing tuned on test.", ""]
    if doc.get("about"):    # a merge recipe's account of its rows (benchmarks/merges.toml)
        L += [f"What this file is: {doc['about']}", ""]
    L += [f"Generated {doc.get('updated')}. Runs ok: {t['runs_ok']} / failed: {t['runs_failed']} / "
          f"planned: {t['runs_planned']}.", "",
          "## Provenance", "", environment_md(doc["environment"]),
          f"- budget: {', '.join(f'{k}={v}' for k, v in doc['budget'].items())}",
          f"- seeds: {doc['seeds']}; methods: {', '.join(methods)}",
          wall_line(doc), code_line(doc), ""]

    L += ["## Test macro-F1", ""]
    L.append(md_table(["method"] + names, [[m] + [fmt_ms(
        summ[n]["methods"].get(m, {}).get("test_mean"), summ[n]["methods"].get(m, {}).get("test_std"))
        for n in names] for m in methods]))
    L += ["", "## Dev macro-F1", ""]
    L.append(md_table(["method"] + names, [[m] + [fmt_ms(
        summ[n]["methods"].get(m, {}).get("dev_mean"), summ[n]["methods"].get(m, {}).get("dev_std"))
        for n in names] for m in methods]))

    L += ["", "## HAMR vs the best baseline (chosen by dev mean, reported on test)", ""]
    rows = []
    for n in names:
        g = summ[n]["hamr_vs_best_baseline"]
        if g is None:
            rows.append([n] + ["-"] * 7)
            continue
        rows.append([n, g["best_baseline"], pts(g["best_baseline_dev_mean"]),
                     fmt_ms(g["best_baseline_test_mean"], g["best_baseline_test_std"]),
                     fmt_ms(g["hamr_test_mean"], g["hamr_test_std"]), pts(g["gain_test"], sign=True),
                     f"{pts(g['paired_gain_mean'], sign=True)} ± {pts(g['paired_gain_std'])}",
                     f"{g['hamr_wins_seeds']}/{g['paired_seeds']}"])
    L.append(md_table(["dataset", "best baseline", "its dev", "its test", "HAMR test", "gain",
                       "per-seed gain", "HAMR wins (seeds)"], rows))

    variants = [m for m in methods if m not in BASELINES and m != "hamr"]
    if variants:
        L += ["", "## Other HAMR variants vs the best baseline (dev-chosen, test)", ""]
        rows = []
        for m in variants:
            for n in names:
                g = (summ[n].get("vs_best_baseline") or {}).get(m)
                if g is None:
                    continue
                rows.append([m, n, g["best_baseline"], fmt_ms(g["best_baseline_test_mean"],
                             g["best_baseline_test_std"]),
                             fmt_ms(g["hamr_test_mean"], g["hamr_test_std"]),
                             pts(g["gain_test"], sign=True),
                             f"{pts(g['paired_gain_mean'], sign=True)} ± {pts(g['paired_gain_std'])}",
                             f"{g['hamr_wins_seeds']}/{g['paired_seeds']}"])
        L.append(md_table(["method", "dataset", "best baseline", "its test", "method test", "gain",
                           "per-seed gain", "wins (seeds)"], rows))

    L += ["", "## Ablation (test macro-F1)", ""]
    rows = []
    for label, m in ABLATIONS:
        row = [label]
        for n in names:
            s = summ[n]["methods"].get(m)
            full = summ[n]["methods"].get("hamr")
            if s is None:
                row.append("-")
            elif m == "hamr" or full is None:
                row.append(fmt_ms(s["test_mean"], s["test_std"]))
            else:
                row.append(f"{fmt_ms(s['test_mean'], s['test_std'])} "
                           f"({pts(s['test_mean'] - full['test_mean'], sign=True)})")
        rows.append(row)
    L.append(md_table(["variant"] + names, rows))
    L.append("\n(in brackets: difference to full HAMR)")

    L += ["", "## Per-class test F1 of the two rarest classes (by training count)", ""]
    for n in names:
        info = doc["datasets"][n]
        rare = info.get("rarest", [])
        if not rare:
            continue
        cnt = info["train_counts"]
        L.append(f"**{n}** ({'entity mentions' if info['task'] == 'ner' else 'samples'} in train)\n")
        L.append(md_table(["method"] + [f"{c} (n={cnt[c]})" for c in rare], [
            [m] + [fmt_ms(*summ[n]["methods"][m]["rarest_test_f1"].get(c, (None, None)))
                   for c in rare] for m in methods if m in summ[n]["methods"]]))
        L.append("")

    L += ["## Time per run", "",
          "Wall seconds (mean over seeds; CPU seconds of the process in brackets) and the best "
          "epochs (0-based) of the seeds. Other load on a shared machine inflates both (see "
          "`load_avg_at_end` of each run in the JSON).", ""]
    rows = []
    for n in names:
        for p in doc["datasets"][n].get("prepare_attempts", [doc["datasets"][n].get("prepare", {})]):
            rows.append([n, "(prepare: features + embeddings)",
                         f"{p.get('wall_s', '-')} ({p.get('cpu_s', '-')})", p.get("status", "")])
        for m in methods:
            s = summ[n]["methods"].get(m)
            if s:
                rows.append([n, m, f"{s['wall_mean_s']:.1f} ({s['cpu_mean_s']:.1f})",
                             ", ".join(map(str, s["best_epochs"]))])
    L.append(md_table(["dataset", "method", "wall s (cpu s)", "best epochs"], rows))

    L += ["", "## All runs", ""]
    L.append(md_table(["dataset", "method", "seed", "status", "dev", "test", "best epoch", "wall s"], [
        [r["dataset"], r["method"], r["seed"], r["status"],
         pts(r.get("dev", {}).get("macro_f1"), 2), pts(r.get("test", {}).get("macro_f1"), 2),
         r.get("best_epoch", "-"), r.get("wall_time_s")] for r in doc["runs"]]))
    failed = [r for r in doc["runs"] if r.get("status") != "ok"]
    if failed:
        L += ["", "## Failed runs", ""]
        for r in failed:
            L += [f"- `{r['key']}`: {r.get('error')}", "", "```", r.get("traceback", "").rstrip(), "```"]

    same, varying = common_config(doc["runs"])
    L += ["", "## Configuration", "",
          f"Fields equal in every run (resolved; per-run values of {', '.join(varying) or 'none'} "
          "are in the JSON, each run's full config under `runs[].config`):", "", "```",
          *[f"{k}: {v}" for k, v in same.items()], "```", ""]
    return "\n".join(L)


def render_png(doc: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    summ, names, methods = doc["summary"], list(doc["datasets"]), doc["methods"]
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.6), squeeze=False)
    colour = {m: "#9e9e9e" for m in BASELINES}
    colour.update({"hamr": "#d62728", "hamr-no-resample": "#ff9896", "hamr-no-meta": "#f7b6d2",
                   "hamr-no-knn": "#ffbb78"})
    for ax, n in zip(axes[0], names):
        ms = [m for m in methods if m in summ[n]["methods"]]
        means = [summ[n]["methods"][m]["test_mean"] * 100 for m in ms]
        stds = [summ[n]["methods"][m]["test_std"] * 100 for m in ms]
        ax.bar(range(len(ms)), means, yerr=stds, capsize=3,
               color=[colour.get(m, "#1f77b4") for m in ms])
        g = summ[n]["hamr_vs_best_baseline"]
        if g:
            ax.axhline(g["best_baseline_test_mean"] * 100, ls="--", lw=1, color="k")
            ax.set_title(f"{n}\nHAMR {pts(g['gain_test'], sign=True)} vs {g['best_baseline']} (dev-chosen)",
                         fontsize=9)
        else:
            ax.set_title(n, fontsize=9)
        ax.set_xticks(range(len(ms)), ms, rotation=60, ha="right", fontsize=8)
        if means:
            lo = min(m - s for m, s in zip(means, stds))
            hi = max(m + s for m, s in zip(means, stds))
            ax.set_ylim(max(0, lo - 0.15 * (hi - lo + 1)), hi + 0.1 * (hi - lo + 1))
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("test macro-F1 (x100), mean ± std")
    t = doc["timing"]
    fig.suptitle(f"{doc['name']}: tier {doc['tier']}, seeds {doc['seeds']}, "
                 + ", ".join(f"{k}={v}" for k, v in doc["budget"].items()), fontsize=9)
    fig.text(0.01, -0.04, f"{environment_footer(doc['environment'])}; total wall "
             f"{t['total_wall_s'] / 60:.1f} min, runs {t['runs_ok']} ok / {t['runs_failed']} failed; "
             "full configs in the PNG metadata and the JSON", fontsize=7)
    fig.tight_layout()
    prov = {k: doc[k] for k in ("name", "tier", "budget", "seeds", "environment", "timing")}
    prov["common_config"] = common_config(doc["runs"])[0]
    save_png(fig, path, prov)
    plt.close(fig)


# ------------------------------------------------------------------ driver

def timing(doc: dict) -> dict:
    ok = [r for r in doc["runs"] if r.get("status") == "ok"]
    prep = sum(a.get("wall_s", 0) or 0 for d in doc["datasets"].values()
               for a in d.get("prepare_attempts", [d.get("prepare", {})]))
    return {"total_wall_s": round(sum(s["elapsed_s"] for s in doc["sessions"]), 1),
            "prepare_wall_s": round(prep, 1),
            "runs_wall_s": round(sum(r["wall_time_s"] for r in doc["runs"]), 1),
            "run_wall_mean_s": mean_std(r["wall_time_s"] for r in ok)[0],
            "runs_ok": len(ok), "runs_failed": len(doc["runs"]) - len(ok),
            "runs_planned": doc.get("runs_planned")}


def write_all(doc: dict, out_dir: Path, session: dict, sw: Stopwatch, figure: bool = True,
              indent: int | None = 1) -> None:
    session["elapsed_s"] = sw()
    doc["updated"] = now_iso()
    doc["timing"] = timing(doc)
    doc["summary"] = summarize(doc)
    write_json(out_dir / f"{doc['name']}.json", doc, indent=indent)
    try:
        write_text(out_dir / f"{doc['name']}.md", render_md(doc))
        if figure:
            render_png(doc, out_dir / f"{doc['name']}.png")
    except Exception:   # noqa: BLE001 - reporting must never lose the results
        log.exception("writing the markdown/PNG report failed (the JSON is complete)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n")[0])
    p.add_argument("--tier", choices=list(TIERS), default="probe")
    p.add_argument("--datasets", nargs="+", default=None,
                   help=f"dataset folders (or names under {SHARED_DATASETS}, or '{SYNTHETIC}'); "
                        f"default: {' '.join(DEFAULT_DATASETS)}")
    p.add_argument("--methods", nargs="+", default=list(ALL_METHODS))
    p.add_argument("--variant", action="append", default=[],
                   help="LABEL=METHOD:key=value,... a table row running METHOD with other options "
                        "(list LABEL in --methods), e.g. hamr-debiased=hamr:hardness_rule=debiased-ema")
    p.add_argument("--patience", type=int, default=None,
                   help="early stopping on dev macro-F1 after this many epochs without a gain")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=None, help="default: the package default of the tier")
    p.add_argument("--max-train-samples", type=int, default=None)
    p.add_argument("--max-eval-samples", type=int, default=None)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--meta-scope", default=None, help="finetune tier: all, head or topK")
    p.add_argument("--name", default=None, help="result file stem (default quality_<tier>)")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--cache-dir", default=None, help="default $HAMR_CACHE")
    p.add_argument("--runs-dir", type=Path, default=None, help="scratch for run outputs (deleted)")
    p.add_argument("--keep-runs", action="store_true", help="keep each run's output folder")
    p.add_argument("--resume", action="store_true", help="skip runs already in the JSON")
    p.add_argument("--no-prepare", action="store_true", help="let the first run fill the caches")
    p.add_argument("--verbose", action="store_true", help="per-epoch logs of hamr_dist")
    a = p.parse_args(argv)
    from hamr_dist.methods import METHODS
    a.variants = variants = parse_variants(a.variant)     # what make_config reads
    bad = [m for m in a.methods if m not in METHODS and m not in variants]
    bad += [f"{k} (runs {m})" for k, (m, _) in variants.items() if m not in METHODS]
    if bad:
        p.error(f"unknown method(s) {bad}; choose from {list(METHODS)} or a --variant label")
    if a.epochs < 1:
        p.error("--epochs must be >= 1")
    a.name = a.name or f"quality_{a.tier}"
    a.datasets = a.datasets or [str(SHARED_DATASETS / d) for d in DEFAULT_DATASETS]
    return a


def main(argv=None) -> dict:
    args = parse_args(argv)
    try:   # SIGTERM -> SystemExit, so the finally-block below still writes the results
        old_handler = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    except ValueError:   # not the main thread
        old_handler = None

    out_dir = args.out_dir
    json_path = out_dir / f"{args.name}.json"
    sw = Stopwatch()
    datasets = [resolve_dataset(d) for d in args.datasets]
    names = [n for n, _ in datasets]
    if len(set(names)) != len(names):
        datasets = [(p or n, p) for n, p in datasets]     # same folder names: use full paths
    budget = {"epochs": args.epochs, "batch_size": args.batch_size,
              "learning_rate": args.lr or ("1e-3 (frozen default)" if args.tier == "probe"
                                           else "3e-5 (default)"),
              "max_train_samples": args.max_train_samples, "max_eval_samples": args.max_eval_samples,
              "max_seq_length": args.max_seq_length, "early_stopping_patience": args.patience,
              "variants": {k: [m, o] for k, (m, o) in args.variants.items()},
              **TIERS[args.tier]}
    if args.tier == "finetune":
        budget["meta_scope"] = args.meta_scope or "package default"
    session = {"started": now_iso(), "elapsed_s": 0.0, "environment": environment()}
    old = read_json(json_path) if args.resume else None
    doc = {"name": args.name, "tier": args.tier, "budget": budget, "seeds": args.seeds,
           "methods": args.methods, "datasets": {}, "runs": [], "sessions": [],
           "runs_planned": len(datasets) * len(args.methods) * len(args.seeds)}
    done = {}
    if old:   # a resumed table covers what it had plus what this invocation adds
        doc["seeds"] = sorted(set(old.get("seeds", [])) | set(args.seeds))
        doc["methods"] = sorted(set(old.get("methods", [])) | set(args.methods),
                                key=lambda m: (ALL_METHODS + tuple(args.methods) + (m,)).index(m))
        doc["runs_planned"] = len(datasets) * len(doc["methods"]) * len(doc["seeds"])
        doc["sessions"] = old.get("sessions", [])
        doc["datasets"] = {k: v for k, v in old.get("datasets", {}).items()}
        done = {r["key"]: r for r in old.get("runs", []) if r.get("status") == "ok"}
        # runs of the old file that this invocation does not plan are kept as they are
        doc["runs"] = [r for r in old.get("runs", []) if r.get("status") == "ok"]
    doc["sessions"].append(session)
    doc["environment"] = session["environment"]
    try:   # fix the code version of the whole table now, not at the first run
        import hamr_dist.train.loop  # noqa: F401
    except Exception:   # noqa: BLE001 - every run will record the error
        log.exception("hamr_dist.train.loop cannot be imported")
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="hamr_quality_"))
    runs_dir.mkdir(parents=True, exist_ok=True)
    total = len(datasets) * len(args.methods) * len(args.seeds)   # this invocation
    i = 0
    try:
        for name, path in datasets:
            info = doc["datasets"].get(name, {})
            try:
                info.update(describe_dataset(args, name, path))
            except Exception as e:   # noqa: BLE001
                info.update(status="error", error=f"{type(e).__name__}: {e}",
                            traceback=traceback.format_exc())
                log.error("dataset %s cannot be loaded: %s", name, info["error"])
            doc["datasets"][name] = info
            todo = []
            for seed in args.seeds:
                for method in args.methods:
                    key = run_key(name, method, seed)
                    prev = done.get(key)
                    if prev is not None:
                        want = comparable(make_config(args, path, method, seed, "x").resolved(
                            prev.get("task") or info.get("task", "cls")).to_dict())
                        if same_run(prev, want):
                            continue
                        log.info("%s: config changed since the recorded run, running again", key)
                        doc["runs"] = [r for r in doc["runs"] if r["key"] != key]
                    todo.append((method, seed))
            i += len(args.methods) * len(args.seeds) - len(todo)
            if todo and not args.no_prepare and info.get("status") != "error":
                log.info("%s: preparing caches (features, embeddings)", name)
                try:
                    info["prepare"] = prepare(args, path, args.methods, sorted({s for _, s in todo}))
                except Exception as e:   # noqa: BLE001
                    info["prepare"] = {"status": "error", "error": f"{type(e).__name__}: {e}",
                                       "traceback": traceback.format_exc(), "wall_s": 0}
                    log.error("%s: prepare failed: %s", name, info["prepare"]["error"])
                # every attempt counts (a resumed session finds the caches warm)
                info.setdefault("prepare_attempts", []).append(info["prepare"])
                log.info("%s: prepare %s in %.1f s", name, info["prepare"]["status"],
                         info["prepare"]["wall_s"])
                write_all(doc, out_dir, session, sw, figure=False)
            for method, seed in todo:
                i += 1
                rec = run_one(args, name, path, method, seed, runs_dir)
                doc["runs"].append(rec)
                if rec["status"] == "ok":
                    log.info("[%d/%d] %s %s seed %d: dev %.4f test %.4f best epoch %d, %.1f s "
                             "(cpu %.1f s)", i, total, name, method, seed, rec["dev"]["macro_f1"],
                             rec["test"]["macro_f1"], rec["best_epoch"], rec["wall_time_s"],
                             rec["cpu_time_s"])
                else:
                    log.error("[%d/%d] %s %s seed %d FAILED after %.1f s: %s", i, total, name,
                              method, seed, rec["wall_time_s"], rec["error"])
                write_all(doc, out_dir, session, sw, figure=False)
            write_all(doc, out_dir, session, sw)
    finally:
        session["finished"] = now_iso()
        write_all(doc, out_dir, session, sw)
        if args.runs_dir is None:
            shutil.rmtree(runs_dir, ignore_errors=True)
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
    t = doc["timing"]
    log.info("done: %d ok, %d failed, %.1f min; results in %s", t["runs_ok"], t["runs_failed"],
             t["total_wall_s"] / 60, json_path)
    return doc


def quiet_console(verbose: bool) -> None:
    """Command-line use: one log line per run, no download/progress bars."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("hamr_dist").setLevel(logging.INFO if verbose else logging.WARNING)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import transformers
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    except Exception:   # noqa: BLE001
        pass


if __name__ == "__main__":
    quiet_console("--verbose" in sys.argv)
    main()
