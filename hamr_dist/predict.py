"""Label new texts (cls) or token lists (ner) with a trained output directory."""
from __future__ import annotations

import torch

from .data.tokenize import TokenBatches, encode_records
from .model import load_trained
from .train.evaluate import predict, words_to_tags


class Predictor:
    def __init__(self, model_dir):
        self.model, self.tok, self.meta = load_trained(model_dir)
        self.task, self.names = self.meta["task"], self.meta["label_names"]
        self.max_len = self.meta.get("max_seq_length", 128)

    @torch.no_grad()
    def __call__(self, items: list) -> list:
        if not items:
            return []
        if self.task == "cls":
            recs = [{"text": str(x), "label": 0} for x in items]
        else:
            toks = [x.split() if isinstance(x, str) else list(x) for x in items]
            recs = [{"tokens": t, "tags": [0] * len(t)} for t in toks]
        enc = encode_records(recs, self.tok, self.task, self.max_len)
        preds = predict(self.model, TokenBatches(enc.ds, self.tok.pad_token_id or 0, self.task))
        if self.task == "cls":
            return [self.names[p] for p in preds]
        return [words_to_tags(p, w, n, self.names)
                for p, w, n in zip(preds, enc.ds["words"], enc.ds["n_words"])]
