"""The fast epoch draw (hamr_dist/sampling/draw.py): the guide-table lookup returns exactly what
a binary search of the same CDF returns, the CDF is that of ``InMemoryHardness.probabilities``,
draw frequencies pass a chi-square test against those probabilities, and the draw is a pure
function of (seed, epoch, state) whatever the number of threads."""
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


def reference_lookup(table, u):
    """Independent of the guide table: numpy's binary search of the same CDF."""
    t = u * np.nextafter(table.total, 0)
    return np.searchsorted(table.cdf, t, side="right")


@pytest.mark.parametrize("chunk", [fast.CHUNK, 97])       # one chunk, and many with carries
def test_lookup_equals_binary_search(monkeypatch, chunk):
    monkeypatch.setattr(fast, "CHUNK", chunk)
    h, b = state(5000)
    h[::7] = 40.0                                # a few heavy samples: cells with many values
    b[10:20] = -1.0                              # 1 + lam*b = 0: never drawn
    table = fast.build_table(h, b, tau=0.7, lam=1.0)
    u = np.random.default_rng(3).random(200_000)
    u[:3] = [0.0, np.nextafter(1.0, 0), 0.5]
    got = table.lookup(u)
    np.testing.assert_array_equal(got, reference_lookup(table, u))
    assert not np.isin(got, np.arange(10, 20)).any()


def test_cdf_is_that_of_the_store_probabilities():
    h, b = state(3000, seed=1)
    prior = np.random.default_rng(2).uniform(0.5, 2.0, 3000)
    s = InMemoryHardness(3000, prior=prior)
    s.load_state_dict({**s.state_dict(), "h": h, "b": b})
    p = s.probabilities(0.7, 0.7)
    table = fast.build_table(s.hardness(), s.boost(), 0.7, 0.7, prior=s.prior())
    np.testing.assert_allclose(table.cdf / table.total, np.cumsum(p), rtol=2e-6, atol=1e-12)


def test_draw_frequencies_pass_chi_square():
    n, m = 300, 600_000
    h, b = state(n, seed=4)
    s = InMemoryHardness(n)
    s.load_state_dict({**s.state_dict(), "h": h, "b": b})
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
