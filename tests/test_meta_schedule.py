"""The cost levers of the meta step: --meta-every, --meta-reuse, --meta-fuse."""
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from hamr_dist.config import TrainConfig
from hamr_dist.meta.schedule import MetaSchedule, fused_forward
from hamr_dist.model import HamrModel, load_encoder


class ToyEncoder(nn.Module):
    def __init__(self, vocab=30, dim=8):
        super().__init__()
        self.config = SimpleNamespace(hidden_size=dim)
        self.emb = nn.Embedding(vocab, dim)
        self.lin = nn.Linear(dim, dim)

    def forward(self, input_ids, attention_mask):
        return SimpleNamespace(last_hidden_state=torch.tanh(self.lin(self.emb(input_ids))))


def tokens(n, length, seed, ner=False, n_labels=3):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 30, (n, length), generator=g)
    mask = torch.ones(n, length, dtype=torch.long)
    mask[0, length - 2:] = 0                       # some padding inside the batch too
    labels = (torch.randint(0, n_labels, (n, length), generator=g) if ner
              else torch.randint(0, n_labels, (n,), generator=g))
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_fused_forward_equals_separate_forwards_minilm():
    """Real attention: the concatenated, right-padded forward gives the training logits and the
    meta features of the two separate forwards (different lengths on each side)."""
    _, enc = load_encoder(None, eager=False)
    torch.manual_seed(0)
    model = HamrModel(enc, "cls", 3, head_hidden=8, dropout=0.0).eval()
    batch, meta = tokens(4, 9, 1), tokens(3, 13, 2)
    with torch.no_grad():
        logits, feats = fused_forward(model, batch, meta)
        torch.testing.assert_close(logits, model(batch), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(feats, model.encode(meta), rtol=1e-4, atol=1e-5)
    assert not feats.requires_grad


def test_fused_forward_ner_keeps_each_length_and_only_the_training_part_is_attached():
    torch.manual_seed(0)
    model = HamrModel(ToyEncoder(), "ner", 5, head_hidden=4, dropout=0.0)
    batch, meta = tokens(3, 10, 1, ner=True), tokens(2, 6, 2, ner=True)
    logits, feats = fused_forward(model, batch, meta)
    assert logits.shape == (3, 10, 5) and feats.shape == (2, 6, 8)
    torch.testing.assert_close(logits, model(batch))
    torch.testing.assert_close(feats, model.encode(meta))
    assert logits.requires_grad and not feats.requires_grad


def test_reuse_draws_a_new_meta_batch_every_r_updates():
    torch.manual_seed(0)
    model = HamrModel(ToyEncoder(), "cls", 3, head_hidden=4, dropout=0.0)
    drawn = []

    def draw():
        drawn.append(tokens(4, 5, len(drawn)))
        return drawn[-1]
    plan = MetaSchedule(draw, every=1, reuse=3, features_ok=True)
    used = []
    for _ in range(7):
        plan.forward(model, tokens(2, 5, 99))
        used.append(plan.meta_batch(model))
        plan.advance()
    assert len(drawn) == math.ceil(7 / 3)
    assert used[0] is used[1] is used[2] and used[3] is not used[2]
    torch.testing.assert_close(used[3]["features"], model.encode(drawn[1]))
    assert used[3]["labels"] is drawn[1]["labels"]


def test_fuse_with_reuse_fuses_only_when_a_new_meta_batch_is_due():
    torch.manual_seed(0)
    model = HamrModel(ToyEncoder(), "cls", 3, head_hidden=4, dropout=0.0)
    draws, calls = [], []
    real_encode = model.encode
    model.encode = lambda b: calls.append(b["input_ids"].shape[0]) or real_encode(b)
    plan = MetaSchedule(lambda: draws.append(1) or tokens(4, 5, len(draws)), every=2, reuse=2,
                        fuse=True, features_ok=True)
    for _ in range(8):                      # meta updates at steps 0, 2, 4, 6; new batch at 0, 4
        plan.forward(model, tokens(2, 5, 7))
        if plan.due:
            plan.meta_batch(model)
        plan.advance()
    assert len(draws) == 2
    assert calls == [6, 2, 2, 2, 6, 2, 2, 2]          # 2 training + 4 meta samples when fused


def test_reuse_and_fuse_are_ignored_where_the_encoder_output_depends_on_the_virtual_step():
    plan = MetaSchedule(lambda: None, reuse=4, fuse=True, features_ok=False)
    assert plan.reuse == 1 and not plan.fuse


def test_meta_every_k_runs_the_meta_update_every_k_steps(tmp_path, monkeypatch):
    """In a real run: meta_step on steps 0, k, 2k, ...; the current f_theta on the others."""
    from hamr_dist.train import loop
    calls = {"meta": 0, "current": 0}
    real_meta, real_current = loop.meta_step, loop.current_weights

    def meta(*a, **kw):
        calls["meta"] += 1
        return real_meta(*a, **kw)

    def current(*a, **kw):
        calls["current"] += 1
        return real_current(*a, **kw)
    monkeypatch.setattr(loop, "meta_step", meta)
    monkeypatch.setattr(loop, "current_weights", current)
    cfg = TrainConfig(method="hamr", freeze_encoder=True, num_train_epochs=1, progress=False,
                      max_train_samples=300, max_eval_samples=100, meta_every=3,
                      output_dir=str(tmp_path))
    m = loop.train(cfg).metrics
    assert m["skipped_steps"] == 0
    total = calls["meta"] + calls["current"]
    assert total >= 7
    assert calls["meta"] == math.ceil(total / 3) and calls["current"] == total - calls["meta"]


@pytest.mark.parametrize("bad", [dict(meta_every=0), dict(meta_reuse=0)])
def test_bad_schedule_options(bad):
    from hamr_dist.errors import ConfigError
    with pytest.raises(ConfigError, match="must be >= 1"):
        TrainConfig(**bad).validate()


def test_meta_every_default_follows_the_regime():
    """4 when the encoder trains (chosen on dev, benchmarks/results/meta_cost_cpu.md), 1 with a
    frozen encoder or the paper's preset, and what the user gives always wins."""
    assert TrainConfig().resolved("cls").meta_every == 4
    assert TrainConfig(freeze_encoder=True).resolved("cls").meta_every == 1
    assert TrainConfig(preset="paper").resolved("ner").meta_every == 1
    assert TrainConfig(meta_every=2, freeze_encoder=True).resolved("cls").meta_every == 2
