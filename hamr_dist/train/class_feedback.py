"""Class weights that follow how hard each class is (``--class-weight-feedback q``, ICF methods).

ICF fixes every class's weight from its count. On a corpus with a diffuse majority class
(Irma's "other relevant information") the model then stops predicting that class at all: its
weight is the smallest while it is the one the model gets most wrong. Each epoch after the
first this scales the class weights (ICF's, or hamr-icf's tempered ones) by each class's mean
loss on the balanced meta set relative to the mean over classes, to the power q: a class the
model gets wrong gains weight, a class it has learned loses some. NER pools B-X and I-X into
type X and O into one class, as ICF does. The rescaled weights keep their mean over the
training positions, so the loss keeps its scale.
"""
from __future__ import annotations

import numpy as np
import torch

from ..losses import class_loss_sums, entity_group_names, entity_groups
from .evaluate import eval_logits


def label_groups(s) -> tuple[torch.Tensor, list[str]]:
    """The class of each label id (itself; NER: its entity type) and the classes' names."""
    names = s.data.label_names
    if s.data.task == "ner":
        return torch.as_tensor(entity_groups(names)), entity_group_names(names)
    return torch.arange(len(names)), list(names)


@torch.no_grad()
def meta_class_losses(model, s, batch_size: int, groups: torch.Tensor | None = None,
                      rank: int = 0, world_size: int = 1, all_reduce_mean=None) -> np.ndarray:
    """Mean unweighted CE per class over the meta set (NaN for a class it does not hold);
    ``groups``: :func:`label_groups`' ids, computed when not given. With several workers each
    evaluates every ``world_size``-th meta sample and ``all_reduce_mean`` pools the sums (their
    mean over ranks keeps the ratio of loss sum to count)."""
    if groups is None:
        groups = label_groups(s)[0]
    n = int(groups.max()) + 1
    sums, counts = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    mine = np.arange(rank, len(s.meta.batches), world_size)
    for b, logits in eval_logits(model, s.meta.batches, mine, batch_size):
        bs, bc = class_loss_sums(logits.cpu(), b["labels"].cpu(), groups, n)
        sums += bs.double()
        counts += bc.double()
    if all_reduce_mean is not None:
        all_reduce_mean([sums, counts])
    return torch.where(counts > 0, sums / counts.clamp_min(1), torch.nan).numpy()


def rescale(weights: torch.Tensor, groups: torch.Tensor, class_loss: np.ndarray,
            power: float, counts) -> torch.Tensor:
    """The class weights times r_g = (L_g / mean L)^power per class g present in training and
    in the meta set (r = 1 for the others), rescaled so that the mean weight over the training
    positions (``counts``: training count per label) is what it was."""
    weights = weights.detach().cpu().double()
    present = np.zeros(len(class_loss), dtype=bool)
    present[groups[weights > 0].unique().numpy()] = True
    known = present & np.isfinite(class_loss) & (class_loss > 0)
    r = np.ones(len(class_loss))
    if known.any():
        r[known] = (class_loss[known] / class_loss[known].mean()) ** power
    out = weights * torch.as_tensor(r)[groups]
    c = torch.as_tensor(counts, dtype=torch.float64)
    return (out * (c @ weights) / (c @ out)).float()


def feedback_weights(model, s, base: torch.Tensor, power: float, batch_size: int, rt):
    """(class weights for the next epoch, {class: its weight}) from the current model; the
    ranks of the Runtime ``rt`` share the meta set's evaluation (:func:`meta_class_losses`)."""
    groups, names = label_groups(s)
    losses = meta_class_losses(model, s, batch_size, groups, rt.rank, rt.world_size,
                               rt.all_reduce_mean)
    w = rescale(base, groups, losses, power, s.class_counts)
    # a class's weight: its labels share it (a tag absent from training has 0)
    per_class = torch.zeros(len(names)).scatter_reduce(0, groups, w, "amax")
    return w.to(base.device), {name: float(x) for name, x in zip(names, per_class)}
