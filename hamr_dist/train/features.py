"""Cached encoder features for ``--freeze-encoder``: the encoder runs once per dataset, on disk
keyed by the model and the exact token ids, and afterwards only the head trains."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from ..data.tokenize import IGNORE, TokenBatches, to_device
from ..embeddings import model_fingerprint
from ..progress import phase


def cache_root(cache_dir: str | None) -> Path:
    return Path(cache_dir or os.environ.get("HAMR_CACHE") or Path.home() / ".cache" / "hamr_dist")


def token_lengths(batches) -> np.ndarray:
    """Tokens per sample of TokenBatches or a memory-mapped split (MappedTokens)."""
    if hasattr(batches, "lengths"):
        return batches.lengths()
    return np.asarray([len(x) for x in batches.ds["input_ids"]])


def id_rows(batches):
    """Each sample's token ids, one at a time (the cache key covers them all)."""
    if hasattr(batches, "row_ids"):
        return (batches.row_ids(j) for j in range(len(batches)))
    return iter(batches.ds["input_ids"])


def labelled_counts(batches) -> np.ndarray:
    """NER: labelled (word-initial) positions per sample, i.e. feature rows per sample."""
    if hasattr(batches, "row_labels"):
        return np.fromiter(((batches.row_labels(j) != IGNORE).sum() for j in range(len(batches))),
                           np.int64, len(batches))
    return np.asarray([sum(l != IGNORE for l in y) for y in batches.ds["labels"]], np.int64)


@torch.inference_mode()
def compute_features(model, batches: TokenBatches, batch_size: int = 64, progress=None,
                     alloc=None):
    """CLS: [N, H] float32. NER: (flat [sum labelled, H], offsets [N+1]) per labelled position.
    ``alloc(shape)`` gives the float32 array to fill (default ``np.empty``; the cache passes a
    file opened with ``np.lib.format.open_memmap``, so N x H never sits in memory twice)."""
    alloc = alloc or (lambda shape: np.empty(shape, np.float32))
    n = len(batches)
    device = next(model.parameters()).device
    lengths = token_lengths(batches)
    order = np.argsort(lengths, kind="stable")   # similar lengths together: less padding
    offsets = None
    if batches.task == "ner":
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(labelled_counts(batches), out=offsets[1:])
    out = None
    for s in range(0, n, batch_size):
        idx = order[s:s + batch_size]
        b = batches(idx)
        h = model.encode(to_device(b, device)).float().cpu()
        if out is None:
            out = alloc((n if offsets is None else int(offsets[-1]), h.shape[-1]))
        for j, i in enumerate(idx):
            if batches.task == "ner":
                out[offsets[i]:offsets[i + 1]] = h[j][b["labels"][j] != IGNORE].numpy()
            else:
                out[i] = h[j].numpy()
        if progress:
            progress(len(idx))
    if out is None:
        out = alloc((0 if offsets is None else int(offsets[-1]), 0))
    return out if offsets is None else (out, offsets)


def cached_features(model, batches: TokenBatches, model_name: str, pooling: str,
                    cache_dir: str | None):
    """Features on disk (``features/<key>/flat.npy`` [+ ``offsets.npy``]) keyed by the model
    and every sample's token ids, opened memory-mapped (copy-on-write): the workers of a node
    share the pages, and none holds N x hidden floats of its own."""
    key = hashlib.sha256()
    key.update(json.dumps([model_fingerprint(model_name), pooling, batches.task]).encode())
    for ids in id_rows(batches):
        key.update(np.asarray(ids, dtype=np.int32).tobytes() + b"|")
    path = cache_root(cache_dir) / "features" / key.hexdigest()[:32]
    if (path / "flat.npy").is_file():
        return _open(path)
    what = "texts" if batches.task == "cls" else "sentences"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    tmp.mkdir(exist_ok=True)
    with phase(f"encoding features of {len(batches)} {what} with the frozen encoder (cached for "
               f"later runs)", total=len(batches), unit=what[:-1]) as tick:
        feats = compute_features(model, batches, progress=tick, alloc=lambda shape: (
            np.lib.format.open_memmap(tmp / "flat.npy", mode="w+", dtype=np.float32,
                                      shape=shape)))
    if isinstance(feats, tuple):
        feats[0].flush()
        np.save(tmp / "offsets.npy", feats[1])
    else:
        feats.flush()
    del feats
    try:
        os.replace(tmp, path)   # atomic: concurrent workers never read half a folder
    except OSError:             # another worker finished it first
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return _open(path)


def _open(path: Path):
    flat = np.load(path / "flat.npy", mmap_mode="c")
    if (path / "offsets.npy").is_file():
        return flat, np.load(path / "offsets.npy")
    return flat


class FeatureBatches:
    """Batches of cached features, gathered by dataset index like TokenBatches."""

    def __init__(self, feats, labels, task: str):
        self.task = task
        if task == "cls":
            self.x = torch.from_numpy(feats)
            self.y = torch.as_tensor(labels, dtype=torch.long)
        else:
            self.flat, self.off = torch.from_numpy(feats[0]), feats[1]
            self.labels = [[l for l in lab if l != IGNORE] for lab in labels]

    def __len__(self):
        return len(self.x) if self.task == "cls" else len(self.labels)

    def __call__(self, idx) -> dict:
        idx = [int(i) for i in idx]
        if self.task == "cls":
            return {"features": self.x[idx], "labels": self.y[idx]}
        rows = [self.flat[self.off[i]:self.off[i + 1]] for i in idx]
        width = max(1, max(len(r) for r in rows))
        x = torch.zeros(len(idx), width, self.flat.shape[1])
        y = torch.full((len(idx), width), IGNORE, dtype=torch.long)
        for j, (i, r) in enumerate(zip(idx, rows)):
            x[j, :len(r)] = r
            y[j, :len(r)] = torch.as_tensor(self.labels[i], dtype=torch.long)
        return {"features": x, "labels": y}
