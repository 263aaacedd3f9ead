"""What ``hamr train`` leaves in output_dir, as Hugging Face and ``hamr predict`` read it.

Where a Hugging Face head computes exactly what the trained head computes, output_dir is a
plain HF model: ``AutoModelFor...`` and ``pipeline()`` load it with its head and ``id2label``
and predict what the trained model in memory predicts, and what ``hamr predict`` prints.
Where no HF head can (mean pooling, MLP heads over tokens), there is no top-level
``config.json``, so transformers fails loudly instead of inventing a head. A frozen encoder is
referenced with a fingerprint, not copied. Output directories of earlier versions still predict.
"""
import json
import random

import pytest
import torch

from hamr_dist.cli import main
from hamr_dist.config import TrainConfig
from hamr_dist.data.tokenize import TokenBatches, encode_records, to_device
from hamr_dist.errors import ConfigError
from hamr_dist.train.loop import train
from hamr_dist.train.setup import build

TEXTS = ["the striker scored twice in the final", "heavy rain and strong wind tomorrow",
         "simmer the sauce for ten minutes", "shares fell after the bank's report",
         "the patient needs a new prescription", "our flight to lisbon was delayed"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))      # features shared by this file's runs


def trained(tmp_path, cache, **kw):
    base = dict(freeze_encoder=True, method="ce", num_train_epochs=1, max_train_samples=200,
                max_eval_samples=60, progress=False, mlflow=False, cache_dir=cache,
                output_dir=str(tmp_path / "out"), seed=1)
    cfg = TrainConfig(**{**base, **kw})
    s = build(cfg)
    train(cfg, setup=s)
    return s, tmp_path / "out"


def logits_in_memory(s, records):
    enc = encode_records(records, s.tokenizer, s.data.task, s.cfg.max_seq_length)
    b = TokenBatches(enc.ds, s.tokenizer.pad_token_id, s.data.task)(range(len(records)))
    s.model.eval()
    with torch.no_grad():
        return s.model(to_device(b, next(s.model.parameters()).device)).cpu(), enc, b


def hamr_predict(out, items, tmp_path, capsys):
    f = tmp_path / "pred.jsonl"
    assert main(["predict", str(out), "--text", *items, "--output", str(f)]) == 0
    return [json.loads(l)["prediction"] for l in f.read_text().splitlines()]


