"""Mixed precision (``--bf16`` / ``--fp16``, the Hugging Face names): autocast and, for fp16, a
gradient scaler.

What runs in low precision: the matmul-like ops inside autocast regions, i.e. the forward passes
of the model (training batch, meta batch, evaluation), the virtual step's first-order gradient
graph (its backward runs in the dtypes the forward recorded) and the meta forward. What stays
fp32: the parameters and optimiser states (master weights; the encoder is loaded ``.float()``),
the per-sample losses (taken from ``logits.float()``), the weight network (tiny, and its output
is normalised over the batch), and everything the sampler keeps (w_post, hardness, boost,
probabilities).

fp16 needs a scaler because its range is small (gradients under ~6e-8 flush to zero): the
losses are multiplied by a dynamic scale before every backward, the gradients divided by it
before use, and a step whose gradients overflowed is skipped and the scale halved. The same
scaler serves the weight network's update (``meta_step(scaler=...)``) and the model's, so one
``update()`` per training step adjusts it. bf16 has fp32's range: no scaler.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from ..errors import ConfigError


@dataclass
class Precision:
    dtype: torch.dtype | None = None          # None: fp32 throughout
    device_type: str = "cpu"
    scaler: "torch.amp.GradScaler | None" = None

    @classmethod
    def for_run(cls, cfg, device) -> "Precision":
        """From ``cfg.bf16`` / ``cfg.fp16`` on ``device``; a one-line error when the device
        cannot do what was asked."""
        device = torch.device(device)
        bf16, fp16 = bool(getattr(cfg, "bf16", False)), bool(getattr(cfg, "fp16", False))
        if bf16 and fp16:
            raise ConfigError("options --bf16 and --fp16 exclude each other; pass one of them")
        if fp16:
            if device.type != "cuda":
                raise ConfigError(f"option --fp16 needs a CUDA GPU (this run trains on "
                                  f"{device.type}); use --bf16 on a CPU, or drop --fp16")
            return cls(torch.float16, "cuda", torch.amp.GradScaler("cuda"))
        if bf16:
            if device.type == "cuda" and not torch.cuda.is_bf16_supported():
                raise ConfigError("option --bf16 needs a GPU with bfloat16 support (Ampere or "
                                  "newer); use --fp16 on this GPU")
            return cls(torch.bfloat16, device.type, None)
        return cls(None, device.type, None)

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self):
        """The context of a forward pass: autocast to ``dtype``, or nothing in fp32."""
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, opt) -> None:
        """Divide the gradients of ``opt``'s parameters by the scale (before clipping them)."""
        if self.scaler is not None:
            self.scaler.unscale_(opt)

    def step(self, opt) -> None:
        """The optimiser step; with a scaler it is skipped when the gradients overflowed."""
        if self.scaler is not None:
            self.scaler.step(opt)
        else:
            opt.step()

    def update(self) -> None:
        """Once per training step, after every scaled optimiser step (also a skipped one)."""
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> dict | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, d: dict | None) -> None:
        if self.scaler is not None and d:
            self.scaler.load_state_dict(d)
