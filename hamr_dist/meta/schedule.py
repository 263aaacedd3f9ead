"""When the meta update runs and where its meta batch's encoder output comes from.

At scope ``head`` on a fine-tuned encoder the virtual step touches only the head, so the meta
batch's encoder output does not depend on it, and that encoder forward is the meta step's only
sizeable cost (one forward of the meta batch, about a quarter of a CE step). Four levers on it,
measured in ``benchmarks/step_time.py`` and ``benchmarks/meta_cost.py``:

- ``--meta-batch-size`` (drawn by the loop's ``MetaBatches``): a smaller meta batch;
- ``--meta-every k``: a meta update every k steps; the k-1 steps between are weighted by the
  current f_theta without an update (``current_weights``);
- ``--meta-reuse r``: the meta batch's encoder output is computed once and serves r meta
  updates (a new meta batch every r updates); the head's virtual step and theta's update still
  run at every meta update;
- ``--meta-fuse``: the meta batch goes through the encoder inside the training batch's forward
  (concatenated, padded to a common length, split after; its part detached), saving a separate
  call but making the training backward run over both batches.

Reuse and fusion need the encoder output to be independent of the virtual step: they act only on
a fine-tuned encoder at scope head, and are ignored (with a warning) elsewhere.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext

import torch

log = logging.getLogger("hamr_dist")


class MetaSchedule:
    """Per training step: ``forward`` (the training forward, maybe fused), ``due`` (does this
    step run a meta update?), ``meta_batch`` (the batch of that update), ``advance``."""

    def __init__(self, draw, *, every: int = 1, reuse: int = 1, fuse: bool = False,
                 features_ok: bool = False):
        """``draw()``: the next meta batch (tokens, on the device). ``features_ok``: the meta
        batch's encoder output may be computed apart from the meta step (fine-tuned encoder,
        scope head)."""
        if (reuse > 1 or fuse) and not features_ok:
            log.warning("--meta-reuse/--meta-fuse act only on a fine-tuned encoder at meta scope "
                        "head; ignored here")
            reuse, fuse = 1, False
        self.draw, self.every, self.reuse, self.fuse = draw, every, reuse, fuse
        # training steps taken, the phase of --meta-every (the loop sets it from its global step,
        # so a resumed run keeps the phase; the cache is not checkpointed: it is refilled)
        self.step = 0
        self.cache: dict | None = None     # {"features", "labels"} of the current meta batch
        self.uses = 0                      # meta updates that used the cache
        self.fused: dict | None = None     # meta features from this step's fused forward

    @property
    def due(self) -> bool:
        return self.step % self.every == 0

    def _fresh_needed(self) -> bool:
        return self.cache is None or self.uses >= self.reuse

    def forward(self, model, batch: dict, autocast=nullcontext):
        """Logits of the training batch; the meta batch rides along when fusion is on and this
        step's meta update needs a new one."""
        self.fused = None
        if self.fuse and self.due and self._fresh_needed():
            meta = self.draw()
            logits, feats = fused_forward(model, batch, meta, autocast)
            self.fused = {"features": feats, "labels": meta["labels"]}
            return logits
        with autocast():
            return model(batch)

    def meta_batch(self, model, autocast=nullcontext) -> dict:
        """The batch of this step's meta update: tokens (the meta step runs the encoder), or
        the meta batch's encoder features (fused, or cached for ``reuse`` updates)."""
        if self.reuse == 1 and not self.fuse:
            return self.draw()
        if self.fused is not None:
            self.cache, self.uses = self.fused, 0
        elif self._fresh_needed():
            meta = self.draw()
            with torch.no_grad(), autocast():
                feats = model.encode(meta)
            self.cache, self.uses = {"features": feats, "labels": meta["labels"]}, 0
        self.uses += 1
        return self.cache

    def advance(self) -> None:
        self.step += 1


def _pad_to(x: torch.Tensor, width: int, value: int) -> torch.Tensor:
    if x.shape[1] == width:
        return x
    return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)


def fused_forward(model, batch: dict, meta: dict, autocast=nullcontext):
    """One encoder forward of the training and meta batches together: (training logits,
    detached meta features). Right-padding with masked positions leaves every real token's
    output unchanged (absolute positions, masked keys), up to float rounding."""
    n, tb, tm = batch["input_ids"].shape[0], batch["input_ids"].shape[1], meta["input_ids"].shape[1]
    width = max(tb, tm)
    both = {"input_ids": torch.cat([_pad_to(batch["input_ids"], width, 0),
                                    _pad_to(meta["input_ids"], width, 0)]),
            "attention_mask": torch.cat([_pad_to(batch["attention_mask"], width, 0),
                                         _pad_to(meta["attention_mask"], width, 0)])}
    with autocast():
        enc = model.encode(both)
        train_feats, meta_feats = enc[:n], enc[n:].detach()
        if enc.dim() == 3:                 # NER: token features, back to each batch's length
            train_feats, meta_feats = train_feats[:, :tb], meta_feats[:, :tm]
        return model.head(train_feats), meta_feats
