"""What a run says while it prepares: tokenizing, encoding features, embedding, building the
neighbour index. On a cold cache these take minutes before the first epoch starts.

:func:`phase` logs one line when a phase starts (``encoding features of 8544 texts ...``) and one
with its duration when it took longer than :data:`SLOW_S`; on a terminal it also shows a tqdm bar
(after :data:`BAR_DELAY_S`, so quick phases stay quiet). Log lines reach the user from Ray
workers too (``distributed/raylogs.py`` lets ``hamr_dist``'s lines through), bars do not. Inside
a Ray Train worker group only rank 0 speaks: every rank prepares the same things.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import time

log = logging.getLogger("hamr_dist")

SLOW_S = 5.0
BAR_DELAY_S = 2.0


def chief() -> bool:
    """False inside a Ray Train worker of rank > 0, else True."""
    if "ray" not in sys.modules:
        return True
    try:
        import ray
        if not ray.is_initialized():
            return True
        import ray.train
        return ray.train.get_context().get_world_rank() == 0
    except Exception:        # noqa: BLE001 -- not in a Train worker (a driver, an actor, Tune)
        return True


def on_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def phase(what: str, total: int | None = None, unit: str = "text", announce: bool = True):
    """``with phase("embedding 8544 texts", total=8544) as tick: ... tick(64) ...``"""
    speak = announce and chief()
    if speak:
        log.info("%s ...", what)
    bar = None
    if speak and total and on_terminal():
        from tqdm.auto import tqdm
        bar = tqdm(total=total, desc=what.split(" (")[0], unit=unit, leave=False,
                   delay=BAR_DELAY_S, dynamic_ncols=True)
    t0 = time.time()
    try:
        yield (bar.update if bar is not None else (lambda n=1: None))
    finally:
        if bar is not None:
            bar.close()
    dt = time.time() - t0
    if speak and dt >= SLOW_S:
        log.info("%s: done in %.0f s", what.split(" (")[0], dt)
