"""``hamr prepare``: a raw dataset -> a prepared dataset folder that every worker memory-maps.

Two passes over the chunks of ``chunks.py`` (each chunk read, parsed and checked on its own):

1. **vocabulary**: every record is validated; each chunk returns only a summary (label counts,
   label names, entity types, IOB2 repairs), merged here into the label vocabulary with the
   split-level checks of ``schema.py`` (one class only, declared classes without samples, ...);
2. **encode**: records -> label ids -> token ids in batches (``tokenize.py``), sentence
   embeddings of the training texts on an actor pool (one GPU per actor when the cluster has
   GPUs), written in order by the driver, one batch at a time.

With Ray (``hamr prepare``, the default when a cluster is reachable or ``--num-workers`` > 0)
both passes run as Ray Data pipelines (``map`` / ``map_batches``); without it the same
functions run chunk after chunk in this process. Either way no process holds a split as Python
objects: a chunk at a time. Records already in memory (passed to ``build`` in code, the
synthetic corpus) go through ``prepare_records``: pass 2 and the same writer, in this process.
The folder (``FORMAT``):

- ``manifest.json``: task, label names, entity types, options, per-split counts (records,
  tokens, truncated, NER words that lost their label), IOB2 repair warnings;
- ``train/``, ``dev/``, ``test/``: token ids, offsets and labels (``mapped.py``), ``cut.npy``
  (1 where truncated), ``text.bin`` + ``text_offsets.npy`` (the embedder's input, UTF-8);
  NER also ``words.bin`` (word index of each labelled position, -1 elsewhere) and ``tags.bin``
  + ``tag_offsets.npy`` (every word's gold tag, truncated words included, for evaluation);
- ``embeddings/<embedder fingerprint>.npy``: float16 ``[N_train, d]``, L2-normalised;
- ``meta-<mode>-seed<seed>.json``: the balanced meta set's drawn training indices and info.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np

from hamr_dist.data.chunks import Chunk, plan, read_chunk
from hamr_dist.data.mapped import TokenWriter
from hamr_dist.data.schema import (_cls_eval_split, _cls_record, _ner_record, _Repairs,
                                   _valid_tag, check_task, detect_task)
from hamr_dist.data.tokenize import IGNORE, tokenize_cls, tokenize_ner
from hamr_dist.errors import DataError

log = logging.getLogger("hamr_dist")

FORMAT = "hamr-prepared-v1"
SPLITS = ("train", "dev", "test")


def is_prepared(path) -> bool:
    return path is not None and "://" not in str(path) and (
        Path(path) / "manifest.json").is_file() and _format(Path(path)) == FORMAT


def _format(path: Path):
    try:
        return json.loads((path / "manifest.json").read_text()).get("format")
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# pass 1: validate every record, summarise each chunk, merge into the vocabulary
# --------------------------------------------------------------------------------------------
def scan_chunk(chunk: Chunk, task: str) -> dict:
    """Validate a chunk's records; return what the vocabulary needs (small, whatever N)."""
    split = read_chunk(chunk)
    out = {"split": chunk.split, "file": chunk.file, "n": len(split.records),
           "names": split.class_names}
    if task == "cls":
        labels, first, pairs = Counter(), {}, {}
        for i in range(len(split.records)):
            _, lab = _cls_record(split, i)
            labels[lab] += 1
            first.setdefault(lab, split.at(i))
            if chunk.split == "train" and isinstance(lab, int):
                if lab < 0:
                    raise DataError(f"negative class id {lab}", **split.at(i), field="label",
                                    hint="class ids run 0..K-1")
                lt = split.records[i].get("label_text")
                if lt is not None:
                    pairs.setdefault((lab, lt), split.at(i))
        out.update(labels=dict(labels), first=first, pairs=list(pairs.items()))
    else:
        rep, types = _Repairs(), set()
        for i in range(len(split.records)):
            _, tags = _ner_record(split, i, rep)
            types.update(t[2:] for t in tags if t != "O")
            if chunk.split != "train":
                out.setdefault("tag_at", {})
                for t in tags:
                    if t != "O":
                        out["tag_at"].setdefault(t[2:], split.at(i))
        out.update(types=sorted(types), repairs=rep.n, first_repair=rep.first)
    return out


