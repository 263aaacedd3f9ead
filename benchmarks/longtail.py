"""Heavier imbalance than the shared datasets have: a long-tailed copy of a classification set.

``sst5@lt100`` names sst5 with its training classes subsampled geometrically, so that the class
of rank r (by size, 0 = largest) keeps n_max * 100^(-r/(C-1)) samples: the rarest class ends
at 1/100 of the largest. Dev and test are unchanged (the metric stays macro-F1 over the same
classes). The copy is written once under ``$HAMR_CACHE/longtail`` (seeded, same seed same
subset) and read like any dataset folder; nothing of it is committed.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

SPEC = re.compile(r"^(?P<base>.+)@(?P<kind>n?lt)(?P<ratio>\d+(?:\.\d+)?)$")


def parse(spec: str):
    """``sst5@lt100`` -> ("sst5", 100.0, False); ``sst5@nlt20`` -> ("sst5", 20.0, True)."""
    m = SPEC.match(spec)
    return (m["base"], float(m["ratio"]), m["kind"] == "nlt") if m else None


def class_sizes(sizes: list[int], ratio: float) -> list[int]:
    """Target size per class (index order) for an imbalance ratio ``ratio``."""
    order = np.argsort(-np.asarray(sizes), kind="stable")
    n_max, c = max(sizes), len(sizes)
    out = [0] * c
    for r, k in enumerate(order):
        want = n_max * ratio ** (-r / max(1, c - 1))
        out[k] = int(min(sizes[k], max(1, round(want))))
    return out


def make_long_tail(src: str, ratio: float, seed: int = 0, root: Path | None = None,
                   natural: bool = False) -> Path:
    """``natural``: dev and test keep each class's training fraction too, so the evaluation
    data is as imbalanced as training (``@nlt``) instead of unchanged (``@lt``, a label shift)."""
    from hamr_dist.data.io import load_data
    root = root or Path(os.environ.get("HAMR_CACHE") or Path.home() / ".cache" / "hamr_dist") / "longtail"
    out = root / f"{Path(src).name}-{'nlt' if natural else 'lt'}{ratio:g}-s{seed}"
    if (out / "test.json").is_file():
        return out
    data = load_data(src)
    if data.task != "cls":
        raise SystemExit(f"{src}: long-tail copies are made for classification sets only")
    y = np.asarray([r["label"] for r in data.train])
    sizes = np.bincount(y, minlength=len(data.label_names)).tolist()
    keep_n = class_sizes(sizes, ratio)
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == k), keep_n[k], replace=False)
                                   for k in range(len(sizes)) if keep_n[k]]))
    out.mkdir(parents=True, exist_ok=True)

    def dump(name, recs):
        rows = [{"text": r["text"], "label": int(r["label"]),
                 "label_text": data.label_names[r["label"]]} for r in recs]
        tmp = out / f"{name}.json.tmp"
        tmp.write_text(json.dumps(rows))
        tmp.replace(out / f"{name}.json")

    frac = [keep_n[k] / sizes[k] if sizes[k] else 1.0 for k in range(len(sizes))]

    def evaluation(recs):
        if not natural:
            return recs
        ye = np.asarray([r["label"] for r in recs])
        idx = [rng.choice(np.flatnonzero(ye == k), max(1, round(frac[k] * (ye == k).sum())),
                          replace=False) for k in range(len(sizes)) if (ye == k).any()]
        return [recs[i] for i in np.sort(np.concatenate(idx))]

    dump("train", [data.train[i] for i in keep])
    dump("dev", evaluation(data.dev))
    dump("test", evaluation(data.test))   # written last: its presence marks a complete copy
    return out
