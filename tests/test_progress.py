"""A cold cache is not silent: every preparation phase says what it does (rank 0 only)."""
import logging
import sys
import types

from hamr_dist import progress
from hamr_dist.config import TrainConfig
from hamr_dist.train.loop import train


def test_cold_cache_run_announces_features_and_embeddings(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="hamr_dist")
    cfg = TrainConfig(freeze_encoder=True, method="hamr", num_train_epochs=2, max_train_samples=80,
                      max_eval_samples=20, progress=False, mlflow=False, seed=2,
                      output_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"))
    train(cfg)
    lines = [r.getMessage() for r in caplog.records]
    feats = [l for l in lines if l.startswith("encoding features of")]
    assert "encoding features of 80 texts with the frozen encoder (cached for later runs) ..." in feats
    assert any(l.startswith("embedding 80 texts with the sentence embedder") for l in lines)
    caplog.clear()
    train(cfg)                                   # warm cache: nothing to announce
    lines = [r.getMessage() for r in caplog.records]
    assert not [l for l in lines if l.startswith(("encoding features", "embedding "))]


def test_only_rank_0_of_a_worker_group_speaks(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="hamr_dist")
    rank = {"r": 1}
    ctx = types.SimpleNamespace(get_world_rank=lambda: rank["r"])
    fake_train = types.SimpleNamespace(get_context=lambda: ctx)
    fake_ray = types.SimpleNamespace(is_initialized=lambda: True, train=fake_train)
    monkeypatch.setitem(sys.modules, "ray", fake_ray)
    monkeypatch.setitem(sys.modules, "ray.train", fake_train)
    with progress.phase("embedding 10 texts", total=10) as tick:
        tick(10)
    assert not caplog.records
    rank["r"] = 0
    with progress.phase("embedding 10 texts", total=10):
        pass
    assert [r.getMessage() for r in caplog.records] == ["embedding 10 texts ..."]