def detect_chunk_task(chunk: Chunk) -> str:
    return detect_task(read_chunk(chunk))


def vocabulary(task: str, summaries: list[dict]) -> dict:
    """Label names (and NER entity types) from the chunk summaries, in chunk order, with the
    split-level checks of ``schema.py``."""
    by = {s: [x for x in summaries if x["split"] == s] for s in SPLITS}
    for s in SPLITS:
        if sum(x["n"] for x in by[s]) == 0:
            raise DataError("file has no records", file=by[s][0]["file"] if by[s] else s,
                            hint="add records or fix the file")
    train = by["train"]
    warnings = []
    if task == "ner":
        for s in SPLITS:
            n = sum(x["repairs"] for x in by[s])
            if n:
                first = next(x["first_repair"] for x in by[s] if x["repairs"])
                warnings.append(f"{by[s][0]['file']}: repaired {n} I- tag(s) that did not "
                                f"continue an entity to B- (IOB2); first at {first}")
        types = sorted({t for x in train for t in x["types"]})
        declared = train[0]["names"].get("ner_tags") or []
        for t in sorted({n[2:] for n in declared if _valid_tag(n) and n != "O"}):
            if t not in types:
                raise DataError(f"entity type {t!r}, declared by the dataset's tag names, has "
                                "no training mention", file=train[0]["file"], field="ner_tags",
                                hint="add training sentences with that type or drop its tag "
                                     "names")
        if not types:
            raise DataError("no training sentence has an entity (every tag is O): there is "
                            "nothing to learn", file=train[0]["file"], field="ner_tags",
                            hint="add sentences with B-/I- tags to the training split")
        for s in ("dev", "test"):
            for x in by[s]:
                for t, at in x.get("tag_at", {}).items():
                    if t not in types:
                        raise DataError(f"entity type {t!r} does not occur in the training "
                                        "split", **at, field="ner_tags",
                                        hint="fix the tag or add training sentences with that "
                                             "type")
        names = ["O"] + [f"{p}-{t}" for t in types for p in "BI"]
        return {"task": task, "label_names": names, "entity_types": types, "warnings": warnings}
    return {"task": task, **_cls_vocabulary(train), "entity_types": [], "warnings": warnings}


def _cls_vocabulary(train: list[dict]) -> dict:
    counts, first = Counter(), {}
    for x in train:
        counts.update(x["labels"])
        for k, at in x["first"].items():
            first.setdefault(k, at)
    file = train[0]["file"]
    kinds = [k for k in first]               # labels in order of their first record
    declared = train[0]["names"].get("label")
    if declared:
        names = list(declared)
        index = {n: k for k, n in enumerate(names)}
        ids = Counter()
        for lab, c in counts.items():
            k = lab if isinstance(lab, int) else index.get(lab)
            if k is None or not 0 <= k < len(names):
                raise DataError(f"label {lab!r} is not one of the {len(names)} declared class "
                                "names", **first[lab], field="label",
                                hint="fix the label or the class names")
            ids[k] += c
        _no_gaps(file, names, ids, "declared by the dataset's class names")
        int_ids = False
    elif isinstance(kinds[0], int):
        for lab in kinds:
            if not isinstance(lab, int):
                raise DataError("string label among integer labels", **first[lab],
                                field="label",
                                hint="use class names everywhere or ids everywhere")
        text_of, id_of = {}, {}
        for x in train:                      # replay (id, label_text) pairs in record order
            for (lab, lt), at in x["pairs"]:
                if text_of.setdefault(lab, lt) != lt:
                    raise DataError(f"label_text {lt!r} disagrees with {text_of[lab]!r} given "
                                    f"earlier for label {lab}", **at, field="label_text",
                                    hint="each class id needs one name")
                if id_of.setdefault(lt, lab) != lab:
                    raise DataError(f"label_text {lt!r} is used for labels {id_of[lt]} and "
                                    f"{lab}", **at, field="label_text",
                                    hint="each class name needs one id")
        names = [text_of.get(k, str(k)) for k in range(max(counts) + 1)]
        _no_gaps(file, names, counts, f"by the class ids 0..{len(names) - 1}")
        int_ids = True
    else:
        for lab in kinds:
            if not isinstance(lab, str):
                raise DataError("integer label among string labels", **first[lab],
                                field="label",
                                hint="use class names everywhere or ids everywhere")
        names = sorted(counts)
        int_ids = False
    if len(names) < 2:
        raise DataError(f"every training sample has the class {names[0]!r}: there is nothing "
                        "to tell apart", file=file, field="label",
                        hint="a classifier needs training samples of at least two classes")
    return {"label_names": names, "int_ids": int_ids, "declared": bool(declared)}


