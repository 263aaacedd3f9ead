"""The output directory: checked before any work, locked while a run writes it, and a rescue
folder when writing fails after training, so that a trained model is never lost."""
import errno
import json
import multiprocessing as mp
import os
import subprocess
import sys
import textwrap
import time

import pytest

from hamr_dist import outputs
from hamr_dist.cli import main
from hamr_dist.errors import ConfigError

QUICK = ["--freeze-encoder", "--num-train-epochs", "1", "--max-train-samples", "120",
         "--max-eval-samples", "40", "--no-progress", "--method", "ce", "--no-mlflow"]


def test_unwritable_output_dir_fails_before_any_work(tmp_path, capsys, monkeypatch):
    import hamr_dist.train.loop as loop
    monkeypatch.setattr(loop, "build", lambda *a, **k: pytest.fail("work began"))
    (tmp_path / "a_file").write_text("x")
    assert main(["train", "--output-dir", str(tmp_path / "a_file"), *QUICK]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a_file" in err[0] and "existing file" in err[0]
    # a folder that cannot be created (its parent is a file)
    assert main(["train", "--output-dir", str(tmp_path / "a_file" / "run"), *QUICK]) == 2
    assert "cannot be created" in capsys.readouterr().err


def test_read_only_output_dir_is_reported_in_one_line(tmp_path, monkeypatch):
    """As on a read-only file system: the probe write fails with EROFS (root ignores chmod)."""
    real = outputs.tempfile.mkstemp

    def erofs(*a, dir=None, **kw):
        if dir is not None and str(dir).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(*a, dir=dir, **kw)
    monkeypatch.setattr(outputs.tempfile, "mkstemp", erofs)
    with pytest.raises(ConfigError, match="is not writable .Read-only file system."):
        outputs.check_output_dir(tmp_path / "ro")


def test_outputs_are_rescued_when_writing_fails_after_training(tmp_path, monkeypatch, capsys,
                                                               caplog):
    import hamr_dist.train.loop as loop
    real, calls = loop.write_outputs, []

    def fail_first(out, *a, **kw):
        calls.append(out)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(out, *a, **kw)
    monkeypatch.setattr(loop, "write_outputs", fail_first)
    monkeypatch.setenv("HAMR_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main(["train", "--output-dir", str(out), *QUICK]) == 0
    rescued = calls[1]
    assert rescued != out and rescued.is_relative_to(tmp_path / "cache" / "rescued")
    assert (rescued / "metrics.json").is_file() and (rescued / "head.pt").is_file()
    assert str(rescued) in capsys.readouterr().out                  # "outputs in <rescued>"
    assert any(str(rescued) in r.getMessage() and "could not write" in r.getMessage()
               for r in caplog.records)
    assert main(["predict", str(rescued), "--text", "the striker scored"]) == 0


HOLD = textwrap.dedent("""
    import sys, time
    from hamr_dist.outputs import lock_output_dir
    lock_output_dir(sys.argv[1])
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
""")


def hold_lock(path, seconds):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_second_run_into_a_busy_output_dir_refuses_naming_the_pid(tmp_path, capsys):
    holder = hold_lock(tmp_path / "run", 60)
    try:
        assert main(["train", "--output-dir", str(tmp_path / "run"), *QUICK]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"pid {holder.pid}" in err[0] and "--overwrite-output-dir" in err[0]
    finally:
        holder.kill()
        holder.wait()


def test_overwrite_output_dir_waits_for_the_holder(tmp_path):
    holder = hold_lock(tmp_path / "run", 1.5)
    t0 = time.time()
    outputs.lock_output_dir(tmp_path / "run", wait=True)
    try:
        assert holder.wait(timeout=10) == 0 and time.time() - t0 > 1.0
        info = json.loads((tmp_path / "run" / outputs.LOCK_FILE).read_text())
        assert info["pid"] == os.getpid()
    finally:
        outputs.unlock(tmp_path / "run")


def _open_tracker(out, q):
    from hamr_dist import tracking
    from hamr_dist.config import TrainConfig
    t = tracking.start(TrainConfig(output_dir=str(out), mlflow=True, task="cls"))
    q.put(t.run_id)


def test_concurrent_runs_create_one_sqlite_store_safely(tmp_path):
    """Several processes opening a new sqlite store at once: each gets its run (without the
    store lock one lost the alembic migration race and ran untracked)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_open_tracker, args=(tmp_path / "run", q)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    ids = [q.get(timeout=5) for _ in procs]
    assert all(ids) and len(set(ids)) == 3, ids


def test_lock_lasts_as_long_as_the_run(tmp_path):
    with outputs.output_dir_lock(tmp_path / "run"):
        p = subprocess.run([sys.executable, "-c", HOLD, str(tmp_path / "run"), "0"],
                           capture_output=True, text=True)
        assert p.returncode != 0 and f"pid {os.getpid()}" in p.stderr
    holder = hold_lock(tmp_path / "run", 0)        # released: another process gets it
    assert holder.wait(timeout=30) == 0
