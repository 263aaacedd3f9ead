"""Mixed precision: the meta step under bf16 autocast against an independent float64 computation,
the fp16 gradient scaler's path through the meta step, the option checks, and short bf16 runs."""
import copy
from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from hamr_dist.config import TrainConfig
from hamr_dist.errors import ConfigError
from hamr_dist.meta.step import meta_step
from hamr_dist.meta.weight_net import WeightNet, sample_weights, zscore
from hamr_dist.model import HamrModel, scope_parameter_names
from hamr_dist.train.precision import Precision

# bf16 keeps 8 significant bits (unit roundoff 2^-8 = 0.39 %); the meta-gradient of theta goes
# through two forwards and a second-order backward in it. Stated tolerance: relative L2 error
# <= 2 % and cosine >= 0.999 against the float64 reference (measured: 0.07-0.3 % on this model).
BF16_REL_TOL, BF16_MIN_COS = 0.02, 0.999


class ToyEncoder(nn.Module):
    """Embedding + three numbered tanh layers (matmuls, so autocast has work to do)."""

    def __init__(self, vocab=50, dim=32):
        super().__init__()
        self.config = SimpleNamespace(hidden_size=dim)
        self.emb = nn.Embedding(vocab, dim)
        self.layer = nn.ModuleList(nn.Linear(dim, dim) for _ in range(3))

    def forward(self, input_ids, attention_mask):
        h = self.emb(input_ids)
        for lin in self.layer:
            h = torch.tanh(lin(h))
        return SimpleNamespace(last_hidden_state=h)


def make():
    torch.manual_seed(0)
    model = HamrModel(ToyEncoder(), "cls", 4, head_hidden=16, dropout=0.0)
    g = torch.Generator().manual_seed(1)

    def batch(n):
        return {"input_ids": torch.randint(0, 50, (n, 8), generator=g),
                "attention_mask": torch.ones(n, 8, dtype=torch.long),
                "labels": torch.randint(0, 4, (n,), generator=g)}
    return model, batch(16), batch(12)


def ce(logits, y):
    return nn.functional.cross_entropy(logits, y)


def wnet_of(dtype=torch.float32):
    torch.manual_seed(3)
    return WeightNet(hidden=4).to(dtype)


def meta_gradient(model, batch, meta, names, autocast=None, scaler=None):
    """theta's gradient as meta_step computes it (captured where ranks would all-reduce)."""
    wnet, captured = wnet_of(), []
    opt = torch.optim.SGD(wnet.parameters(), lr=0.0)
    with autocast() if autocast else nullcontext():
        logits = model(batch)
    losses = nn.functional.cross_entropy(logits.float(), batch["labels"], reduction="none")
    meta_step(model, wnet, opt, losses, meta, ce, names, alpha=0.5, autocast=autocast,
              scaler=scaler, sync=lambda gs: captured.extend(g.detach().clone() for g in gs))
    return torch.cat([g.flatten() for g in captured])


def reference_gradient(model, batch, meta, names, alpha=0.5, eps=1e-6):
    """Central finite differences, in float64, of the bi-level objective written out by hand."""
    model = copy.deepcopy(model).double()
    wnet = wnet_of(torch.float64)

    def objective():
        params = dict(model.named_parameters())
        losses = nn.functional.cross_entropy(model(batch), batch["labels"], reduction="none")
        w = sample_weights(wnet, zscore(losses))
        grads = torch.autograd.grad((w * losses).mean(), [params[n] for n in names])
        saved = {n: p.detach().clone() for n, p in params.items()}
        with torch.no_grad():
            for n, g in zip(names, grads):
                params[n].sub_(alpha * g)
            out = ce(model(meta), meta["labels"]).item()
            for n, p in params.items():
                p.copy_(saved[n])
        return out

    numeric = []
    for p in wnet.parameters():
        flat = p.data.view(-1)
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + eps
            up = objective()
            flat[i] = old - eps
            down = objective()
            flat[i] = old
            numeric.append((up - down) / (2 * eps))
    return torch.tensor(numeric, dtype=torch.float64)


@pytest.mark.parametrize("scope", ["head", 1, "all"])
def test_bf16_meta_gradient_matches_float64_reference(scope):
    model, batch, meta = make()
    names = scope_parameter_names(model, scope)
    ref = reference_gradient(model, batch, meta, names)
    bf16 = meta_gradient(model, batch, meta, names,
                         autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16)).double()
    fp32 = meta_gradient(model, batch, meta, names).double()
    rel = lambda g: float((g - ref).norm() / ref.norm())
    assert ref.norm() > 1e-6
    assert rel(bf16) <= BF16_REL_TOL, rel(bf16)
    assert float(nn.functional.cosine_similarity(bf16, ref, dim=0)) >= BF16_MIN_COS
    assert rel(fp32) < 1e-4
    # autocast really ran: bf16 rounding shows, well above fp32's
    assert rel(bf16) > 10 * rel(fp32)


