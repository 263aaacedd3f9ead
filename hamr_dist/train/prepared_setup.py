"""``build`` from a prepared dataset folder (``data/prepare.py``), the one data path of every
run (raw files, records passed in code and the synthetic corpus are prepared into the cache
first, ``prepared_config``): the training split stays on disk, memory-mapped, and is gathered
by index; the small splits (dev, test, the meta set) are read into memory as token ids with
their gold labels, for evaluation and the meta batches.

Memory per worker: the O(N) numeric arrays the run needs (labels or unit counts for the meta
set and the sample groups, the row index of the training view), nothing per record.
"""
from __future__ import annotations

import logging

import datasets
import numpy as np

from ..config import TrainConfig, parse_scope
from ..data.prepared import Prepared
from ..data.schema import LoadedData
from ..data.tokenize import IGNORE, Encoded, TokenBatches
from ..embeddings import model_fingerprint
from ..errors import ConfigError
from ..methods import get_method
from ..model import default_model, scope_parameter_names
from .setup import Setup, Split, build_model, pick_device

log = logging.getLogger("hamr_dist")


def _rows(n: int, limit) -> np.ndarray:
    return np.arange(min(n, limit) if limit else n, dtype=np.int64)


def small_split(p: Prepared, parts) -> Split:
    """Records ``rows`` of each ``(split, rows)`` part, in memory: token ids, labels (NER: per
    position, words, n_words) and the gold labels (``{"label": k}`` or ``{"tags": [...]}``)."""
    cols = {"input_ids": [], "labels": []}
    if p.task == "ner":
        cols.update(words=[], n_words=[])
    records, truncated = [], 0
    for split, rows in parts:
        t = p.tokens(split)
        cut = p.cut(split)
        if p.task == "ner":
            words, (tags, toff) = p.words(split), p.word_tags(split)
        for i in rows:
            i = int(i)
            a, b = int(t.offsets[i]), int(t.offsets[i + 1])
            cols["input_ids"].append(np.asarray(t.ids[a:b]).tolist())
            truncated += int(cut[i])
            if p.task == "cls":
                k = int(t.labels[i])
                cols["labels"].append(k)
                records.append({"label": k})
            else:
                lab = np.asarray(t.labels[a:b])
                cols["labels"].append(lab.tolist())
                cols["words"].append(np.asarray(words[a:b])[lab != IGNORE].tolist())
                gold = np.asarray(tags[toff[i]:toff[i + 1]]).tolist()
                cols["n_words"].append(len(gold))
                records.append({"tags": gold})
    ds = datasets.Dataset.from_dict(cols)
    dropped = 0
    if p.task == "ner":
        dropped = sum(n - len(w) for n, w in zip(cols["n_words"], cols["words"]))
    return Split(records, Encoded(ds, truncated, dropped),
                 TokenBatches(ds, p.tokens(parts[0][0]).pad_id, p.task))


def check_options(cfg: TrainConfig, p: Prepared) -> None:
    """The tokenizer and max_seq_length the folder was prepared with must be the run's."""
    opts = p.manifest["options"]
    want = model_fingerprint(cfg.model or default_model())
    if want != opts["fingerprint"]:
        raise ConfigError(f"{cfg.data} was prepared with the tokenizer of {opts['model']!r}, "
                          f"this run uses {cfg.model or default_model()!r}: prepare it again "
                          f"with --model, or pass --model {opts['model']}")
    if int(cfg.max_seq_length) != int(opts["max_seq_length"]):
        raise ConfigError(f"{cfg.data} was prepared with max_seq_length "
                          f"{opts['max_seq_length']}, this run asks for {cfg.max_seq_length}: "
                          f"pass --max-seq-length {opts['max_seq_length']} or prepare it again")


