"""Issue 9: hardness rules, the class prior, the draw diagnostics and LNR against hand values,
and a short run whose diagnostics show the sampler acting."""
import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from hamr_dist.config import TrainConfig, apply_preset
from hamr_dist.errors import ConfigError
from hamr_dist.sampling.diagnostics import draw_stats, sampler_stats, spearman, weight_stats
from hamr_dist.sampling.groups import class_prior, sample_groups
from hamr_dist.sampling.hardness import InMemoryHardness
from hamr_dist.train.lnr import flip_labels


def test_debiased_ema_hand_values():
    s = InMemoryHardness(3, gamma=0.5, rule="debiased-ema")
    s.update(np.array([0]), np.array([3.0]))
    # m0 = 0.5 * 3 = 1.5, one visit: h0 = 1.5 / (1 - 0.5) = 3; unvisited at the visited mean
    np.testing.assert_allclose(s.hardness(), [3.0, 3.0, 3.0])
    s.update(np.array([0, 1]), np.array([1.0, 2.0]))
    # m0 = 0.75 + 0.5 = 1.25, h0 = 1.25 / 0.75; h1 = 1 / 0.5 = 2; h2 = mean of the two
    h0 = 1.25 / 0.75
    np.testing.assert_allclose(s.hardness(), [h0, 2.0, (h0 + 2.0) / 2], rtol=1e-6)
    # the state round-trips, and a store of another rule refuses it
    t = InMemoryHardness(3, gamma=0.5, rule="debiased-ema")
    t.load_state_dict(s.state_dict())
    np.testing.assert_allclose(t.hardness(), s.hardness())
    with pytest.raises(ValueError, match="rule"):
        InMemoryHardness(3, gamma=0.5).load_state_dict(s.state_dict())


def test_epoch_ema_applies_the_epoch_mean_at_epoch_end():
    s = InMemoryHardness(3, rule="epoch-ema", epoch_gamma=0.5)
    s.update(np.array([0, 0, 1]), np.array([2.0, 4.0, 3.0]))
    np.testing.assert_array_equal(s.hardness(), [1, 1, 1])         # not before the epoch ends
    s.end_epoch()
    np.testing.assert_allclose(s.hardness(), [0.5 + 1.5, 0.5 + 1.5, 1.0])
    s.end_epoch()                                                   # nothing new: unchanged
    np.testing.assert_allclose(s.hardness(), [2.0, 2.0, 1.0])


def test_decay_all_decays_every_entry_and_renormalises():
    s = InMemoryHardness(2, gamma=0.5, rule="decay-all")
    s.update(np.array([0]), np.array([3.0]))
    # [0.5 + 1.5, 0.5] = [2, 0.5], mean 1.25
    np.testing.assert_allclose(s.hardness(), [1.6, 0.4], rtol=1e-6)


def test_paper_ema_unchanged_and_uniform_after_few_visits():
    """The reason for the other rules: a visit moves h by 1 % of (w - 1)."""
    s = InMemoryHardness(2, gamma=0.99)
    s.update(np.array([0]), np.array([3.0]))
    np.testing.assert_allclose(s.hardness(), [1.02, 1.0], rtol=1e-6)


def test_prior_multiplies_the_sampling_score():
    s = InMemoryHardness(3, prior=[1.0, 1.0, 2.0])
    np.testing.assert_allclose(s.probabilities(0.7, 0.0), [0.25, 0.25, 0.5])
    with pytest.raises(ValueError):
        InMemoryHardness(3, prior=[1.0, 0.0, 1.0])


def test_class_prior_balances_primary_groups():
    groups = sample_groups([{"label": y} for y in [0, 0, 0, 1]], "cls", ["a", "b"])
    prior = class_prior(groups, 1.0)
    np.testing.assert_allclose(prior, [2 / 3, 2 / 3, 2 / 3, 2.0])
    assert prior[:3].sum() == pytest.approx(prior[3:].sum())          # equal class mass
    np.testing.assert_allclose(class_prior(groups, 0.0), 1.0)
    sqrt = class_prior(groups, 0.5)
    assert sqrt[3] / sqrt[0] == pytest.approx(np.sqrt(3))


