"""Loading the shared datasets, every file format, and saved Hugging Face datasets."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from hamr_dist.data.io import load_data

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"

CLS_RECORDS = {
    "train": [{"text": "great film", "label": 1, "label_text": "pos"},
              {"text": "awful, boring", "label": 0, "label_text": "neg"},
              {"text": 'a "quoted"\nline break, and ünïcode', "label": 1, "label_text": "pos"}],
    "dev": [{"text": "fine", "label": 1, "label_text": "pos"}],
    "test": [{"text": "bad", "label": 0, "label_text": "neg"}],
}
NER_RECORDS = {
    "train": [{"tokens": ["Ann", "lives", "in", "New", "York"],
               "ner_tags": ["B-PER", "O", "O", "B-LOC", "I-LOC"]},
              {"tokens": ["IBM", "hired", "Bob"], "ner_tags": ["B-ORG", "O", "B-PER"]}],
    "dev": [{"tokens": ["Paris"], "ner_tags": ["B-LOC"]}],
    "test": [{"tokens": ["Bob", "Smith"], "ner_tags": ["B-PER", "I-PER"]}],
}


def _same(a, b):
    assert (a.task, a.label_names, a.entity_types) == (b.task, b.label_names, b.entity_types)
    assert (a.train, a.dev, a.test) == (b.train, b.dev, b.test)


@pytest.mark.parametrize("name,task,sizes,n_labels", [
    ("sst5", "cls", (8544, 1101, 2210), 5),
    ("hurricane_irma_2017", "cls", (6579, 958, 1862), 9),
    ("mit_restaurant", "ner", (6900, 760, 1521), 1 + 2 * 8),
    ("tweetner7_2020", "ner", (4616, 576, 576), 1 + 2 * 7),
])
def test_shared_datasets(name, task, sizes, n_labels):
    if not (DATASETS / name).is_dir():
        pytest.skip(f"shared dataset {name} not found at {DATASETS}")
    data = load_data(DATASETS / name)
    assert data.task == task
    assert (len(data.train), len(data.dev), len(data.test)) == sizes
    assert len(data.label_names) == n_labels
    assert data.warnings == []
    if task == "cls":
        assert data.entity_types == []
        assert set(data.train[0]) == {"text", "label"}
        assert {r["label"] for r in data.train} == set(range(n_labels))
    else:
        assert data.label_names[0] == "O"
        assert data.entity_types == sorted(data.entity_types)
        assert data.label_names[1:3] == [f"B-{data.entity_types[0]}", f"I-{data.entity_types[0]}"]
        r = data.train[0]
        assert set(r) == {"tokens", "tags"} and len(r["tokens"]) == len(r["tags"])


def test_sst5_label_names_in_id_order():
    if not (DATASETS / "sst5").is_dir():
        pytest.skip(f"shared dataset sst5 not found at {DATASETS}")
    data = load_data(DATASETS / "sst5")
    assert data.label_names == ["very negative", "negative", "neutral", "positive",
                                "very positive"]


def write(folder: Path, split: str, fmt: str, records: list[dict], csv_lists: str = "json"):
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        (folder / f"{split}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    elif fmt == "json-array":
        (folder / f"{split}.json").write_text(json.dumps(records, indent=2, ensure_ascii=False),
                                              encoding="utf-8")
    elif fmt == "jsonl-as-json":
        (folder / f"{split}.json").write_text(
            "\n".join(json.dumps(r) for r in records), encoding="utf-8")
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.Table.from_pylist(records), folder / f"{split}.parquet")
    elif fmt == "csv":
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(records[0]))
            w.writeheader()
            for r in records:
                w.writerow({k: (json.dumps(v) if csv_lists == "json" else " ".join(v))
                            if isinstance(v, list) else v for k, v in r.items()})


FORMATS = ["jsonl", "json-array", "jsonl-as-json", "parquet", "csv"]


@pytest.mark.parametrize("records", [CLS_RECORDS, NER_RECORDS], ids=["cls", "ner"])
def test_formats_round_trip(tmp_path, records):
    loaded = []
    for fmt in FORMATS:
        for split, recs in records.items():
            # dev under its alternative name in one format, to cover "validation"
            name = "validation" if (split == "dev" and fmt == "parquet") else split
            write(tmp_path / fmt, name, fmt, recs)
        loaded.append(load_data(tmp_path / fmt))
    for other in loaded[1:]:
        _same(loaded[0], other)
    if records is CLS_RECORDS:
        assert loaded[0].label_names == ["neg", "pos"]
        assert loaded[0].train[2]["text"] == CLS_RECORDS["train"][2]["text"]
    else:
        assert loaded[0].entity_types == ["LOC", "ORG", "PER"]
        assert loaded[0].label_names == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER",
                                         "I-PER"]
        assert loaded[0].train[0]["tags"] == [5, 0, 0, 1, 2]


def test_csv_ner_space_separated(tmp_path):
    for split, recs in NER_RECORDS.items():
        write(tmp_path / "a", split, "csv", recs, csv_lists="space")
        write(tmp_path / "b", split, "jsonl", recs)
    _same(load_data(tmp_path / "a"), load_data(tmp_path / "b"))


def test_string_labels_sorted_and_task_given(tmp_path):
    recs = {"train": [{"text": "x", "label": "zeta"}, {"text": "y", "label": "alpha"}],
            "dev": [{"text": "z", "label": "zeta"}], "test": [{"text": "w", "label": "alpha"}]}
    for split, r in recs.items():
        write(tmp_path, split, "jsonl", r)
    data = load_data(str(tmp_path), task="cls")
    assert data.label_names == ["alpha", "zeta"]
    assert [r["label"] for r in data.train] == [1, 0]


def test_hf_saved_dataset_classlabel(tmp_path):
    datasets = pytest.importorskip("datasets")
    feats = datasets.Features({"text": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["neg", "neu", "pos"])})
    rows = {"train": ([["a", "b", "c", "d"], [2, 0, 1, 2]]),
            "validation": ([["e"], [1]]), "test": ([["f", "g"], [0, 2]])}
    dd = datasets.DatasetDict({k: datasets.Dataset.from_dict({"text": t, "label": y},
                                                             features=feats)
                               for k, (t, y) in rows.items()})
    dd.save_to_disk(str(tmp_path / "hf"))
    data = load_data(tmp_path / "hf")
    assert data.task == "cls" and data.label_names == ["neg", "neu", "pos"]
    assert [r["label"] for r in data.train] == [2, 0, 1, 2]
    assert data.dev == [{"text": "e", "label": 1}]
    # the same data through HF's parquet writer keeps the ClassLabel names
    for k in rows:
        dd[k].to_parquet(str(tmp_path / "pq" / f"{k}.parquet"))
    _same(data, load_data(tmp_path / "pq"))


def test_hf_saved_dataset_ner_classlabel(tmp_path):
    datasets = pytest.importorskip("datasets")
    tag_names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]       # not in canonical order
    feats = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                               "ner_tags": datasets.Sequence(datasets.ClassLabel(names=tag_names))})
    split = {"tokens": [["Ann", "in", "Rome"], ["Bob", "Lee"]], "ner_tags": [[1, 0, 3], [1, 2]]}
    dd = datasets.DatasetDict({k: datasets.Dataset.from_dict(split, features=feats)
                               for k in ("train", "validation", "test")})
    dd.save_to_disk(str(tmp_path / "hf"))
    data = load_data(tmp_path / "hf")
    assert data.task == "ner" and data.entity_types == ["LOC", "PER"]
    assert data.label_names == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert data.train[0] == {"tokens": ["Ann", "in", "Rome"], "tags": [3, 0, 1]}
    assert data.train[1]["tags"] == [3, 4]
