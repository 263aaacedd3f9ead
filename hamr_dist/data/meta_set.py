"""The balanced meta set of HAMR_SPEC section 3.

Meta set = the dev split plus training samples drawn per class (seeded) until every class
reaches the target: the median of the dev split's per-class counts, rounded up when it falls
between two counts. NER counts entity mentions per type and draws whole sentences containing
that type; every mention a drawn sentence adds counts. Classes are filled rarest first (by dev
count) so that sentences drawn for a rare type also fill the common ones.

``mode="copy"`` (default) keeps drawn samples in the training set; ``mode="move"`` removes them
but never leaves a class with fewer than half of its training samples (NER: mentions of any
type), so a draw that would break that is skipped and the class may stay below the target.
"""
from __future__ import annotations

import math
import random
import statistics

import numpy as np

from hamr_dist.data.schema import LoadedData
from hamr_dist.errors import ConfigError

MODES = ("copy", "move")


def unit_names(data: LoadedData) -> list[str]:
    """What the meta set balances: class names (CLS) or entity types (NER)."""
    return list(data.label_names) if data.task == "cls" else list(data.entity_types)


def unit_counts(records, task: str, label_names: list[str], entity_types: list[str]) -> np.ndarray:
    """[N, C] int32: sample i's count of class c (CLS: its label) or mentions of type c (NER:
    its B- tags; after IOB2 repair every mention starts with exactly one)."""
    if task == "cls":
        out = np.zeros((len(records), len(label_names)), dtype=np.int32)
        out[np.arange(len(records)), [r["label"] for r in records]] = 1
        return out
    index = {t: k for k, t in enumerate(entity_types)}
    begin = {i: index[n[2:]] for i, n in enumerate(label_names) if n.startswith("B-")}
    out = np.zeros((len(records), len(entity_types)), dtype=np.int32)
    for i, r in enumerate(records):
        for t in r["tags"]:
            if t in begin:
                out[i, begin[t]] += 1
    return out


def build_meta_set(data: LoadedData, mode: str = "copy",
                   seed: int = 0) -> tuple[list[dict], list[dict], dict]:
    """Return (meta_records, train_records, info); records are those of ``data``."""
    names = unit_names(data)
    args = (data.task, data.label_names, data.entity_types)
    drawn, info = draw_meta_set(unit_counts(data.train, *args),
                                unit_counts(data.dev, *args).sum(0), names, data.task, mode, seed)
    taken = set(drawn)
    meta = [dict(r) for r in data.dev] + [dict(data.train[i]) for i in drawn]
    train = (list(data.train) if mode == "copy"
             else [r for i, r in enumerate(data.train) if i not in taken])
    return meta, train, info


def draw_meta_set(train_units: np.ndarray, dev: np.ndarray, names: list[str], task: str,
                  mode: str = "copy", seed: int = 0) -> tuple[list[int], dict]:
    """The training samples drawn into the meta set (in draw order) and the info dict, from
    per-sample unit counts (``unit_counts``; numbers only, so it also runs on a prepared
    dataset of any size) and the dev split's unit totals."""
    if mode not in MODES:
        raise ConfigError(f"unknown meta-set mode {mode!r}: use 'copy' (drawn samples stay in "
                          "training, the default) or 'move'")
    dev = np.asarray(dev, dtype=np.int64)
    before = train_units.sum(0, dtype=np.int64)
    median = statistics.median([int(dev[c]) for c in range(len(names))]) if names else 0
    target = math.ceil(median)

    rng = random.Random(seed)
    current, left = dev.copy(), before.copy()
    drawn = []
    taken = np.zeros(len(train_units), dtype=bool)
    drawn_for = np.zeros(len(names), dtype=np.int64)
    for c in sorted(range(len(names)), key=lambda c: (int(dev[c]), c)):
        if current[c] >= target:
            continue
        pool = np.flatnonzero(train_units[:, c] > 0)
        pool = pool[~taken[pool]].tolist()
        rng.shuffle(pool)
        for i in pool:
            if current[c] >= target:
                break
            u = train_units[i]
            if mode == "move":
                nz = np.flatnonzero(u)
                if np.any(2 * (left[nz] - u[nz]) < before[nz]):
                    continue              # would leave some class under half of its samples
            drawn.append(i)
            taken[i] = True
            drawn_for[c] += 1
            current += u
            if mode == "move":
                left -= u

    by_name = lambda cnt: {n: int(cnt[k]) for k, n in enumerate(names)}  # noqa: E731
    info = {
        "mode": mode, "seed": seed, "unit": "samples" if task == "cls" else "mentions",
        "median": float(median), "target": target,
        "dev_counts": by_name(dev), "meta_counts": by_name(current),
        "train_counts_before": by_name(before),
        "train_counts_after": by_name(before if mode == "copy" else left),
        "drawn": len(drawn), "drawn_per_class": by_name(drawn_for),
        "drawn_indices": drawn,
        "below_target": [n for k, n in enumerate(names) if current[k] < target],
    }
    return drawn, info
