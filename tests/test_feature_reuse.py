"""The frozen-encoder meta split is gathered from the train/dev features by token ids; it must
equal running the encoder over the meta split itself."""
import json
import random

import numpy as np
import pytest

from hamr_dist.data.io import load_data
from hamr_dist.data.synthetic import make_synthetic

from hamr_dist.config import TrainConfig
from hamr_dist.data.tokenize import TokenBatches
from hamr_dist.train import features
from hamr_dist.train import setup as setup_mod
from hamr_dist.train.features import compute_features


def ner_folder(root):
    rng = random.Random(0)
    words = {"O": ["the", "a", "cheap", "near", "open", "late", "with", "good"],
             "LOC": ["rome", "oslo", "new york"], "CUI": ["thai food", "pizza", "sushi bar"]}
    for split, n in (("train", 120), ("dev", 30), ("test", 20)):
        rows = []
        for _ in range(n):
            toks, tags = [], []
            for _ in range(rng.randint(2, 7)):
                typ = rng.choice(["O"] * 6 + ["LOC"] * 2 + ["CUI"])
                piece = rng.choice(words[typ]).split()
                toks += piece
                tags += ["O"] * len(piece) if typ == "O" else [f"B-{typ}"] + [f"I-{typ}"] * (len(piece) - 1)
            rows.append(json.dumps({"tokens": toks, "ner_tags": tags}))
        (root / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    return load_data(str(root))


@pytest.mark.parametrize("task", ["cls", "ner"])
def test_meta_features_gathered_equal_encoded(tmp_path, task, monkeypatch):
    if task == "cls":
        data = make_synthetic(seed=0)
        data.train, data.dev, data.test = data.train[:120], data.dev[:40], data.test[:20]
    else:
        (tmp_path / "ner").mkdir()
        data = ner_folder(tmp_path / "ner")
    calls = []
    real = features.cached_features
    monkeypatch.setattr(features, "cached_features", lambda m, b, *a: calls.append(len(b)) or real(m, b, *a))
    s = setup_mod.build(TrainConfig(freeze_encoder=True, cache_dir=str(tmp_path / "cache"), seed=3), data=data)
    assert s.meta_info["drawn"] > 0               # the meta split holds training samples too
    assert len(calls) == 3                        # train, dev, test: the meta split was gathered
    got = s.meta.batches
    ref = compute_features(s.model, TokenBatches(s.meta.encoded.ds, s.tokenizer.pad_token_id or 0,
                                                 data.task))
    if data.task == "cls":
        np.testing.assert_allclose(got.x.numpy(), ref, atol=1e-5)
    else:
        np.testing.assert_allclose(got.flat.numpy(), ref[0], atol=1e-5)
        np.testing.assert_array_equal(got.off, ref[1])