def test_ner_prior_weighs_a_sentence_as_its_rarest_type():
    names = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    # LOC in 3 sentences, PER in 1 (together with LOC), one sentence without entities
    recs = [{"tags": [1, 2, 0]}, {"tags": [1, 0]}, {"tags": [0, 0]}, {"tags": [1, 0, 3, 4]}]
    groups = sample_groups(recs, "ner", names)
    raw = np.array([1 / 3, 1 / 3, 1 / 3, 1.0])      # LOC, LOC, none (as LOC, the commonest), PER
    np.testing.assert_allclose(class_prior(groups, 1.0), raw / raw.mean())
    raw = np.array([3, 3, 3, 1]) ** -0.5
    np.testing.assert_allclose(class_prior(groups, 0.5), raw / raw.mean())
    # the rare type's share of the draw rises above its share of the set; no-entity sentences'
    # share does not
    p = class_prior(groups, 1.0) / 4
    assert p[3] > 0.25 and p[2] <= 0.25


def test_ner_groups_membership_and_rarest_type():
    names = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    recs = [{"tags": [1, 2, 0]}, {"tags": [1, 0]}, {"tags": [0, 0]}, {"tags": [1, 0, 3, 4]}]
    g = sample_groups(recs, "ner", names)
    assert g.names == ["LOC", "PER"]
    np.testing.assert_array_equal(g.member, [[1, 0], [1, 0], [0, 0], [1, 1]])
    np.testing.assert_array_equal(g.primary, [0, 0, -1, 1])            # PER is rarer than LOC
    np.testing.assert_allclose(g.train_share(), [0.75, 0.25])
    np.testing.assert_allclose(g.draw_share(np.array([3, 3, 2, 0])), [0.75, 0.5])


def test_sampler_and_draw_stats_hand_values():
    p = np.array([0.4, 0.4, 0.1, 0.1])
    st = sampler_stats(np.array([1.0, 2.0, 3.0, 4.0]), p)
    assert st["ess_frac"] == pytest.approx(1 / (4 * 0.34))
    assert st["p_max_min_ratio"] == pytest.approx(4.0)
    assert st["hardness_p50"] == pytest.approx(2.5)
    assert sampler_stats(np.ones(5), np.full(5, 0.2))["ess_frac"] == pytest.approx(1.0)
    groups = sample_groups([{"label": y} for y in [0, 0, 1, 1]], "cls", ["a", "b"])
    flat, shares = draw_stats(np.array([0, 0, 2]), 4, groups)
    assert flat["coverage"] == 0.5
    assert shares["a"] == {"draw": pytest.approx(2 / 3), "train": 0.5}


def test_weight_stats_and_spearman():
    w = np.array([0.1, 0.1, 1.0, 2.0, 8.0])
    st = weight_stats(w, 0.1, 8.0)
    assert st["weight_clip_min_share"] == pytest.approx(0.4)
    assert st["weight_clip_max_share"] == pytest.approx(0.2)
    assert st["weight_p50"] == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    b[:10] = a[:10]
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)
    assert np.isnan(spearman(np.ones(4), np.arange(4)))


def test_lnr_flips_only_towards_rarer_classes():
    rng = np.random.default_rng(1)
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    probs = rng.dirichlet([5, 5, 5], size=100)
    probs[labels == 0] = rng.dirichlet([20, 2, 1], size=60)
    probs[:5] = [0.02, 0.02, 0.96]            # majority samples the model puts in the rare class
    new = flip_labels(probs, labels, threshold=1.0, seed=0)
    moved = new != labels
    assert moved[:5].all() and (new[:5] == 2).all()
    # never towards a larger class; the rarest class never loses a sample
    counts = np.bincount(labels)
    assert (counts[new[moved]] < counts[labels[moved]]).all()
    assert (new[labels == 2] == 2).all()
    np.testing.assert_array_equal(new, flip_labels(probs, labels, threshold=1.0, seed=0))
    assert (flip_labels(probs, labels, threshold=50.0, seed=0) == labels).all()


def test_paper_preset_fills_what_the_user_did_not_give():
    v = apply_preset({"preset": "paper", "num_train_epochs": 3})
    assert v["num_train_epochs"] == 3 and v["per_device_train_batch_size"] == 8
    assert v["meta_scope"] == "all" and v["load_best_model_at_end"] is False
    cls = TrainConfig(**v).resolved("cls")
    ner = TrainConfig(**v).resolved("ner")
    assert (cls.learning_rate, ner.learning_rate) == (4e-5, 2e-5)
    assert cls.warmup_ratio == 0 and cls.weight_decay == 0 and cls.hard_ratio == 0.1
    assert TrainConfig(**apply_preset({"preset": "paper", "learning_rate": 1e-4})).resolved(
        "cls").learning_rate == 1e-4
    with pytest.raises(ConfigError, match="classification only"):
        TrainConfig(method="lnr").resolved("ner")


