"""Encoder + head. One module for classification and NER, fine-tuned or on cached features.

The encoder is any Hugging Face ``AutoModel``; the head is ours (an MLP), so the same head
trains on live encoder outputs or on cached features (``--freeze-encoder``). How a trained
model is saved and read back: ``export.py``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

from .embeddings import default_model_path as default_model
from .errors import ConfigError

from .export import HEAD_FILE, META_FILE  # noqa: F401 -- their historical home


def load_encoder(name: str | None, eager: bool, flag: str = "--model"):
    """AutoTokenizer + AutoModel; eager attention when a step differentiates twice (SDPA kernels
    have no double backward)."""
    from transformers import AutoModel, AutoTokenizer
    from .hub import check_model_source
    if name:
        check_model_source(name, flag)
    name = name or default_model()
    kwargs = {"attn_implementation": "eager"} if eager else {}
    try:
        tok = AutoTokenizer.from_pretrained(name)
        enc = AutoModel.from_pretrained(name, **kwargs).float()   # fp32 master weights, whatever was saved
    except Exception as e:   # noqa: BLE001 -- OSError, ValueError, a broken safetensors file...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ConfigError(f"model {name!r} could not be loaded ({first}); pass a local HF model "
                          f"folder or a hub name to {flag}") from None
    return tok, enc


class Head(nn.Module):
    def __init__(self, dim: int, n_labels: int, hidden: int, dropout: float):
        super().__init__()
        if hidden > 0:
            self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, hidden), nn.GELU(),
                                     nn.Dropout(dropout), nn.Linear(hidden, n_labels))
        else:
            self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, n_labels))

    def forward(self, x):
        return self.net(x)


def mean_pool(hidden, mask):
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


class HamrModel(nn.Module):
    """forward(batch) -> logits: [B, C] (cls) or [B, T, C] (ner).

    A batch holds either ``input_ids``/``attention_mask`` (encoder runs) or ``features``
    (cached encoder outputs: [B, H] for cls, [B, T, H] for ner), never both.
    """

    def __init__(self, encoder, task: str, n_labels: int, head_hidden: int = 256,
                 dropout: float = 0.1, pooling: str = "mean", dim: int | None = None):
        super().__init__()
        self.encoder, self.task, self.pooling = encoder, task, pooling
        dim = dim or encoder.config.hidden_size
        self.head = Head(dim, n_labels, head_hidden, dropout)
        self.head_cfg = {"head_hidden": head_hidden, "dropout": dropout, "dim": dim}

    def encode(self, batch):
        out = self.encoder(input_ids=batch["input_ids"],
                           attention_mask=batch["attention_mask"]).last_hidden_state
        if self.task == "ner":
            return out
        return mean_pool(out, batch["attention_mask"]) if self.pooling == "mean" else out[:, 0]

    def forward(self, batch):
        feats = batch["features"] if "features" in batch else self.encode(batch)
        return self.head(feats)

    def save(self, out_dir: str | Path, tokenizer, label_names, extra: dict | None = None,
             encoder_ref: str | None = None):
        """Write the trained model to ``out_dir`` (see ``export.save``); ``encoder_ref``: the
        frozen encoder's path or hub name, kept as a reference instead of a copy."""
        from .export import save
        save(self, out_dir, tokenizer, label_names, extra, encoder_ref)


def load_trained(path: str | Path):
    """(model, tokenizer, meta) from an output directory of ``hamr train`` (any version)."""
    from .export import load
    return load(path)


_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")


def scope_parameter_names(model: HamrModel, scope) -> list[str]:
    """Names of the trainable parameters the virtual step updates for a meta scope:
    'all', 'head', or an int K = the top K encoder layers plus the head."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if scope == "all":
        return names
    head = [n for n in names if n.startswith("head.")]
    if scope == "head":
        return head
    layer_of = {n: int(m.group(1)) for n in names if (m := _LAYER.search(n))}
    if not layer_of:
        raise ConfigError("--meta-scope topK needs an encoder with numbered layers; use all or head")
    top = max(layer_of.values())
    return [n for n in names if n in layer_of and layer_of[n] > top - scope] + head


def set_threads():
    """Use the cores we have; torch's default can oversubscribe inside Ray workers."""
    n = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if n > 0:
        torch.set_num_threads(n)
