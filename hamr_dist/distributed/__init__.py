"""Ray-distributed HAMR: Ray Train workers running the one training loop, a hardness actor,
a neighbour-index actor and hand-rolled gradient all-reduce. See docs/distributed.md.

Importing this package does not import Ray; the modules do when used.
"""
from __future__ import annotations

__all__ = ["train_distributed"]


def train_distributed(cfg, **kw):
    """See :func:`hamr_dist.distributed.trainer.train_distributed`."""
    from .trainer import train_distributed as run
    return run(cfg, **kw)
