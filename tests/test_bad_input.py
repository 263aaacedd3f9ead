"""Every user-made data error is a one-line DataError naming file, line/record, field and a fix."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hamr_dist.data.io import load_data
from hamr_dist.errors import ConfigError, DataError

CLS = {"train": [{"text": "good", "label": 1, "label_text": "pos"},
                 {"text": "bad", "label": 0, "label_text": "neg"},
                 {"text": "nice", "label": 1, "label_text": "pos"}],
       "dev": [{"text": "ok", "label": 1, "label_text": "pos"}],
       "test": [{"text": "meh", "label": 0, "label_text": "neg"}]}
NER = {"train": [{"tokens": ["Ann", "in", "Rome"], "ner_tags": ["B-PER", "O", "B-LOC"]},
                 {"tokens": ["New", "York"], "ner_tags": ["B-LOC", "I-LOC"]}],
       "dev": [{"tokens": ["Bob"], "ner_tags": ["B-PER"]}],
       "test": [{"tokens": ["Oslo"], "ner_tags": ["B-LOC"]}]}


def make(folder: Path, base: dict, **override) -> Path:
    """Write base splits as JSON lines (one record a line), replacing the splits given."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, recs in {**base, **override}.items():
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return folder


def error(source, task=None) -> str:
    with pytest.raises(DataError) as info:
        load_data(source, task)
    msg = str(info.value)
    assert "\n" not in msg and "(" in msg, msg          # one line, with a hint
    return msg


def bad_train(tmp_path, base, index, **changes):
    recs = [dict(r) for r in base["train"]]
    recs[index].update(changes)
    for k, v in changes.items():
        if v is DROP:
            del recs[index][k]
    return make(tmp_path, base, train=recs)


DROP = object()


def test_missing_folder(tmp_path):
    msg = error(tmp_path / "nope")
    assert "nope" in msg and "not found" in msg


def test_path_is_a_file(tmp_path):
    (tmp_path / "x.json").write_text("[]")
    assert "expected a folder" in error(tmp_path / "x.json")


def test_missing_split(tmp_path):
    make(tmp_path, CLS)
    (tmp_path / "test.jsonl").unlink()
    msg = error(tmp_path)
    assert "no test split" in msg and str(tmp_path) in msg


def test_two_files_for_one_split(tmp_path):
    make(tmp_path, CLS)
    (tmp_path / "validation.json").write_text((tmp_path / "dev.jsonl").read_text())
    assert "several files for the dev split" in error(tmp_path)


def test_empty_file(tmp_path):
    make(tmp_path, CLS)
    (tmp_path / "dev.jsonl").write_text("  \n\n")
    msg = error(tmp_path)
    assert "dev.jsonl" in msg and "empty" in msg


def test_empty_json_array(tmp_path):
    make(tmp_path, CLS)
    (tmp_path / "dev.jsonl").unlink()
    (tmp_path / "dev.json").write_text("[ ]")
    assert "dev.json: file has no records" in error(tmp_path)


def test_invalid_json_lines_names_the_line(tmp_path):
    make(tmp_path, CLS)
    lines = (tmp_path / "train.jsonl").read_text().splitlines()
    lines[1] = lines[1][:-1]                                  # drop the closing brace
    (tmp_path / "train.jsonl").write_text("\n".join(lines))
    msg = error(tmp_path)
    assert "train.jsonl:2:" in msg and "invalid JSON" in msg


def test_invalid_json_array_names_the_line(tmp_path):
    make(tmp_path, CLS)
    (tmp_path / "train.jsonl").unlink()
    text = json.dumps(CLS["train"], indent=2)               # 5 lines per record
    text = text.replace('"bad",', '"bad"')                  # line 8 lacks its comma,
    (tmp_path / "train.json").write_text(text)                # noticed at line 9
    msg = error(tmp_path)
    assert "train.json:9:" in msg and "invalid JSON" in msg


def test_json_array_fields_name_the_record_line(tmp_path):
    make(tmp_path, CLS)
    (tmp_path / "train.jsonl").unlink()
    recs = [dict(r) for r in CLS["train"]]
    recs[2]["label"] = [1]
    (tmp_path / "train.json").write_text(json.dumps(recs, indent=2))
    msg = error(tmp_path)
    assert "train.json:12, field 'label'" in msg               # record 2 starts on line 12


def test_record_not_an_object(tmp_path):
    make(tmp_path, CLS)
    (tmp_path / "dev.jsonl").write_text('{"text": "a", "label": 1}\n[1, 2]\n')
    assert "dev.jsonl:2: expected a JSON object, got list" in error(tmp_path)


def test_missing_field(tmp_path):
    msg = error(bad_train(tmp_path, CLS, 1, text=DROP))
    assert "train.jsonl:2, field 'text': missing field" in msg


def test_missing_field_with_explicit_task(tmp_path):
    msg = error(make(tmp_path, CLS), task="ner")
    assert "train.jsonl:1, field 'tokens': missing field" in msg


