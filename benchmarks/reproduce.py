"""Re-run recorded quality runs at the current code and say which ones still give their numbers.

    python -m benchmarks.reproduce benchmarks/results/quality_probe_seeds10.json --methods hamr-cb --seeds 1 2
    python -m benchmarks.reproduce benchmarks/results/quality_probe_*.json --seeds 1 --out check.md

A result file records its command's budget and variants, so every run can be made again as the
same command makes it today: same data, seed and options, as many torch threads as the file
records. On a CPU a run is deterministic, so a committed number that this does not give back
was made with other code (for instance a work tree with uncommitted changes) or other defaults
(listed per run), and no longer describes what the command does. Exit status 1 if any
selected run differs (dev or test macro-F1 by more than ``--tol``).
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from benchmarks.common import Stopwatch, environment, environment_md, now_iso, read_json, write_text
from benchmarks.quality import comparable, make_config, quiet_console, resolve_dataset
from hamr_dist.methods import METHODS

log = logging.getLogger("benchmarks.reproduce")


def select(runs: list[dict], methods, datasets, seeds) -> list[dict]:
    """The successful runs matching every filter given (None: no filter)."""
    return [r for r in runs if r.get("status") == "ok"
            and (not methods or r["method"] in methods)
            and (not datasets or r["dataset"] in datasets)
            and (not seeds or r["seed"] in seeds)]


def config_of(doc: dict, rec: dict, output_dir: str):
    """The TrainConfig that the file's command gives this run today: its budget and variants,
    the run's dataset, method and seed, the current defaults for everything else. Not the
    recorded resolved config: it also holds options that had no effect when the run was made
    (e.g. a class-prior power on the icf baseline before 29e87eb) and may have one now."""
    b = doc["budget"]
    lr = b.get("learning_rate")
    args = argparse.Namespace(
        tier=doc["tier"], epochs=b["epochs"], batch_size=b["batch_size"],
        lr=lr if isinstance(lr, (int, float)) else None,     # else "... (default)"
        max_train_samples=b.get("max_train_samples"), max_eval_samples=b.get("max_eval_samples"),
        max_seq_length=b.get("max_seq_length", 128), patience=b.get("early_stopping_patience"),
        meta_scope=None if b.get("meta_scope") in (None, "package default") else b["meta_scope"],
        variants={k: tuple(v) for k, v in (b.get("variants") or {}).items()}, cache_dir=None)
    path = resolve_dataset(rec["dataset"])[1]      # recorded paths are portable, not absolute
    label = rec["method"]
    if label not in args.variants and label not in METHODS:
        label = rec["config"]["method"]    # a plain method's row renamed by quality_merge
    return make_config(args, path, label, rec["seed"], output_dir)


def changed_options(rec: dict, cfg) -> list[str]:
    """Options the run resolves to differently today than when it was recorded, leaving out
    those the run does not read (e.g. a class-prior power on ce, a Ray option in-process)."""
    if not rec.get("task"):
        return []
    now_cfg = cfg.resolved(rec["task"])
    now, then = comparable(now_cfg.to_dict()), comparable(rec["config"])
    return [f"{k} {then.get(k)!r}->{v!r}" for k, v in now.items()
            if k != "data" and k in then and then[k] != v and now_cfg.reads(k)]


def repeat(doc: dict, rec: dict, tol: float) -> dict:
    """Run ``rec`` again; its numbers then and now, and whether they agree."""
    from hamr_dist.train.loop import train
    sw = Stopwatch()
    with tempfile.TemporaryDirectory(prefix="hamr-reproduce-") as out:
        try:
            cfg = config_of(doc, rec, out)
            changed = changed_options(rec, cfg)
            m = train(cfg).metrics
        except Exception as e:  # noqa: BLE001 - one failed run must not stop the check
            return {"key": rec["key"], "status": "error", "error": f"{type(e).__name__}: {e}"}
    now = {"dev": m["dev"]["macro_f1"], "test": m["test"]["macro_f1"], "best_epoch": m["best_epoch"]}
    then = {"dev": rec["dev"]["macro_f1"], "test": rec["test"]["macro_f1"],
            "best_epoch": rec["best_epoch"]}
    # not the best epoch: older files counted it from 0
    same = abs(now["dev"] - then["dev"]) <= tol and abs(now["test"] - then["test"]) <= tol
    return {"key": rec["key"], "status": "same" if same else "differs", "then": then, "now": now,
            "recorded": rec.get("started"), "changed": changed, "wall_s": sw()}


def render_md(rows: list[dict], files: list[str], env: dict) -> str:
    lines = ["# Reproduction check of recorded quality runs", "",
             f"Generated {now_iso()}. Files: {', '.join(files)}.", "", "## Provenance", "",
             environment_md(env), "",
             "| run | recorded | then dev / test (best epoch) | now dev / test (best epoch) | verdict "
             "| options resolved otherwise now |",
             "|---|---|---|---|---|---|"]

    def key(r):       # dataset|method|seed: a bar would split the table's cell
        return r["key"].replace("|", " · ")

    def cell(x):
        return f"{100 * x['dev']:.2f} / {100 * x['test']:.2f} ({x['best_epoch']})"
    for r in rows:
        if r["status"] == "error":
            lines.append(f"| {key(r)} | - | - | - | error: {r['error']} | |")
        else:
            lines.append(f"| {key(r)} | {r['recorded']} | {cell(r['then'])} | {cell(r['now'])} "
                         f"| {r['status']} | {', '.join(r['changed']) or '-'} |")
    same = sum(r["status"] == "same" for r in rows)
    lines += ["", f"{same} of {len(rows)} runs give their recorded numbers."]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.reproduce", description=__doc__.split("\n")[0])
    p.add_argument("files", nargs="+", help="result JSON files of benchmarks.quality")
    p.add_argument("--methods", nargs="+", help="only these methods (row labels)")
    p.add_argument("--datasets", nargs="+", help="only these datasets (e.g. sst5, sst5@lt100)")
    p.add_argument("--seeds", nargs="+", type=int, help="only these seeds")
    p.add_argument("--tol", type=float, default=5e-4, help="largest macro-F1 difference that "
                   "counts as the same (fractions, default 5e-4)")
    p.add_argument("--out", help="also write the table to this markdown file")
    p.add_argument("--verbose", action="store_true", help="show the training logs")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_console(args.verbose)
    missing = [f for f in args.files if not Path(f).is_file()]
    if missing:
        print(f"error: result file {missing[0]} not found", file=sys.stderr)
        return 2
    docs = {f: read_json(Path(f)) for f in args.files}
    threads = next(iter(docs.values())).get("environment", {}).get("hardware", {}).get("torch_threads")
    if threads:     # as the runs were made: matrix products may sum in another order
        import torch
        torch.set_num_threads(int(threads))
    env = environment()
    rows = []
    for f, doc in docs.items():
        runs = select(doc.get("runs", []), args.methods, args.datasets, args.seeds)
        for i, rec in enumerate(runs, 1):
            r = repeat(doc, rec, args.tol)
            rows.append(r)
            tail = (f"then {r['then']['dev']:.4f}/{r['then']['test']:.4f} now "
                    f"{r['now']['dev']:.4f}/{r['now']['test']:.4f}" if "now" in r else r.get("error"))
            log.info("[%s %d/%d] %s: %s, %s", Path(f).stem, i, len(runs), r["key"], r["status"], tail)
    if not rows:
        print("error: no recorded run matches the filters (check --methods/--datasets/--seeds)",
              file=sys.stderr)
        return 2
    md = render_md(rows, [Path(f).name for f in args.files], env)
    if args.out:
        write_text(Path(args.out), md)
    print(md)
    return 0 if all(r["status"] == "same" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