def _no_gaps(file, names, counts, how):
    for k, n in enumerate(names):
        if counts[k] == 0:
            raise DataError(f"class {n!r} (id {k}), declared {how}, has no training sample",
                            file=file, field="label",
                            hint="add training samples of that class or renumber the classes")


# --------------------------------------------------------------------------------------------
# pass 2: records -> label ids -> token ids (one chunk at a time)
# --------------------------------------------------------------------------------------------
def encode_chunk(chunk: Chunk, vocab: dict, tokenizer, max_len: int) -> dict:
    """A chunk as columns of numbers: ``ids`` (list of int32 arrays), ``label`` (CLS) or
    ``labels`` (NER, per position), ``cut``, ``text`` (the embedder's input); NER also
    ``words`` (per position, -1 where unlabelled), ``tags`` (per word) and ``lost``."""
    split = read_chunk(chunk)
    names = vocab["label_names"]
    n = len(split.records)
    if vocab["task"] == "cls":
        if chunk.split == "train":
            index = {m: k for k, m in enumerate(names)}
            rows = [_cls_record(split, i) for i in range(n)]
            labels = [lab if isinstance(lab, int) else index[lab] for _, lab in rows]
            texts = [t for t, _ in rows]
        else:
            recs = _cls_eval_split(split, names, vocab["int_ids"],
                                   names if vocab["declared"] else None)
            texts, labels = [r["text"] for r in recs], [r["label"] for r in recs]
        return encode_cls(chunk.split, texts, labels, tokenizer, max_len)
    index = {m: k for k, m in enumerate(names)}
    rep, tokens, tags = _Repairs(), [], []
    for i in range(n):
        toks, tg = _ner_record(split, i, rep)
        for t in tg:
            if t not in index:
                raise DataError(f"entity type {t[2:]!r} does not occur in the training split",
                                **split.at(i), field="ner_tags",
                                hint="fix the tag or add training sentences with that type")
        tokens.append(list(toks))
        tags.append([index[t] for t in tg])
    return encode_ner(chunk.split, tokens, tags, tokenizer, max_len)


def encode_cls(split: str, texts: list[str], labels, tokenizer, max_len: int) -> dict:
    """Checked CLS records (texts, class ids) as the columns ``encode_chunk`` returns."""
    ids, cut = tokenize_cls(texts, tokenizer, max_len)
    return {"split": [split] * len(texts), "ids": [np.asarray(x, np.int32) for x in ids],
            "label": np.asarray(labels, np.int64), "cut": np.asarray(cut, bool),
            "text": list(texts)}


def encode_ner(split: str, tokens: list[list[str]], tags: list[list[int]], tokenizer,
               max_len: int) -> dict:
    """Checked NER records (tokens, tag ids) as the columns ``encode_chunk`` returns."""
    t = tokenize_ner(tokens, tags, tokenizer, max_len)
    words = []
    for lab, wds in zip(t["labels"], t["words"]):
        w = np.full(len(lab), -1, np.int32)
        w[np.asarray(lab) != IGNORE] = wds
        words.append(w)
    return {"split": [split] * len(tokens),
            "ids": [np.asarray(x, np.int32) for x in t["input_ids"]],
            "labels": [np.asarray(x, np.int32) for x in t["labels"]], "words": words,
            "tags": [np.asarray(x, np.int32) for x in tags], "cut": np.asarray(t["cut"], bool),
            "lost": np.asarray(t["lost"], np.int64), "text": [" ".join(x) for x in tokens]}


