"""--class-weight-feedback: ICF's class weights scaled by each class's relative meta-set loss,
against hand values and an independent computation of the per-class losses."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hamr_dist.config import TrainConfig
from hamr_dist.errors import ConfigError
from hamr_dist.losses import icf_weights
from hamr_dist.train.class_feedback import meta_class_losses, rescale


def test_rescale_hand_values_keep_the_training_mean_at_one():
    counts = [4, 1, 1]                                  # N = 6, C = 3: ICF 0.5, 2, 2
    icf = icf_weights(counts)
    groups = torch.arange(3)
    # losses 1, 2, 3 (mean 2): r = 0.5, 1, 1.5, already of mean 1
    w = rescale(icf, groups, np.array([1.0, 2.0, 3.0]), 1.0, counts)
    torch.testing.assert_close(w, torch.tensor([0.25, 2.0, 3.0]))
    assert (w * torch.tensor(counts)).sum() / 6 == pytest.approx(1.0)
    # power 2: r = 0.25, 1, 2.25 (mean 7/6), divided by its mean
    w2 = rescale(icf, groups, np.array([1.0, 2.0, 3.0]), 2.0, counts)
    torch.testing.assert_close(w2, torch.tensor([0.5 * 0.25, 2.0, 2 * 2.25]) * 6 / 7)
    assert (w2 * torch.tensor(counts)).sum() / 6 == pytest.approx(1.0)
    # power 0 and a class the meta set lacks (NaN) leave ICF as it is
    torch.testing.assert_close(rescale(icf, groups, np.array([1.0, 2.0, 3.0]), 0.0, counts), icf)
    torch.testing.assert_close(rescale(icf, groups, np.array([np.nan] * 3), 1.0, counts), icf)


def test_rescale_pools_ner_tags_by_entity_type():
    # O, B-X, I-X, B-Y, I-Y; tokens: O 6, X 2 (B 1, I 1), Y 1 -> groups O, X, Y with ICF 0.5, 1.5, 3
    icf = icf_weights([6, 1, 1, 1, 0], groups=[0, 1, 1, 2, 2])
    groups = torch.tensor([0, 1, 1, 2, 2])
    tokens = torch.tensor([6, 1, 1, 1, 0.0])
    w = rescale(icf, groups, np.array([1.0, 1.0, 4.0]), 1.0, tokens)   # r = 0.5, 0.5, 2
    torch.testing.assert_close(w, torch.tensor([0.25, 0.75, 0.75, 6.0, 0.0]))
    assert float((w * tokens).sum() / tokens.sum()) == pytest.approx(1.0)


def test_meta_class_losses_match_an_independent_computation(tmp_path):
    from hamr_dist.train.setup import build
    cfg = TrainConfig(method="icf", freeze_encoder=True, output_dir=str(tmp_path),
                      progress=False, mlflow=False).resolved("cls")
    s = build(cfg)
    got = meta_class_losses(s.model, s, batch_size=7)
    s.model.eval()
    per_class = {}
    with torch.no_grad():
        for i in range(len(s.meta.batches)):
            b = s.meta.batches(np.array([i]))
            y = int(b["labels"][0])
            per_class.setdefault(y, []).append(float(F.cross_entropy(s.model(b), b["labels"])))
    want = np.full(len(s.data.label_names), np.nan)
    for y, v in per_class.items():
        want[y] = np.mean(v)
    np.testing.assert_allclose(got, want, rtol=1e-5)

    # two workers: each evaluates every other meta sample, the all-reduce pools them (faked
    # here: rank 1's sums recorded, then averaged into rank 0's), and the result is the same
    seen = {}

    def record(ts):
        seen["rank1"] = [t.clone() for t in ts]

    def mean_with_rank1(ts):
        for t, other in zip(ts, seen["rank1"]):
            t.add_(other).div_(2)
    meta_class_losses(s.model, s, 7, rank=1, world_size=2, all_reduce_mean=record)
    pooled = meta_class_losses(s.model, s, 7, rank=0, world_size=2, all_reduce_mean=mean_with_rank1)
    np.testing.assert_allclose(pooled, want, rtol=1e-5)


def test_feedback_default_per_method_and_validation():
    with pytest.raises(ConfigError, match="class-weight-feedback"):
        TrainConfig(class_weight_feedback=-1.0).resolved("cls")
    # on for hamr-icf when the encoder trains (the fine-tuning default), off with a frozen
    # encoder and for the icf baseline; a given value wins
    assert TrainConfig(method="hamr-icf").resolved("cls").class_weight_feedback == 1.0
    assert TrainConfig(method="hamr-icf",
                       freeze_encoder=True).resolved("ner").class_weight_feedback == 0.0
    assert TrainConfig(method="icf").resolved("cls").class_weight_feedback == 0.0
    assert TrainConfig(method="hamr-icf",
                       class_weight_feedback=0.0).resolved("ner").class_weight_feedback == 0.0


def test_icf_with_feedback_trains_and_logs_class_weights(tmp_path):
    from hamr_dist.train.loop import train
    from hamr_dist.train.setup import train_labels
    cfg = TrainConfig(method="icf", freeze_encoder=True, num_train_epochs=2,
                      class_weight_feedback=1.0, output_dir=str(tmp_path / "out"),
                      progress=False, seed=1, mlflow=False)
    res = train(cfg)
    assert "class_weight" not in res.history[0]           # epoch 1 trains on plain ICF
    w = res.history[1]["class_weight"]
    from hamr_dist.train.setup import build
    s = build(cfg.resolved("cls"))
    labels = train_labels(s)
    names = list(s.data.label_names)
    mean = np.mean([w[names[y]] for y in labels])
    assert mean == pytest.approx(1.0, rel=1e-4)
    icf = icf_weights(np.bincount(labels, minlength=len(names))).numpy()
    assert not np.allclose([w[n] for n in names], icf)   # the feedback moved them


def test_epoch_line_names_the_lightest_and_heaviest_class():
    from hamr_dist.train.loop import acting_summary
    line = acting_summary({"class_weight": {"O": 0.15, "Price": 13.06, "Dish": 8.2}})
    assert "class weights 0.15 (O) to 13.06 (Price)" in line
    assert acting_summary({}) == ""
