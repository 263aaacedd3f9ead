"""Per-epoch evidence that HAMR acts (issue 9): the draw, the hardness and the weights.

Rank 0 computes these after each epoch; what needs the whole h comes from the hardness store
(the actor under Ray), the rest from the epoch's draw, the weights the rank saw, and the loss
of a fixed probe subset under the current model.
"""
from __future__ import annotations

import numpy as np
import torch

from ..losses import per_sample, token_ce
from ..sampling.diagnostics import draw_stats, probe_indices, spearman, weight_stats
from ..sampling.groups import class_prior, sample_groups
from .evaluate import eval_logits
from .setup import train_groups


def hardness_options(s) -> dict:
    """InMemoryHardness options of a run (the actor gets the same at ``begin``); computed once
    per Setup (a Ray rank 0 needs them for the actor and for the prior's log line)."""
    if s.hardness_opts is None:
        c = s.cfg
        opts = {"rule": c.hardness_rule or "ema", "epoch_gamma": c.hardness_epoch_gamma}
        if draws_with_prior(s):
            prior = class_prior(train_groups(s), c.class_prior_power, c.class_prior_beta,
                                reference=reference_counts(s))
            if not s.method.class_prior:     # hamr-la: the draw's share of the prior
                prior = prior ** c.class_prior_draw
                prior /= prior.mean()
            opts["prior"] = prior.astype(np.float32)
        s.hardness_opts = opts
    return s.hardness_opts


def draws_with_prior(s) -> bool:
    """Whether the run's draw carries a class prior: hamr-cb's, or the share of hamr-la's that
    ``--class-prior-draw`` gives the draw."""
    # the resolved config allows --class-prior-draw > 0 only where the split exists
    return s.method.class_prior or s.cfg.class_prior_draw > 0


def prior_summary(s, prior: np.ndarray) -> str:
    """One line for the log: the expected share of the draw before hardness of the rarest and
    the commonest class (NER: of sentences containing the entity type, as the per-epoch
    ``draw_share`` counts them) against its share of the training set."""
    g = train_groups(s)
    train = g.member.mean(0)
    # a masked sum per class: no [N, G] float copy of the membership
    draw = np.array([prior.sum(where=g.member[:, j]) for j in range(len(g.names))]) / prior.sum()
    held = np.flatnonzero(train > 0)
    lo, hi = held[np.argmin(train[held])], held[np.argmax(train[held])]
    c = s.cfg
    return (f"class prior (--class-prior-reference {c.class_prior_reference}, "
            f"--class-prior-power {c.class_prior_power:g}): before hardness {g.names[lo]} gets "
            f"{draw[lo]:.3f} of the draw ({train[lo]:.3f} of the training set), {g.names[hi]} "
            f"{draw[hi]:.3f} ({train[hi]:.3f})")


def reference_counts(s) -> np.ndarray | None:
    """``--class-prior-reference dev``: how many dev samples belong to each training group
    (NER: dev sentences containing each entity type), in the training groups' order."""
    if s.cfg.class_prior_reference != "dev":
        return None
    names = train_groups(s).names
    dev = sample_groups(s.dev.records, s.data.task, s.data.label_names)
    counts = dict(zip(dev.names, dev.member.sum(0)))
    return np.asarray([counts.get(n, 0) for n in names], dtype=np.float64)


def probe_losses(model, batches, idx: np.ndarray, batch_size: int) -> np.ndarray:
    """HAMR's per-sample loss l_i (CLS: CE; NER: the sentence's max token CE), eval mode."""
    out = [per_sample(token_ce(logits, b["labels"]), b["labels"], "max").cpu().numpy()
           for b, logits in eval_logits(model, batches, idx, batch_size)]
    return np.concatenate(out) if out else np.zeros(0)


class EpochDiagnostics:
    def __init__(self, s, groups=None):
        self.s = s
        self.groups = groups if groups is not None else train_groups(s)
        self.probe = probe_indices(len(s.train.batches), s.cfg.probe_size, s.cfg.seed)

    def __call__(self, model, store, draw, h, weights, tau: float, lam: float,
                 prior: float = 1.0) -> tuple[dict, dict]:
        """(flat numbers, per-class draw/train shares) of one finished epoch; ``prior``: the
        share of the sampling prior in the epoch's draw."""
        c = self.s.cfg
        flat, shares = draw_stats(draw, len(self.s.train.batches), self.groups)
        if weights is not None and len(weights):
            flat.update(weight_stats(torch.cat(weights).numpy(), c.w_min, c.w_max))
        if h is not None:
            flat.update(store.stats(tau, lam, prior))
            if len(self.probe) > 1:
                l = probe_losses(model, self.s.train.batches, self.probe, c.per_device_eval_batch_size)
                flat["spearman_h_loss"] = spearman(h[self.probe], l)
        return flat, shares
