"""The bi-level HAMR step (spec section 1, steps 1-6) for any module ``model(batch) -> logits``.

The virtual update phi' = phi - alpha * grad(mean(w_pre * l)) is taken only over the parameters
of the meta scope, functionally (``torch.func.functional_call``), so nothing is written into the
model. Parameters outside the scope enter the meta forward detached: no graph is built through
them, which is what makes scope 'head' cost about one extra head forward.

DDP has no double backward, so the step never relies on it: ``sync`` (identity in one process)
is where a distributed runner all-reduces the weight network's gradients by hand, keeping every
replica of f_theta identical.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.func import functional_call

from .weight_net import WeightNet, normalise, sample_weights, zscore

Sync = Callable[[list[torch.Tensor]], None]


@dataclass
class MetaResult:
    w_post: torch.Tensor      # [B], detached
    meta_loss: float
    w_pre: torch.Tensor       # [B], detached


def weight_input(losses: torch.Tensor, kind: str) -> torch.Tensor:
    """HAMR feeds the batch z-score of the losses; Meta-Weight-Net (Shu et al.) the raw loss."""
    return zscore(losses) if kind == "hamr" else losses.detach()


def meta_weights(wnet: WeightNet, x: torch.Tensor, kind: str, w_min: float, w_max: float):
    if kind == "hamr":
        return sample_weights(wnet, x, w_min, w_max)
    s = torch.sigmoid(wnet(x))            # MWN: weights normalised to mean 1, no clipping
    return s / s.mean().clamp_min(1e-12)


def meta_step(model, wnet: WeightNet, wnet_opt: torch.optim.Optimizer, losses: torch.Tensor,
              meta_batch: dict, meta_loss_fn, scope_names: list[str], *, alpha: float,
              kind: str = "hamr", w_min: float = 0.1, w_max: float = 8.0,
              sync: Sync | None = None, signal: torch.Tensor | None = None,
              mark: Callable[[str], None] | None = None) -> MetaResult:
    """Steps 2-6. ``losses`` are the per-sample losses of the batch, still attached to the graph
    of ``model``; the graph stays usable for the real update afterwards. ``signal`` (default:
    ``losses``) is what the weight network sees, e.g. NER's max token loss when the weighted
    training loss is the token mean. ``mark(phase)``, when given, is called at the end of each
    phase (benchmarks time the parts of the step with it)."""
    mark = mark or (lambda phase: None)
    x = weight_input(losses if signal is None else signal, kind)
    w_pre = meta_weights(wnet, x, kind, w_min, w_max)
    inner = (w_pre * losses).mean()

    params = dict(model.named_parameters())
    scoped = [params[n] for n in scope_names]
    grads = torch.autograd.grad(inner, scoped, create_graph=True, allow_unused=True)
    virtual = {n: p.detach() for n, p in params.items()}
    for n, p, g in zip(scope_names, scoped, grads):
        virtual[n] = p - alpha * g if g is not None else p
    mark("virtual_step")
    meta_logits = functional_call(model, virtual, (meta_batch,))
    meta_loss = meta_loss_fn(meta_logits, meta_batch["labels"])
    mark("meta_loss")

    theta = list(wnet.parameters())
    # The forward graph of `losses` is not on the path to theta, so it survives for step 7.
    theta_grads = torch.autograd.grad(meta_loss, theta)
    theta_grads = [g.detach().clone() for g in theta_grads]
    if not all(torch.isfinite(g).all() for g in theta_grads):
        theta_grads = [torch.zeros_like(g) for g in theta_grads]   # keep replicas in lockstep
    if sync is not None:
        sync(theta_grads)
    for p, g in zip(theta, theta_grads):
        p.grad = g
    wnet_opt.step()
    wnet_opt.zero_grad(set_to_none=True)

    with torch.no_grad():
        w_post = meta_weights(wnet, x, kind, w_min, w_max)
    mark("weight_net_update")
    return MetaResult(w_post=w_post, meta_loss=float(meta_loss.detach()), w_pre=w_pre.detach())


def loss_ratio_weights(losses: torch.Tensor, w_min: float, w_max: float) -> torch.Tensor:
    """Hardness signal of hamr-no-meta: the loss relative to the batch mean, clipped like w."""
    return normalise(losses.detach().clamp_min(1e-12), w_min, w_max)
