import pickle

import numpy as np
import pytest

from hamr_dist.sampling.hardness import (HardnessStore, InMemoryHardness, ema_update, epoch_size,
                                         sampling_entropy, shard_for_rank)


def test_ema_hand_computed_with_repeats():
    h = np.ones(3, dtype=np.float32)
    ema_update(h, np.array([0, 0, 2]), np.array([3, 5, 2]), 0.5)
    # h0 = 0.5*(0.5*1 + 0.5*3) + 0.5*5 = 3.5 ; h1 untouched ; h2 = 0.5*1 + 0.5*2 = 1.5
    np.testing.assert_allclose(h, [3.5, 1.0, 1.5])
    ema_update(h, np.array([1, 0, 1, 1]), np.array([2, 4, 0, 6]), 0.5)
    # h1: 1 -> 1.5 -> 0.75 -> 3.375 ; h0: 3.5 -> 3.75
    np.testing.assert_allclose(h, [3.75, 3.375, 1.5])
    assert h.dtype == np.float32


def test_ema_matches_sequential_loop():
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 20, size=500)
    w = rng.uniform(0.1, 8, size=500).astype(np.float32)
    h = np.ones(20, dtype=np.float32)
    ref = h.copy()
    for i, wi in zip(idx, w):
        ref[i] = np.float32(0.9) * ref[i] + np.float32(0.1) * wi
    ema_update(h, idx, w, 0.9)
    np.testing.assert_allclose(h, ref, rtol=1e-6)


def test_ema_rejects_bad_input():
    h = np.ones(3, dtype=np.float32)
    with pytest.raises(ValueError):
        ema_update(h, np.array([3]), np.array([1.0]), 0.5)
    with pytest.raises(ValueError):
        ema_update(h, np.array([0, 1]), np.array([1.0]), 0.5)
    ema_update(h, np.array([], dtype=int), np.array([]), 0.5)
    np.testing.assert_array_equal(h, 1)


def test_store_update_and_defaults():
    s = InMemoryHardness(3, gamma=0.5)
    assert isinstance(s, HardnessStore)
    s.update(np.array([0, 0, 2]), np.array([3.0, 5.0, 2.0]))
    np.testing.assert_allclose(s.hardness(), [3.5, 1.0, 1.5])
    np.testing.assert_array_equal(s.boost(), 0)
    s.hardness()[0] = 99  # a copy
    assert s.hardness()[0] == 3.5


def test_probabilities_hand_computed():
    s = InMemoryHardness(3)
    s.load_state_dict({"h": np.array([1, 4, 0]), "b": np.array([0, 0.5, 1]), "gamma": 0.99})
    # scores: 1^0.5*(1+0) = 1, 4^0.5*(1+0.5) = 3, 0 -> p = [0.25, 0.75, 0]
    p = s.probabilities(tau=0.5, lam=1.0, eps=0.0)
    assert p.dtype == np.float64
    np.testing.assert_allclose(p, [0.25, 0.75, 0.0])
    # default eps: h = [1, 1] -> uniform whatever tau; lam = 0 ignores boost
    s2 = InMemoryHardness(2)
    s2.set_boost(np.array([1.0, 0.0]))
    np.testing.assert_allclose(s2.probabilities(0.7, 0.0), [0.5, 0.5])
    np.testing.assert_allclose(s2.probabilities(0.7, 1.0), [2 / 3, 1 / 3])


def test_draw_deterministic_and_sized():
    s = InMemoryHardness(10)
    s.update(np.arange(10), np.arange(10, dtype=np.float32))
    a = s.draw(epoch=3, seed=7, ratio=1.2, tau=0.7, lam=0.7)
    assert a.shape == (12,)  # ceil(1.2*10) = 12, not 13 from float noise
    np.testing.assert_array_equal(a, s.draw(epoch=3, seed=7, ratio=1.2, tau=0.7, lam=0.7))
    assert not np.array_equal(a, s.draw(epoch=4, seed=7, ratio=1.2, tau=0.7, lam=0.7))
    assert epoch_size(10, 1.2) == 12 and epoch_size(10, 1.21) == 13 and epoch_size(3, 0.1) == 1


