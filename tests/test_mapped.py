"""Memory-mapped token splits (data/mapped.py): written batch by batch, they give the same
batches as the in-memory TokenBatches, for classification and NER."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hamr_dist.data.mapped import MappedTokens, TokenWriter, write_tokens
from hamr_dist.data.tokenize import TokenBatches, encode_records


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from hamr_dist.embeddings import default_model_path
    return AutoTokenizer.from_pretrained(default_model_path())


def records(task: str, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "unbelievably", "x"]
    out = []
    for _ in range(n):
        toks = [words[k] for k in rng.integers(0, len(words), rng.integers(1, 12))]
        if task == "cls":
            out.append({"text": " ".join(toks), "label": int(rng.integers(0, 4))})
        else:
            out.append({"tokens": toks, "tags": [int(t) for t in rng.integers(0, 3, len(toks))]})
    return out


@pytest.mark.parametrize("task", ["cls", "ner"])
def test_mapped_batches_equal_token_batches(tmp_path, tok, task):
    enc = encode_records(records(task, 257), tok, task, max_len=10)
    ref = TokenBatches(enc.ds, tok.pad_token_id, task)
    write_tokens(tmp_path / "train", enc.ds, task, tok.pad_token_id, batch=50)   # 6 batches
    mapped = MappedTokens(tmp_path / "train")
    assert len(mapped) == len(ref) == 257
    assert isinstance(mapped.ids, np.memmap)
    rng = np.random.default_rng(1)
    for idx in ([0], [256, 3, 3, 17], rng.integers(0, 257, 32)):
        a, b = mapped(idx), ref(idx)
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype == torch.long, k
            assert torch.equal(a[k], b[k]), k


def test_incomplete_or_foreign_folders_are_refused(tmp_path):
    w = TokenWriter(tmp_path / "s", "cls", 0)
    w.add([[1, 2], [3]], [0, 1])
    with pytest.raises(FileNotFoundError, match="manifest"):
        MappedTokens(tmp_path / "s")                   # not closed yet
    w.close()
    assert MappedTokens(tmp_path / "s")([1])["input_ids"].tolist() == [[3]]
    with pytest.raises(IndexError):
        MappedTokens(tmp_path / "s")([2])
    with pytest.raises(ValueError, match="labels"):
        TokenWriter(tmp_path / "t", "cls", 0).add([[1]], [0, 1])
