"""The balanced meta set: median target, counts, copy vs move, the half rule (hand-computed)."""
from __future__ import annotations

import pytest

from hamr_dist.data.meta_set import build_meta_set
from hamr_dist.data.schema import LoadedData
from hamr_dist.errors import ConfigError


def cls_data(train_counts: list[int], dev_counts: list[int]) -> LoadedData:
    names = [chr(ord("a") + k) for k in range(len(train_counts))]
    recs = lambda counts, tag: [{"text": f"{tag} {names[k]} {i}", "label": k}  # noqa: E731
                                for k, n in enumerate(counts) for i in range(n)]
    return LoadedData("cls", names, [], recs(train_counts, "train"), recs(dev_counts, "dev"),
                      [{"text": "t", "label": 0}], "handmade", [])


NER_NAMES = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def ner_data(train: list[str], dev: list[str]) -> LoadedData:
    """Sentences given as space-separated tag strings; the tokens do not matter here."""
    recs = lambda sents: [{"tokens": ["w"] * len(s.split()),  # noqa: E731
                           "tags": [NER_NAMES.index(t) for t in s.split()]} for s in sents]
    return LoadedData("ner", NER_NAMES, ["LOC", "ORG", "PER"], recs(train), recs(dev),
                      recs(["O"]), "handmade", [])


def labels(records):
    return sorted(r["label"] for r in records)


def test_cls_copy_fills_every_class_to_the_median():
    # dev counts 6, 2, 5, 1 -> sorted 1 2 5 6 -> median 3.5 -> target 4
    data = cls_data(train_counts=[10, 5, 1, 3], dev_counts=[6, 2, 5, 1])
    meta, train, info = build_meta_set(data)
    assert info["median"] == 3.5 and info["target"] == 4
    assert info["dev_counts"] == {"a": 6, "b": 2, "c": 5, "d": 1}
    assert info["meta_counts"] == {"a": 6, "b": 4, "c": 5, "d": 4}
    assert info["drawn"] == 5 and info["drawn_per_class"] == {"a": 0, "b": 2, "c": 0, "d": 3}
    assert train == data.train                                     # copy: unchanged
    assert info["train_counts_before"] == info["train_counts_after"] == {
        "a": 10, "b": 5, "c": 1, "d": 3}
    assert meta[:len(data.dev)] == data.dev                        # dev first, then drawn
    assert labels(meta) == [0] * 6 + [1] * 4 + [2] * 5 + [3] * 4
    assert all(data.train[i] == meta[len(data.dev) + j]
               for j, i in enumerate(info["drawn_indices"]))
    assert info["below_target"] == []


def test_cls_move_keeps_half_of_each_class():
    data = cls_data(train_counts=[10, 5, 1, 3], dev_counts=[6, 2, 5, 1])
    meta, train, info = build_meta_set(data, mode="move")
    # b: 5 train, needs 2, may lose 2 (3 >= 2.5 left); d: 3 train, needs 3, may lose 1 (2 >= 1.5)
    assert info["meta_counts"] == {"a": 6, "b": 4, "c": 5, "d": 2}
    assert info["train_counts_after"] == {"a": 10, "b": 3, "c": 1, "d": 2}
    assert info["drawn"] == 3 and info["below_target"] == ["d"]
    assert len(train) == 19 - 3 and labels(train) == [0] * 10 + [1] * 3 + [2] + [3] * 2
    moved = {r["text"] for r in meta[len(data.dev):]}
    assert not moved & {r["text"] for r in train}


def test_spec_example_rare_class():
    # HAMR_SPEC section 3: 13 train and 2 dev samples, median 26
    data = cls_data(train_counts=[13, 40, 40], dev_counts=[2, 26, 30])
    _, train, info = build_meta_set(data, mode="copy")
    assert info["target"] == 26 and info["meta_counts"]["a"] == 15 and len(train) == 93
    _, train, info = build_meta_set(data, mode="move")
    assert info["meta_counts"]["a"] == 2 + 6 and info["train_counts_after"]["a"] == 7


def test_seeded_and_deterministic():
    data = cls_data(train_counts=[100, 50], dev_counts=[10, 2])    # b draws 4 of 50
    a = build_meta_set(data, seed=1)[2]["drawn_indices"]
    assert a == build_meta_set(data, seed=1)[2]["drawn_indices"]
    assert a != build_meta_set(data, seed=2)[2]["drawn_indices"]


def test_ner_counts_mentions_and_draws_whole_sentences():
    dev = ["B-PER"] * 5 + ["B-ORG O B-ORG", "B-ORG", "B-LOC I-LOC"]   # PER 5, ORG 3, LOC 1
    train = ["B-LOC I-LOC O B-LOC O B-PER",                           # LOC 2 (+ PER 1)
             "B-ORG", "O O", "B-PER"]
    meta, train_out, info = build_meta_set(ner_data(train, dev))
    assert info["unit"] == "mentions" and info["target"] == 3
    assert info["dev_counts"] == {"LOC": 1, "ORG": 3, "PER": 5}
    assert info["drawn_indices"] == [0]                   # the only sentence with LOC
    assert info["meta_counts"] == {"LOC": 3, "ORG": 3, "PER": 6}
    assert len(meta) == len(dev) + 1 and len(train_out) == 4


def test_ner_move_respects_half_rule_for_every_type():
    dev = ["B-PER"] * 5 + ["B-ORG O B-ORG", "B-ORG", "B-LOC I-LOC"]
    train = ["B-LOC I-LOC O B-LOC O B-PER", "B-ORG", "O O", "B-PER"]
    _, train_out, info = build_meta_set(ner_data(train, dev), mode="move")
    # moving sentence 0 would leave 0 of 2 LOC mentions: not allowed
    assert info["drawn"] == 0 and info["below_target"] == ["LOC"] and len(train_out) == 4

    train.append("B-LOC B-LOC")                           # LOC 4 in train: one sentence may go
    _, train_out, info = build_meta_set(ner_data(train, dev), mode="move")
    assert info["drawn"] == 1 and info["meta_counts"]["LOC"] == 3
    assert info["train_counts_after"]["LOC"] == 2 and len(train_out) == 4


def test_unknown_mode():
    with pytest.raises(ConfigError, match="unknown meta-set mode 'steal'"):
        build_meta_set(cls_data([2, 2], [1, 1]), mode="steal")
