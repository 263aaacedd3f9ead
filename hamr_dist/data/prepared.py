"""A prepared dataset folder (``prepare.py``), opened memory-mapped.

Everything per sample is a flat array on disk, so opening costs nothing and a worker's memory
grows with what it touches, not with N. What a run derives from the numbers (the balanced meta
set, class weights, sample groups) is computed from O(N) numeric arrays, never from records.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from hamr_dist.data.mapped import MappedTokens
from hamr_dist.data.meta_set import draw_meta_set
from hamr_dist.errors import DataError

CHUNK = 100_000    # sentences per vectorised step over NER tags: bounded temporaries


def flat_positions(off: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions in the flat array of every item of sentences ``rows``, in order; each
    sentence's length), for per-sentence ranges ``off[i]:off[i + 1]``."""
    lengths = np.asarray(off[rows + 1] - off[rows])
    pos = np.repeat(np.asarray(off[rows]), lengths) + (
        np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths))
    return pos, lengths


class Prepared:
    def __init__(self, folder):
        self.dir = Path(folder)
        mf = self.dir / "manifest.json"
        if not mf.is_file():
            raise DataError("not a prepared dataset (no manifest.json)", file=self.dir,
                            hint="run hamr prepare --data SRC --output-dir FOLDER first")
        self.manifest = json.loads(mf.read_text())
        from hamr_dist.data.prepare import FORMAT
        if self.manifest.get("format") != FORMAT:
            raise DataError(f"prepared with format {self.manifest.get('format')!r}, this "
                            f"version reads {FORMAT!r}", file=self.dir,
                            hint="prepare the dataset again with this version of hamr")
        self.task = self.manifest["task"]
        self.label_names = list(self.manifest["label_names"])
        self.entity_types = list(self.manifest["entity_types"])
        self.warnings = list(self.manifest.get("warnings", []))
        self._tokens = {}

    def n(self, split: str) -> int:
        return int(self.manifest["splits"][split]["n"])

    def tokens(self, split: str) -> MappedTokens:
        if split not in self._tokens:
            self._tokens[split] = MappedTokens(self.dir / split)
        return self._tokens[split]

    def _npy(self, split: str, name: str) -> np.ndarray:
        return np.load(self.dir / split / name, mmap_mode="r")

    def labels(self, split: str) -> np.ndarray:
        """CLS: the class id of every record (memory-mapped)."""
        return self.tokens(split).labels

    def cut(self, split: str) -> np.ndarray:
        return self._npy(split, "cut.npy")

    def word_tags(self, split: str):
        """NER: (flat tag ids of every word, offsets per sentence), memory-mapped."""
        off = self._npy(split, "tags_offsets.npy")
        n = int(off[-1])
        flat = (np.memmap(self.dir / split / "tags.bin", dtype=np.int32, mode="r", shape=(n,))
                if n else np.zeros(0, np.int32))
        return flat, off

    def words(self, split: str) -> np.ndarray:
        """NER: the word of each token position (-1 where no word starts)."""
        n = self.tokens(split).manifest["tokens"]
        return (np.memmap(self.dir / split / "words.bin", dtype=np.int32, mode="r", shape=(n,))
                if n else np.zeros(0, np.int32))

    def texts(self, split: str, rows=None) -> list[str]:
        """The embedder's input of ``rows`` (all by default): the text, or NER tokens joined."""
        off = self._npy(split, "text_offsets.npy")
        raw = np.memmap(self.dir / split / "text.bin", dtype=np.uint8, mode="r") if off[-1] else b""
        rows = range(len(off) - 1) if rows is None else rows
        return [bytes(raw[off[i]:off[i + 1]]).decode("utf-8") for i in rows]

    def unit_counts(self, split: str, rows=None) -> np.ndarray:
        """[n, C] int32 as ``meta_set.unit_counts``: one-hot class (CLS) or B- mentions per
        entity type (NER), from the numeric arrays."""
        rows = np.arange(self.n(split)) if rows is None else np.asarray(rows, np.int64)
        if self.task == "cls":
            out = np.zeros((len(rows), len(self.label_names)), np.int32)
            out[np.arange(len(rows)), np.asarray(self.labels(split)[rows], np.int64)] = 1
            return out
        flat, off = self.word_tags(split)
        begin = np.full(len(self.label_names), -1, np.int64)
        for i, name in enumerate(self.label_names):
            if name.startswith("B-"):
                begin[i] = self.entity_types.index(name[2:])
        out = np.zeros((len(rows), len(self.entity_types)), np.int32)
        for s in range(0, len(rows), CHUNK):              # bounded temporaries
            r = rows[s:s + CHUNK]
            pos, lengths = flat_positions(off, r)
            types = begin[np.asarray(flat[pos], np.int64)]
            sent = np.repeat(np.arange(len(r)), lengths)
            hit = types >= 0
            np.add.at(out, (s + sent[hit], types[hit]), 1)
        return out

    def tag_counts(self, split: str, rows) -> np.ndarray:
        """NER: how often each tag id occurs over the words of sentences ``rows``."""
        flat, off = self.word_tags(split)
        rows = np.asarray(rows, np.int64)
        out = np.zeros(len(self.label_names), np.int64)
        for s in range(0, len(rows), CHUNK):
            pos, _ = flat_positions(off, rows[s:s + CHUNK])
            out += np.bincount(np.asarray(flat[pos], np.int64), minlength=len(out))
        return out

    def unit_names(self) -> list[str]:
        return self.label_names if self.task == "cls" else self.entity_types

    def meta_set(self, mode: str, seed: int, train_rows=None, dev_rows=None):
        """(training indices drawn into the meta set, info), as ``meta_set.build_meta_set``
        computes them on the same records; cached as ``meta-<mode>-seed<seed>.json`` for the
        whole splits."""
        whole = train_rows is None and dev_rows is None
        path = self.dir / f"meta-{mode}-seed{seed}.json"
        if whole and path.is_file():
            info = json.loads(path.read_text())
            return list(info["drawn_indices"]), info
        drawn, info = draw_meta_set(self.unit_counts("train", train_rows),
                                    self.unit_counts("dev", dev_rows).sum(0),
                                    self.unit_names(), self.task, mode, seed)
        if whole:
            try:
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(info))
                tmp.replace(path)
            except OSError:
                pass                      # a read-only prepared folder: computed every time
        return drawn, info

    def embeddings(self, embedder: str | None):
        """float16 [N_train, d] memory-mapped, or None when not prepared for ``embedder``."""
        from hamr_dist.data.prepare import embeddings_file
        path = embeddings_file(self.dir, embedder)
        return np.load(path, mmap_mode="r") if path.is_file() else None
