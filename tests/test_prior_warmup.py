"""--class-prior-warmup-ratio: the class prior (ICF's weights, hamr-cb's sampling prior) ramps
in linearly over a share of the run, against hand values and an independent computation."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hamr_dist.config import TrainConfig
from hamr_dist.errors import ConfigError
from hamr_dist.losses import class_weights_at, position_loss
from hamr_dist.sampling.hardness import InMemoryHardness
from hamr_dist.train.loop import prior_strength


def test_prior_strength_ramps_linearly_then_stays_full():
    assert prior_strength(0, 100, 0.0) == 1.0                      # off: full from the start
    assert [prior_strength(t, 100, 0.5) for t in (0, 25, 50, 99)] == [0.0, 0.5, 1.0, 1.0]
    assert prior_strength(50, 100, 1.0) == 0.5


def test_class_weights_at_mixes_ce_and_icf_per_position():
    """At share s the loss is (1 - s) CE + s ICF-weighted CE, position by position."""
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 0, 0, 0, 1, 2])
    icf = torch.tensor([6 / (3 * 4), 6 / 3, 6 / 3])
    ce = F.cross_entropy(logits, labels, reduction="none")
    for s in (0.0, 0.3, 1.0):
        got = position_loss("ce", logits, labels, class_weights_at(icf, s))
        torch.testing.assert_close(got, (1 - s) * ce + s * icf[labels] * ce)
    assert class_weights_at(None, 0.5) is None
    # the mix keeps ICF's mean of 1 over the training positions
    assert class_weights_at(icf, 0.3)[labels].mean().item() == pytest.approx(1.0)


def test_sampling_prior_share_mixes_with_uniform():
    s = InMemoryHardness(3, prior=[1.0, 1.0, 2.0])           # rescaled to mean 1: .75 .75 1.5
    mixed = 0.5 * np.array([0.75, 0.75, 1.5]) + 0.5
    np.testing.assert_allclose(s.probabilities(0.7, 0.0, prior=0.5), mixed / mixed.sum())
    np.testing.assert_allclose(s.probabilities(0.7, 0.0, prior=0.0), [1 / 3] * 3)
    # share 0 draws exactly what a store without a prior draws; share 1 what the prior gives
    plain = InMemoryHardness(3)
    np.testing.assert_array_equal(s.draw(1, 3, 10.0, 0.7, 0.0, prior=0.0),
                                  plain.draw(1, 3, 10.0, 0.7, 0.0))
    assert not np.array_equal(s.draw(1, 3, 10.0, 0.7, 0.0, prior=1.0),
                              plain.draw(1, 3, 10.0, 0.7, 0.0))


def test_warmup_ratio_default_and_validation():
    assert TrainConfig().resolved("cls").class_prior_warmup_ratio == 0.0
    with pytest.raises(ConfigError, match="class-prior-warmup-ratio"):
        TrainConfig(class_prior_warmup_ratio=1.5).resolved("cls")


def test_hamr_cb_draw_starts_uniform_and_rebalances_as_the_prior_ramps_in(tmp_path):
    """With the ramp over the whole run, epoch 1 draws without the prior (h is uniform then, so
    the draw follows the training shares) and epoch 3 over-draws the rarest class."""
    from hamr_dist.train.loop import train
    cfg = TrainConfig(method="hamr-cb", freeze_encoder=True, num_train_epochs=3,
                      class_prior_warmup_ratio=1.0, output_dir=str(tmp_path / "out"),
                      progress=False, seed=1, mlflow=False)
    hist = train(cfg).history
    shares = [h["draw_share"] for h in hist]
    rarest = min(shares[0], key=lambda c: shares[0][c]["train"])
    first, last = shares[0][rarest], shares[-1][rarest]
    assert first["draw"] == pytest.approx(first["train"], rel=0.5)
    assert last["draw"] > 2 * last["train"]
    assert hist[0]["ess_frac"] > 0.95 > hist[-1]["ess_frac"]


def test_mixed_prior_is_built_once_per_share():
    """An epoch's draw, probabilities and stats all read the prior at one share: one mixed
    array per share, not one per call (at 10^8 samples each is 800 MB)."""
    store = InMemoryHardness(4, prior=[1.0, 1.0, 1.0, 5.0])
    first = store._prior_at(0.5)
    np.testing.assert_allclose(first, 0.5 * np.array([0.5, 0.5, 0.5, 2.5]) + 0.5)
    assert store._prior_at(0.5) is first
    np.testing.assert_allclose(store._prior_at(0.25), 0.25 * np.array([0.5, 0.5, 0.5, 2.5]) + 0.75)
    assert store._prior_at(1.0) is store._prior and store._prior_at(0.0) is None
