"""What a user sees of a Ray run: our own lines, plain; Ray's internals only with HAMR_LOG=DEBUG.

Ray streams every worker's and actor's stdout/stderr to the driver and prints each line with a
``(ActorName pid=...)`` prefix in ANSI colours -- also into files. A two-worker run prints dozens
of lines of Ray's own bookkeeping (``PlacementGroupCleaner``, ``PreemptionWatcher``, tracebacks of
a worker that Ray Train then replaces), which bury the few lines that matter.

So our processes (Ray Train workers, the actors, Tune trials) log through a formatter that
starts every line with :data:`MARK`, and the driver replaces Ray's printer with one that prints
only marked lines, without the mark, the prefix or colours. ``HAMR_LOG=DEBUG`` keeps Ray's
printer (everything, as Ray prints it; colours only on a terminal). Ray keeps its complete logs
under its session directory (``/tmp/ray/session_latest/logs``) either way.
"""
from __future__ import annotations

import functools
import logging
import os
import sys

__all__ = ["MARK", "debug", "configure_process_logging", "install_driver_filter", "ray_init_kwargs"]

MARK = "hamr| "
RAY_PRINTER = "ray_print_logs"        # the name Ray registers its printer under (ray 2.60)
NOISY = ("transformers", "datasets", "faiss", "urllib3", "filelock")


def debug() -> bool:
    return os.environ.get("HAMR_LOG", "").strip().upper() == "DEBUG"


def configure_process_logging() -> None:
    """In a Ray worker, actor or Tune trial: ``hamr_dist`` logs marked lines to stderr (the
    driver's filter lets them through), at ``$HAMR_LOG`` (default INFO)."""
    ours = logging.getLogger("hamr_dist")
    if not any(getattr(h, "_hamr_marked", False) for h in ours.handlers):
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter(MARK + "%(levelname)s %(message)s"))
        h._hamr_marked = True
        ours.addHandler(h)
        ours.propagate = False          # not twice through a root handler Ray or a library set
    ours.setLevel(os.environ.get("HAMR_LOG", "INFO").upper())
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:   # Ray Train logs every report with its full metrics dict at INFO
        from ray.train.v2._internal.execution import context as _ctx
        logging.getLogger(_ctx.__name__).setLevel(logging.WARNING)
    except Exception:   # noqa: BLE001 -- another Ray version: only noisier
        pass


def ray_init_kwargs() -> dict:
    """Options for ``ray.init`` in the driver: Ray's own Python logging at ERROR unless DEBUG."""
    if not sys.stderr.isatty():     # Ray's printer reads this per line (HAMR_LOG=DEBUG)
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    return {} if debug() else {"logging_level": logging.ERROR}


def _level(message: str) -> int:
    name = message.split(" ", 1)[0]
    level = logging.getLevelName(name)
    return level if isinstance(level, int) else logging.INFO


def _print_marked(data: dict, *, min_level: int, sink=None) -> None:
    """Ray's log batch -> our marked lines at ``min_level`` or above, plain, on stderr."""
    sink = sink or sys.stderr
    for line in data.get("lines") or ():
        i = line.find(MARK)
        if i < 0:
            continue
        msg = line[i + len(MARK):]
        if _level(msg) >= min_level:
            print(msg, file=sink, flush=True)


def install_driver_filter(min_level: int = logging.INFO) -> bool:
    """In the driver, after ``ray.init``: print only our marked lines at ``min_level`` or above
    (a sweep shows its trials' warnings, not their epochs). No-op with HAMR_LOG=DEBUG or when Ray
    does not forward worker output (``log_to_driver=False``). Returns whether it filters."""
    ray_init_kwargs()
    if debug():
        return False
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:             # another Ray version: Ray's printer stays
        return False
    if not any(name == RAY_PRINTER for name, _ in dispatcher.handlers):
        return False
    dispatcher.remove_handler(RAY_PRINTER)
    dispatcher.add_handler(RAY_PRINTER, functools.partial(_print_marked, min_level=min_level))
    logging.getLogger("ray").setLevel(logging.ERROR)
    return True