class Embed:
    """Sentence embeddings of a batch's training rows (others get zeros), float16."""

    def __init__(self, embedder: str | None, device: str = "cpu", batch_size: int = 256):
        import torch
        torch.set_num_threads(1)
        self.embedder, self.device, self.bs = embedder, device, batch_size

    def __call__(self, batch: dict) -> dict:
        from hamr_dist.embeddings import encode_texts
        train = np.asarray([s == "train" for s in batch["split"]])
        texts = [t for t, keep in zip(batch["text"], train) if keep]
        emb = encode_texts(texts, model=self.embedder, batch_size=self.bs, device=self.device)
        out = np.zeros((len(train), emb.shape[1]), np.float16)
        out[train] = emb
        return {**batch, "emb": out}


# --------------------------------------------------------------------------------------------
# writing, one batch at a time
# --------------------------------------------------------------------------------------------
class _Flat:
    """Appends int32 rows to ``<name>.bin``; ``close`` writes ``<name>_offsets.npy``."""

    def __init__(self, folder: Path, name: str, dtype=np.int32):
        self.folder, self.name, self.dtype = folder, name, dtype
        self.f = open(folder / f"{name}.bin", "wb")
        self.lengths = []

    def add(self, rows) -> None:
        self.lengths.append(np.fromiter((len(r) for r in rows), np.int64, len(rows)))
        if len(rows):
            self.f.write(np.concatenate(rows).astype(self.dtype).tobytes())

    def close(self) -> None:
        self.f.close()
        n = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        off = np.zeros(n.size + 1, np.int64)
        np.cumsum(n, out=off[1:])
        np.save(self.folder / f"{self.name}_offsets.npy", off)


class _SplitWriter:
    def __init__(self, folder: Path, task: str, pad_id: int):
        self.dir, self.task = folder, task
        self.tokens = TokenWriter(folder, task, pad_id)
        self.text = open(folder / "text.bin", "wb")
        self.text_len, self.cut, self.lost = [], [], []
        if task == "ner":
            self.words = open(folder / "words.bin", "wb")
            self.tags = _Flat(folder, "tags")

    def add(self, b: dict) -> None:
        ids = list(b["ids"])
        lengths = np.fromiter((len(x) for x in ids), np.int64, len(ids))
        flat = np.concatenate(ids).astype(np.int32) if ids else np.zeros(0, np.int32)
        if self.task == "cls":
            self.tokens.add_flat(flat, lengths, np.asarray(b["label"], np.int64))
        else:
            self.tokens.add_flat(flat, lengths, np.concatenate(list(b["labels"])).astype(np.int32))
            self.words.write(np.concatenate(list(b["words"])).astype(np.int32).tobytes())
            self.tags.add(list(b["tags"]))
            self.lost.append(np.asarray(b["lost"], np.int64))
        enc = [str(t).encode("utf-8") for t in b["text"]]
        self.text.write(b"".join(enc))
        self.text_len.append(np.fromiter((len(e) for e in enc), np.int64, len(enc)))
        self.cut.append(np.asarray(b["cut"], bool))

    def close(self) -> dict:
        cut = np.concatenate(self.cut) if self.cut else np.zeros(0, bool)
        lost = int(np.concatenate(self.lost).sum()) if self.lost else 0
        self.tokens.close({"truncated": int(cut.sum()), "dropped_words": lost})
        self.text.close()
        tl = np.concatenate(self.text_len) if self.text_len else np.zeros(0, np.int64)
        off = np.zeros(tl.size + 1, np.int64)
        np.cumsum(tl, out=off[1:])
        np.save(self.dir / "text_offsets.npy", off)
        np.save(self.dir / "cut.npy", cut.astype(np.uint8))
        if self.task == "ner":
            self.words.close()
            self.tags.close()
        return {"n": int(cut.size), "tokens": self.tokens.tokens, "truncated": int(cut.sum()),
                "dropped_words": lost}


