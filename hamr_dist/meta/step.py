"""The bi-level HAMR step (spec section 1, steps 1-6) for any module ``model(batch) -> logits``.

The virtual update phi' = phi - alpha * grad(mean(w_pre * l)) is taken only over the parameters
of the meta scope, functionally (``torch.func.functional_call``), so nothing is written into the
model. Parameters outside the scope enter the meta forward detached: no graph is built through
them, which is what makes scope 'head' cost about one extra head forward.

DDP has no double backward, so the step never relies on it: ``sync`` (identity in one process)
is where a distributed runner all-reduces the weight network's gradients by hand, keeping every
replica of f_theta identical.

Mixed precision (``autocast``, ``scaler``; see ``train/precision.py``): the virtual step's
gradient graph and the meta forward run under autocast, the weight network and the losses in
fp32. With an fp16 scaler the inner loss is scaled before the create-graph gradient (and the
virtual step divides by the scale again), the meta loss is scaled before theta's gradient, and
``scaler.step`` updates f_theta (skipped when its gradients overflowed: the all-reduce spreads a
non-finite value to every rank, so the replicas skip together); the caller runs
``scaler.update()`` once per training step.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
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
              mark: Callable[[str], None] | None = None,
              autocast: Callable[[], AbstractContextManager] | None = None,
              scaler=None) -> MetaResult:
    """Steps 2-6. ``losses`` are the per-sample losses of the batch (fp32), still attached to
    the graph of ``model``; the graph stays usable for the real update afterwards. ``signal``
    (default: ``losses``) is what the weight network sees, e.g. NER's max token loss when the
    weighted training loss is the token mean. ``meta_batch`` holds tokens, or (scope head)
    ``features``: the meta batch's encoder output computed elsewhere (fused with the training
    forward, or cached). ``mark(phase)``, when given, is called at the end of each phase
    (benchmarks time the parts of the step with it). ``autocast``: the context of the
    low-precision regions; ``scaler``: an fp16 ``GradScaler`` (module docstring)."""
    mark = mark or (lambda phase: None)
    autocast = autocast or nullcontext
    x = as_wnet_input(wnet, weight_input(losses if signal is None else signal, kind))
    with fp32(x):
        w_pre = meta_weights(wnet, x, kind, w_min, w_max)
    inner = (w_pre * losses).mean()

    params = dict(model.named_parameters())
    scoped = [params[n] for n in scope_names]
    step = alpha
    if scaler is not None:       # scale up so that fp16 gradients do not flush to zero
        inner = scaler.scale(inner)
        step = alpha / scaler.get_scale()
    grads = torch.autograd.grad(inner, scoped, create_graph=True, allow_unused=True)
    virtual = {n: p.detach() for n, p in params.items()}
    for n, p, g in zip(scope_names, scoped, grads):
        virtual[n] = p - step * g if g is not None else p
    mark("virtual_step")
    with autocast():
        meta_logits = functional_call(model, virtual, (meta_batch,))
    meta_loss = meta_loss_fn(meta_logits.float(), meta_batch["labels"])
    mark("meta_loss")

    theta = list(wnet.parameters())
    # The forward graph of `losses` is not on the path to theta, so it survives for step 7.
    theta_grads = torch.autograd.grad(meta_loss if scaler is None else scaler.scale(meta_loss),
                                      theta)
    theta_grads = [g.detach().clone() for g in theta_grads]
    if scaler is None and not all(torch.isfinite(g).all() for g in theta_grads):
        theta_grads = [torch.zeros_like(g) for g in theta_grads]   # keep replicas in lockstep
    if sync is not None:
        sync(theta_grads)
    for p, g in zip(theta, theta_grads):
        p.grad = g
    if scaler is not None:
        scaler.step(wnet_opt)            # unscales; skips the step if the gradients overflowed
    else:
        wnet_opt.step()
    wnet_opt.zero_grad(set_to_none=True)

    with torch.no_grad(), fp32(x):
        w_post = meta_weights(wnet, x, kind, w_min, w_max)
    mark("weight_net_update")
    return MetaResult(w_post=w_post, meta_loss=float(meta_loss.detach()), w_pre=w_pre.detach())


def as_wnet_input(wnet: WeightNet, x: torch.Tensor) -> torch.Tensor:
    """The weight network's input in its own dtype (fp32 in training), whatever the losses'."""
    return x.to(next(wnet.parameters()).dtype)


def fp32(x: torch.Tensor):
    """The weight network runs in fp32 even inside a caller's autocast region: it is tiny, and
    its outputs are normalised over the batch, where bf16's 3 significant digits would show."""
    return torch.autocast(x.device.type, enabled=False)


@torch.no_grad()
def current_weights(wnet: WeightNet, losses: torch.Tensor, *, kind: str = "hamr",
                    w_min: float = 0.1, w_max: float = 8.0,
                    signal: torch.Tensor | None = None) -> MetaResult:
    """The weights of a step without a meta update (``--meta-every k``, the k-1 steps between
    two meta steps): the current f_theta applied to the batch, theta unchanged."""
    x = as_wnet_input(wnet, weight_input(losses if signal is None else signal, kind))
    with fp32(x):
        w = meta_weights(wnet, x, kind, w_min, w_max)
    return MetaResult(w_post=w, meta_loss=float("nan"), w_pre=w)


def loss_ratio_weights(losses: torch.Tensor, w_min: float, w_max: float) -> torch.Tensor:
    """Hardness signal of hamr-no-meta: the loss relative to the batch mean, clipped like w."""
    return normalise(losses.detach().clamp_min(1e-12), w_min, w_max)
