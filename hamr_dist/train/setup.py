"""Everything a run needs before its first step: data, meta set, model, batches, embeddings.

Shared by the in-process path and every Ray Train worker (each worker builds the same thing
from the same config; cached features and embeddings make that cheap after the first).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..config import TrainConfig, parse_scope
from ..data.meta_set import build_meta_set
from ..data.tokenize import Encoded, TokenBatches, encode_records
from ..methods import Method, get_method
from ..model import HamrModel, default_model, load_encoder, scope_parameter_names
from ..progress import phase
from .features import FeatureBatches, cached_features, reuse_features

log = logging.getLogger("hamr_dist")


@dataclass
class Split:
    records: list | None     # None for a prepared training split: numbers only (below)
    encoded: Encoded         # .ds None for a prepared training split
    batches: object          # TokenBatches, MappedTokens or FeatureBatches: idx -> batch dict
    labels: np.ndarray | None = None    # prepared training split: CLS class id per sample
    units: np.ndarray | None = None     # prepared training split: [n, C] class / mention counts
    rows: np.ndarray | None = None      # prepared training split: its records in the folder


@dataclass
class Setup:
    cfg: TrainConfig
    method: Method
    data: object             # LoadedData
    model: HamrModel
    tokenizer: object
    train: Split
    meta: Split
    dev: Split
    test: Split
    meta_info: dict
    scope_names: list[str]
    class_weights: torch.Tensor | None

    @property
    def n_labels(self) -> int:
        return len(self.data.label_names)


def load_corpus(cfg: TrainConfig):
    from ..data.io import load_data
    if cfg.data:
        data = load_data(cfg.data, task=cfg.task)
    else:
        from ..data.synthetic import make_synthetic
        data = make_synthetic(seed=0)
    if cfg.max_train_samples:
        data.train = data.train[:cfg.max_train_samples]
    if cfg.max_eval_samples:
        data.dev, data.test = data.dev[:cfg.max_eval_samples], data.test[:cfg.max_eval_samples]
    return data


def label_counts(records, task: str, n: int) -> np.ndarray:
    ys = [r["label"] for r in records] if task == "cls" else [t for r in records for t in r["tags"]]
    return np.bincount(np.asarray(ys, dtype=np.int64), minlength=n)


def embedding_texts(records, task: str) -> list[str]:
    """What the sentence embedder sees: the text, or NER tokens joined by spaces (as the authors)."""
    return [r["text"] if task == "cls" else " ".join(r["tokens"]) for r in records]


def pick_device(device=None) -> torch.device:
    """The given device, else the GPU when there is one."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_model(cfg: TrainConfig, method: Method, task: str, n_labels: int, device=None):
    """(tokenizer, model) of a run, seeded, on its device."""
    # Double backward through attention needs the eager kernel; head-only scope never does.
    eager = method.meta is not None and parse_scope(cfg.meta_scope) != "head" and not cfg.freeze_encoder
    tok, enc = load_encoder(cfg.model, eager=eager)
    torch.manual_seed(cfg.seed)
    model = HamrModel(enc, task, n_labels, cfg.head_hidden, cfg.dropout, cfg.pooling)
    return tok, model.to(pick_device(device))


def build(cfg: TrainConfig, data=None, device=None) -> Setup:
    if data is None and cfg.data:
        # one data path: raw data is prepared once into the cache, then memory-mapped
        from .prepared_setup import build_prepared, prepared_config
        return build_prepared(prepared_config(cfg), device)
    data = data if data is not None else load_corpus(cfg)
    cfg = cfg.resolved(data.task)
    method = get_method(cfg.method)
    for w in getattr(data, "warnings", []):
        log.warning(w)
    meta_records, train_records, meta_info = build_meta_set(data, mode=cfg.meta_set, seed=cfg.seed)

    scope = parse_scope(cfg.meta_scope)
    tok, model = build_model(cfg, method, data.task, len(data.label_names), device)

    splits = {}
    parts = [("train", train_records), ("meta", meta_records), ("dev", data.dev), ("test", data.test)]
    n_all = sum(len(r) for _, r in parts)
    with phase(f"tokenizing {n_all} {'texts' if data.task == 'cls' else 'sentences'}",
               announce=n_all >= 5000):
        for name, recs in parts:
            e = encode_records(recs, tok, data.task, cfg.max_seq_length)
            splits[name] = Split(recs, e, TokenBatches(e.ds, tok.pad_token_id or 0, data.task))
    t = splits["train"].encoded
    if t.truncated:
        log.warning("%d of %d training %s longer than max_seq_length=%d were truncated",
                    t.truncated, len(train_records), "texts" if data.task == "cls" else "sentences",
                    cfg.max_seq_length)

    if cfg.freeze_encoder:
        model.encoder.requires_grad_(False)
        model.encoder.eval()
        name = cfg.model or default_model()
        feats = {k: cached_features(model, splits[k].batches, name, cfg.pooling, cfg.cache_dir)
                 for k in ("train", "dev", "test")}
        # the meta set (per seed) consists of dev and training samples: gather, do not re-encode
        feats["meta"] = reuse_features(splits["meta"].batches, [
            (splits[k].batches, feats[k]) for k in ("train", "dev")])
        if feats["meta"] is None:
            feats["meta"] = cached_features(model, splits["meta"].batches, name, cfg.pooling,
                                            cfg.cache_dir)
        for k, s in splits.items():
            s.batches = FeatureBatches(feats[k], s.encoded.ds["labels"], data.task)

    scope_names = scope_parameter_names(model, "head" if cfg.freeze_encoder else scope)
    weights = None
    if method.class_weights:
        from ..losses import entity_groups, icf_weights
        groups = entity_groups(data.label_names) if data.task == "ner" else None
        weights = icf_weights(label_counts(train_records, data.task, len(data.label_names)),
                              groups=groups)
        weights = weights.to(pick_device(device))
    return Setup(cfg, method, data, model, tok, splits["train"], splits["meta"], splits["dev"],
                 splits["test"], meta_info, scope_names, weights)


def train_groups(s: Setup):
    """The training samples' classes (NER: entity types), for diagnostics and hamr-cb."""
    from ..sampling.groups import SampleGroups, sample_groups
    if s.train.records is not None:
        return sample_groups(s.train.records, s.data.task, s.data.label_names)
    names = list(s.data.label_names if s.data.task == "cls" else s.data.entity_types)
    member = s.train.units > 0
    if s.data.task == "cls":
        return SampleGroups(names, member, np.asarray(s.train.labels, np.int64))
    # as sample_groups: the rarest type a sentence contains (B- and I- tags agree after repair)
    counts = member.sum(0)
    rank = np.where(member, counts[None, :], np.iinfo(np.int64).max)
    return SampleGroups(names, member, np.where(member.any(1), rank.argmin(1), -1))


def train_labels(s: Setup) -> np.ndarray:
    if s.train.records is None:
        return np.asarray(s.train.labels, dtype=np.int64)
    return np.asarray([r["label"] for r in s.train.records], dtype=np.int64)


def train_embeddings(s: Setup) -> np.ndarray:
    """The sentence embeddings of the training samples (float32), from the prepared folder
    when it holds them for this embedder, else computed (cached on disk by content)."""
    from ..embeddings import cached_embeddings
    c = s.cfg
    if s.train.records is not None:
        return cached_embeddings(embedding_texts(s.train.records, s.data.task),
                                 model=c.embedder, cache_dir=c.cache_dir)
    from .prepared_setup import prepared_embeddings
    return prepared_embeddings(c, s.train.rows)
