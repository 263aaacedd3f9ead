"""Short real runs: HAMR learns on slices of the shared datasets, seeds reproduce, outputs exist."""
import json
from pathlib import Path

import pytest

from hamr_dist.config import TrainConfig
from hamr_dist.train.evaluate import evaluate
from hamr_dist.train.loop import train
from hamr_dist.train.setup import build

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not present")


def untrained_then_trained(cfg):
    s = build(cfg)
    before = evaluate(s.model, s.dev.batches, s.dev.records, s.dev.encoded.ds, s.data)["macro_f1"]
    res = train(cfg, setup=s)
    return before, res


@needs_shared
@pytest.mark.parametrize("name,epochs", [("sst5", 3), ("mit_restaurant", 3)])
def test_hamr_beats_untrained_model(name, epochs, tmp_path):
    cfg = TrainConfig(data=str(SHARED / name), method="hamr", freeze_encoder=True,
                      max_train_samples=1000, max_eval_samples=200, num_train_epochs=epochs,
                      output_dir=str(tmp_path / "out"), progress=False, seed=3)
    before, res = untrained_then_trained(cfg)
    after = res.metrics["dev"]["macro_f1"]
    assert after > before + 0.05, (before, after)
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["test"]["macro_f1"] == res.metrics["test"]["macro_f1"]
    assert (tmp_path / "out" / "weight_curve.json").exists()
    # hardness moved away from its uniform start and the neighbour boost was used
    last = res.history[-1]
    assert last["hardness_std"] > 0 and last["boosted_share"] > 0


def test_same_seed_same_numbers(tmp_path):
    kw = dict(method="hamr", freeze_encoder=True, num_train_epochs=2, progress=False, seed=5,
              max_train_samples=600, max_eval_samples=200)
    a = train(TrainConfig(output_dir=str(tmp_path / "a"), **kw)).metrics
    b = train(TrainConfig(output_dir=str(tmp_path / "b"), **kw)).metrics
    assert a["dev"] == b["dev"] and a["test"] == b["test"]
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]


@pytest.mark.parametrize("method", ["ce", "icf", "focal", "dice", "mwn", "hamr-no-resample",
                                    "hamr-no-meta", "hamr-no-knn", "hamr-icf"])
def test_every_method_trains_on_demo(method, tmp_path):
    cfg = TrainConfig(method=method, freeze_encoder=True, num_train_epochs=1, progress=False,
                      max_train_samples=400, max_eval_samples=150, output_dir=str(tmp_path))
    m = train(cfg).metrics
    assert 0.0 <= m["test"]["macro_f1"] <= 1.0 and m["method"] == method
    assert (tmp_path / "metrics.json").exists()


def test_full_finetuning_small_slice(tmp_path):
    """No freezing: the second-order step runs through the whole encoder (meta scope all)."""
    cfg = TrainConfig(method="hamr", meta_scope="all", num_train_epochs=1, progress=False,
                      max_train_samples=64, max_eval_samples=32, per_device_train_batch_size=16,
                      max_seq_length=32, output_dir=str(tmp_path), learning_rate=1e-4)
    m = train(cfg).metrics
    assert m["skipped_steps"] == 0
    # fine-tuned, mean pooling: the encoder under encoder/ beside our head (see export.py)
    assert (tmp_path / "encoder" / "model.safetensors").exists() and (tmp_path / "head.pt").exists()


def test_ivf_index_probing_every_list_trains_like_exact(tmp_path, monkeypatch):
    """--knn-index ivf reaches the boost; probing all lists finds the exact neighbours, so the
    run equals the flat-index run, and the index that was built is an IVF one."""
    import faiss

    from hamr_dist.sampling import neighbors
    built, real = [], neighbors.build_index

    def spy(*a, **kw):
        built.append(real(*a, **kw))
        return built[-1]

    monkeypatch.setattr(neighbors, "build_index", spy)
    kw = dict(method="hamr", freeze_encoder=True, num_train_epochs=2, progress=False, seed=5,
              max_train_samples=600, max_eval_samples=200)
    flat = train(TrainConfig(output_dir=str(tmp_path / "a"), **kw)).metrics
    ivf = train(TrainConfig(output_dir=str(tmp_path / "b"), knn_index="ivf", knn_nlist=8,
                            knn_nprobe=8, **kw)).metrics
    assert isinstance(built[0], faiss.IndexFlatIP) and isinstance(built[1], faiss.IndexIVFFlat)
    assert built[1].nprobe == 8
    assert ivf["history"][-1]["boosted_share"] > 0
    assert [h["loss"] for h in ivf["history"]] == [h["loss"] for h in flat["history"]]


def test_balanced_meta_loss_is_the_meta_objective(tmp_path, monkeypatch):
    """--meta-loss balanced: every meta step's objective is balanced_ce (unit-tested against
    hand values in test_formulas), and the run trains."""
    from hamr_dist.losses import balanced_ce
    from hamr_dist.train import loop
    calls = []
    monkeypatch.setattr(loop, "balanced_ce", lambda *a: calls.append(1) or balanced_ce(*a))
    cfg = TrainConfig(method="hamr-cb", meta_loss="balanced", freeze_encoder=True,
                      num_train_epochs=1, progress=False, max_train_samples=256,
                      max_eval_samples=100, output_dir=str(tmp_path))
    m = train(cfg).metrics
    steps = m["history"][-1]["global_step"]
    assert len(calls) == steps > 0 and m["skipped_steps"] == 0