def test_draw_frequencies_follow_p():
    s = InMemoryHardness(5)
    s.load_state_dict({"h": np.array([1, 2, 4, 8, 0.5]), "b": np.array([0, 1, 0, 0, 1])})
    p = s.probabilities(0.7, 0.7)
    m = 50_000
    draw = s.draw(epoch=0, seed=1, ratio=m / 5, tau=0.7, lam=0.7)
    assert draw.size == m
    counts = np.bincount(draw, minlength=5)
    chi2 = ((counts - m * p) ** 2 / (m * p)).sum()
    assert chi2 < 18.47  # chi-square, 4 dof, p = 0.001


def test_uniform_draw_is_permutations():
    s = InMemoryHardness(10)
    s.update(np.array([0]), np.array([100.0]))  # uniform ignores hardness
    d = s.draw(epoch=0, seed=0, ratio=2.5, tau=0.7, lam=0.7, uniform=True)
    assert d.size == 25
    assert sorted(d[:10]) == list(range(10)) and sorted(d[10:20]) == list(range(10))
    assert len(set(d[20:].tolist())) == 5
    np.testing.assert_array_equal(d, s.draw(0, 0, 2.5, 0.7, 0.7, uniform=True))


@pytest.mark.parametrize("length,world,bs", [(100, 4, 8), (37, 3, 5), (5, 4, 2), (64, 2, 32),
                                             (10, 1, 3)])
def test_shard_for_rank_partitions_draw(length, world, bs):
    draw = np.arange(length)  # values = positions
    parts = [shard_for_rank(draw, r, world, bs) for r in range(world)]
    assert len({p.size for p in parts}) == 1
    allpos = np.concatenate(parts)
    assert len(set(allpos.tolist())) == allpos.size  # no overlap
    assert length - allpos.size < world  # drops fewer than world_size samples
    np.testing.assert_array_equal(np.sort(allpos), np.arange(allpos.size))  # a prefix


def test_shard_for_rank_layout():
    draw = np.arange(20)
    # global steps of 2*4 = 8: rank 0 gets [0..3], [8..11], then tail 4//2 = 2 -> [16, 17]
    np.testing.assert_array_equal(shard_for_rank(draw, 0, 2, 4), [0, 1, 2, 3, 8, 9, 10, 11, 16, 17])
    np.testing.assert_array_equal(shard_for_rank(draw, 1, 2, 4), [4, 5, 6, 7, 12, 13, 14, 15, 18, 19])
    with pytest.raises(ValueError):
        shard_for_rank(draw, 2, 2, 4)


def test_sampling_entropy():
    assert sampling_entropy(np.full(4, 0.25)) == pytest.approx(np.log(4))
    assert sampling_entropy([1.0, 0.0, 0.0]) == pytest.approx(0.0)
    assert sampling_entropy([2, 2]) == pytest.approx(np.log(2))  # normalised first


def test_state_round_trip_and_pickle():
    s = InMemoryHardness(4, gamma=0.9)
    s.update(np.array([1, 3, 3]), np.array([2.0, 5.0, 0.5]))
    s.set_boost(np.array([0, 1, 0.5, 0]))
    t = InMemoryHardness(4)
    t.load_state_dict(s.state_dict())
    np.testing.assert_array_equal(t.hardness(), s.hardness())
    np.testing.assert_array_equal(t.boost(), s.boost())
    assert t.gamma == 0.9
    np.testing.assert_array_equal(t.draw(1, 2, 1.0, 0.7, 0.7), s.draw(1, 2, 1.0, 0.7, 0.7))
    u = pickle.loads(pickle.dumps(s))
    np.testing.assert_array_equal(u.hardness(), s.hardness())
    with pytest.raises(ValueError):
        InMemoryHardness(5).load_state_dict(s.state_dict())
