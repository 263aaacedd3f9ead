"""--draw-correction: importance weights that undo part of the hardness draw's shift."""
import numpy as np
import pytest
import torch
import yaml

from hamr_dist.config import TrainConfig
from hamr_dist.errors import ConfigError
from hamr_dist.sampling.draw import weighted_draw
from hamr_dist.sampling.importance import importance_weights
from hamr_dist.train.loop import Runtime, train, train_step
from hamr_dist.train.setup import build


def test_weights_against_hand_values():
    h = np.array([0.5, 1.0, 2.0, 4.0])
    b = np.array([0.0, 1.0, 0.0, 0.0])
    # tau 1, lam 0.5: scores 0.5, 1.5, 2, 4 (eps aside), mean 2
    u = importance_weights(h, b, np.array([3, 0, 1, 3]), tau=1.0, lam=0.5, beta=1.0)
    np.testing.assert_allclose(u, [0.5, 4.0, 4 / 3, 0.5], rtol=1e-5)
    half = importance_weights(h, b, np.array([3, 0]), tau=1.0, lam=0.5, beta=0.5)
    np.testing.assert_allclose(half, np.sqrt([0.5, 4.0]), rtol=1e-5)
    assert (importance_weights(h, b, np.arange(4), 2.0, 0.5, beta=0.0) == 1).all()


def test_full_correction_gives_every_sample_the_same_expected_weight():
    """beta = 1: a sample drawn with probability p_i and weighted u_i contributes m p_i u_i,
    the same m / N for all (the uniform draw's objective), however hard it is."""
    rng = np.random.default_rng(0)
    n, m = 50, 2_000_000
    h, b = rng.uniform(0.2, 3.0, n), (rng.random(n) < 0.2).astype(np.float32)
    drawn = weighted_draw(h, b, m, seed=1, epoch=0, tau=2.0, lam=0.7)
    counts = np.bincount(drawn, minlength=n)
    assert counts.max() > 5 * counts.min()                   # the draw itself is far from uniform
    u = importance_weights(h, b, drawn, tau=2.0, lam=0.7, beta=1.0)
    per_sample = np.bincount(drawn, weights=u, minlength=n)
    np.testing.assert_allclose(per_sample, m / n, rtol=0.05)


def test_step_scales_each_loss_by_its_weight_over_the_batch_mean(tmp_path):
    cfg = TrainConfig(method="hamr-no-meta", freeze_encoder=True, draw_correction=1.0,
                      max_train_samples=300, max_eval_samples=100, progress=False,
                      output_dir=str(tmp_path)).resolved("cls")
    s = build(cfg)
    idx = np.arange(8)
    batch = s.train.batches(idx)
    s.model.eval()                       # no dropout: both computations see the same logits
    with torch.no_grad():
        l = torch.nn.functional.cross_entropy(s.model(batch), batch["labels"], reduction="none")
    u = np.array([1, 2, 3, 4, 1, 1, 1, 3], dtype=np.float32)
    want = float((torch.as_tensor(u / u.mean()) * l).mean())
    opt = torch.optim.SGD(s.model.parameters(), lr=0.0)
    loss, _, _ = train_step(s, s.model, opt, None, None, idx, None, Runtime(progress=False),
                            sample_weight=u)
    assert loss == pytest.approx(want, rel=1e-5)
    assert want != pytest.approx(float(l.mean()), rel=1e-3)


def test_corrected_run_trains_and_records_the_option(tmp_path):
    cfg = TrainConfig(method="hamr-la", freeze_encoder=True, num_train_epochs=2, tau=3.0,
                      draw_correction=1.0, max_train_samples=300, max_eval_samples=100,
                      progress=False, output_dir=str(tmp_path))
    m = train(cfg).metrics
    assert 0.0 <= m["test"]["macro_f1"] <= 1.0
    last = m["history"][-1]
    assert last["ess_frac"] < 1.0
    assert last["importance_p1"] < last["importance_p50"] < last["importance_p99"]


def test_fine_tuning_default_draws_by_the_loss_half_corrected(tmp_path):
    """The default method when the encoder trains (hamr-icf) on a tiny 2-layer encoder: its
    draw follows the loss and the run records the correction's weights."""
    from benchmarks.scale import tiny_encoder
    model = tiny_encoder(tmp_path)
    cfg = TrainConfig(model=model, embedder=model, max_seq_length=16, num_train_epochs=2,
                      max_train_samples=160, max_eval_samples=60, progress=False, mlflow=False,
                      learning_rate=1e-3, output_dir=str(tmp_path / "out"))
    res = train(cfg)
    m, saved = res.metrics, yaml.safe_load((res.output_dir / "config.yaml").read_text())
    assert m["method"] == "hamr-icf"
    assert (saved["hardness_signal"], saved["draw_correction"]) == ("loss", 0.5)
    last = m["history"][-1]
    assert last["ess_frac"] < 1.0
    assert last["importance_p1"] < last["importance_p50"] < last["importance_p99"]


def test_importance_stats_are_quantiles_relative_to_the_mean():
    from hamr_dist.sampling.importance import importance_stats
    u = np.arange(1, 102, dtype=np.float32)             # mean 51
    st = importance_stats(u)
    assert st["importance_p50"] == pytest.approx(1.0)
    assert st["importance_p1"] == pytest.approx(2 / 51)
    assert st["importance_p99"] == pytest.approx(100 / 51)


def test_correction_must_be_in_unit_interval():
    with pytest.raises(ConfigError, match="draw-correction"):
        TrainConfig(method="hamr-la", draw_correction=1.5).resolved("cls")


def test_defaults_per_method_and_regime():
    def resolved(method, **kw):
        c = TrainConfig(method=method, **{"freeze_encoder": True, **kw}).resolved("cls")
        return c.hardness_signal, c.draw_correction
    assert resolved("hamr-la") == ("loss", 1.0)
    for m in ("hamr", "hamr-cb", "hamr-icf"):
        assert resolved(m) == ("weight", 0.0), m
    assert resolved("hamr-la", hardness_signal="weight", draw_correction=0.5) == ("weight", 0.5)
    # when the encoder trains, hamr-icf (that regime's default method) draws by the loss, half
    # corrected; the paper's hamr and hamr-cb keep theirs
    assert resolved("hamr-icf", freeze_encoder=False) == ("loss", 0.5)
    assert TrainConfig(freeze_encoder=False).method == "hamr-icf"
    for m in ("hamr", "hamr-cb"):
        assert resolved(m, freeze_encoder=False) == ("weight", 0.0), m
    assert resolved("hamr-icf", freeze_encoder=False, draw_correction=0) == ("loss", 0.0)