def prepared_config(cfg: TrainConfig, use_ray: bool = False, data=None) -> TrainConfig:
    """``cfg`` with its data replaced by a prepared folder in the cache, prepared on first use
    and keyed by content (and task, tokenizer, max_seq_length): a raw ``--data`` (with Ray
    Data when ``use_ray`` and the source has at least ``RAY_MIN_BYTES``, else in this process),
    records passed in code as ``data`` (a ``LoadedData``), or, without either, the built-in
    synthetic corpus. Unchanged when ``cfg.data`` is already prepared. So every run trains from
    the one memory-mapped format."""
    import dataclasses

    from ..data.prepare import (RAY_MIN_BYTES, cached_prepare, cached_prepare_records,
                                is_prepared, source_bytes)
    if data is None and cfg.data and is_prepared(cfg.data):
        return cfg
    if data is None and not cfg.data:
        from ..data.synthetic import make_synthetic
        data = make_synthetic(seed=0)
    if data is not None:          # their own task, as ever: cfg.task is not asked
        path = cached_prepare_records(data, cfg.cache_dir, model=cfg.model,
                                      max_seq_length=cfg.max_seq_length)
        return dataclasses.replace(cfg, data=str(path))
    # Ray Data's start-up (actor pools) costs more than it saves on small data
    use_ray = use_ray and source_bytes(cfg.data) >= RAY_MIN_BYTES
    path = cached_prepare(cfg.data, cfg.cache_dir, task=cfg.task, model=cfg.model,
                          max_seq_length=cfg.max_seq_length, use_ray=use_ray,
                          address=cfg.address)
    return dataclasses.replace(cfg, data=str(path))


def training_view(cfg: TrainConfig, p: Prepared):
    """Which records a run uses: (train rows, dev rows, test rows, meta set's drawn training
    positions, meta info, the training records it trains on)."""
    train_rows = _rows(p.n("train"), cfg.max_train_samples)
    dev_rows = _rows(p.n("dev"), cfg.max_eval_samples)
    test_rows = _rows(p.n("test"), cfg.max_eval_samples)
    whole = len(train_rows) == p.n("train") and len(dev_rows) == p.n("dev")
    drawn, meta_info = p.meta_set(cfg.meta_set, cfg.seed, *(
        (None, None) if whole else (train_rows, dev_rows)))
    drawn = np.asarray(drawn, dtype=np.int64)
    keep = train_rows if cfg.meta_set == "copy" else np.delete(train_rows, drawn)
    return train_rows, dev_rows, test_rows, drawn, meta_info, keep


def training_rows(cfg: TrainConfig) -> np.ndarray:
    """The prepared training records a run with ``cfg`` trains on, in sample order."""
    return training_view(cfg, Prepared(cfg.data))[-1]


def build_prepared(cfg: TrainConfig, device=None) -> Setup:
    from ..progress import phase
    p = Prepared(cfg.data)
    check_options(cfg, p)
    cfg = cfg.resolved(p.task)
    method = get_method(cfg.method)
    for w in p.warnings:
        log.warning(w)
    data = LoadedData(p.task, p.label_names, p.entity_types, [], [], [],
                      p.manifest.get("source", str(cfg.data)), p.warnings)

    train_rows, dev_rows, test_rows, drawn, meta_info, keep = training_view(cfg, p)

    scope = parse_scope(cfg.meta_scope)
    tok, model = build_model(cfg, method, p.task, len(p.label_names), device)

    with phase(f"opening the prepared dataset {cfg.data} ({len(keep)} training samples)",
               announce=len(keep) >= 100_000):
        mapped = p.tokens("train").subset(keep)
        units = p.unit_counts("train", keep)
        labels = np.asarray(p.labels("train")[keep], np.int64) if p.task == "cls" else None
        n_cut = int(np.asarray(p.cut("train"))[keep].sum())
        train = Split(None, Encoded(None, n_cut, 0), mapped, labels, units, keep)
        splits = {"train": train,
                  "meta": small_split(p, [("dev", dev_rows), ("train", train_rows[drawn])]),
                  "dev": small_split(p, [("dev", dev_rows)]),
                  "test": small_split(p, [("test", test_rows)])}
    if n_cut:
        log.warning("%d of %d training %s longer than max_seq_length=%d were truncated",
                    n_cut, len(keep), "texts" if p.task == "cls" else "sentences",
                    cfg.max_seq_length)

    if cfg.freeze_encoder:
        _frozen_features(cfg, model, splits, drawn)

    scope_names = scope_parameter_names(model, "head" if cfg.freeze_encoder else scope)
    weights = counts = offsets = None
    if method.class_weights or method.logit_adjust:
        from ..losses import entity_groups, icf_weights, logit_offsets
        groups = entity_groups(p.label_names) if p.task == "ner" else None
        counts = label_counts(p, keep)
        ref = label_counts(p, dev_rows, "dev") if cfg.class_prior_reference == "dev" else None
        weights = icf_weights(counts, groups=groups, reference=ref,
                              power=cfg.class_prior_power).to(pick_device(device))
        if method.logit_adjust:     # the prior goes into the logits (the rest into the draw)
            tau = cfg.logit_adjust_tau * (1 - cfg.class_prior_draw)
            weights, offsets = None, logit_offsets(weights, tau)
    return Setup(cfg, method, data, model, tok, splits["train"], splits["meta"], splits["dev"],
                 splits["test"], meta_info, scope_names, weights, class_counts=counts,
                 logit_offsets=offsets)