def test_cls_output_dir_is_a_hugging_face_model(tmp_path, cache, capsys):
    from transformers import AutoModelForSequenceClassification, pipeline
    s, out = trained(tmp_path, cache, pooling="cls", save_encoder=True)
    names = s.data.label_names
    ours, _, b = logits_in_memory(s, [{"text": t, "label": 0} for t in TEXTS])

    hf, info = AutoModelForSequenceClassification.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]   # no fresh head
    assert [hf.config.id2label[i] for i in range(len(names))] == names
    with torch.no_grad():
        theirs = hf.eval()(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    assert torch.allclose(theirs, ours, atol=1e-4), (theirs - ours).abs().max()

    expected = [names[i] for i in ours.argmax(-1).tolist()]
    assert len(set(expected)) > 1                    # a trained head, not one constant label
    piped = [r["label"] for r in pipeline("text-classification", model=str(out))(TEXTS)]
    assert piped == expected == hamr_predict(out, TEXTS, tmp_path, capsys)


def ner_folder(tmp_path):
    """A small NER corpus: person names and cities in a few sentence frames."""
    rng = random.Random(0)
    people, cities = ["Anna", "Boris", "Chen", "Dara", "Emil"], ["Paris", "Lima", "Oslo", "Kyiv"]
    frames = [("{p} flew to {c} today", None), ("we met {p} near {c}", None),
              ("the mayor of {c} thanked {p}", None), ("nothing happened here today", None)]

    def sentence():
        text = rng.choice(frames)[0]
        p, c = rng.choice(people), rng.choice(cities)
        toks = text.format(p=p, c=c).split()
        tags = ["B-PER" if t in people else "B-LOC" if t in cities else "O" for t in toks]
        return {"tokens": toks, "ner_tags": tags}

    d = tmp_path / "ner"
    d.mkdir()
    for split, n in (("train", 160), ("dev", 40), ("test", 40)):
        (d / f"{split}.jsonl").write_text("".join(json.dumps(sentence()) + "\n" for _ in range(n)))
    return d


def test_ner_output_dir_is_a_hugging_face_model(tmp_path, cache, capsys):
    from transformers import AutoModelForTokenClassification, pipeline
    s, out = trained(tmp_path, cache, data=str(ner_folder(tmp_path)), head_hidden=0,
                     save_encoder=True, num_train_epochs=3, learning_rate=5e-3)
    names = s.data.label_names
    sents = ["Chen flew to Oslo today", "we met Anna near Lima", "the mayor of Kyiv thanked Emil"]
    recs = [{"tokens": x.split(), "tags": [0] * len(x.split())} for x in sents]
    ours, enc, b = logits_in_memory(s, recs)

    hf, info = AutoModelForTokenClassification.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert [hf.config.id2label[i] for i in range(len(names))] == names
    with torch.no_grad():
        theirs = hf.eval()(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    mask = b["attention_mask"].bool()
    assert torch.allclose(theirs[mask], ours[mask], atol=1e-4)

    # the tag of each word: the prediction at its first sub-token, as hamr predict does it
    pipe = pipeline("token-classification", model=str(out), ignore_labels=[])
    piped = []
    for x in sents:
        starts, pos = [], 0
        for w in x.split():
            pos = x.index(w, pos)
            starts.append(pos)
            pos += len(w)
        first = {r["start"]: r["entity"] for r in reversed(pipe(x))}
        piped.append([first[st] for st in starts])
    assert any(t != "O" for tags in piped for t in tags)
    assert piped == hamr_predict(out, sents, tmp_path, capsys)


def test_heads_without_an_hf_equivalent_fail_loudly_in_transformers(tmp_path, cache, capsys):
    from transformers import AutoModelForSequenceClassification
    s, out = trained(tmp_path, cache, save_encoder=True)       # default: mean pooling, MLP
    meta = json.loads((out / "hamr_model.json").read_text())
    assert meta["encoder"]["kind"] == "folder" and not (out / "config.json").exists()
    with pytest.raises((OSError, ValueError)):      # "no config.json" / "Unrecognized model"
        AutoModelForSequenceClassification.from_pretrained(out)
    ours, _, _ = logits_in_memory(s, [{"text": t, "label": 0} for t in TEXTS])
    assert hamr_predict(out, TEXTS, tmp_path, capsys) == [
        s.data.label_names[i] for i in ours.argmax(-1).tolist()]


def test_frozen_encoder_is_referenced_not_copied(tmp_path, cache, capsys):
    s, out = trained(tmp_path, cache)
    files = [f for f in out.rglob("*") if f.is_file()]
    assert not [f for f in files if f.suffix in (".safetensors", ".bin")]
    assert sum(f.stat().st_size for f in files) < 5e6        # the encoder alone is 90 MB
    meta = json.loads((out / "hamr_model.json").read_text())
    assert meta["encoder"]["kind"] == "ref" and meta["encoder"]["fingerprint"].startswith("local:")
    ours, _, _ = logits_in_memory(s, [{"text": t, "label": 0} for t in TEXTS])
    assert hamr_predict(out, TEXTS, tmp_path, capsys) == [
        s.data.label_names[i] for i in ours.argmax(-1).tolist()]
    # another encoder at that place: refused in one line, not silently used
    meta["encoder"]["fingerprint"] = "local:0000"
    (out / "hamr_model.json").write_text(json.dumps(meta))
    assert main(["predict", str(out), "--text", "x"]) == 2
    assert "has changed since training" in capsys.readouterr().err


def test_output_dir_of_an_earlier_version_still_predicts(tmp_path, cache, capsys):
    """Earlier versions saved the encoder at the top, head.pt, and no "format"."""
    s, out = trained(tmp_path, cache)
    old = tmp_path / "old"
    s.model.encoder.save_pretrained(old)
    s.tokenizer.save_pretrained(old)
    torch.save(s.model.head.state_dict(), old / "head.pt")
    meta = {"task": "cls", "label_names": s.data.label_names, "pooling": "mean",
            **s.model.head_cfg, "max_seq_length": 128}
    (old / "hamr_model.json").write_text(json.dumps(meta))
    ours, _, _ = logits_in_memory(s, [{"text": t, "label": 0} for t in TEXTS])
    assert hamr_predict(old, TEXTS, tmp_path, capsys) == [
        s.data.label_names[i] for i in ours.argmax(-1).tolist()]


def test_head_file_is_loaded_weights_only(tmp_path):
    """head.pt runs no code: a pickle with an object that is not a tensor is refused."""
    from hamr_dist.export import load_head

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))
    torch.save({"net.1.weight": Evil()}, tmp_path / "head.pt")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_head(tmp_path)


def test_runs_folder_of_the_readme_examples_is_ignored_by_git():
    import shutil
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    r = subprocess.run(["git", "check-ignore", "-q", "runs/sst5-hamr/model.safetensors"],
                       cwd=root)
    assert r.returncode == 0


def test_hamr_cache_shows_size_and_clears(tmp_path, capsys):
    cache = tmp_path / "cache"
    (cache / "features").mkdir(parents=True)
    (cache / "embeddings").mkdir()
    (cache / "features" / "a.npz").write_bytes(b"x" * 3000)
    (cache / "embeddings" / "b.npy").write_bytes(b"y" * 1000)
    assert main(["cache", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert f"cache {cache}: 3.9 KB in 2 files" in out
    assert "features/" in out and "2.9 KB" in out and "embeddings/" in out and "1000 B" in out
    assert main(["cache", "--cache_dir", str(cache), "--clear"]) == 0
    assert "removed" in capsys.readouterr().out and not cache.exists()
