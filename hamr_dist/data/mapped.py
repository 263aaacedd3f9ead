"""Token ids and labels on disk in flat arrays, opened memory-mapped, gathered by index.

The hardness-driven sampler draws any sample at any step, so a worker needs random access to
the tokenized corpus; holding it as Python lists costs ~30 KB per sample in every worker
(issue 10). Here a split is four flat files written once, streaming, batch by batch:

- ``ids.bin``: every record's token ids, concatenated (int32);
- ``offsets.npy``: record i is ``ids[offsets[i]:offsets[i+1]]`` (int64, n + 1 values);
- ``labels.npy`` (classification, int64 per record) or ``labels.bin`` (NER: one int32 per token
  position, -100 where no word starts, sharing ``offsets``);
- ``manifest.json``: format, task, record and token counts, pad id, dtypes.

:class:`MappedTokens` opens them with ``np.memmap``: opening costs nothing, the operating
system pages in what a batch touches and shares the pages between every worker process on a
node, so a worker's own memory does not grow with N beyond the page cache. A batch is the
same dict :class:`~hamr_dist.data.tokenize.TokenBatches` returns.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .tokenize import IGNORE

__all__ = ["FORMAT", "TokenWriter", "MappedTokens", "write_tokens"]

FORMAT = "hamr-mapped-tokens-v1"


class TokenWriter:
    """Appends batches of tokenized records to a split folder; :meth:`close` writes the
    offsets and the manifest (and only then is the folder complete)."""

    def __init__(self, out_dir: str | Path, task: str, pad_id: int):
        if task not in ("cls", "ner"):
            raise ValueError(f"task must be 'cls' or 'ner', got {task!r}")
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.task, self.pad_id = task, int(pad_id)
        self._ids = open(self.dir / "ids.bin", "wb")
        self._lab = open(self.dir / ("labels.bin" if task == "ner" else "labels.tmp"), "wb")
        self._lengths: list[np.ndarray] = []
        self.n = self.tokens = 0

    def add(self, input_ids: list, labels: list) -> None:
        """One batch: ``input_ids`` a list of id lists, ``labels`` ints (cls) or lists aligned
        with the ids (ner)."""
        if len(input_ids) != len(labels):
            raise ValueError(f"{len(input_ids)} records but {len(labels)} labels")
        lengths = np.fromiter((len(x) for x in input_ids), dtype=np.int64, count=len(input_ids))
        total = int(lengths.sum())
        flat = np.fromiter((t for x in input_ids for t in x), dtype=np.int32, count=total)
        if self.task == "ner":
            if any(len(a) != len(b) for a, b in zip(input_ids, labels)):
                raise ValueError("NER labels must align with the token ids")
            lab = np.fromiter((t for x in labels for t in x), dtype=np.int32, count=total)
        else:
            lab = np.asarray(labels, dtype=np.int64)
        self.add_flat(flat, lengths, lab)

    def add_flat(self, flat_ids: np.ndarray, lengths: np.ndarray, labels: np.ndarray) -> None:
        """One batch as arrays: the records' ids concatenated, their lengths, and the labels
        (one per record for cls, one per token for ner)."""
        flat_ids = np.ascontiguousarray(flat_ids, dtype=np.int32)
        lengths = np.asarray(lengths, dtype=np.int64)
        if int(lengths.sum()) != flat_ids.size:
            raise ValueError(f"lengths sum to {int(lengths.sum())}, ids hold {flat_ids.size}")
        want = flat_ids.size if self.task == "ner" else lengths.size
        if np.size(labels) != want:
            raise ValueError(f"{np.size(labels)} labels, expected {want}")
        self._ids.write(flat_ids.tobytes())
        dtype = np.int32 if self.task == "ner" else np.int64
        self._lab.write(np.ascontiguousarray(labels, dtype=dtype).tobytes())
        self._lengths.append(lengths)
        self.n += lengths.size
        self.tokens += flat_ids.size

    def close(self, extra: dict | None = None) -> Path:
        self._ids.close()
        self._lab.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int64)
        offsets = np.zeros(self.n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        np.save(self.dir / "offsets.npy", offsets)
        if self.task == "cls":        # a proper .npy so that it opens memory-mapped by itself
            raw = np.fromfile(self.dir / "labels.tmp", dtype=np.int64)
            np.save(self.dir / "labels.npy", raw)
            (self.dir / "labels.tmp").unlink()
        manifest = {"format": FORMAT, "task": self.task, "n": self.n, "tokens": self.tokens,
                    "pad_id": self.pad_id, "ids_dtype": "int32",
                    "labels": "labels.bin (int32 per token)" if self.task == "ner"
                    else "labels.npy (int64 per record)", **(extra or {})}
        tmp = self.dir / "manifest.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=1))
        tmp.replace(self.dir / "manifest.json")
        return self.dir


def write_tokens(out_dir, ds, task: str, pad_id: int, batch: int = 10_000) -> Path:
    """Write an encoded split (``Encoded.ds``: ``input_ids``, ``labels``) batch by batch."""
    w = TokenWriter(out_dir, task, pad_id)
    for s in range(0, len(ds), batch):
        rows = ds[s:s + batch]
        w.add(rows["input_ids"], rows["labels"])
    return w.close()


class MappedTokens:
    """A written split, memory-mapped; ``batches(idx)`` gathers any indices into a padded
    batch (``input_ids``, ``attention_mask``, ``labels``), as ``TokenBatches`` does."""

    def __init__(self, folder: str | Path):
        self.dir = Path(folder)
        mf = self.dir / "manifest.json"
        if not mf.is_file():
            raise FileNotFoundError(f"{self.dir} holds no complete token split (no manifest.json)")
        self.manifest = json.loads(mf.read_text())
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"{self.dir}: format {self.manifest.get('format')!r}, "
                             f"expected {FORMAT!r}")
        self.task, self.n = self.manifest["task"], int(self.manifest["n"])
        self.pad_id = int(self.manifest["pad_id"])
        self.offsets = np.load(self.dir / "offsets.npy", mmap_mode="r")
        tokens = int(self.manifest["tokens"])
        self.ids = (np.memmap(self.dir / "ids.bin", dtype=np.int32, mode="r", shape=(tokens,))
                    if tokens else np.zeros(0, np.int32))
        if self.task == "ner":
            self.labels = (np.memmap(self.dir / "labels.bin", dtype=np.int32, mode="r",
                                     shape=(tokens,)) if tokens else np.zeros(0, np.int32))
        else:
            self.labels = np.load(self.dir / "labels.npy", mmap_mode="r")

        self.rows = None                  # a view of some records (``subset``), else all

    def __len__(self) -> int:
        return self.n if self.rows is None else len(self.rows)

    def subset(self, rows) -> "MappedTokens":
        """A view of the records ``rows`` (index j of the view is record ``rows[j]``)."""
        import copy
        view = copy.copy(self)
        rows = np.asarray(rows, dtype=np.int64)
        view.rows = rows if self.rows is None else self.rows[rows]
        return view

    def records(self) -> np.ndarray:
        """The record index of each sample of this view."""
        return np.arange(self.n) if self.rows is None else self.rows

    def lengths(self) -> np.ndarray:
        r = self.records()
        return np.asarray(self.offsets[r + 1] - self.offsets[r])

    def row_ids(self, j: int) -> np.ndarray:
        i = int(self.records()[j]) if self.rows is not None else int(j)
        return np.asarray(self.ids[self.offsets[i]:self.offsets[i + 1]])

    def row_labels(self, j: int) -> np.ndarray:
        """NER: the labels of sample j's positions (IGNORE where no word starts)."""
        i = int(self.records()[j]) if self.rows is not None else int(j)
        return np.asarray(self.labels[self.offsets[i]:self.offsets[i + 1]])

    @staticmethod
    def _padded(flat, starts, valid, fill) -> np.ndarray:
        """Rows ``flat[start : start + length]`` padded with ``fill``: one gather, no loop."""
        pos = np.where(valid, starts[:, None] + np.arange(valid.shape[1]), 0)
        return np.where(valid, np.asarray(flat[pos.ravel()]).reshape(pos.shape), fill).astype(
            np.int64)

    def __call__(self, idx) -> dict:
        idx = np.asarray(idx, dtype=np.int64).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"index out of range [0, {len(self)})")
        if self.rows is not None:
            idx = self.rows[idx]
        starts = self.offsets[idx]
        lengths = self.offsets[idx + 1] - starts
        width = int(lengths.max()) if idx.size else 0
        valid = np.arange(width)[None, :] < lengths[:, None]
        ids = self._padded(self.ids, starts, valid, self.pad_id)
        mask = valid.astype(np.int64)
        if self.task == "ner":
            labels = torch.from_numpy(self._padded(self.labels, starts, valid, IGNORE))
        else:
            labels = torch.from_numpy(np.asarray(self.labels[idx], dtype=np.int64))
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
                "labels": labels}
