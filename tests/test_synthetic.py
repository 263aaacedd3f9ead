"""The generated demo corpus: deterministic, imbalanced, every class in every split."""
from __future__ import annotations

from collections import Counter

from hamr_dist.data.synthetic import CLASSES, make_synthetic


def test_deterministic():
    a, b = make_synthetic(seed=3), make_synthetic(seed=3)
    assert (a.train, a.dev, a.test) == (b.train, b.dev, b.test)
    assert a.train != make_synthetic(seed=4).train


def test_shape_imbalance_and_classes():
    data = make_synthetic()
    assert data.task == "cls" and data.label_names == CLASSES and data.entity_types == []
    assert len(data.train) == 2400 and len(data.dev) == 400 and len(data.test) == 600
    for split in (data.train, data.dev, data.test):
        counts = Counter(r["label"] for r in split)
        assert set(counts) == set(range(len(CLASSES)))
        assert all(set(r) == {"text", "label"} and r["text"].strip() for r in split)
    train = Counter(r["label"] for r in data.train)
    assert max(train.values()) / min(train.values()) >= 20


def test_texts_distinct_across_splits():
    data = make_synthetic(n_train=1000)
    texts = [r["text"] for r in data.train + data.dev + data.test]
    assert len(texts) == len(set(texts)) == 2000
