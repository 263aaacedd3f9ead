"""Everything a run needs before its first step: data, meta set, model, batches, embeddings.

Shared by the in-process path and every Ray Train worker (each worker builds the same thing
from the same config; cached features and embeddings make that cheap after the first). The
data always comes from a prepared folder (``prepared_setup.py``): raw files, records passed in
code and the synthetic corpus are prepared once into the cache and memory-mapped.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..config import TrainConfig, parse_scope
from ..data.tokenize import Encoded
from ..methods import Method
from ..model import HamrModel, load_encoder

log = logging.getLogger("hamr_dist")


@dataclass
class Split:
    records: list | None     # small splits: gold labels per record; training split: None
    encoded: Encoded         # .ds None for the (memory-mapped) training split
    batches: object          # TokenBatches, MappedTokens or FeatureBatches: idx -> batch dict
    labels: np.ndarray | None = None    # training split: CLS class id per sample
    units: np.ndarray | None = None     # training split: [n, C] class / mention counts
    rows: np.ndarray | None = None      # training split: its records in the prepared folder


@dataclass
class Setup:
    cfg: TrainConfig
    method: Method
    data: object             # LoadedData: task and vocabulary (records stay in the folder)
    model: HamrModel
    tokenizer: object
    train: Split
    meta: Split
    dev: Split
    test: Split
    meta_info: dict
    scope_names: list[str]
    class_weights: torch.Tensor | None
    groups: object = None    # SampleGroups, computed once by train_groups
    class_counts: np.ndarray | None = None    # ICF methods: training count per label
    hardness_opts: dict | None = None   # computed once by diagnose.hardness_options
    logit_offsets: torch.Tensor | None = None   # la methods: added to the training logits

    @property
    def n_labels(self) -> int:
        return len(self.data.label_names)


def load_corpus(cfg: TrainConfig):
    """The run's records as Python lists (``--data`` or the synthetic corpus, cut by
    ``--max-*-samples``): for describing a dataset; training reads the prepared folder."""
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
    """The run's Setup. One data path: whatever the data (a raw ``--data``, records passed in
    code as ``data``, or the built-in synthetic corpus without either), it is prepared once
    into the cache (keyed by content) and the run trains from the memory-mapped folder."""
    from .prepared_setup import build_prepared, prepared_config
    return build_prepared(prepared_config(cfg, data=data), device)


def train_groups(s: Setup):
    """The training samples' classes (NER: entity types), for diagnostics and hamr-cb; computed
    once per Setup (a Ray rank 0 needs them for the hardness actor and for its diagnostics)."""
    if s.groups is None:
        from ..sampling.groups import SampleGroups, rarest_group
        cls = s.data.task == "cls"
        member = s.train.units > 0
        primary = np.asarray(s.train.labels, np.int64) if cls else rarest_group(member)
        s.groups = SampleGroups(list(s.data.label_names if cls else s.data.entity_types),
                                member, primary)
    return s.groups


def train_labels(s: Setup) -> np.ndarray:
    return np.asarray(s.train.labels, dtype=np.int64)


def train_embeddings(s: Setup) -> np.ndarray:
    """The sentence embeddings of the training samples (float32), from the prepared folder
    when it holds them for this embedder, else computed (cached on disk by content)."""
    from .prepared_setup import prepared_embeddings
    return prepared_embeddings(s.cfg, s.train.rows)
