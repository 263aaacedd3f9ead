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
from collections import Counter
from typing import Callable

from hamr_dist.data.schema import LoadedData
from hamr_dist.errors import ConfigError

MODES = ("copy", "move")


def _units(data: LoadedData) -> tuple[list[str], Callable[[dict], Counter]]:
    """Class names and a function record -> Counter of class index -> count."""
    if data.task == "cls":
        return list(data.label_names), lambda r: Counter({r["label"]: 1})
    index = {t: k for k, t in enumerate(data.entity_types)}
    begin = {i: index[n[2:]] for i, n in enumerate(data.label_names) if n.startswith("B-")}
    # after IOB2 repair every mention starts with exactly one B- tag
    return list(data.entity_types), lambda r: Counter(begin[t] for t in r["tags"] if t in begin)


def build_meta_set(data: LoadedData, mode: str = "copy",
                   seed: int = 0) -> tuple[list[dict], list[dict], dict]:
    """Return (meta_records, train_records, info); records are those of ``data``."""
    if mode not in MODES:
        raise ConfigError(f"unknown meta-set mode {mode!r}: use 'copy' (drawn samples stay in "
                          "training, the default) or 'move'")
    names, units = _units(data)
    dev = Counter()
    for r in data.dev:
        dev.update(units(r))
    train_units = [units(r) for r in data.train]
    before = Counter()
    for u in train_units:
        before.update(u)
    median = statistics.median([dev[c] for c in range(len(names))]) if names else 0
    target = math.ceil(median)

    rng = random.Random(seed)
    current, left = Counter(dev), Counter(before)
    drawn, taken = [], set()
    drawn_for = Counter()
    for c in sorted(range(len(names)), key=lambda c: (dev[c], c)):
        if current[c] >= target:
            continue
        pool = [i for i, u in enumerate(train_units) if u[c] and i not in taken]
        rng.shuffle(pool)
        for i in pool:
            if current[c] >= target:
                break
            u = train_units[i]
            if mode == "move" and any(2 * (left[k] - n) < before[k] for k, n in u.items()):
                continue                  # would leave some class under half of its samples
            drawn.append(i)
            taken.add(i)
            drawn_for[c] += 1
            current.update(u)
            if mode == "move":
                left.subtract(u)

    meta = [dict(r) for r in data.dev] + [dict(data.train[i]) for i in drawn]
    train = (list(data.train) if mode == "copy"
             else [r for i, r in enumerate(data.train) if i not in taken])
    by_name = lambda cnt: {n: int(cnt[k]) for k, n in enumerate(names)}  # noqa: E731
    info = {
        "mode": mode, "seed": seed, "unit": "samples" if data.task == "cls" else "mentions",
        "median": float(median), "target": target,
        "dev_counts": by_name(dev), "meta_counts": by_name(current),
        "train_counts_before": by_name(before),
        "train_counts_after": by_name(before if mode == "copy" else left),
        "drawn": len(drawn), "drawn_per_class": by_name(drawn_for),
        "drawn_indices": drawn,
        "below_target": [n for k, n in enumerate(names) if current[k] < target],
    }
    return meta, train, info