# --------------------------------------------------------------------------------------------
# the whole step
# --------------------------------------------------------------------------------------------
def model_info(model: str | None) -> dict:
    from hamr_dist.embeddings import model_fingerprint
    from hamr_dist.model import default_model
    name = model or default_model()
    return {"model": name, "fingerprint": model_fingerprint(name)}


def prepare(source: str, out: str | Path, *, task: str | None = None, model: str | None = None,
            max_seq_length: int = 128, embedder: str | None = None, embed: bool = True,
            meta_set: str = "copy", seed: int = 0, use_ray: bool = False,
            address: str | None = None, num_cpus: int | None = None,
            chunk_bytes: int = 4 << 20, replace: bool = True, progress=None) -> Path:
    """Prepare ``source`` into the folder ``out`` (written to ``.out.tmp-<pid>`` and renamed,
    so a folder with a manifest is always complete; ``replace=False`` keeps an ``out`` that
    another process wrote meanwhile). Returns ``out``."""
    from transformers import AutoTokenizer

    from hamr_dist.hub import check_model_source
    check_task(task)
    out = Path(out)
    tmp = _tmp_folder(out)
    t0 = time.perf_counter()
    chunks = plan(str(source), chunk_bytes=chunk_bytes)
    task = task or detect_chunk_task(next(c for c in chunks if c.split == "train"))
    minfo = model_info(model)
    if model:
        check_model_source(model, "--model")
    tok = AutoTokenizer.from_pretrained(minfo["model"])
    run = _RayRun(address, num_cpus) if use_ray else None
    try:
        summaries = run.scan(chunks, task) if run else [scan_chunk(c, task) for c in chunks]
        vocab = vocabulary(task, summaries)
        t1 = time.perf_counter()
        n_train = sum(s["n"] for s in summaries if s["split"] == "train")
        batches = (run.encode(chunks, vocab, minfo["model"], max_seq_length, embed, embedder)
                   if run else _local_batches(chunks, vocab, tok, max_seq_length, embed,
                                              embedder))
        written = _write(tmp, task, tok.pad_token_id or 0, batches, n_train, embed, embedder,
                         progress)
    finally:
        if run:
            run.close()
    manifest = _manifest(task, vocab, source, max_seq_length, minfo, tok, written)
    manifest.update(timing_s={"vocabulary": round(t1 - t0, 2),
                              "encode": round(time.perf_counter() - t1, 2)},
                    ray=bool(use_ray), chunks=len(chunks))
    return _finish(tmp, out, manifest, meta_set, seed, replace)


def prepare_records(data, out: str | Path, *, model: str | None = None,
                    max_seq_length: int = 128, embedder: str | None = None, embed: bool = False,
                    meta_set: str = "copy", seed: int = 0, replace: bool = True,
                    batch: int = 10_000) -> Path:
    """Prepare records already loaded and checked (a ``schema.LoadedData``: records passed in
    code, the built-in synthetic corpus) into the folder ``out``, in this process. Its label
    vocabulary is taken as it is (no second validation pass); tokenizing and writing are
    ``prepare``'s, so the folder is the one ``prepare`` writes for the same records."""
    from transformers import AutoTokenizer

    from hamr_dist.hub import check_model_source
    out = Path(out)
    tmp = _tmp_folder(out)
    t0 = time.perf_counter()
    minfo = model_info(model)
    if model:
        check_model_source(model, "--model")
    tok = AutoTokenizer.from_pretrained(minfo["model"])

    def batches():
        emb = Embed(embedder) if embed else None
        for split in SPLITS:
            recs = getattr(data, split)
            for s in range(0, len(recs), batch):
                part = recs[s:s + batch]
                if data.task == "cls":
                    b = encode_cls(split, [r["text"] for r in part], [r["label"] for r in part],
                                   tok, max_seq_length)
                else:
                    b = encode_ner(split, [list(r["tokens"]) for r in part],
                                   [list(r["tags"]) for r in part], tok, max_seq_length)
                yield emb(b) if emb else b

    written = _write(tmp, data.task, tok.pad_token_id or 0, batches(), len(data.train), embed,
                     embedder, None)
    vocab = {"label_names": list(data.label_names), "entity_types": list(data.entity_types),
             "warnings": list(getattr(data, "warnings", []))}
    manifest = _manifest(data.task, vocab, data.source, max_seq_length, minfo, tok, written)
    manifest.update(timing_s={"encode": round(time.perf_counter() - t0, 2)}, ray=False,
                    chunks=0)
    return _finish(tmp, out, manifest, meta_set, seed, replace)


