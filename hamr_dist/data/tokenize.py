"""Tokenization into Arrow (``datasets.Dataset``) and batching by dataset index.

NER labels go on the first sub-token of each word, -100 elsewhere; ``words`` keeps, for each
labelled position, which word it belongs to, so predictions map back to the original tokens.
Truncation is counted, not silent.
"""
from __future__ import annotations

from dataclasses import dataclass

import datasets
import torch

IGNORE = -100


@dataclass
class Encoded:
    ds: datasets.Dataset
    truncated: int          # texts (cls) or sentences (ner) cut by max_seq_length
    dropped_words: int      # ner: words that lost their label (truncated or no sub-token)


def tokenize_cls(texts: list[str], tokenizer, max_len: int) -> tuple[list, list[bool]]:
    """Token ids of each text cut at ``max_len``, and which texts were cut. Texts are
    tokenized once; only the (rare) long ones again with truncation, which gives exactly what
    one truncating call over all of them gives."""
    ids = tokenizer(texts, truncation=False)["input_ids"]
    cut = [len(x) > max_len for x in ids]
    long = [i for i, c in enumerate(cut) if c]
    if long:
        short = tokenizer([texts[i] for i in long], truncation=True, max_length=max_len)
        for i, x in zip(long, short["input_ids"]):
            ids[i] = x
    return ids, cut


def tokenize_ner(tokens: list[list[str]], tags: list[list[int]], tokenizer, max_len: int) -> dict:
    """Token ids, labels per position (the word's tag on its first sub-token, IGNORE
    elsewhere), the word of each labelled position, and per sentence whether it was cut and how
    many words lost their label."""
    enc = tokenizer(tokens, is_split_into_words=True, truncation=True, max_length=max_len)
    labels, words, cut, lost = [], [], [], []
    for i, (toks, tg) in enumerate(zip(tokens, tags)):
        lab, wds, prev = [], [], None
        for w in enc.word_ids(i):
            if w is not None and w != prev:
                lab.append(tg[w]); wds.append(w)
            else:
                lab.append(IGNORE)
            prev = w
        labels.append(lab)
        words.append(wds)
        lost.append(len(toks) - len(wds))
        cut.append(bool(wds) and wds[-1] < len(toks) - 1)
    return {"input_ids": enc["input_ids"], "labels": labels, "words": words, "cut": cut,
            "lost": lost}


def encode_records(records: list[dict], tokenizer, task: str, max_len: int) -> Encoded:
    if task == "cls":
        texts = [r["text"] for r in records]
        ids, cut = tokenize_cls(texts, tokenizer, max_len)
        cols = {"input_ids": ids, "labels": [r["label"] for r in records]}
        return Encoded(datasets.Dataset.from_dict(cols), sum(cut), 0)

    t = tokenize_ner([r["tokens"] for r in records], [r["tags"] for r in records], tokenizer,
                     max_len)
    cols = {"input_ids": t["input_ids"], "labels": t["labels"], "words": t["words"],
            "n_words": [len(r["tokens"]) for r in records]}
    return Encoded(datasets.Dataset.from_dict(cols), sum(t["cut"]), sum(t["lost"]))


def to_device(batch: dict, device) -> dict:
    """Batches are gathered on the CPU and moved once, right before use."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def pad(seqs: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


class TokenBatches:
    """Gathers any list of dataset indices into a padded batch for the encoder."""

    def __init__(self, ds: datasets.Dataset, pad_id: int, task: str):
        self.ds, self.pad_id, self.task = ds, pad_id, task

    def __len__(self):
        return len(self.ds)

    def __call__(self, idx) -> dict:
        rows = self.ds[[int(i) for i in idx]]
        ids = pad(rows["input_ids"], self.pad_id)
        mask = pad([[1] * len(s) for s in rows["input_ids"]], 0)
        labels = (pad(rows["labels"], IGNORE) if self.task == "ner"
                  else torch.as_tensor(rows["labels"], dtype=torch.long))
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}
