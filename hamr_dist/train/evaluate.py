"""Prediction and metrics: macro-F1 (sklearn) for classification, entity-level macro-F1
(mean of per-type seqeval F1, IOB2) and micro-F1 for NER."""
from __future__ import annotations

import numpy as np
import torch

from ..data.tokenize import IGNORE, to_device


def eval_logits(model, batches, idx, batch_size: int):
    """Yields (batch on the model's device, fp32 logits) for the samples ``idx``, batch by
    batch, in eval mode and without gradients; afterwards the model and its encoder are back in
    the modes they were in (a frozen encoder stays in eval mode)."""
    modes = [(m, m.training) for m in (model, getattr(model, "encoder", None)) if m is not None]
    model.eval()
    device = next(model.parameters()).device
    idx = np.asarray(idx)
    try:
        for i in range(0, len(idx), batch_size):
            b = to_device(batches(idx[i:i + batch_size]), device)
            with torch.no_grad():
                logits = model(b).float()
            yield b, logits
    finally:
        for m, was in modes:
            m.train(was)


def predict(model, batches, batch_size: int = 128) -> list:
    """Per sample: the class id (cls) or the tag ids of the labelled positions (ner)."""
    out = []
    for b, logits in eval_logits(model, batches, np.arange(len(batches)), batch_size):
        pred, labels = logits.argmax(-1).cpu(), b["labels"].cpu()
        if pred.dim() == 1:
            out.extend(pred.tolist())
        else:
            out.extend(p[l != IGNORE].tolist() for p, l in zip(pred, labels))
    return out


def words_to_tags(pred_ids, words, n_words, label_names) -> list[str]:
    """Place predictions on their words; words without a labelled sub-token (truncated) get O."""
    tags = ["O"] * n_words
    for w, p in zip(words, pred_ids):
        tags[w] = label_names[p]
    return tags


def cls_metrics(gold: list[int], pred: list[int], label_names: list[str]) -> dict:
    from sklearn.metrics import accuracy_score, f1_score
    present = sorted(set(gold) | set(pred))
    per = f1_score(gold, pred, labels=list(range(len(label_names))), average=None, zero_division=0)
    return {
        "macro_f1": float(f1_score(gold, pred, labels=present, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(gold, pred)),
        "per_class_f1": {name: float(f) for name, f in zip(label_names, per)},
    }


def ner_metrics(gold: list[list[str]], pred: list[list[str]], entity_types: list[str]) -> dict:
    from seqeval.metrics import classification_report, f1_score
    rep = classification_report(gold, pred, output_dict=True, zero_division=0)
    per = {t: float(rep[t]["f1-score"]) if t in rep else 0.0 for t in entity_types}
    return {
        "macro_f1": float(np.mean(list(per.values()))) if per else 0.0,
        "micro_f1": float(f1_score(gold, pred, zero_division=0)),
        "per_class_f1": per,
    }


def evaluate(model, batches, records, encoded_ds, data, batch_size: int = 128) -> dict:
    preds = predict(model, batches, batch_size)
    if data.task == "cls":
        return cls_metrics([r["label"] for r in records], preds, data.label_names)
    names = data.label_names
    gold = [[names[t] for t in r["tags"]] for r in records]
    pred = [words_to_tags(p, w, n, names) for p, w, n in
            zip(preds, encoded_ds["words"], encoded_ds["n_words"])]
    return ner_metrics(gold, pred, data.entity_types)


def confusion(gold, pred, n: int) -> list[list[int]]:
    m = np.zeros((n, n), dtype=int)
    np.add.at(m, (np.asarray(gold), np.asarray(pred)), 1)
    return m.tolist()