def _tmp_folder(out: Path) -> Path:
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def _write(tmp: Path, task: str, pad_id: int, batches, n_train: int, embed: bool, embedder,
           progress) -> dict:
    """Write the encoded ``batches`` (in split order) into ``tmp``: the splits' files and, with
    ``embed``, the training embeddings. Returns the manifest's ``splits`` and ``embeddings``."""
    tmp.mkdir(parents=True)
    writers = {s: _SplitWriter(tmp / s, task, pad_id) for s in SPLITS}
    emb_info = {"embedder": embedder, **model_info(embedder)} if embed else None
    emb = None
    row = 0
    for b in _by_split(batches):
        split = b["split"][0]
        writers[split].add(b)
        if embed and split == "train":
            if emb is None:
                (tmp / "embeddings").mkdir()
                emb = np.lib.format.open_memmap(
                    tmp / "embeddings" / f"{_fp_name(emb_info)}.npy", mode="w+",
                    dtype=np.float16, shape=(n_train, b["emb"].shape[1]))
            emb[row:row + len(b["split"])] = b["emb"]
            row += len(b["split"])
        if progress:
            progress(len(b["split"]))
    counts = {s: w.close() for s, w in writers.items()}
    if emb is not None:
        emb.flush()
        emb_info["dim"] = int(emb.shape[1])
        del emb
    return {"splits": counts, "embeddings": [emb_info] if embed else []}


def _manifest(task, vocab, source, max_seq_length, minfo, tok, written) -> dict:
    return {"format": FORMAT, "task": task, "label_names": vocab["label_names"],
            "entity_types": vocab["entity_types"], "source": str(source),
            "options": {"max_seq_length": int(max_seq_length), **minfo},
            "embeddings": written["embeddings"], "splits": written["splits"],
            "warnings": vocab["warnings"], "pad_id": int(tok.pad_token_id or 0)}


def _finish(tmp: Path, out: Path, manifest: dict, meta_set: str, seed: int,
            replace: bool) -> Path:
    """Write the manifest (last: it marks the folder complete) and move ``tmp`` to ``out``."""
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    from hamr_dist.data.prepared import Prepared
    Prepared(tmp).meta_set(meta_set, seed)          # written beside the data, for inspection
    if out.exists() and replace:
        shutil.rmtree(out)
    try:
        tmp.replace(out)
    except OSError:                 # another process finished the same folder first: keep it
        if not is_prepared(out):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _by_split(batches):
    """Batches cut where the split changes (a Ray batch may hold the end of one split and the
    start of the next; order is preserved)."""
    for b in batches:
        sp = np.asarray(b["split"])
        cuts = [0] + (np.flatnonzero(sp[1:] != sp[:-1]) + 1).tolist() + [len(sp)]
        for a, z in zip(cuts, cuts[1:]):
            if z > a:
                yield b if (a, z) == (0, len(sp)) else {k: v[a:z] for k, v in b.items()}


def _fp_name(info: dict) -> str:
    return hashlib.sha256(info["fingerprint"].encode()).hexdigest()[:16]


def embeddings_file(folder: Path, embedder: str | None) -> Path:
    """Where a prepared folder keeps (or would keep) the embeddings of ``embedder``."""
    return Path(folder) / "embeddings" / f"{_fp_name(model_info(embedder))}.npy"


