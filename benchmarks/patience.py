"""What early stopping would have kept, replayed from runs that trained to the cap.

    python -m benchmarks.patience benchmarks/results/quality_probe_ner_full_mit.json --patience 2 3 4

A run's learning rate decays to zero at the epoch cap whatever the patience, so on a CPU a run
with patience N is the prefix of the same run without it, up to the epoch where it stops. A run
recorded without early stopping therefore tells, from its dev history alone, which epoch
patience N would have kept and at what dev macro-F1 (test is evaluated once per run, at the
kept epoch, so only dev can be replayed). The table gives, per dataset and method, the mean dev
macro-F1 kept under each patience, how much of the full run's best it loses, and how many runs
stop before the cap.
"""
from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

from benchmarks.common import md_table, read_json, write_text


def replay(devs: list[float], patience: int | None) -> tuple[int, float]:
    """(epoch kept, its dev) when training stops after ``patience`` epochs without a strict
    gain, as the training loop does (None: no early stopping). Epochs count from 1."""
    best_epoch, best = 0, float("-inf")
    for epoch, dev in enumerate(devs, 1):
        if dev > best:
            best_epoch, best = epoch, dev
        if patience and epoch - best_epoch >= patience:
            break
    return best_epoch, best


def rows(runs: list[dict], patiences: list[int]) -> list[list]:
    """One row per (dataset, method): runs, then per patience the kept dev mean, its mean loss
    against the full run's best, and the runs stopped before the cap."""
    groups = defaultdict(list)
    for r in runs:
        groups[(r["dataset"], r["method"])].append([h["dev_macro_f1"] for h in r["history"]])
    out = []
    for (dataset, method), histories in sorted(groups.items()):
        full = [replay(d, None)[1] for d in histories]
        row = [dataset, method, len(histories), f"{100 * statistics.mean(full):.1f}"]
        for p in patiences:
            kept = [replay(d, p) for d in histories]
            loss = statistics.mean(100 * (f - k[1]) for f, k in zip(full, kept))
            stopped = sum(1 for d, k in zip(histories, kept) if k[0] + p < len(d))
            row += [f"{100 * statistics.mean(k[1] for k in kept):.1f}", f"{-loss:+.2f}",
                    f"{stopped}/{len(histories)}"]
        out.append(row)
    return out


def full_runs(paths: list[Path]) -> list[dict]:
    """The successful runs of result files recorded without early stopping. ValueError for a
    file that is not a result file or whose budget has a patience (its histories end where it
    stopped: nothing to replay)."""
    runs = []
    for path in paths:
        doc = read_json(path)
        if not isinstance(doc, dict) or "runs" not in doc:
            raise ValueError(f"{path}: not a quality result file (no 'runs'); pass a "
                             "benchmarks/results/quality_*.json")
        if doc.get("budget", {}).get("early_stopping_patience"):
            raise ValueError(f"{path}: its runs used early stopping, so their histories stop "
                             "early; replay needs runs recorded without --patience")
        runs += [r for r in doc["runs"] if r.get("status") == "ok"]
    return runs


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--patience", nargs="+", type=int, default=[2, 3, 4])
    p.add_argument("--out", type=Path, help="write the table as markdown here (default: print)")
    args = p.parse_args(argv)
    if any(x < 1 for x in args.patience):
        p.error("--patience values must be >= 1")
    headers = ["dataset", "method", "runs", "dev, no stop"]
    for x in args.patience:
        headers += [f"dev, p{x}", f"Δ p{x}", f"stopped p{x}"]
    try:
        runs = full_runs(args.files)
    except ValueError as e:
        p.error(str(e))
    text = (f"Dev macro-F1 (points) kept under early stopping, replayed from "
            f"{', '.join(f.name for f in args.files)}; Δ is the mean per-run loss against the run "
            f"without early stopping; stopped counts runs that end before the cap.\n\n"
            + md_table(headers, rows(runs, args.patience)) + "\n")
    if args.out:
        write_text(args.out, text)
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
