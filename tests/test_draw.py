"""The fast epoch draw (hamr_dist/sampling/draw.py): the alias table's distribution is exactly
that of ``InMemoryHardness.probabilities`` (computed independently, in float64), each bucket
gives its sample or its alias by the leftover bits of the uniform, draw frequencies pass a
chi-square test, and the draw is a pure function of (seed, epoch, state) whatever the number of
threads."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare

from hamr_dist.sampling import draw as fast
from hamr_dist.sampling.hardness import InMemoryHardness


def state(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    h = rng.uniform(0.1, 8.0, n).astype(np.float32)
    b = np.where(rng.random(n) < 0.2, rng.uniform(0, 3, n), 0).astype(np.float32)
    return h, b


def store(h, b, prior=None):
    s = InMemoryHardness(h.size, prior=prior)
    s.load_state_dict({**s.state_dict(), "h": h, "b": b})
    return s


@pytest.mark.parametrize("chunk", [fast.CHUNK, 97])       # one chunk, and many with carries
def test_table_draws_from_the_store_probabilities(monkeypatch, chunk):
    monkeypatch.setattr(fast, "CHUNK", chunk)
    h, b = state(5000)
    h[::7] = 40.0                                # a few heavy samples, each aliased by many
    b[10:20] = -1.0                              # 1 + lam*b = 0: never drawn
    prior = np.random.default_rng(2).uniform(0.5, 2.0, 5000)
    s = store(h, b, prior)
    table = fast.build_table(h, b, 0.7, 1.0, prior=prior)
    # the bucket masses, summed per sample, against the store's float64 probabilities
    np.testing.assert_allclose(table.probabilities(), s.probabilities(0.7, 1.0), rtol=2e-6,
                               atol=1e-15)
    prob, alias = table.prob, table.alias
    assert ((prob >= 0) & (prob <= 1)).all() and (prob[10:20] == 0).all()
    assert not np.isin(alias, np.arange(10, 20)).any()         # nothing points at them


def test_bucket_keeps_its_sample_below_prob_and_gives_its_alias_above():
    h, b = state(1000, seed=3)
    table = fast.build_table(h, b, 0.7, 0.7)
    prob, alias = table.prob.astype(np.float64), table.alias
    j = np.arange(1000)
    below = (j + 0.999 * prob) / 1000           # leftover fraction just under prob[j]
    above = (j + np.minimum(prob + 1e-4, 0.9999)) / 1000
    np.testing.assert_array_equal(table.lookup(below)[prob > 0], j[prob > 0])
    split = prob < 0.999
    np.testing.assert_array_equal(table.lookup(above)[split], alias[split])
    assert table.lookup(np.array([np.nextafter(1.0, 0)]))[0] in (999, alias[999])


def test_parallel_build_equals_serial(monkeypatch):
    monkeypatch.setattr(fast, "CHUNK", 1 << 10)
    h, b = state(50_000, seed=6)
    one = fast.build_table(h, b, 0.7, 0.7, threads=1).packed
    np.testing.assert_array_equal(one, fast.build_table(h, b, 0.7, 0.7, threads=3).packed)


def test_equal_scores_keep_every_bucket():
    table = fast.build_table(np.ones(1000, np.float32), np.zeros(1000, np.float32), 0.7, 0.7)
    np.testing.assert_allclose(table.probabilities(), np.full(1000, 1e-3), rtol=1e-6)


def test_draw_frequencies_pass_chi_square():
    n, m = 300, 600_000
    h, b = state(n, seed=4)
    s = store(h, b)
    d = s.draw(epoch=2, seed=9, ratio=m / n, tau=0.7, lam=0.7)
    assert d.shape == (m,) and d.dtype == np.int64
    counts = np.bincount(d, minlength=n)
    p = s.probabilities(0.7, 0.7)
    assert chisquare(counts, m * p).pvalue > 1e-4
    # the test has power: a draw from the uniform distribution instead fails it
    assert chisquare(counts, np.full(n, m / n)).pvalue < 1e-12


def test_pure_function_of_seed_epoch_and_state_whatever_the_threads():
    h, b = state(20_000, seed=5)
    m = 3 * fast.TILE + 123                        # a partial last tile
    one = fast.weighted_draw(h, b, m, seed=1, epoch=4, tau=0.7, lam=0.7, threads=1)
    np.testing.assert_array_equal(
        one, fast.weighted_draw(h, b, m, seed=1, epoch=4, tau=0.7, lam=0.7, threads=3))
    np.testing.assert_array_equal(     # tile k's uniforms come from (seed, epoch, k) alone
        one[fast.TILE:2 * fast.TILE],
        fast.build_table(h, b, 0.7, 0.7).lookup(fast.tile_rng(1, 4, 1).random(fast.TILE)))
    assert not np.array_equal(one, fast.weighted_draw(h, b, m, 1, 5, 0.7, 0.7))
    assert not np.array_equal(one, fast.weighted_draw(h, b, m, 2, 4, 0.7, 0.7))


def test_one_positive_score_and_bad_scores():
    h = np.ones(50, np.float32)
    b = np.full(50, -1.0, np.float32)
    b[17] = 0.0
    assert set(fast.weighted_draw(h, b, 1000, 0, 0, 0.7, 1.0)) == {17}
    with pytest.raises(ValueError, match=">= 0"):
        fast.build_table(h, np.full(50, -2.0, np.float32), 0.7, 1.0)
    with pytest.raises(ValueError, match="positive finite"):
        fast.build_table(h, np.full(50, -1.0, np.float32), 0.7, 1.0)
    with pytest.raises(ValueError, match="equal length"):
        fast.build_table(h, b[:10], 0.7, 1.0)
