"""hamr prepare (data/prepare.py): the prepared folder holds what the records give when computed
directly (tokens, labels, meta set, embeddings), bad input fails as load_data fails, training
from it equals training from the records passed in code, every build reads that one format,
and the Ray Data pipeline writes the same files."""
from __future__ import annotations

import dataclasses
import filecmp
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hamr_dist.cli import main
from hamr_dist.config import TrainConfig
from hamr_dist.data.io import load_data
from hamr_dist.data.meta_set import build_meta_set
from hamr_dist.data.prepare import embeddings_file, prepare
from hamr_dist.data.prepared import Prepared
from hamr_dist.data.tokenize import TokenBatches, encode_records
from hamr_dist.errors import DataError

WORDS = ["alpha", "beta", "gamma", "delta", "unbelievably", "x", "Rome", "Oslo", "café"]


def write_corpus(folder: Path, task: str, n: int = 300, seed: int = 0) -> Path:
    """Imbalanced records, some long enough to be truncated at max_seq_length 16; train as
    JSON lines, dev as CSV (classification) and test as a JSON array."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def rec():
        k = int(rng.integers(1, 25))
        toks = [WORDS[j] for j in rng.integers(0, len(WORDS), k)]
        if task == "cls":
            return {"text": " ".join(toks), "label": ["a", "b", "c"][int(rng.choice(3, p=[.7, .2, .1]))]}
        tags, prev = [], None
        for t in toks:
            kind = {"Rome": "LOC", "Oslo": "LOC", "café": "ORG"}.get(t)
            tags.append("O" if kind is None else ("I-" if prev == kind else "B-") + kind)
            prev = kind
        return {"tokens": toks, "ner_tags": tags}

    splits = {"train": [rec() for _ in range(n)], "dev": [rec() for _ in range(60)],
              "test": [rec() for _ in range(40)]}
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in splits["train"]))
    if task == "cls":
        import csv
        with open(folder / "dev.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows([r["text"], r["label"]] for r in splits["dev"])
    else:
        (folder / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in splits["dev"]))
    (folder / "test.json").write_text(json.dumps(splits["test"], indent=1))
    return folder


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from hamr_dist.embeddings import default_model_path
    return AutoTokenizer.from_pretrained(default_model_path())


@pytest.mark.parametrize("task", ["cls", "ner"])
def test_prepared_folder_equals_the_in_memory_computation(tmp_path, tok, task):
    src = write_corpus(tmp_path / "src", task)
    # small chunks: several per split, so chunk boundaries and line numbers are exercised
    out = prepare(str(src), tmp_path / "prep", max_seq_length=16, embed=(task == "cls"),
                  meta_set="move", seed=3, chunk_bytes=2000)
    p = Prepared(out)
    data = load_data(src)
    assert (p.task, p.label_names, p.entity_types) == (data.task, data.label_names,
                                                        data.entity_types)
    assert p.manifest["chunks"] > 5
    for split in ("train", "dev", "test"):
        recs = getattr(data, split)
        enc = encode_records(recs, tok, task, 16)
        t = p.tokens(split)
        assert len(t) == len(recs)
        for i in range(len(recs)):
            a, b = t.offsets[i], t.offsets[i + 1]
            assert list(t.ids[a:b]) == enc.ds[i]["input_ids"]
            if task == "cls":
                assert int(t.labels[i]) == recs[i]["label"]
            else:
                lab = np.asarray(t.labels[a:b])
                assert lab.tolist() == enc.ds[i]["labels"]
                assert np.asarray(p.words(split)[a:b])[lab != -100].tolist() == enc.ds[i]["words"]
                flat, off = p.word_tags(split)
                assert np.asarray(flat[off[i]:off[i + 1]]).tolist() == recs[i]["tags"]
        assert p.manifest["splits"][split]["truncated"] == enc.truncated > 0 or split != "train"
        assert p.texts(split) == [r["text"] if task == "cls" else " ".join(r["tokens"])
                                  for r in recs]
    # the balanced meta set: the same draw as build_meta_set on the records
    for mode, seed in (("move", 3), ("copy", 0)):
        _, _, info = build_meta_set(data, mode=mode, seed=seed)
        drawn, pinfo = p.meta_set(mode, seed)
        assert drawn == info["drawn_indices"] and pinfo == info
    assert (out / "meta-move-seed3.json").is_file()
    if task == "cls":                      # float16 on disk; encode_texts computed here
        from hamr_dist.embeddings import encode_texts
        ref = encode_texts([r["text"] for r in data.train])
        emb = np.load(embeddings_file(out, None))
        assert emb.dtype == np.float16 and emb.shape == ref.shape
        assert np.abs(emb.astype(np.float32) - ref).max() < 2e-3


BAD = {
    "invalid JSON line": lambda d: (d / "train.jsonl").write_text(
        (d / "train.jsonl").read_text() + '{"text": "x", "label": \n'),
    "missing field": lambda d: (d / "train.jsonl").write_text(
        (d / "train.jsonl").read_text() + '{"text": "x"}\n'),
    "label absent from train": lambda d: (d / "dev.csv").write_text(
        (d / "dev.csv").read_text() + "new text,zzz\n"),
    "csv extra cells": lambda d: (d / "dev.csv").write_text(
        (d / "dev.csv").read_text() + "fine, really,a\n"),
    "not utf-8": lambda d: (d / "train.jsonl").write_bytes(
        (d / "train.jsonl").read_bytes().replace(b"gamma", b"g\xffmma", 1)),
    "mixed label types": lambda d: (d / "train.jsonl").write_text(
        (d / "train.jsonl").read_text() + '{"text": "x", "label": 1}\n'),
    "empty text": lambda d: (d / "train.jsonl").write_text(
        (d / "train.jsonl").read_text() + '{"text": "  ", "label": "a"}\n'),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_fails_as_load_data_fails(tmp_path, case):
    src = write_corpus(tmp_path / "src", "cls", n=200)
    BAD[case](src)
    with pytest.raises(DataError) as ref:
        load_data(src)
    with pytest.raises(DataError) as got:
        prepare(str(src), tmp_path / "prep", embed=False, chunk_bytes=1500)
    assert str(got.value) == str(ref.value)
    assert not (tmp_path / "prep").exists()


def test_bad_ner_input_fails_as_load_data_fails(tmp_path):
    src = write_corpus(tmp_path / "src", "ner", n=100)
    (src / "dev.jsonl").write_text((src / "dev.jsonl").read_text()
                                   + '{"tokens": ["a", "b"], "ner_tags": ["O", "X-PER"]}\n')
    with pytest.raises(DataError) as ref:
        load_data(src)
    with pytest.raises(DataError) as got:
        prepare(str(src), tmp_path / "prep", embed=False, chunk_bytes=1500)
    assert str(got.value) == str(ref.value) and "dev.jsonl:61" in str(got.value)


def test_cli_prepare_bad_input_is_one_line_exit_2(tmp_path, capsys):
    src = write_corpus(tmp_path / "src", "cls", n=50)
    BAD["missing field"](src)
    assert main(["prepare", "--data", str(src), "--output-dir", str(tmp_path / "p"),
                 "--no-ray", "--no-embeddings"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "train.jsonl:51, field 'label': missing field" in err


def test_cli_prepare_then_train_equals_training_on_the_records(tmp_path, capsys):
    """hamr prepare + hamr train --data PREPARED == the same records given to build in code
    (prepared into the cache by prepare_records), metric for metric: full fine-tuning of a
    tiny encoder, 2 epochs (the second boosts by neighbours), hamr-cb."""
    from benchmarks.scale import tiny_encoder
    from hamr_dist.train.loop import train
    model = tiny_encoder(tmp_path)
    src = write_corpus(tmp_path / "src", "cls", n=240)
    prep = tmp_path / "prep"
    assert main(["prepare", "--data", str(src), "--output-dir", str(prep), "--no-ray",
                 "--no-embeddings", "--max-seq-length", "16", "--model", model]) == 0
    assert "prepared cls data (train 240, dev 60, test 40" in capsys.readouterr().out
    cfg = TrainConfig(data=str(prep), model=model, embedder=model, max_seq_length=16,
                      num_train_epochs=2, per_device_train_batch_size=16, progress=False,
                      mlflow=False, cache_dir=str(tmp_path / "cache"), method="hamr-cb",
                      learning_rate=1e-3, output_dir=str(tmp_path / "a"))
    a = train(cfg).metrics
    from hamr_dist.train.setup import build
    s = build(dataclasses.replace(cfg, data=str(src)), data=load_data(src))
    assert Path(s.cfg.data).parent == tmp_path / "cache" / "prepared"   # not prep: its own
    b = train(dataclasses.replace(cfg, data=str(src), output_dir=str(tmp_path / "b")),
              setup=s).metrics
    assert a["history"] == b["history"]
    assert a["dev"] == b["dev"] and a["test"] == b["test"]
    assert a["meta_set"] == b["meta_set"] and a["truncated"] == b["truncated"]


def test_raw_data_is_prepared_into_the_cache_once(tmp_path):
    from hamr_dist.train.setup import build
    src = write_corpus(tmp_path / "src", "cls", n=80)
    cfg = TrainConfig(data=str(src), max_seq_length=16, progress=False, mlflow=False,
                      cache_dir=str(tmp_path / "cache"))
    s = build(cfg)
    assert s.train.records is None and len(s.train.batches) == 80     # memory-mapped
    made = list((tmp_path / "cache" / "prepared").iterdir())
    assert len(made) == 1 and (made[0] / "manifest.json").is_file()
    stamp = (made[0] / "manifest.json").stat().st_mtime_ns
    build(cfg)
    assert (made[0] / "manifest.json").stat().st_mtime_ns == stamp        # a cache hit
    build(dataclasses.replace(cfg, max_seq_length=32))                    # another option
    assert len(list((tmp_path / "cache" / "prepared").iterdir())) == 2


def test_prepared_with_another_tokenizer_length_is_refused(tmp_path):
    from hamr_dist.errors import ConfigError
    from hamr_dist.train.setup import build
    src = write_corpus(tmp_path / "src", "cls", n=40)
    prep = prepare(str(src), tmp_path / "prep", max_seq_length=16, embed=False)
    with pytest.raises(ConfigError, match="max_seq_length 16"):
        build(TrainConfig(data=str(prep), max_seq_length=32, progress=False, mlflow=False))


def test_ray_data_pipeline_writes_the_same_files(tmp_path, ray_local):
    src = write_corpus(tmp_path / "src", "ner", n=200)
    a = prepare(str(src), tmp_path / "local", max_seq_length=16, embed=True, chunk_bytes=3000)
    b = prepare(str(src), tmp_path / "ray", max_seq_length=16, embed=True, chunk_bytes=3000,
                use_ray=True)
    for split in ("train", "dev", "test"):
        for f in sorted((a / split).iterdir()):
            if f.name != "manifest.json":
                assert filecmp.cmp(f, b / split / f.name, shallow=False), (split, f.name)
    ea, eb = np.load(embeddings_file(a, None)), np.load(embeddings_file(b, None))
    assert np.abs(ea.astype(np.float32) - eb.astype(np.float32)).max() < 2e-3
    assert Prepared(b).meta_set("copy", 0) == Prepared(a).meta_set("copy", 0)
    assert ray_local.is_initialized()            # the session's Ray was used, not shut down


def test_mapped_training_split_gathers_the_records_batches(tmp_path, tok):
    """The training split a prepared run uses (a view without the meta set's moved samples)
    gives the batches the in-memory TokenBatches gives for the same records."""
    from hamr_dist.data.tokenize import TokenBatches
    from hamr_dist.train.setup import build
    src = write_corpus(tmp_path / "src", "ner", n=150)
    cfg = TrainConfig(data=str(src), max_seq_length=16, progress=False, mlflow=False,
                      meta_set="move", cache_dir=str(tmp_path / "cache"))
    s = build(cfg)
    data = load_data(src)
    _, train_records, _ = build_meta_set(data, mode="move", seed=cfg.seed)
    ref = TokenBatches(encode_records(train_records, tok, "ner", 16).ds, tok.pad_token_id, "ner")
    idx = np.random.default_rng(0).integers(0, len(ref), 40)
    got, want = s.train.batches(idx), ref(idx)
    assert len(s.train.batches) == len(ref) and all(torch.equal(got[k], want[k]) for k in want)


def test_frozen_features_are_cached_and_read_memory_mapped(tmp_path):
    """--freeze-encoder on a prepared folder: features are written to the cache and read back
    memory-mapped (no N x hidden copy per worker), equal to the encoder's output, and the
    training batches gather them."""
    from hamr_dist.train.features import cached_features, compute_features
    from hamr_dist.train.setup import build
    src = write_corpus(tmp_path / "src", "ner", n=60)
    cfg = TrainConfig(data=str(src), max_seq_length=16, freeze_encoder=True, progress=False,
                      mlflow=False, cache_dir=str(tmp_path / "cache"))
    s = build(cfg)
    tokens = Prepared(next((tmp_path / "cache" / "prepared").iterdir())).tokens("train")
    from hamr_dist.model import default_model
    flat, off = cached_features(s.model, tokens, default_model(), cfg.pooling,
                                cfg.cache_dir)                                     # a hit
    assert isinstance(flat, np.memmap)
    ref_flat, ref_off = compute_features(s.model, tokens)
    np.testing.assert_allclose(flat, ref_flat, atol=1e-5)
    np.testing.assert_array_equal(off, ref_off)
    b = s.train.batches([3, 7])
    np.testing.assert_allclose(b["features"][0, :off[4] - off[3]], flat[off[3]:off[4]])


@pytest.mark.parametrize("fmt", ["parquet", "hf"])
def test_parquet_and_saved_hf_datasets_prepare_as_load_data_reads_them(tmp_path, fmt):
    import datasets
    src = write_corpus(tmp_path / "src", "cls", n=120)
    data = load_data(src)
    names = data.label_names
    dd = datasets.DatasetDict({
        k: datasets.Dataset.from_dict(
            {"text": [r["text"] for r in getattr(data, s)],
             "label": [r["label"] for r in getattr(data, s)]},
            features=datasets.Features({"text": datasets.Value("string"),
                                        "label": datasets.ClassLabel(names=names)}))
        for k, s in (("train", "train"), ("validation", "dev"), ("test", "test"))})
    folder = tmp_path / fmt
    if fmt == "hf":
        dd.save_to_disk(str(folder))
    else:
        folder.mkdir()
        for k, ds in dd.items():
            ds.to_parquet(str(folder / f"{k}.parquet"))
    ref = load_data(folder)
    p = Prepared(prepare(str(folder), tmp_path / "prep", embed=False, max_seq_length=16))
    assert p.label_names == ref.label_names == names
    assert [int(x) for x in p.labels("train")] == [r["label"] for r in ref.train]
    assert p.texts("test") == [r["text"] for r in ref.test]


@pytest.mark.parametrize("task", ["cls", "ner"])
def test_records_in_code_train_from_the_prepared_format(tmp_path, tok, task):
    """One data path: build(cfg, data=records) trains from a memory-mapped prepared folder in
    the cache, byte for byte the folder hamr prepare writes from the same records in files; its
    batches, labels, meta set and class weights are those computed from the records directly;
    a second build reuses the folder."""
    from hamr_dist.data.mapped import MappedTokens
    from hamr_dist.losses import entity_groups, icf_weights
    from hamr_dist.train.setup import build
    src = write_corpus(tmp_path / "src", task, n=150)
    data = load_data(src)
    cfg = TrainConfig(max_seq_length=16, meta_set="move", seed=2, method="icf", progress=False,
                      mlflow=False, cache_dir=str(tmp_path / "cache"))
    s = build(cfg, data=data)
    assert isinstance(s.train.batches, MappedTokens) and s.train.records is None
    folder = Path(s.cfg.data)
    assert folder.parent == tmp_path / "cache" / "prepared"
    ref = prepare(str(src), tmp_path / "prep", max_seq_length=16, embed=False)
    for split in ("train", "dev", "test"):
        for f in sorted((ref / split).iterdir()):
            if f.name != "manifest.json":
                assert filecmp.cmp(f, folder / split / f.name, shallow=False), (split, f.name)
    a, b = Prepared(folder).manifest, Prepared(ref).manifest
    for k in ("task", "label_names", "entity_types", "splits", "options", "pad_id"):
        assert a[k] == b[k], k
    # against the records: the meta set drawn as build_meta_set draws it, the training view
    # without the moved samples, their batches, labels and the ICF weights of their classes
    meta, train_records, info = build_meta_set(data, mode="move", seed=2)
    assert s.meta_info == info and info["drawn"] > 0
    want = TokenBatches(encode_records(train_records, tok, task, 16).ds, tok.pad_token_id, task)
    idx = np.random.default_rng(0).integers(0, len(want), 50)
    got, exp = s.train.batches(idx), want(idx)
    assert len(s.train.batches) == len(want) and all(torch.equal(got[k], exp[k]) for k in exp)
    key = "label" if task == "cls" else "tags"
    assert s.meta.records == [{key: r[key]} for r in meta]
    assert s.dev.records == [{key: r[key]} for r in data.dev]
    if task == "cls":
        assert s.train.labels.tolist() == [r["label"] for r in train_records]
        ys = [r["label"] for r in train_records]
    else:
        ys = [t for r in train_records for t in r["tags"]]
    counts = np.bincount(ys, minlength=len(data.label_names))
    groups = entity_groups(data.label_names) if task == "ner" else None
    torch.testing.assert_close(s.class_weights.cpu(), icf_weights(counts, groups=groups))
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    assert Path(build(cfg, data=load_data(src)).cfg.data) == folder                  # reused
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp


def test_synthetic_corpus_trains_from_the_prepared_format(tmp_path):
    """Without --data the built-in corpus, too, is prepared into the cache and memory-mapped;
    the run sees its records as the generator makes them (meta set, labels, --max-*)."""
    from hamr_dist.data.mapped import MappedTokens
    from hamr_dist.data.synthetic import make_synthetic
    from hamr_dist.train.setup import build
    cfg = TrainConfig(max_train_samples=500, max_eval_samples=100, seed=4, progress=False,
                      mlflow=False, cache_dir=str(tmp_path / "cache"))
    s = build(cfg)
    assert isinstance(s.train.batches, MappedTokens)
    assert s.data.source.startswith("synthetic(") and s.cfg.data is not None
    data = make_synthetic(seed=0)
    data.train, data.dev, data.test = data.train[:500], data.dev[:100], data.test[:100]
    meta, train_records, info = build_meta_set(data, seed=4)
    assert s.meta_info == info
    assert s.train.labels.tolist() == [r["label"] for r in train_records]
    assert s.meta.records == [{"label": r["label"]} for r in meta]
    assert s.test.records == [{"label": r["label"]} for r in data.test]
    assert Prepared(s.cfg.data).texts("train", range(500)) == [r["text"] for r in train_records]
