"""la and hamr-la: the logit-adjusted loss (Menon et al. 2021) against values computed by hand."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from hamr_dist.config import TrainConfig
from hamr_dist.errors import ConfigError
from hamr_dist.losses import icf_weights, logit_offsets
from hamr_dist.train.loop import Runtime, train, train_step
from hamr_dist.train.setup import build


def centred(x):
    x = torch.tensor(x, dtype=torch.float32)
    return x - x.mean()


def test_offsets_from_icf_weights_are_tau_log_prior():
    off = logit_offsets(icf_weights([6, 3, 1, 0]), tau=1.0)
    want = centred([math.log(0.6), math.log(0.3), math.log(0.1)])
    torch.testing.assert_close(off[:3], want)
    assert off[3] == off[:3].max()        # absent from train: the most frequent class's offset
    torch.testing.assert_close(logit_offsets(icf_weights([6, 3, 1]), tau=0.5), 0.5 * want)


def test_offsets_shift_from_training_to_dev_shares_tempered():
    # train 60/30/10, dev 20/20/60, power 0.5: target t_c ~ r_c^0.5, offset log(pi_c / t_c)
    w = icf_weights([60, 30, 10], reference=[20, 20, 60], power=0.5)
    pi, t = np.array([.6, .3, .1]), np.sqrt([20, 20, 60])
    torch.testing.assert_close(logit_offsets(w), centred(np.log(pi / (t / t.sum()))))
    # a training set shaped like its dev and power 0: nothing to shift
    torch.testing.assert_close(logit_offsets(icf_weights([6, 3, 1], reference=[60, 30, 10],
                                                         power=0.0)), torch.zeros(3))


def test_la_step_minimises_ce_of_the_shifted_logits_and_predicts_with_plain_ones(tmp_path):
    cfg = TrainConfig(method="la", freeze_encoder=True, num_train_epochs=1, progress=False,
                      max_train_samples=300, max_eval_samples=100,
                      output_dir=str(tmp_path)).resolved("cls")
    s = build(cfg)
    assert s.class_weights is None and cfg.class_prior_power == 1.0
    counts = np.bincount(s.train.labels, minlength=s.n_labels)
    prior = torch.tensor(counts / counts.sum(), dtype=torch.float32)
    idx = np.arange(32)
    batch = s.train.batches(idx)
    s.model.eval()                       # no dropout: both computations see the same logits
    with torch.no_grad():
        logits = s.model(batch)
    want = F.cross_entropy(logits + prior.log(), batch["labels"])   # constants cancel
    opt = torch.optim.SGD(s.model.parameters(), lr=0.0)
    loss, _, _ = train_step(s, s.model, opt, None, None, idx, None, Runtime(progress=False))
    assert loss == pytest.approx(float(want), rel=1e-5)
    assert float(want) != pytest.approx(float(F.cross_entropy(logits, batch["labels"])), rel=1e-3)


@pytest.mark.parametrize("method", ["la", "hamr-la"])
def test_la_methods_train_with_their_default_power(method, tmp_path):
    cfg = TrainConfig(method=method, freeze_encoder=True, num_train_epochs=1, progress=False,
                      max_train_samples=400, max_eval_samples=150, output_dir=str(tmp_path))
    m = train(cfg).metrics
    assert 0.0 <= m["test"]["macro_f1"] <= 1.0 and m["method"] == method
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["class_prior_power"] == (0.5 if method == "hamr-la" else 1.0)


def test_split_moves_a_share_of_the_prior_from_the_logits_to_the_draw(tmp_path):
    """--class-prior-draw a: the draw carries hamr-cb's prior to the power a (mean 1), the
    logits the shift -(1 - a) log w_c; a = 0 is hamr-la, a = 1 leaves the logits unshifted."""
    from hamr_dist.sampling.groups import class_prior
    from hamr_dist.train.diagnose import hardness_options, reference_counts
    from hamr_dist.train.setup import train_groups

    def setup(a):
        cfg = TrainConfig(method="hamr-la", freeze_encoder=True, class_prior_draw=a,
                          max_train_samples=300, max_eval_samples=100, progress=False,
                          output_dir=str(tmp_path)).resolved("cls")
        return build(cfg)

    full = setup(0.0)
    assert "prior" not in hardness_options(full)
    half = setup(0.5)
    torch.testing.assert_close(half.logit_offsets, 0.5 * full.logit_offsets)
    cb = class_prior(train_groups(half), 0.5, reference=reference_counts(half))
    want = cb ** 0.5 / (cb ** 0.5).mean()
    np.testing.assert_allclose(hardness_options(half)["prior"], want, rtol=1e-5)
    assert float(setup(1.0).logit_offsets.abs().max()) == 0.0


def test_split_is_refused_for_a_method_without_it():
    with pytest.raises(ConfigError, match="class-prior-draw"):
        TrainConfig(method="hamr-cb", freeze_encoder=True, class_prior_draw=0.5).resolved("cls")
    with pytest.raises(ConfigError, match="must be in"):
        TrainConfig(method="hamr-la", class_prior_draw=1.5).resolved("cls")


def test_split_default_is_half_for_hamr_la_and_none_elsewhere():
    def draw(method):
        return TrainConfig(method=method, freeze_encoder=True).resolved("cls").class_prior_draw
    assert draw("hamr-la") == 0.5
    assert draw("la") == draw("hamr-cb") == draw("hamr") == 0.0
