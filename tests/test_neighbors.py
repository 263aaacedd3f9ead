import json

import faiss
import numpy as np
import pytest

from hamr_dist.sampling.neighbors import build_index, hard_indices, neighbour_boost, recall_at_k


def _circle(degrees):
    a = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32) * 3.0  # unnormalised


def test_hard_indices_top_and_ties():
    h = np.array([0.5, 2.0, 1.0, 2.0, 0.1])
    np.testing.assert_array_equal(hard_indices(h, 0.4), [1, 3])  # ceil(0.4*5) = 2, tie -> lower
    np.testing.assert_array_equal(hard_indices(h, 0.5), [1, 3, 2])  # ceil(2.5) = 3
    assert hard_indices(h, 0.0).size == 0
    assert hard_indices(np.ones(10), 0.3).tolist() == [0, 1, 2]  # 0.3*10 must not round to 4


def test_boost_on_circle_hand_computed():
    emb = _circle([0, 10, 30, 65, 100, 150])
    h = np.array([0.1, 0.2, 5.0, 0.3, 4.0, 0.5])  # hard (rho=0.3 -> 2): samples 2 and 4
    index = build_index(emb)
    # neighbours of 2 (30 deg): 1 (20 deg away), 0 (30), 3 (35)
    # neighbours of 4 (100 deg): 3 (35), 5 (50), 2 (70)
    # counts [1, 1, 1, 2, 0, 1] / 2
    b = neighbour_boost(index, emb, h, rho=0.3, k=3)
    assert b.dtype == np.float32 and b.shape == (6,)
    np.testing.assert_allclose(b, [0.5, 0.5, 0.5, 1.0, 0.0, 0.5])
    # k=1: 2 -> 1, 4 -> 3
    np.testing.assert_allclose(neighbour_boost(index, emb, h, rho=0.3, k=1), [0, 1, 0, 1, 0, 0])
    np.testing.assert_array_equal(neighbour_boost(index, emb, h, rho=0.0), 0)


def test_sharded_index_matches_flat():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(100, 16)).astype(np.float32)
    h = rng.uniform(size=100)
    flat = build_index(emb)
    sharded = build_index(emb, num_shards=3)
    assert sharded.ntotal == 100
    q = emb[:20] / np.linalg.norm(emb[:20], axis=1, keepdims=True)
    np.testing.assert_array_equal(sharded.search(q, 5)[1], flat.search(q, 5)[1])
    np.testing.assert_array_equal(neighbour_boost(sharded, emb, h, 0.2, 10),
                                  neighbour_boost(flat, emb, h, 0.2, 10))


def _clustered(n=3000, d=32, c=30, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(c, d))
    x = centers[rng.integers(0, c, size=n)] + 0.3 * rng.normal(size=(n, d))
    return x.astype(np.float32)


@pytest.mark.parametrize("shards", [1, 2])
def test_ivf_recall(shards):
    emb = _clustered()
    q = emb[:200] / np.linalg.norm(emb[:200], axis=1, keepdims=True)
    exact = build_index(emb).search(q, 10)[1]
    ivf = build_index(emb, kind="ivf", num_shards=shards)
    assert recall_at_k(ivf.search(q, 10)[1], exact) >= 0.9


def test_recall_at_k_and_errors():
    assert recall_at_k(np.array([[1, 2], [3, -1]]), np.array([[2, 1], [3, 4]])) == 0.75
    with pytest.raises(ValueError):
        build_index(np.ones((3, 2)), kind="hnsw")


def test_use_gpu_falls_back(caplog):
    if faiss.get_num_gpus() > 0:
        pytest.skip("GPU present")
    emb = _circle([0, 90, 180])
    with caplog.at_level("WARNING"):
        index = build_index(emb, use_gpu=True)
    assert index.ntotal == 3 and "no GPU" in caplog.text


def test_numpy_fallback_matches_faiss_flat():
    from hamr_dist.sampling.neighbors import ExactIndex, normalize
    rng = np.random.default_rng(3)
    emb = normalize(rng.standard_normal((300, 16)).astype(np.float32))
    h = rng.random(300).astype(np.float32)
    b_faiss = neighbour_boost(build_index(emb), emb, h, rho=0.2, k=5)
    b_numpy = neighbour_boost(ExactIndex(emb), emb, h, rho=0.2, k=5)
    np.testing.assert_array_equal(b_faiss, b_numpy)


def test_neighbour_benchmark_small(tmp_path, monkeypatch):
    """The benchmark runs end to end on a tiny size; exact recall of IVF with every list probed is 1."""
    pytest.importorskip("matplotlib")
    from benchmarks import neighbours
    monkeypatch.setattr(neighbours, "RESULTS", tmp_path)
    neighbours.main(["--sizes", "2000", "--nlist", "16", "--nprobes", "2", "16", "--repeats", "1",
                     "--name", "nb"])
    res = json.loads((tmp_path / "nb.json").read_text())
    (row,) = res["rows"]
    assert row["hard_queries"] == 400 and not row["flat_boost_extrapolated"]
    recall = {v["nprobe"]: v["recall_at_10"] for v in row["ivf"]}
    assert recall[16] == pytest.approx(1.0) and recall[2] <= recall[16]
    assert (tmp_path / "nb.png").stat().st_size > 0 and "recall@10" in (tmp_path / "nb.md").read_text()
