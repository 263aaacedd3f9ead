"""Meta scope from evidence: dev/test macro-F1 of HAMR with its virtual step over all encoder
layers, the top K layers and the head, full fine-tuning, beside the step time of each.

    python -m benchmarks.meta_scope                     # runs, then the summary (resumable)
    python -m benchmarks.meta_scope --no-run            # only re-summarise the recorded runs

The runs are ordinary finetune-tier runs of :mod:`benchmarks.quality` (one result file per
scope, plus cross-entropy as the reference), seeds outermost so an interrupted sweep leaves
every scope with the same seeds. The CPU default caps train samples, epochs and sequence
length so that the 2 x 3 x 3 runs fit in about 40 minutes on 2 cores; the cap and the larger
learning rate it needs are in the result files. Step times come from a
:mod:`benchmarks.step_time` result file (batch 32, the bundled encoder), not from these runs.

The recommendation is made on dev only: the cheapest scope whose dev macro-F1 is within
``--tolerance`` points (or one seed standard deviation, whichever is larger) of the best scope
on every dataset.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks import quality
from benchmarks.common import (RESULTS, environment, environment_footer, environment_md, fmt_ms,
                               md_table, mean_std, now_iso, read_json, save_png, write_json,
                               write_text)

REFERENCE = "ce"
PAIRED_WITH = "all"     # the authors' setting: the other scopes are compared with it per seed


def run_args(args, scope: str | None, seed: int) -> list[str]:
    a = ["--tier", "finetune", "--datasets", *args.datasets, "--seeds", str(seed),
         "--epochs", str(args.epochs), "--max-seq-length", str(args.max_seq_length),
         "--batch-size", str(args.batch_size), "--out-dir", str(args.out_dir), "--resume"]
    for flag, v in (("--max-train-samples", args.max_train_samples),
                    ("--max-eval-samples", args.max_eval_samples), ("--lr", args.lr),
                    ("--cache-dir", args.cache_dir)):
        if v is not None:
            a += [flag, str(v)]
    if scope is None:
        return a + ["--methods", REFERENCE, "--name", f"{args.name}_{REFERENCE}"]
    return a + ["--methods", "hamr", "--meta-scope", scope, "--name", f"{args.name}_{scope}"]


def step_ratios(path: Path) -> tuple[dict, dict | None]:
    doc = read_json(path) if path.is_file() else None
    if not doc:
        return {}, None
    out = {}
    for variant, v in doc["variants"].items():
        if variant.startswith("hamr[") and variant.endswith("]"):
            out[variant[5:-1]] = v["ratio_to_ce_median"]
    return out, {"file": str(path),   # written through common.portable: no machine folders
                 "device": doc["config"].get("device"), "seq_len": doc["config"].get("seq_len"),
                 "batch_size": doc["config"].get("batch_size"), "environment": doc.get("environment")}


def summarise(args) -> dict:
    per_scope, docs = {}, {}
    for scope in [REFERENCE] + args.scopes:
        doc = read_json(args.out_dir / f"{args.name}_{scope}.json")
        if not doc:
            continue
        docs[scope] = doc
        method = REFERENCE if scope == REFERENCE else "hamr"
        per_scope[scope] = {name: s["methods"][method] for name, s in doc["summary"].items()
                            if method in s["methods"]}
    ratios, step_src = step_ratios(args.step_time)
    first = next(iter(docs.values()), None)
    datasets = list(first["datasets"]) if first else []
    rec = recommend(per_scope, args.scopes, datasets, ratios, args.tolerance)
    budget = {k: v for k, v in first["budget"].items() if k != "meta_scope"} if first else None
    return {"name": args.name, "updated": now_iso(), "scopes": args.scopes, "datasets": datasets,
            "per_scope": per_scope, "paired_vs": PAIRED_WITH,
            "paired": paired(docs, args.scopes, datasets), "step_ratio_to_ce": ratios,
            "step_time_source": step_src, "recommendation": rec, "tolerance_points": args.tolerance,
            "budget": budget, "seeds": args.seeds,
            "run_files": {s: f"{args.name}_{s}.json" for s in docs},
            "environment": first["environment"] if first else environment(),
            "wall_time_s": sum(d["timing"]["total_wall_s"] for d in docs.values())}


def paired(docs, scopes, datasets) -> dict:
    """Per-seed differences to scope ``all`` (same seed: same data order, meta set and initial
    weights), mean and std over seeds, for dev and test: seed-to-seed spread cancels out."""
    if PAIRED_WITH not in docs:
        return {}
    def by_seed(scope, d, split):
        return {r["seed"]: r[split]["macro_f1"] for r in docs[scope]["runs"]
                if r.get("status") == "ok" and r["dataset"] == d}
    out = {}
    for scope in scopes:
        if scope == PAIRED_WITH or scope not in docs:
            continue
        out[scope] = {}
        for d in datasets:
            out[scope][d] = {}
            for split in ("dev", "test"):
                a, b = by_seed(scope, d, split), by_seed(PAIRED_WITH, d, split)
                m, sd = mean_std(a[k] - b[k] for k in sorted(set(a) & set(b)))
                out[scope][d][split] = {"mean": m, "std": sd, "seeds": len(set(a) & set(b))}
    return out


def recommend(per_scope, scopes, datasets, ratios, tol_points) -> dict | None:
    done = [s for s in scopes if s in per_scope and all(d in per_scope[s] for d in datasets)]
    if not done or not datasets:
        return None
    ok = []
    for s in done:
        close = True
        for d in datasets:
            best = max(per_scope[t][d]["dev_mean"] for t in done)
            slack = max(tol_points / 100, per_scope[s][d]["dev_std"] or 0.0)
            close &= per_scope[s][d]["dev_mean"] >= best - slack
        if close:
            ok.append(s)
    cheapest = min(ok, key=lambda s: ratios.get(s, float("inf")))
    return {"scope": cheapest, "candidates_within_tolerance": ok,
            "rule": "cheapest scope (step ratio) whose dev mean is within max(tolerance, its std) "
                    "of the best scope's dev mean on every dataset"}


def render_md(res) -> str:
    ds, per = res["datasets"], res["per_scope"]
    rows = []
    for scope in [REFERENCE] + res["scopes"]:
        if scope not in per:
            continue
        label = "ce (reference)" if scope == REFERENCE else f"hamr, scope {scope}"
        ratio = res["step_ratio_to_ce"].get(scope, 1.0 if scope == REFERENCE else None)
        rows.append([label]
                    + [fmt_ms(per[scope].get(d, {}).get("dev_mean"), per[scope].get(d, {}).get("dev_std")) for d in ds]
                    + [fmt_ms(per[scope].get(d, {}).get("test_mean"), per[scope].get(d, {}).get("test_std")) for d in ds]
                    + ["-" if ratio is None else f"{ratio:.2f}"]
                    + [" / ".join(f"{per[scope][d]['wall_mean_s']:.0f}" for d in ds if d in per[scope])])
    src = res["step_time_source"] or {}
    rec = res["recommendation"]
    L = [f"# Meta scope: quality beside step time (`{res['name']}`)", "",
         "Macro-F1 in points, mean ± std over seeds " + str(res["seeds"]) + "; full fine-tuning "
         "(finetune tier) with the budget below, the same for every row.", "",
         md_table(["variant"] + [f"dev {d}" for d in ds] + [f"test {d}" for d in ds]
                  + [f"step / CE ({src.get('device', '?')}, batch {src.get('batch_size', '?')}, "
                     f"seq {src.get('seq_len', '?')})", "run wall s (per dataset)"], rows), "",
         f"- budget: {', '.join(f'{k}={v}' for k, v in (res['budget'] or {}).items())}",
         *paired_md(res),
         f"- step ratios from `{src.get('file', 'n/a')}` (medians of interleaved per-repeat ratios)",
         f"- recommendation (dev only): **{rec['scope']}**; within tolerance: "
         f"{', '.join(rec['candidates_within_tolerance'])}; rule: {rec['rule']} "
         f"(tolerance {res['tolerance_points']} points)" if rec else "- recommendation: not enough runs yet",
         "", "## Provenance", "", environment_md(res["environment"]),
         f"- wall time of the runs: {res['wall_time_s'] / 60:.1f} min; per-run configs in "
         + ", ".join(f"`{f}`" for f in res["run_files"].values()), ""]
    return "\n".join(L)


def paired_md(res) -> list[str]:
    pr, ds = res.get("paired") or {}, res["datasets"]
    if not pr:
        return []
    rows = [[f"{scope} - {res['paired_vs']}"] + [
        f"{fmt_ms(pr[scope][d][split]['mean'], pr[scope][d][split]['std'])} (n={pr[scope][d][split]['seeds']})"
        for split in ("dev", "test") for d in ds] for scope in pr]
    return ["", f"Per-seed difference to scope `{res['paired_vs']}` (points, mean ± std over seeds):", "",
            md_table(["scope"] + [f"{split} {d}" for split in ("dev", "test") for d in ds], rows), ""]


def render_png(res, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ds, per = res["datasets"], res["per_scope"]
    if not ds:
        return
    fig, axes = plt.subplots(1, len(ds), figsize=(4.6 * len(ds), 4), squeeze=False)
    for ax, d in zip(axes[0], ds):
        for scope in res["scopes"]:
            s = per.get(scope, {}).get(d)
            r = res["step_ratio_to_ce"].get(scope)
            if s is None or r is None:
                continue
            ax.errorbar(r, s["dev_mean"] * 100, yerr=(s["dev_std"] or 0) * 100, fmt="o", capsize=3,
                        label=f"{scope} dev")
            ax.scatter(r, s["test_mean"] * 100, marker="x", color="k")
            ax.annotate(scope, (r, s["dev_mean"] * 100), textcoords="offset points", xytext=(5, 5))
        ce = per.get(REFERENCE, {}).get(d)
        if ce:
            ax.axhline(ce["dev_mean"] * 100, ls="--", color="grey", lw=1, label="ce dev")
        ax.set_xlabel("HAMR step time / CE step time")
        ax.set_ylabel("macro-F1 (dev: dots ± std; test: x)")
        ax.set_title(d, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.text(0.01, -0.04, environment_footer(res["environment"]), fontsize=7)
    fig.tight_layout()
    save_png(fig, path, {k: res[k] for k in ("name", "budget", "seeds", "step_time_source",
                                            "recommendation", "wall_time_s")})
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.meta_scope", description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", default=["sst5", "mit_restaurant"])
    p.add_argument("--scopes", nargs="+", default=["head", "top2", "all"])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-train-samples", type=int, default=600)
    p.add_argument("--max-eval-samples", type=int, default=500)
    p.add_argument("--max-seq-length", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4,
                   help="fine-tuning lr (default 1e-4: 3e-5 barely moves a capped 3-epoch run)")
    p.add_argument("--step-time", type=Path, default=RESULTS / "step_time_cpu.json",
                   help="benchmarks.step_time result with the per-scope ratios")
    p.add_argument("--tolerance", type=float, default=1.0, help="points of dev macro-F1")
    p.add_argument("--name", default="meta_scope_cpu")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--no-run", action="store_true", help="only summarise the recorded runs")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if not args.no_run:
        for seed in args.seeds:
            for scope in [None] + args.scopes:
                quality.main(run_args(args, scope, seed))
    res = summarise(args)
    write_json(args.out_dir / f"{args.name}.json", res)
    write_text(args.out_dir / f"{args.name}.md", render_md(res))
    render_png(res, args.out_dir / f"{args.name}.png")
    print(render_md(res))
    return res


if __name__ == "__main__":
    quality.quiet_console("--verbose" in sys.argv)
    main()