def test_hamr_cb_draw_follows_prior_and_hardness(tmp_path):
    """A short run on the built-in corpus (largest class 25x the smallest): the class-balanced
    draw over-represents the rarest class, ESS/N falls below 1, and every diagnostic is in
    metrics.json and the epoch line."""
    from hamr_dist.train.loop import train
    cfg = TrainConfig(method="hamr-cb", hardness_rule="debiased-ema", freeze_encoder=True,
                      num_train_epochs=2, output_dir=str(tmp_path / "out"), progress=False,
                      seed=1, early_stopping_patience=5)
    res = train(cfg)
    last = res.history[-1]
    for key in ("hardness_p1", "hardness_p50", "hardness_p99", "p_max_min_ratio", "ess_frac",
                "coverage", "spearman_h_loss", "weight_p1", "weight_p99", "weight_clip_min_share",
                "weight_clip_max_share"):
        assert key in last, key
    assert last["ess_frac"] < 0.8
    shares = last["draw_share"]
    rarest = min(shares, key=lambda c: shares[c]["train"])
    assert shares[rarest]["draw"] > 2 * shares[rarest]["train"]
    assert last["hardness_p99"] > last["hardness_p1"]                  # h moved per sample
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["history"][-1]["draw_share"] == shares


def test_ray_worker_with_prior_and_epoch_rule_matches_in_process(ray_local, tmp_path):
    """The actor gets the rule and the prior at begin, closes each epoch once, draws with the
    prior's share of each epoch (--class-prior-warmup-ratio), and computes the whole-h
    diagnostics: one Ray worker gives the in-process numbers."""
    import torch

    from hamr_dist.distributed.trainer import train_distributed
    from hamr_dist.train.loop import train

    def cfg(tmp, **kw):
        return TrainConfig(method="hamr-cb", hardness_rule="epoch-ema", freeze_encoder=True,
                           max_train_samples=300, max_eval_samples=100, num_train_epochs=3,
                           per_device_train_batch_size=16, seed=7, progress=False,
                           output_dir=str(tmp / "out"), storage_path=str(tmp / "ray"),
                           run_name="run", mlflow=False, class_prior_warmup_ratio=0.5, **kw)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                     # as in the Ray worker
    try:
        local = train(cfg(tmp_path / "local")).metrics
    finally:
        torch.set_num_threads(threads)
    dist = train_distributed(cfg(tmp_path / "ray", num_workers=1)).metrics
    for a, b in zip(local["history"], dist["history"]):
        for key in ("loss", "dev_macro_f1", "hardness_std", "ess_frac", "coverage",
                    "p_max_min_ratio", "spearman_h_loss", "weight_p99"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["epoch"], key)
        assert a["draw_share"] == b["draw_share"]
    assert local["history"][-1]["hardness_std"] > 0          # epoch-ema moved h at epoch ends


def test_draw_shares_reach_mlflow_keys_and_a_plot(tmp_path):
    from hamr_dist.tracking import epoch_metrics, make_plots
    shares = {"very neg": {"draw": 0.3, "train": 0.1}, "pos": {"draw": 0.7, "train": 0.9}}
    rec = {"epoch": 1, "loss": 0.5, "ess_frac": 0.6, "draw_share": shares}
    m = epoch_metrics(rec)
    assert m["draw_share_very neg"] == 0.3 and m["train_share_pos"] == 0.9 and m["ess_frac"] == 0.6
    pytest.importorskip("matplotlib")
    made = make_plots(tmp_path, {"history": [rec, {**rec, "epoch": 2}]})
    assert (tmp_path / "plots" / "draw_share.png") in made



def test_hardness_signal_weight_or_relative_loss():
    """--hardness-signal: the post-meta weights (the paper) or the loss relative to the batch
    mean, clipped like w (hand values); methods without meta weights always take the loss."""
    import torch

    from hamr_dist.train.loop import hardness_signal
    hard = torch.tensor([1.0, 2.0, 3.0, 0.0])             # mean 1.5
    w = torch.tensor([0.9, 1.1, 1.0, 1.0])
    rel = torch.tensor([1 / 1.5, 2 / 1.5, 2.0, 0.1])      # 0 clipped up to w_min 0.1
    torch.testing.assert_close(hardness_signal(TrainConfig(hardness_signal="weight"), w, hard), w)
    c = TrainConfig(hardness_signal="loss", w_min=0.1, w_max=8.0)
    torch.testing.assert_close(hardness_signal(c, w, hard), rel)
    torch.testing.assert_close(hardness_signal(TrainConfig(w_min=0.1, w_max=8.0), None, hard), rel)