def _local_batches(chunks, vocab, tok, max_len, embed, embedder):
    emb = Embed(embedder) if embed else None
    for c in chunks:
        b = encode_chunk(c, vocab, tok, max_len)
        if not b["split"]:
            continue
        yield emb(b) if emb else b


class _RayRun:
    """Both passes as Ray Data pipelines on the cluster at ``address`` (or a local Ray)."""

    def __init__(self, address, num_cpus):
        from hamr_dist.distributed.trainer import ensure_ray
        import ray
        self.started = ensure_ray(address, num_cpus=num_cpus or os.cpu_count())
        import ray.data  # noqa: F401 - configures Ray Data's loggers, quieted below
        if os.environ.get("HAMR_LOG", "INFO").upper() != "DEBUG":
            for h in logging.getLogger("ray.data").handlers:   # console only; its file log
                if not isinstance(h, logging.FileHandler):     # keeps everything
                    h.setLevel(logging.WARNING)
        self.cpus = int(ray.cluster_resources().get("CPU", 1))
        self.gpus = int(ray.cluster_resources().get("GPU", 0))

    def _items(self, chunks):
        import dataclasses

        import ray.data
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True     # the driver writes in chunk order
        ctx.enable_progress_bars = False
        return ray.data.from_items([{"chunk": dataclasses.asdict(c)} for c in chunks],
                                   override_num_blocks=len(chunks))

    def scan(self, chunks, task):
        rows = self._items(chunks).map(
            lambda r: {"summary": json.dumps(_jsonable(scan_chunk(Chunk(**r["chunk"]), task)))}
        ).take_all()
        return [_unjson(json.loads(r["summary"])) for r in rows]

    def encode(self, chunks, vocab, model, max_len, embed, embedder):
        import ray.data

        class Encode:
            def __init__(self):
                from transformers import AutoTokenizer
                self.tok = AutoTokenizer.from_pretrained(model)

            def __call__(self, batch):
                parts = [encode_chunk(Chunk(**c), vocab, self.tok, max_len)
                         for c in batch["chunk"]]
                return {k: _cat([p[k] for p in parts]) for k in parts[0]}

        pool = ray.data.ActorPoolStrategy
        ds = self._items(chunks).map_batches(Encode, batch_size=1, batch_format="numpy",
                                             compute=pool(size=max(1, self.cpus // 2)),
                                             num_cpus=1)
        if embed:      # one GPU per embedding actor when the cluster has GPUs, else CPUs
            gpu = self.gpus > 0
            ds = ds.map_batches(Embed, fn_constructor_args=(embedder, "cuda" if gpu else "cpu"),
                                batch_size=1024, batch_format="numpy",
                                compute=pool(size=max(1, self.gpus if gpu else self.cpus // 2)),
                                num_gpus=1 if gpu else 0, num_cpus=0 if gpu else 1)
        for b in ds.iter_batches(batch_size=4096, batch_format="numpy", prefetch_batches=1):
            if len(b["split"]):
                yield b

    def close(self):
        if self.started:
            import ray
            ray.shutdown()


def _cat(parts):
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return [x for p in parts for x in p]


def _jsonable(summary: dict) -> dict:
    """Summaries cross Ray as JSON: label keys keep their type (int or str)."""
    s = dict(summary)
    if "labels" in s:
        s["labels"] = [[k, v] for k, v in s["labels"].items()]
        s["first"] = [[k, v] for k, v in s["first"].items()]
        s["pairs"] = [[list(k), v] for k, v in s["pairs"]]
    return s


def _unjson(s: dict) -> dict:
    if "labels" in s:
        s["labels"] = {k: v for k, v in s["labels"]}
        s["first"] = {k: v for k, v in s["first"]}
        s["pairs"] = [(tuple(k), v) for k, v in s["pairs"]]
    return s


# --------------------------------------------------------------------------------------------
# the cache: hamr train --data RAW prepares once, keyed by content and options
# --------------------------------------------------------------------------------------------
RAY_MIN_BYTES = 64 << 20        # smaller sources are prepared in-process when training


def _files(source: str):
    """(file system, root, [FileInfo of every file under it]) of a local folder or URI."""
    from pyarrow import fs as pafs

    from hamr_dist.data.chunks import _fs
    filesystem, root = _fs(source)
    infos = sorted(filesystem.get_file_info(pafs.FileSelector(root, recursive=True)),
                   key=lambda i: i.path)
    return filesystem, root, [i for i in infos if i.type == pafs.FileType.File
                              and not Path(i.path).name.startswith(".")]


def source_bytes(source: str) -> int:
    """Bytes of the source's files (0 for a hub name)."""
    if "://" not in source and not Path(source).exists():
        return 0
    return sum(i.size for i in _files(source)[2])


def content_key(source: str, task: str | None, model: str | None, max_seq_length: int) -> str:
    """sha256 over the source's bytes (local files; remote ones by path, size and mtime) and
    the options that change the prepared data."""
    h = hashlib.sha256(json.dumps([FORMAT, task, model_info(model)["fingerprint"],
                                   int(max_seq_length)]).encode())
    p = Path(source)
    if "://" not in source and not p.exists():
        h.update(b"hub:" + source.encode())            # a hub name: by name
        return h.hexdigest()[:32]
    _, root, infos = _files(source)
    for info in infos:
        h.update(os.path.relpath(info.path, root).encode() + b"\0")
        if "://" in source:
            h.update(f"{info.size}:{info.mtime_ns}".encode())
            continue
        with open(info.path, "rb") as f:
            while block := f.read(8 << 20):
                h.update(block)
    return h.hexdigest()[:32]


def cached_prepare(source: str, cache_dir: str | None, *, task=None, model=None,
                   max_seq_length: int = 128, use_ray: bool = False, address=None,
                   embed: bool = False, embedder=None) -> Path:
    """The prepared folder of ``source`` in the cache, preparing it on first use."""
    from hamr_dist.progress import phase
    from hamr_dist.train.features import cache_root
    key = content_key(str(source), task, model, max_seq_length)
    out = cache_root(cache_dir) / "prepared" / key
    if is_prepared(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with phase(f"preparing {source} (tokenized once, cached in {out})"):
        prepare(str(source), out, task=task, model=model, max_seq_length=max_seq_length,
                use_ray=use_ray, address=address, embed=embed, embedder=embedder,
                replace=False)
    return out


def records_key(data, model: str | None, max_seq_length: int) -> str:
    """sha256 over loaded records (``prepare_records``' input: task, vocabulary, every
    record's fields) and the options that change the prepared data."""
    h = hashlib.sha256(json.dumps([FORMAT, "records", data.task, list(data.label_names),
                                   list(data.entity_types), model_info(model)["fingerprint"],
                                   int(max_seq_length)]).encode())
    fields = ("text", "label") if data.task == "cls" else ("tokens", "tags")
    for split in SPLITS:
        h.update(f"\0{split}\0".encode())
        for r in getattr(data, split):
            h.update(json.dumps([r[f] for f in fields], ensure_ascii=False,
                                default=lambda v: v.tolist()).encode() + b"\n")  # numpy
    return h.hexdigest()[:32]


def cached_prepare_records(data, cache_dir: str | None, *, model=None,
                           max_seq_length: int = 128) -> Path:
    """The prepared folder of loaded records in the cache (``prepare_records`` on first use,
    keyed by their content), so records passed in code train from the same format as files."""
    from hamr_dist.progress import phase
    from hamr_dist.train.features import cache_root
    out = cache_root(cache_dir) / "prepared" / records_key(data, model, max_seq_length)
    if is_prepared(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    n = len(data.train) + len(data.dev) + len(data.test)
    with phase(f"preparing {data.source} (tokenized once, cached in {out})", announce=n >= 5000):
        prepare_records(data, out, model=model, max_seq_length=max_seq_length, replace=False)
    return out