def test_scaler_gives_the_unscaled_update_and_skips_on_overflow():
    """fp16's path on the CPU, in fp32 (GradScaler is dtype-agnostic): a power-of-two scale
    leaves theta's update unchanged; an overflowing scale skips it and halves the scale."""
    model, batch, meta = make()
    names = scope_parameter_names(model, "head")

    def update(scaler, blow_up=1.0):
        wnet = wnet_of()
        opt = torch.optim.SGD(wnet.parameters(), lr=0.1)
        losses = blow_up * nn.functional.cross_entropy(model(batch), batch["labels"],
                                                       reduction="none")
        before = [p.detach().clone() for p in wnet.parameters()]
        meta_step(model, wnet, opt, losses, meta, ce, names, alpha=0.5, scaler=scaler)
        return [b - p.detach() for b, p in zip(before, wnet.parameters())]

    plain = update(None)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    scaled = update(scaler)
    scaler.update()
    for a, b in zip(plain, scaled):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9)
    assert any(a.abs().max() > 0 for a in plain)

    huge = torch.amp.GradScaler("cpu", init_scale=2.0 ** 64)
    skipped = update(huge, blow_up=1e30)            # 1e30 * 2^64 overflows fp32
    huge.update()
    assert all(torch.equal(d, torch.zeros_like(d)) for d in skipped)
    assert huge.get_scale() == 2.0 ** 63


def test_precision_options():
    cfg = TrainConfig(bf16=True)
    amp = Precision.for_run(cfg, "cpu")
    assert amp.name == "bf16" and amp.scaler is None
    with amp.autocast():
        assert nn.Linear(3, 3)(torch.ones(2, 3)).dtype == torch.bfloat16
    assert Precision.for_run(TrainConfig(), "cpu").name == "fp32"
    with pytest.raises(ConfigError, match="--fp16 needs a CUDA GPU"):
        Precision.for_run(TrainConfig(fp16=True), "cpu")
    with pytest.raises(ConfigError, match="--fp16"):
        TrainConfig(fp16=True, bf16=True).validate()
    with pytest.raises(ConfigError, match="--use-gpu"):
        TrainConfig(fp16=True, num_workers=2).validate()


def test_bf16_run_trains_with_fp32_state(tmp_path, monkeypatch):
    """A short frozen-encoder run in bf16: autocast reaches the head, the master weights and the
    weights that go to the hardness store stay fp32, nothing is skipped, and the run learns."""
    from hamr_dist.train import loop
    from hamr_dist.train.evaluate import evaluate
    from hamr_dist.train.setup import build
    cfg = TrainConfig(method="hamr", freeze_encoder=True, num_train_epochs=2, progress=False,
                      max_train_samples=400, max_eval_samples=150, seed=2, bf16=True,
                      output_dir=str(tmp_path))
    s = build(cfg)
    before = evaluate(s.model, s.dev.batches, s.dev.records, s.dev.encoded.ds, s.data)["macro_f1"]
    seen, w_dtypes, real = set(), set(), loop.meta_step

    def spy(*a, **kw):
        r = real(*a, **kw)
        w_dtypes.add(r.w_post.dtype)
        return r
    monkeypatch.setattr(loop, "meta_step", spy)
    s.model.head.net[1].register_forward_hook(lambda m, i, o: seen.add(o.dtype))
    m = loop.train(cfg, setup=s).metrics
    assert torch.bfloat16 in seen and w_dtypes == {torch.float32}
    assert all(p.dtype == torch.float32 for p in s.model.parameters())
    assert m["skipped_steps"] == 0
    assert m["dev"]["macro_f1"] > before + 0.05, (before, m["dev"]["macro_f1"])


@pytest.mark.slow
def test_bf16_finetuning_run(tmp_path):
    """Full fine-tuning in bf16 at scope head and all (second-order path): finite, trains."""
    from hamr_dist.train.loop import train
    for scope in ("head", "all"):
        cfg = TrainConfig(method="hamr", meta_scope=scope, num_train_epochs=2, progress=False,
                          max_train_samples=64, max_eval_samples=32,
                          per_device_train_batch_size=16, max_seq_length=32, learning_rate=1e-4,
                          bf16=True, output_dir=str(tmp_path / scope))
        m = train(cfg).metrics
        assert m["skipped_steps"] == 0
        assert m["history"][-1]["loss"] < m["history"][0]["loss"]
