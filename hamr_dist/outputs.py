"""The output directory of a run: checked before any work, locked while a run writes it, and a
fallback place when writing fails at the end anyway (a trained model is never lost).

- :func:`check_output_dir` creates the folder and writes a probe file into it, so an existing
  file, a read-only file system or a missing permission is a one-line error before data are
  read or a model is loaded, not a traceback after training.
- :func:`lock_output_dir` takes an exclusive ``flock`` on ``<output_dir>/.hamr.lock`` for the
  rest of the process (the kernel drops it when the process ends, also on a crash, so a lock is
  never stale). A second run into the same folder refuses in one line naming the holder's pid,
  or with ``wait=True`` (``--overwrite-output-dir``) waits for it and then writes over it.
- :func:`rescue_dir` is where the outputs go when writing ``output_dir`` fails after training.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import tempfile
import time
from pathlib import Path

from .errors import ConfigError

log = logging.getLogger("hamr_dist")

LOCK_FILE = ".hamr.lock"
_held: dict[str, int] = {}          # resolved output dir -> fd of its lock (kept open = held)


def _reason(e: OSError) -> str:
    return e.strerror or os.strerror(e.errno or 0) or type(e).__name__


def check_output_dir(path, flag: str = "--output-dir") -> Path:
    """Create ``path`` and prove that a file can be written into it; the resolved path."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {p} is an existing file, not a folder; pass a folder path "
                          f"(it is created if missing)")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{flag} {p} cannot be created ({_reason(e)}); pass a folder you can "
                          f"write to") from None
    try:
        fd, probe = tempfile.mkstemp(dir=p, prefix=".hamr-write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"{flag} {p} is not writable ({_reason(e)}); pass a folder you can "
                          f"write to") from None
    return p.resolve()


def _holder(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.read_text())
        return f"pid {info['pid']} on {info['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def lock_output_dir(path, wait: bool = False, flag: str = "--output-dir") -> Path:
    """Hold an exclusive lock on ``path`` until this process ends (or :func:`unlock`).

    Taken again by the same process it is a no-op. Without ``wait`` a held lock is a one-line
    error naming the holder; with ``wait`` it blocks until the holder is done."""
    import fcntl
    p = check_output_dir(path, flag)
    key = str(p)
    if key in _held:
        return p
    lock_path = p / LOCK_FILE
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            who = _holder(lock_path)
            if not wait:
                raise ConfigError(f"{flag} {p} is in use by a running hamr run ({who}); wait "
                                  f"for it to end, pick another {flag}, or pass "
                                  f"--overwrite-output-dir to wait for it and then write over "
                                  f"its outputs") from None
            log.info("%s %s is in use by %s: waiting for it to end (--overwrite-output-dir)",
                     flag, p, who)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode())
    except BaseException:
        os.close(fd)
        raise
    _held[key] = fd
    return p


@contextlib.contextmanager
def output_dir_lock(path, wait: bool = False, flag: str = "--output-dir"):
    """:func:`lock_output_dir` for the duration of a ``with`` block (released after it, unless
    this process held the lock already)."""
    held_before = str(Path(path).expanduser().resolve()) in _held
    p = lock_output_dir(path, wait=wait, flag=flag)
    try:
        yield p
    finally:
        if not held_before:
            unlock(p)


def unlock(path) -> None:
    """Release a lock taken by :func:`lock_output_dir` (process exit releases it too)."""
    fd = _held.pop(str(Path(path).expanduser().resolve()), None)
    if fd is not None:
        os.close(fd)


def rescue_dir(output_dir) -> Path:
    """A new writable folder for outputs that could not be written to ``output_dir``: under
    ``$HAMR_CACHE`` (or ``~/.cache/hamr_dist``)/rescued, else the system's temp folder."""
    from .train.features import cache_root
    name = f"{Path(output_dir).name or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    for base in (cache_root(None) / "rescued", Path(tempfile.gettempdir()) / "hamr-rescued"):
        try:
            return check_output_dir(base / name)
        except ConfigError:
            continue
    return Path(tempfile.mkdtemp(prefix="hamr-rescued-"))