def label_counts(p: Prepared, rows: np.ndarray, split: str = "train") -> np.ndarray:
    """Class counts of ``rows`` of ``split`` (NER: every word's tag), for the ICF class weights."""
    n = len(p.label_names)
    if p.task == "cls":
        return np.bincount(np.asarray(p.labels(split)[rows], np.int64), minlength=n)
    return p.tag_counts(split, rows)


def _gather(feats, idx):
    """Rows ``idx`` of CLS features [N, H] or NER features (flat, offsets)."""
    if not isinstance(feats, tuple):
        return feats[idx]
    flat, off = feats
    parts = [flat[off[i]:off[i + 1]] for i in idx]
    return _concat_ner(parts, flat.shape[1])


def _concat_ner(parts, dim):
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(p) for p in parts])
    flat = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
    return flat, offsets


def _concat(feats):
    if not isinstance(feats[0], tuple):
        return np.concatenate(feats)
    parts = [f[0][f[1][i]:f[1][i + 1]] for f in feats for i in range(len(f[1]) - 1)]
    return _concat_ner(parts, feats[0][0].shape[1])


def _frozen_features(cfg, model, splits, drawn) -> None:
    """Features of every split, cached on disk by token ids (a cache hit for any run over the
    same tokens, whatever folder they came from)."""
    from .features import FeatureBatches, cached_features
    model.encoder.requires_grad_(False)
    model.encoder.eval()
    name = cfg.model or default_model()
    feats = {k: cached_features(model, splits[k].batches, name, cfg.pooling, cfg.cache_dir)
             for k in ("train", "dev", "test")}
    if cfg.meta_set == "copy":     # the meta set = dev + training samples: gather them
        feats["meta"] = _concat([feats["dev"], _gather(feats["train"], drawn)])
    else:                          # moved samples are not in the training view: encode them
        feats["meta"] = cached_features(model, splits["meta"].batches, name, cfg.pooling,
                                        cfg.cache_dir)
    for k, s in splits.items():
        labels = s.encoded.ds["labels"] if s.encoded.ds is not None else train_position_labels(s)
        s.batches = FeatureBatches(feats[k], labels, s.batches.task)


def train_position_labels(s: Split):
    """Labels of a memory-mapped training split as FeatureBatches takes them."""
    t = s.batches
    if t.task == "cls":
        return s.labels
    return [t.row_labels(j) for j in range(len(t))]


def prepared_embeddings(cfg, rows=None) -> np.ndarray:
    """float32 sentence embeddings of the training records ``rows`` (all by default) of the
    prepared folder ``cfg.data``: the prepared ones for ``cfg.embedder`` when the folder has
    them, else computed from the stored texts (and cached on disk by content). The neighbour
    actor calls this too."""
    from ..embeddings import cached_embeddings
    p = Prepared(cfg.data)
    emb = p.embeddings(cfg.embedder)
    if emb is not None:
        rows = slice(None) if rows is None else np.asarray(rows, np.int64)
        return np.asarray(emb[rows], dtype=np.float32)
    return cached_embeddings(p.texts("train", rows), model=cfg.embedder, cache_dir=cfg.cache_dir)
