"""--class-prior-reference dev: hamr-cb's draw aims at dev's class shares tempered towards uniform."""
from types import SimpleNamespace

import numpy as np
import pytest

from hamr_dist.config import TrainConfig
from hamr_dist.errors import ConfigError
from hamr_dist.sampling.groups import class_prior, sample_groups
from hamr_dist.train.diagnose import reference_counts


def _cls_groups(counts):
    return sample_groups([{"label": y} for y, n in enumerate(counts) for _ in range(n)], "cls",
                         [f"c{k}" for k in range(len(counts))])


def _draw_share(groups, prior):
    return np.bincount(groups.primary, weights=prior) / prior.sum()


def test_draw_follows_dev_shares_tempered_by_the_power():
    groups = _cls_groups([90, 10])
    # dev as imbalanced as train: power 0.5 keeps the square root of its shares (3:1)
    np.testing.assert_allclose(_draw_share(groups, class_prior(groups, 0.5, reference=[81, 9])),
                               [0.75, 0.25])
    # balanced dev (the classes were cut in training only): the draw is balanced at any power
    for power in (0.0, 0.5, 1.0):
        np.testing.assert_allclose(
            _draw_share(groups, class_prior(groups, power, reference=[40, 40])), [0.5, 0.5])
    # power 0 draws like dev; power 1 balances whatever dev holds
    np.testing.assert_allclose(_draw_share(groups, class_prior(groups, 0.0, reference=[30, 70])),
                               [0.3, 0.7])
    np.testing.assert_allclose(_draw_share(groups, class_prior(groups, 1.0, reference=[30, 70])),
                               [0.5, 0.5])


def test_reference_equal_to_train_counts_is_the_plain_prior():
    groups = _cls_groups([50, 30, 5])
    for power in (0.0, 0.3, 1.0):
        np.testing.assert_allclose(class_prior(groups, power, reference=[50, 30, 5]),
                                   class_prior(groups, power))


def test_a_class_absent_from_dev_is_still_drawn():
    groups = _cls_groups([6, 2])
    prior = class_prior(groups, 0.5, reference=[10, 0])
    assert (prior > 0).all()
    # it counts as one dev sample: draw shares sqrt(10/11) : sqrt(1/11)
    share = _draw_share(groups, prior)
    assert share[1] / share[0] == pytest.approx(np.sqrt(1 / 10))


def test_ner_reference_counts_dev_sentences_per_type_in_training_order():
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    train = sample_groups([{"tags": [1, 2]}, {"tags": [3, 0]}, {"tags": [0]}], "ner", names)
    dev = [{"tags": [3, 4, 0]}, {"tags": [3, 0, 1]}, {"tags": [0, 0]}]
    s = SimpleNamespace(cfg=TrainConfig(class_prior_reference="dev"), groups=train,
                        dev=SimpleNamespace(records=dev),
                        data=SimpleNamespace(task="ner", label_names=names))
    assert train.names == ["LOC", "PER"]
    np.testing.assert_array_equal(reference_counts(s), [2, 1])
    s.cfg = TrainConfig(class_prior_reference="train")
    assert reference_counts(s) is None


def test_reference_choice_is_checked_outside_the_cli():
    with pytest.raises(ConfigError, match="class-prior-reference='test'.*train, dev"):
        TrainConfig(class_prior_reference="test").validate()


def test_the_log_names_the_rarest_class_draw_and_training_shares():
    from hamr_dist.train.diagnose import prior_summary
    groups = _cls_groups([90, 10])
    s = SimpleNamespace(cfg=TrainConfig(class_prior_power=0.5), groups=groups)
    line = prior_summary(s, class_prior(groups, 0.5, reference=[81, 9]))
    assert "c1 gets 0.250 of the draw (0.100 of the training set), c0 0.750 (0.900)" in line
    assert "--class-prior-reference dev, --class-prior-power 0.5" in line


def test_icf_weights_follow_dev_shares_tempered_by_the_power():
    import torch

    from hamr_dist.losses import icf_weights
    # 90:10 in training and in dev: power 0.5 gives the classes 3:1 of the loss mass, mean 1
    w = icf_weights([90, 10], reference=[81, 9], power=0.5)
    torch.testing.assert_close(w, torch.tensor([0.75 / 0.9, 0.25 / 0.1]))
    assert float(w @ torch.tensor([90.0, 10.0])) == pytest.approx(100.0)
    # power 1 is ICF whatever dev holds; a class missing from dev still gets a weight
    torch.testing.assert_close(icf_weights([90, 10], reference=[5, 95], power=1.0),
                               icf_weights([90, 10]))
    assert icf_weights([90, 10], reference=[50, 0], power=0.5)[1] > 0
    # NER: B-/I- pooled into the type in train and in dev alike
    groups = [0, 1, 1, 2, 2]                       # O, B-A, I-A, B-B, I-B
    w = icf_weights([80, 5, 5, 6, 4], groups=groups, reference=[40, 3, 2, 1, 4], power=0.5)
    pooled = icf_weights([80, 10, 10], reference=[40, 5, 5], power=0.5)
    torch.testing.assert_close(w, pooled[torch.tensor(groups)])


def test_feedback_keeps_the_positions_mean_for_any_base_weights():
    import torch

    from hamr_dist.losses import icf_weights
    from hamr_dist.train.class_feedback import rescale
    counts = np.array([70.0, 20.0, 10.0])
    base = icf_weights(counts, reference=[60, 30, 10], power=0.5)
    out = rescale(base, torch.arange(3), np.array([0.5, 1.0, 2.0]), 1.0, counts)
    assert float(torch.as_tensor(counts).float() @ out) == pytest.approx(100.0, rel=1e-5)
    # relative to each other the classes move by their meta losses
    assert float(out[2] / out[0]) == pytest.approx(float(base[2] / base[0]) * 4, rel=1e-5)


def test_power_defaults_per_method_and_regime():
    frozen = TrainConfig(method="hamr-cb", freeze_encoder=True).resolved("cls")
    assert frozen.class_prior_reference == "dev"
    assert TrainConfig(method="hamr-cb", freeze_encoder=True,
                       class_prior_power=1.0).resolved("cls").class_prior_power == 1.0

    def power(method, frozen):
        return TrainConfig(method=method, freeze_encoder=frozen).resolved("cls").class_prior_power
    assert power("hamr-icf", False) == power("hamr-icf", True) == 0.5
    assert power("icf", False) == power("icf", True) == 1.0       # the baseline stays ICF
    assert power("hamr-cb", True) == power("hamr-cb", False) == 0.5


def test_train_reference_gives_n_to_the_minus_power_in_draw_and_loss():
    """--class-prior-reference train: both the prior and the class weights are n_c^-power."""
    from hamr_dist.losses import icf_weights
    w = icf_weights([90, 10], power=0.5).numpy()
    assert w[1] / w[0] == pytest.approx(3.0)              # sqrt(90 / 10)
    groups = _cls_groups([90, 10])
    prior = class_prior(groups, 0.5)
    assert prior[-1] / prior[0] == pytest.approx(3.0)
