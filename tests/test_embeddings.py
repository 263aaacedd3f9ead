import os

import numpy as np

from hamr_dist import embeddings as E


def test_default_model_is_local_dir():
    assert os.path.isfile(os.path.join(E.default_model_path(), "config.json"))


def test_bundled_model_unit_vectors_and_similarity():
    texts = ["The cat sits on the mat .", "A cat is sitting on a mat .",
             "Stock markets fell sharply on Monday ."]
    emb = E.encode_texts(texts, batch_size=2)
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.3
    # order restored despite length sorting: each row equals its text encoded alone
    alone = E.encode_texts([texts[2]])
    np.testing.assert_allclose(emb[2], alone[0], atol=1e-5)
    cls = E.encode_texts(texts[:1], pooling="cls", normalize=False)
    assert cls.shape == (1, 384) and not np.isclose(np.linalg.norm(cls), 1.0)


def test_cache_hit_skips_model(tmp_path, monkeypatch):
    texts = ["hello world", "good bye"]
    calls = []

    def fake(texts, model=None, **kw):
        calls.append(kw)
        return np.arange(len(texts) * 4, dtype=np.float32).reshape(len(texts), 4)

    monkeypatch.setattr(E, "encode_texts", fake)
    a = E.cached_embeddings(texts, cache_dir=tmp_path, batch_size=8)
    assert len(calls) == 1 and len(list(tmp_path.glob("*.npy"))) == 1

    def boom(*a, **k):
        raise AssertionError("model must not run on a cache hit")

    monkeypatch.setattr(E, "encode_texts", boom)
    b = E.cached_embeddings(texts, cache_dir=tmp_path, batch_size=32)  # batch size: not in key
    np.testing.assert_array_equal(a, b)
    assert not list(tmp_path.glob("*.tmp"))


def test_default_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HAMR_CACHE", str(tmp_path))
    assert E.default_cache_dir() == tmp_path / "embeddings"
    monkeypatch.delenv("HAMR_CACHE")
    assert E.default_cache_dir().parts[-2:] == ("hamr_dist", "embeddings")


def test_key_depends_on_texts_and_options():
    k = E.cache_key(["a b", "c"])
    assert k == E.cache_key(["a b", "c"])
    assert k != E.cache_key(["a b", "d"])
    assert k != E.cache_key(["a", "b c"])
    assert k != E.cache_key(["a b", "c"], pooling="cls")
    assert k != E.cache_key(["a b", "c"], max_length=64)
    assert k != E.cache_key(["a b", "c"], normalize=False)
    assert k != E.cache_key(["a b", "c"], model="some/other-model")
