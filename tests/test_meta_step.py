"""The meta step's weight-network gradient against an independent finite-difference computation,
for every meta scope, on a tiny model in float64."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from hamr_dist.meta.step import meta_step
from hamr_dist.meta.weight_net import WeightNet, sample_weights, zscore
from hamr_dist.model import HamrModel, scope_parameter_names



@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)     # finite differences need the precision
    yield
    torch.set_default_dtype(old)


class ToyEncoder(nn.Module):
    """Three numbered layers, like a transformer's encoder.layer.N."""

    def __init__(self, vocab=11, dim=5):
        super().__init__()
        self.config = SimpleNamespace(hidden_size=dim)
        self.emb = nn.Embedding(vocab, dim)
        self.layer = nn.ModuleList(nn.Linear(dim, dim) for _ in range(3))

    def forward(self, input_ids, attention_mask):
        h = self.emb(input_ids)
        for lin in self.layer:
            h = torch.tanh(lin(h))
        return SimpleNamespace(last_hidden_state=h)


def make(seed=0):
    torch.manual_seed(seed)
    model = HamrModel(ToyEncoder(), "cls", 3, head_hidden=4, dropout=0.0)
    batch = {"input_ids": torch.randint(0, 11, (6, 4)), "attention_mask": torch.ones(6, 4, dtype=torch.long),
             "labels": torch.tensor([0, 1, 2, 0, 1, 1])}
    meta = {"input_ids": torch.randint(0, 11, (5, 4)), "attention_mask": torch.ones(5, 4, dtype=torch.long),
            "labels": torch.tensor([2, 1, 0, 0, 2])}
    return model, batch, meta


def ce(logits, y):
    return nn.functional.cross_entropy(logits, y)


def meta_loss_of_theta(model, wnet, batch, meta, names, alpha):
    """The bi-level objective written out by hand: explicit parameter dict, explicit update."""
    params = {n: p for n, p in model.named_parameters()}
    losses = nn.functional.cross_entropy(model(batch), batch["labels"], reduction="none")
    w = sample_weights(wnet, zscore(losses))
    grads = torch.autograd.grad((w * losses).mean(), [params[n] for n in names])
    new = {n: p.detach().clone() for n, p in params.items()}
    for n, g in zip(names, grads):
        new[n] = new[n] - alpha * g
    saved = {n: p.detach().clone() for n, p in params.items()}
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(new[n])
        out = ce(model(meta), meta["labels"]).item()
        for n, p in model.named_parameters():
            p.copy_(saved[n])
    return out


@pytest.mark.parametrize("scope", ["all", "head", 1, 2])
def test_weight_net_gradient_matches_finite_differences(scope):
    model, batch, meta = make()
    names = scope_parameter_names(model, scope)
    alpha = 0.5
    torch.manual_seed(1)
    wnet = WeightNet(hidden=3)
    captured = []
    opt = torch.optim.SGD(wnet.parameters(), lr=0.0)      # lr 0: theta unchanged for the check
    losses = nn.functional.cross_entropy(model(batch), batch["labels"], reduction="none")
    meta_step(model, wnet, opt, losses, meta, ce, names, alpha=alpha,
              sync=lambda gs: captured.extend(g.clone() for g in gs))
    analytic = torch.cat([g.flatten() for g in captured])

    eps, numeric = 1e-6, []
    for p in wnet.parameters():
        flat = p.data.view(-1)
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + eps
            up = meta_loss_of_theta(model, wnet, batch, meta, names, alpha)
            flat[i] = old - eps
            down = meta_loss_of_theta(model, wnet, batch, meta, names, alpha)
            flat[i] = old
            numeric.append((up - down) / (2 * eps))
    numeric = torch.tensor(numeric)
    assert analytic.abs().max() > 1e-8, "meta gradient should not vanish on this problem"
    torch.testing.assert_close(analytic, numeric, rtol=1e-4, atol=1e-8)


def test_scopes_select_expected_parameters():
    model, _, _ = make()
    head = scope_parameter_names(model, "head")
    top1 = scope_parameter_names(model, 1)
    assert head and all(n.startswith("head.") for n in head)
    assert set(top1) - set(head) == {"encoder.layer.2.weight", "encoder.layer.2.bias"}
    assert len(scope_parameter_names(model, "all")) == len(list(model.parameters()))


def test_post_weights_use_updated_theta_and_graph_survives():
    model, batch, meta = make()
    wnet = WeightNet()
    opt = torch.optim.Adam(wnet.parameters(), lr=0.1)
    losses = nn.functional.cross_entropy(model(batch), batch["labels"], reduction="none")
    r = meta_step(model, wnet, opt, losses, meta, ce, scope_parameter_names(model, "all"), alpha=0.1)
    assert not torch.allclose(r.w_pre, r.w_post)
    with torch.no_grad():
        expected = sample_weights(wnet, zscore(losses))
    torch.testing.assert_close(r.w_post, expected)
    (r.w_post * losses).mean().backward()          # step 7 reuses the forward graph
    assert model.encoder.layer[0].weight.grad is not None
    assert all(p.grad is None for p in wnet.parameters())
