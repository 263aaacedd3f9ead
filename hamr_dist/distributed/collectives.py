"""Hand-rolled collectives over the process group Ray Train sets up (gloo on CPU, NCCL on GPU).

The HAMR step differentiates through a virtual update (second order), which DDP cannot do, so
the loop averages gradients itself through ``Runtime.all_reduce_mean``. :func:`all_reduce_mean`
is that function: it packs the tensors into one flat buffer per dtype, runs a single
``all_reduce`` (one round trip instead of one per parameter) and copies the mean back in place.

Every helper is the identity outside an initialised process group (world size 1), so the same
code path runs in one process.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

__all__ = ["is_distributed", "rank", "world_size", "all_reduce_mean", "all_gather_object",
           "broadcast_object", "barrier"]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _comm_device(t: torch.Tensor) -> torch.device:
    """Where the buffer has to live for the backend: NCCL only reduces CUDA tensors."""
    if dist.get_backend() == "nccl" and t.device.type != "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return t.device


def all_reduce_mean(tensors: list[torch.Tensor | None]) -> None:
    """Replace every tensor by its mean over all ranks, in place. ``None`` entries are skipped.

    Every rank must pass tensors of the same shapes and dtypes in the same order (the loop
    does: identical models, identical parameter order). Tensors are grouped by dtype and
    device; each group travels as one contiguous buffer.
    """
    if not is_distributed():
        return
    ts = [t for t in tensors if t is not None]
    if not ts:
        return
    n = dist.get_world_size()
    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in ts:
        groups.setdefault((t.dtype, t.device), []).append(t)
    for group in groups.values():
        flat = torch.cat([t.detach().reshape(-1) for t in group])
        dev = _comm_device(flat)
        buf = flat.to(dev) if dev != flat.device else flat
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        buf.div_(n)
        if buf is not flat:
            flat = buf.to(flat.device)
        offset = 0
        with torch.no_grad():
            for t in group:
                k = t.numel()
                t.copy_(flat[offset:offset + k].view_as(t))
                offset += k


def all_gather_object(obj: Any) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (picklable objects); ``[obj]`` in one process."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (a barrier as well)."""
    if not is_distributed():
        return obj
    box = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if is_distributed():
        dist.barrier()
