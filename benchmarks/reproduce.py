"""Re-run recorded quality runs at the current code and say which ones still give their numbers.

    python -m benchmarks.reproduce benchmarks/results/quality_probe_seeds10.json --methods hamr-cb --seeds 1 2
    python -m benchmarks.reproduce benchmarks/results/quality_probe_*.json --seeds 1 --out check.md

A result file records every run's resolved config, so a run can be repeated exactly: same
data, seed and options, as many torch threads as the file records. On a CPU a run is deterministic, so a committed number that this does not give back was made with
other code (for instance a work tree with uncommitted changes) and no longer describes the
method. Exit status 1 if any selected run differs (dev or test macro-F1 by more than
``--tol``, or another best epoch).
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from benchmarks.common import Stopwatch, environment, environment_md, now_iso, read_json, write_text
from benchmarks.quality import VOLATILE, quiet_console, resolve_dataset

log = logging.getLogger("benchmarks.reproduce")


def select(runs: list[dict], methods, datasets, seeds) -> list[dict]:
    """The successful runs matching every filter given (None: no filter)."""
    return [r for r in runs if r.get("status") == "ok"
            and (not methods or r["method"] in methods)
            and (not datasets or r["dataset"] in datasets)
            and (not seeds or r["seed"] in seeds)]


def config_of(rec: dict, output_dir: str):
    """The TrainConfig a recorded run ran with. Options added since take their defaults (the run
    behaved as they do); an option that no longer exists cannot be repeated and is an error."""
    from hamr_dist.config import FIELDS, TrainConfig
    kw = {k: v for k, v in rec["config"].items() if k not in VOLATILE}
    gone = sorted(k for k in kw if k not in FIELDS)
    if gone:
        raise ValueError(f"options {gone} no longer exist")
    kw["data"] = resolve_dataset(rec["dataset"])[1]   # recorded paths are portable, not absolute
    return TrainConfig(**kw, output_dir=output_dir, progress=False)


def repeat(rec: dict, tol: float) -> dict:
    """Run ``rec`` again; its numbers then and now, and whether they agree."""
    from hamr_dist.train.loop import train
    sw = Stopwatch()
    with tempfile.TemporaryDirectory(prefix="hamr-reproduce-") as out:
        try:
            m = train(config_of(rec, out)).metrics
        except Exception as e:  # noqa: BLE001 - one failed run must not stop the check
            return {"key": rec["key"], "status": "error", "error": f"{type(e).__name__}: {e}"}
    now = {"dev": m["dev"]["macro_f1"], "test": m["test"]["macro_f1"], "best_epoch": m["best_epoch"]}
    then = {"dev": rec["dev"]["macro_f1"], "test": rec["test"]["macro_f1"],
            "best_epoch": rec["best_epoch"]}
    same = (abs(now["dev"] - then["dev"]) <= tol and abs(now["test"] - then["test"]) <= tol
            and now["best_epoch"] == then["best_epoch"])
    return {"key": rec["key"], "status": "same" if same else "differs", "then": then, "now": now,
            "recorded": rec.get("started"), "wall_s": sw()}


def render_md(rows: list[dict], files: list[str], env: dict) -> str:
    lines = ["# Reproduction check of recorded quality runs", "",
             f"Generated {now_iso()}. Files: {', '.join(files)}.", "", "## Provenance", "",
             environment_md(env), "",
             "| run | recorded | then dev / test (best epoch) | now dev / test (best epoch) | verdict |",
             "|---|---|---|---|---|"]

    def key(r):       # dataset|method|seed: a bar would split the table's cell
        return r["key"].replace("|", " · ")

    def cell(x):
        return f"{100 * x['dev']:.2f} / {100 * x['test']:.2f} ({x['best_epoch']})"
    for r in rows:
        if r["status"] == "error":
            lines.append(f"| {key(r)} | - | - | - | error: {r['error']} |")
        else:
            lines.append(f"| {key(r)} | {r['recorded']} | {cell(r['then'])} | {cell(r['now'])} "
                         f"| {r['status']} |")
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
            r = repeat(rec, args.tol)
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
