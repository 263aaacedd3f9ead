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
                     "--kinds", "ivf", "ivfpq", "--pq-m", "96", "--rerank", "0", "4", "--name", "nb"])
    res = json.loads((tmp_path / "nb.json").read_text())
    (row,) = res["rows"]
    assert row["hard_queries"] == 400 and not row["flat_boost_extrapolated"]
    recall = {(v["index"], v["nprobe"]): v["recall_at_10"] for v in row["ivf"]}
    assert recall["ivf", 16] == pytest.approx(1.0) and recall["ivf", 2] <= recall["ivf", 16]
    assert 0 < recall["ivfpq m=96", 16] <= recall["ivfpq m=96, rerank 4", 16] <= 1
    assert ("ivfpq m=96", 2) in recall
    size = {v["index"]: v["index_mib"] for v in row["ivf"]}
    assert size["ivfpq m=96"] < size["ivf"] < 1.2 * row["flat_index_mib"]
    assert (tmp_path / "nb.png").stat().st_size > 0 and "recall@10" in (tmp_path / "nb.md").read_text()


def _tight_clusters(c=300, size=10, d=32, noise=0.1, seed=5):
    """c well-separated clusters of `size` points: the size-1 nearest neighbours of a point are
    its cluster mates, a structure product quantisation keeps."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(c, d))
    return (centers[np.repeat(np.arange(c), size)] + noise * rng.normal(size=(c * size, d))
            ).astype(np.float32)


@pytest.mark.parametrize("shards", [1, 2])
def test_ivfpq_with_all_lists_probed_gives_the_flat_boost(shards):
    """IVF-PQ (8 sub-quantizers per 32-d row) probing every list: the boost equals the exact one within
    0.05 per sample (measured: identical) and the neighbour ids agree (recall@10 >= 0.95); the
    index stores codes, not vectors."""
    emb = _tight_clusters()
    h = np.random.default_rng(1).random(len(emb)).astype(np.float32)
    flat = build_index(emb)
    pq = build_index(emb, kind="ivfpq", nlist=16, nprobe=16, pq_m=8, num_shards=shards)
    assert pq.ntotal == len(emb)
    b_flat = neighbour_boost(flat, emb, h, rho=0.2, k=9)
    b_pq = neighbour_boost(pq, emb, h, rho=0.2, k=9)
    assert b_flat.max() == 1.0 and (b_flat > 0).sum() > 300
    np.testing.assert_allclose(b_pq, b_flat, atol=0.05)
    q = emb[:300] / np.linalg.norm(emb[:300], axis=1, keepdims=True)
    assert recall_at_k(pq.search(q, 10)[1], flat.search(q, 10)[1]) >= 0.95
    if shards == 1:
        assert pq.pq.M == 8 and pq.code_size <= 8     # 8 sub-quantizers of <= 8 bits


def test_memory_mapped_float16_embeddings(tmp_path):
    """A float16 .npy opened memory-mapped indexes and boosts exactly like the same values
    held in memory as float32 (flat and IVF); bad files are one-line errors."""
    from hamr_dist.errors import DataError
    from hamr_dist.sampling.neighbors import load_embeddings
    emb16 = _clustered(n=2000).astype(np.float16)
    np.save(tmp_path / "emb.npy", emb16)
    mapped = load_embeddings(tmp_path / "emb.npy")
    assert isinstance(mapped, np.memmap) and mapped.dtype == np.float16
    h = np.random.default_rng(2).random(2000).astype(np.float32)
    for kind in ("flat", "ivf"):
        a = neighbour_boost(build_index(mapped, kind=kind), mapped, h, rho=0.2, k=10)
        b = neighbour_boost(build_index(emb16.astype(np.float32), kind=kind),
                            emb16.astype(np.float32), h, rho=0.2, k=10)
        np.testing.assert_array_equal(a, b)
    np.save(tmp_path / "bad.npy", np.arange(5))
    for path in (tmp_path / "bad.npy", tmp_path / "missing.npy"):
        with pytest.raises(DataError) as e:
            load_embeddings(path)
        assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_ivfpq_options_are_checked_with_one_line_errors():
    from hamr_dist.config import TrainConfig
    from hamr_dist.errors import ConfigError
    from hamr_dist.sampling.neighbors import check_pq_m, default_pq_m
    assert default_pq_m(384) == 48 and default_pq_m(32) == 4 and default_pq_m(30) == 3
    with pytest.raises(ConfigError) as e:
        check_pq_m(384, 7)
    assert "\n" not in str(e.value) and "--knn-pq-m 7" in str(e.value) and "48" in str(e.value)
    with pytest.raises(ConfigError, match="divide the embedding dimension 32"):
        build_index(_clustered(n=500), kind="ivfpq", pq_m=5)
    with pytest.raises(ConfigError) as e:
        TrainConfig(knn_pq_m=8).validate()
    assert "\n" not in str(e.value) and "--knn-index ivfpq" in str(e.value)
    with pytest.raises(ConfigError, match="--knn-pq-m"):
        TrainConfig(knn_index="ivfpq", knn_pq_m=0).validate()
    with pytest.raises(ConfigError, match="--knn-rerank=4 applies to --knn-index ivfpq only"):
        TrainConfig(knn_index="ivf", knn_rerank=4).validate()
    TrainConfig(knn_index="ivfpq", knn_pq_m=8, knn_rerank=4).validate()


def test_rerank_recovers_exact_neighbours_from_pq_candidates():
    """Where product quantisation blurs close neighbours (isotropic noise in clusters), the
    exact re-ranking of R (k+1) candidates raises recall; with every row a candidate it is the
    exact boost."""
    from hamr_dist.sampling.neighbors import _rerank, normalize
    emb = _clustered(n=3000)
    h = np.random.default_rng(4).random(3000).astype(np.float32)
    flat = build_index(emb)
    pq = build_index(emb, kind="ivfpq", nlist=16, nprobe=16, pq_m=8)
    q = normalize(emb[:300])
    exact = flat.search(q, 11)[1]
    plain = recall_at_k(pq.search(q, 11)[1], exact)
    reranked = recall_at_k(_rerank(q, pq.search(q, 44)[1], emb, 11), exact)
    assert reranked > plain + 0.1
    small = emb[:400]
    pq_small = build_index(small, kind="ivfpq", nlist=4, nprobe=4, pq_m=8)
    np.testing.assert_array_equal(
        neighbour_boost(pq_small, small, h[:400], 0.2, 10, rerank=400),   # every row
        neighbour_boost(build_index(small), small, h[:400], 0.2, 10))


@pytest.mark.parametrize("kind", ["ivf", "ivfpq"])
def test_use_gpu_falls_back_for_approximate_indexes(caplog, kind):
    """The GPU path (clone across all GPUs, sharded) is only taken where FAISS sees GPUs; this
    machine has none, so it warns and searches on the CPU."""
    if faiss.get_num_gpus() > 0:
        pytest.skip("GPU present")
    with caplog.at_level("WARNING"):
        index = build_index(_clustered(n=1000), kind=kind, nlist=8, use_gpu=True)
    assert index.ntotal == 1000 and "no GPU" in caplog.text


@pytest.mark.parametrize("meta_set", ["copy", "move"])
def test_neighbour_actor_maps_the_prepared_float16_embeddings(tmp_path, meta_set):
    """The neighbour actor's body (no Ray needed) over a prepared folder with embeddings: it
    keeps them float16 and memory-mapped when it trains on every prepared row (a subset, when
    the meta set is moved out), and its index gives the boost of the float32 path."""
    from test_prepare import write_corpus

    from hamr_dist.config import TrainConfig
    from hamr_dist.data.prepare import prepare
    from hamr_dist.distributed.actors import NeighbourService
    from hamr_dist.train.prepared_setup import prepared_embeddings, training_rows
    src = write_corpus(tmp_path / "src", "cls", n=120)
    prep = prepare(str(src), tmp_path / "prep", max_seq_length=16, embed=True)
    cfg = TrainConfig(data=str(prep), meta_set=meta_set, progress=False, mlflow=False,
                      cache_dir=str(tmp_path / "cache"))
    svc = NeighbourService(cfg.to_dict())
    info = svc.prepare()
    assert svc._emb.dtype == np.float16
    assert isinstance(svc._emb, np.memmap) == (meta_set == "copy")
    ref = prepared_embeddings(cfg, training_rows(cfg))           # float32, in memory
    assert info["n"] == len(ref)
    h = np.random.default_rng(0).random(len(ref)).astype(np.float32)
    np.testing.assert_array_equal(neighbour_boost(svc._index, svc._emb, h, 0.2, 5),
                                  neighbour_boost(build_index(ref), ref, h, 0.2, 5))
