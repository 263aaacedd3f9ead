"""The spec's formulas against values computed by hand."""
import math

import torch

from hamr_dist.losses import (balanced_ce, dice, entity_groups, focal, icf_weights, per_sample,
                              token_ce)
from hamr_dist.meta.weight_net import WeightNet, normalise, zscore


def test_zscore_hand_values():
    z = zscore(torch.tensor([1.0, 2.0, 3.0]))
    # mean 2, sample std 1
    torch.testing.assert_close(z, torch.tensor([-1.0, 0.0, 1.0]))
    assert zscore(torch.tensor([5.0])).item() == 0.0
    # constant batch: std clamps to 1e-6 and z is 0
    torch.testing.assert_close(zscore(torch.tensor([2.0, 2.0])), torch.tensor([0.0, 0.0]))


def test_weight_normalisation_and_clipping():
    s = torch.tensor([0.01, 0.5, 0.99, 0.5])   # mean 0.5
    w = normalise(s, 0.1, 8.0)
    torch.testing.assert_close(w, torch.tensor([0.1, 1.0, 1.98, 1.0]))   # 0.02 clipped up to 0.1
    w = normalise(torch.tensor([0.9, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01]), 0.1, 8.0)
    assert w[0].item() == 8.0                    # 0.9 / 0.099 = 9.09 clipped to 8


def test_weight_net_shape_and_bias_init():
    net = WeightNet()
    assert net.net[0].in_features == 1 and net.net[0].out_features == 100
    assert abs(net.net[2].bias.item() - 0.1) < 1e-7


def test_max_token_loss_per_sentence():
    logits = torch.zeros(2, 3, 2)
    logits[0, 1] = torch.tensor([0.0, math.log(3.0)])     # p(gold=0) = 1/4
    labels = torch.tensor([[0, 0, -100], [1, -100, -100]])
    pos = token_ce(logits, labels)
    l_max = per_sample(pos, labels, "max")
    torch.testing.assert_close(l_max, torch.tensor([math.log(4.0), math.log(2.0)]))
    l_mean = per_sample(pos, labels, "mean")
    torch.testing.assert_close(l_mean, torch.tensor([(math.log(2.0) + math.log(4.0)) / 2, math.log(2.0)]))
    l_mix = per_sample(pos, labels, "mix")       # (mean + max) / 2
    torch.testing.assert_close(l_mix, torch.tensor([(3 * math.log(4.0) + math.log(2.0)) / 4,
                                                    math.log(2.0)]))


def test_focal_and_dice_hand_values():
    logits = torch.tensor([[0.0, math.log(3.0)]])          # p = [1/4, 3/4]
    y = torch.tensor([1])
    p = 0.75
    torch.testing.assert_close(focal(logits, y), torch.tensor([-(1 - p) ** 2 * math.log(p)]))
    # Li et al.'s released form, one sample, two classes, alpha 0.5, smooth 0.1:
    # q = (1-p)^a p per class, batch sums Q_c = q_c and Y = (0, 1)
    a, s = 0.5, 0.1
    q0, q1 = (1 - 0.25) ** a * 0.25, (1 - p) ** a * p
    want = (1 - s / (q0 + 0 + s)) + (1 - (2 * q1 + s) / (q1 + 1 + s))
    torch.testing.assert_close(dice(logits, y, alpha=a, smooth=s), torch.tensor([want]))


def test_dice_falls_as_the_gold_probability_rises():
    """The old per-sample form 1 - (2(1-p)p + 1)/((1-p)p + 2) was smallest at p = 0.5."""
    def loss(p_gold, alpha):
        logits = torch.tensor([[math.log(1 - p_gold), math.log(p_gold)]])
        return dice(logits, torch.tensor([1]), alpha=alpha, smooth=1e-4).item()
    for alpha in (0.0, 0.01):
        vals = [loss(p, alpha) for p in (0.3, 0.5, 0.7, 0.9, 0.98)]
        assert all(b < a for a, b in zip(vals, vals[1:])), (alpha, vals)
    # gold-class term alone at alpha 0: 1 - (2p + s)/(p + 1 + s), 0.0101 at p = 0.98
    assert abs(loss(0.98, 0.0) - (1 - (2 * 0.98 + 1e-4) / (1.98 + 1e-4))
               - (1 - 1e-4 / (0.02 + 1e-4))) < 1e-5


def test_dice_batch_sums_couple_the_samples():
    """The denominators are batch sums: a sample's loss depends on the other samples, and
    ignored positions (-100) take no part."""
    logits = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    alone = dice(logits[:1], torch.tensor([1]))
    both = dice(logits, torch.tensor([1, 0]))
    assert not torch.allclose(alone, both[:1])
    masked = dice(logits, torch.tensor([1, -100]))
    torch.testing.assert_close(masked, torch.cat([alone, torch.zeros(1)]))


def test_icf_weights():
    w = icf_weights([6, 3, 1, 0])   # N=10, C=3 present
    torch.testing.assert_close(w, torch.tensor([10 / 18, 10 / 9, 10 / 3, 0.0]))


def test_icf_weights_ner_pool_tags_per_entity_type():
    names = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert entity_groups(names) == [0, 1, 1, 2, 2]
    # tokens: O 80, LOC 10 + 6 = 16, PER 4 + 0 = 4; N = 100, C = 3 classes (O, LOC, PER)
    w = icf_weights([80, 10, 6, 4, 0], groups=entity_groups(names))
    torch.testing.assert_close(w, torch.tensor([100 / 240, 100 / 48, 100 / 48, 100 / 12, 0.0]))


def test_dice_gradient_is_finite_at_a_saturated_softmax():
    """(1-p)^alpha has an infinite slope at p = 1: a float32 softmax reaches 1.0 exactly."""
    logits = torch.tensor([[[40.0, -40.0], [0.0, 1.0]]], requires_grad=True)
    dice(logits, torch.tensor([[0, 1]])).sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_balanced_ce_averages_per_class_means():
    # hand computation: CE of logits row r for gold y is logsumexp(row) - row[y]
    logits = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 3.0], [0.5, -0.5]])
    labels = torch.tensor([0, 0, 1, 0])
    ce = [math.log(math.exp(2) + 1) - 2, math.log(2 * math.e) - 1,
          math.log(1 + math.exp(3)) - 3, math.log(math.exp(0.5) + math.exp(-0.5)) - 0.5]
    want = ((ce[0] + ce[1] + ce[3]) / 3 + ce[2]) / 2
    assert math.isclose(float(balanced_ce(logits, labels)), want, rel_tol=1e-6)


def test_balanced_ce_ner_pools_tags_and_ignores_padding():
    names = ["O", "B-LOC", "I-LOC", "B-PER"]
    groups = torch.as_tensor(entity_groups(names))
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4)
    labels = torch.tensor([[0, 1, 2], [0, 3, -100]])
    pos = token_ce(logits, labels)
    want = (pos[0, 0] + pos[1, 0]) / 2 / 3 + (pos[0, 1] + pos[0, 2]) / 2 / 3 + pos[1, 1] / 3
    assert torch.allclose(balanced_ce(logits, labels, groups), want)
    # equal to mean CE when every class has the same count
    flat = torch.tensor([0, 1, 0, 1])
    lg = torch.randn(4, 2)
    assert torch.allclose(balanced_ce(lg, flat), torch.nn.functional.cross_entropy(lg, flat))