def test_task_not_detectable(tmp_path):
    msg = error(make(tmp_path, CLS, train=[{"sentence": "a", "y": 1}]))
    assert "train.jsonl:1" in msg and "cannot tell the task" in msg


def test_label_is_a_list(tmp_path):
    msg = error(bad_train(tmp_path, CLS, 2, label=[1, 0]))
    assert "train.jsonl:3, field 'label'" in msg and "got list" in msg


def test_text_is_not_a_string(tmp_path):
    msg = error(bad_train(tmp_path, CLS, 0, text=None))
    assert "train.jsonl:1, field 'text'" in msg and "got null" in msg


def test_tokens_is_a_string(tmp_path):
    msg = error(bad_train(tmp_path, NER, 1, tokens="New York"))
    assert "train.jsonl:2, field 'tokens'" in msg and "got string" in msg


def test_ner_tags_not_a_list(tmp_path):
    msg = error(bad_train(tmp_path, NER, 0, ner_tags="B-PER O B-LOC"))
    assert "train.jsonl:1, field 'ner_tags'" in msg and "got string" in msg


def test_tokens_and_tags_lengths_differ(tmp_path):
    msg = error(bad_train(tmp_path, NER, 1, ner_tags=["B-LOC"]))
    assert "train.jsonl:2, field 'ner_tags': 1 tags for 2 tokens" in msg


@pytest.mark.parametrize("tag", ["X-PER", "B-", "S-LOC", "per", ""])
def test_tag_not_iob2(tmp_path, tag):
    msg = error(bad_train(tmp_path, NER, 0, ner_tags=["B-PER", tag, "O"]))
    assert "train.jsonl:1, field 'ner_tags'" in msg and f"tag {tag!r} at token 1 is not IOB2" in msg


def test_integer_tags_without_names(tmp_path):
    msg = error(bad_train(tmp_path, NER, 0, ner_tags=[1, 0, 2]))
    assert "train.jsonl:1, field 'ner_tags'" in msg and "no tag names" in msg


def test_stray_inside_tags_are_repaired_with_a_warning(tmp_path):
    train = [{"tokens": ["Ann", "in", "Rome"], "ner_tags": ["I-PER", "O", "I-LOC"]},
             {"tokens": ["New", "York", "Bob"], "ner_tags": ["B-LOC", "I-LOC", "I-PER"]}]
    data = load_data(make(tmp_path, NER, train=train))
    b_per, b_loc, i_loc = (data.label_names.index(t) for t in ("B-PER", "B-LOC", "I-LOC"))
    assert data.train[0]["tags"] == [b_per, 0, b_loc]            # after start and after O
    assert data.train[1]["tags"] == [b_loc, i_loc, b_per]        # after another type
    assert len(data.warnings) == 1
    w = data.warnings[0]
    assert "train.jsonl" in w and "repaired 3" in w and "train.jsonl:1 token 0" in w


def test_dev_label_absent_from_train(tmp_path):
    dev = [{"text": "ok", "label": 1}, {"text": "so so", "label": 2, "label_text": "mid"}]
    msg = error(make(tmp_path, CLS, dev=dev))
    assert "dev.jsonl:2, field 'label'" in msg and "does not occur in the training split" in msg


def test_test_string_label_absent_from_train(tmp_path):
    recs = {"train": [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}],
            "dev": [{"text": "c", "label": "x"}], "test": [{"text": "d", "label": "z"}]}
    msg = error(make(tmp_path, recs))
    assert "test.jsonl:1, field 'label'" in msg and "'z'" in msg


def test_dev_label_text_disagrees_with_train(tmp_path):
    msg = error(make(tmp_path, CLS, dev=[{"text": "ok", "label": 1, "label_text": "neg"}]))
    assert "dev.jsonl:1, field 'label_text'" in msg


def test_dev_entity_type_absent_from_train(tmp_path):
    msg = error(make(tmp_path, NER, dev=[{"tokens": ["IBM"], "ner_tags": ["B-ORG"]}]))
    assert "dev.jsonl:1, field 'ner_tags'" in msg and "'ORG'" in msg


def test_declared_class_without_train_sample(tmp_path):
    # ids 0 and 2 named by label_text: class id 1 is declared by the id range but never seen
    train = [{"text": "a", "label": 0, "label_text": "neg"},
             {"text": "b", "label": 2, "label_text": "pos"}]
    msg = error(make(tmp_path, CLS, train=train))
    assert "train.jsonl" in msg and "field 'label'" in msg and "no training sample" in msg


def test_classlabel_class_without_train_sample(tmp_path):
    datasets = pytest.importorskip("datasets")
    feats = datasets.Features({"text": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["a", "b", "c"])})
    ds = datasets.Dataset.from_dict({"text": ["x", "y"], "label": [0, 1]}, features=feats)
    datasets.DatasetDict({"train": ds, "validation": ds, "test": ds}).save_to_disk(
        str(tmp_path / "hf"))
    msg = error(tmp_path / "hf")
    assert "hf[train]" in msg and "'c'" in msg and "no training sample" in msg