def test_hamr_cb_with_loss_hardness_follows_the_loss(tmp_path):
    from hamr_dist.train.loop import train
    cfg = TrainConfig(method="hamr-cb", hardness_signal="loss", freeze_encoder=True,
                      num_train_epochs=2, output_dir=str(tmp_path / "out"), progress=False,
                      seed=1)
    last = train(cfg).history[-1]
    assert last["spearman_h_loss"] > 0.5 and last["ess_frac"] < 0.8
    assert last["weight_p99"] > last["weight_p1"]       # the weights' stats are still w's


def test_ner_sample_loss_default_follows_the_regime():
    """hamr-cb with a frozen encoder trains on each sentence's mean token loss, fine-tuning on its
    max; hamr-icf on the mean (all chosen on dev, docs/hardness.md); the paper's hamr and
    --preset paper keep the max, and what the user gives always wins."""
    frozen = TrainConfig(method="hamr-cb", freeze_encoder=True)
    assert frozen.resolved("ner").ner_sample_loss == "mean"
    assert TrainConfig(method="hamr-cb").resolved("ner").ner_sample_loss == "max"
    assert TrainConfig(method="hamr", freeze_encoder=True).resolved("ner").ner_sample_loss == "max"
    assert TrainConfig(method="hamr-icf").resolved("ner").ner_sample_loss == "mean"
    paper = TrainConfig(**apply_preset({"preset": "paper", "method": "hamr-cb",
                                        "freeze_encoder": True}))
    assert paper.resolved("ner").ner_sample_loss == "max"
    assert TrainConfig(method="hamr-cb", freeze_encoder=True,
                       ner_sample_loss="mix").resolved("ner").ner_sample_loss == "mix"


def test_class_prior_by_effective_number():
    """--class-prior-beta: n_c becomes (1 - beta^n_c) / (1 - beta); hand values for 3 vs 1."""
    from hamr_dist.sampling.groups import effective_number
    np.testing.assert_allclose(effective_number([1, 3], 0.5), [1.0, 1.75])
    groups = sample_groups([{"label": y} for y in [0, 0, 0, 1]], "cls", ["a", "b"])
    prior = class_prior(groups, 1.0, beta=0.5)     # raw weights 1/1.75 (class a) and 1/1 (b)
    raw = np.array([1 / 1.75] * 3 + [1.0])
    np.testing.assert_allclose(prior, raw / raw.mean())
    # beta -> 1 recovers the plain counts; large classes saturate at 1/(1 - beta)
    np.testing.assert_allclose(class_prior(groups, 1.0, beta=1 - 1e-9), class_prior(groups, 1.0),
                               rtol=1e-6)
    assert effective_number([10**6], 0.999)[0] == pytest.approx(1000.0)
    with pytest.raises(ConfigError, match="class-prior-beta"):
        TrainConfig(class_prior_beta=1.0).validate()


def test_hamr_icf_is_hamr_with_icf_weights_in_the_loss():
    from hamr_dist.methods import get_method
    m, hamr, icf = get_method("hamr-icf"), get_method("hamr"), get_method("icf")
    assert m.class_weights and not m.class_prior
    assert (m.meta, m.resample, m.knn, m.loss) == (hamr.meta, hamr.resample, hamr.knn, icf.loss)
    assert TrainConfig(method="hamr-icf").resolved("cls").hardness_rule == "debiased-ema"
    assert TrainConfig(method="hamr").resolved("cls").hardness_rule == "ema"   # the paper's


def test_default_method_follows_the_regime():
    """hamr-icf when the encoder trains, hamr-la with a frozen encoder (each the dev winner of its
    tier, README Results); an explicit method always wins."""
    assert TrainConfig().method == "hamr-icf"
    assert TrainConfig(freeze_encoder=True).method == "hamr-la"
    assert TrainConfig(method="hamr").method == "hamr"
    assert TrainConfig(**apply_preset({"preset": "paper"})).method == "hamr-icf"