def test_hf_dataset_without_test_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": ["x"], "label": [0]})
    datasets.DatasetDict({"train": ds, "validation": ds}).save_to_disk(str(tmp_path / "hf"))
    assert "no test split" in error(tmp_path / "hf")


@pytest.mark.parametrize("text", ["", "   \t "])
def test_empty_text(tmp_path, text):
    msg = error(bad_train(tmp_path, CLS, 1, text=text))
    assert "train.jsonl:2, field 'text': text is empty or whitespace only" in msg


def test_empty_tokens(tmp_path):
    msg = error(bad_train(tmp_path, NER, 1, tokens=[], ner_tags=[]))
    assert "train.jsonl:2, field 'tokens': sentence has no tokens" in msg


def test_non_utf8_bytes(tmp_path):
    make(tmp_path, CLS)
    raw = (tmp_path / "dev.jsonl").read_bytes()
    at = raw.index(b"ok")
    (tmp_path / "dev.jsonl").write_bytes(raw[:at] + b"\xff" + raw[at:])
    msg = error(tmp_path)
    assert f"dev.jsonl:1: bytes that are not UTF-8 at byte offset {at}" in msg


def test_csv_row_with_extra_cells(tmp_path):
    make(tmp_path, CLS)
    (tmp_path / "dev.jsonl").unlink()
    (tmp_path / "dev.csv").write_text("text,label\nok,1\nfine, really,1\n")
    assert "dev.csv:3: row has 3 cells, the header 2" in error(tmp_path)


def test_csv_missing_cell_is_missing_field(tmp_path):
    make(tmp_path, CLS)
    (tmp_path / "dev.jsonl").unlink()
    (tmp_path / "dev.csv").write_text("text,label\nok,1\nfine\n")
    assert "dev.csv:3, field 'label': missing field" in error(tmp_path)


def test_unreadable_parquet(tmp_path):
    make(tmp_path, CLS)
    (tmp_path / "dev.jsonl").unlink()
    (tmp_path / "dev.parquet").write_bytes(b"not parquet at all")
    assert "dev.parquet: not a readable parquet file" in error(tmp_path)


def test_hub_name_not_found(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def fail(*a, **k):
        raise FileNotFoundError("Couldn't find dataset\non the Hub")
    monkeypatch.setattr(datasets, "load_dataset", fail)
    msg = error("someone/no-such-dataset")
    assert msg.startswith("someone/no-such-dataset: dataset not found locally or on the Hugging")


def test_unknown_task(tmp_path):
    with pytest.raises(ConfigError, match="unknown task 'pos'"):
        load_data(make(tmp_path, CLS), task="pos")


# ---------------------------------------------------------------- degenerate training data

def test_single_class_training_set_is_refused(tmp_path):
    one = [{"text": t, "label": "pos"} for t in ("good", "nice", "great")]
    msg = error(make(tmp_path / "a", CLS, train=one,
                     dev=[{"text": "ok", "label": "pos"}], test=[{"text": "fine", "label": "pos"}]))
    assert "train.jsonl" in msg and "'pos'" in msg and "two classes" in msg


def test_ner_training_set_without_entities_is_refused(tmp_path):
    plain = [{"tokens": ["a", "b"], "ner_tags": ["O", "O"]}] * 3
    msg = error(make(tmp_path / "a", NER, train=plain, dev=plain, test=plain))
    assert "train.jsonl" in msg and "entity" in msg


def csv_folder(folder: Path, labels: list[str]) -> Path:
    folder.mkdir(parents=True)
    rows = "".join(f"text {i},{lab}\n" for i, lab in enumerate(labels))
    for split in ("train", "dev", "test"):
        (folder / f"{split}.csv").write_text("text,label\n" + rows)
    return folder


def test_numeric_labels_follow_one_rule_in_csv_and_json(tmp_path):
    """1.0 is class id 1 in JSON and in CSV alike; 1.5 is an error in both."""
    json_data = load_data(make(tmp_path / "j", CLS, train=[
        {"text": "a", "label": 0.0}, {"text": "b", "label": 1.0}, {"text": "c", "label": 1}],
        dev=[{"text": "d", "label": 1.0}], test=[{"text": "e", "label": 0}]))
    csv_data = load_data(csv_folder(tmp_path / "c", ["0.0", "1.0", "1"]))
    assert json_data.label_names == csv_data.label_names == ["0", "1"]
    assert [r["label"] for r in json_data.train] == [r["label"] for r in csv_data.train] == [0, 1, 1]
    msg_json = error(make(tmp_path / "j2", CLS, train=[{"text": "a", "label": 0},
                                                       {"text": "b", "label": 1.5}]))
    msg_csv = error(csv_folder(tmp_path / "c2", ["0", "1.5"]))
    for msg, where in ((msg_json, "train.jsonl:2"), (msg_csv, "train.csv:3")):
        assert where in msg and "1.5" in msg and "whole number" in msg
