"""Ray-distributed HAMR on a local 2-CPU Ray: collectives, the hardness and neighbour actors,
1-worker == in-process, 2-worker consistency, resume, and recovery from killed processes.

``-m slow`` adds the killed-hardness-actor recovery (and test_distributed_cluster.py the
2-node cluster). Every Ray test shares the session's local Ray (``ray_local`` in conftest.py). The runs use the
synthetic corpus with a frozen encoder, so training itself takes a second; what costs time is
Ray Train starting worker processes (~15 s per run on this machine).

Tolerance: a resumed or recovered run replays exactly the computation of an uninterrupted
run (same draws, same per-rank RNG streams, deterministic two-rank gloo sums), so the
metrics are compared with ``FLOAT_TOL = 1e-6`` (they come out bit-identical here) and the
hardness vectors exactly.
"""
from __future__ import annotations

import logging
import pickle
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hamr_dist.config import TrainConfig
from hamr_dist.sampling.hardness import HardnessStore, InMemoryHardness, shard_for_rank

FLOAT_TOL = 1e-6


def small_cfg(tmp: Path, **kw) -> TrainConfig:
    base = dict(method="hamr", freeze_encoder=True, max_train_samples=300, max_eval_samples=100,
                num_train_epochs=3, per_device_train_batch_size=16, seed=7, progress=False,
                output_dir=str(tmp / "out"), storage_path=str(tmp / "ray"), run_name="run",
                mlflow=False)
    base.update(kw)
    return TrainConfig(**base)


def final_state(metrics: dict) -> dict:
    return torch.load(Path(metrics["ray"]["checkpoint"]) / "state.pt", weights_only=False)


def assert_same_run(a: dict, b: dict, tol: float = FLOAT_TOL) -> None:
    assert a["best_epoch"] == b["best_epoch"]
    for split in ("dev", "test"):
        assert abs(a[split]["macro_f1"] - b[split]["macro_f1"]) <= tol, split
        assert abs(a[split]["accuracy"] - b[split]["accuracy"]) <= tol, split
    assert len(a["history"]) == len(b["history"])
    for ha, hb in zip(a["history"], b["history"]):
        for key in ("loss", "dev_macro_f1", "weight_mean", "hardness_mean", "hardness_std"):
            assert abs(ha[key] - hb[key]) <= tol, (ha["epoch"], key, ha[key], hb[key])


# ---------------------------------------------------------------------------------------------
# collectives (two gloo processes, no Ray)
# ---------------------------------------------------------------------------------------------
def _reduce_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from hamr_dist.distributed import collectives as C
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    calls = []
    real = dist.all_reduce

    def counting(t, *a, **k):
        calls.append(t.numel())
        return real(t, *a, **k)

    dist.all_reduce = counting
    g = torch.Generator().manual_seed(rank)
    ts = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g),
          torch.randn(2, 2, generator=g, dtype=torch.float64), None]
    before = [t.clone() if t is not None else None for t in ts]
    C.all_reduce_mean(ts)
    gathered = C.all_gather_object([t for t in before if t is not None])
    dist.all_reduce = real
    torch.save({"after": ts, "all_before": gathered, "calls": calls,
                "bcast": C.broadcast_object(f"from {rank}")}, Path(out_dir) / f"{rank}.pt")
    dist.destroy_process_group()


def test_all_reduce_mean_is_one_flat_reduce_per_dtype(tmp_path):
    import torch.multiprocessing as mp
    init = tmp_path / "pg"
    mp.spawn(_reduce_worker, args=(2, str(init), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["calls"] == [17, 4]                  # float32 group (12 + 5), float64 group (4)
    for i in range(3):
        want = (r0["all_before"][0][i] + r0["all_before"][1][i]) / 2
        assert torch.equal(r0["after"][i], want) and torch.equal(r1["after"][i], want)
    assert r0["after"][3] is None
    assert r0["bcast"] == r1["bcast"] == "from 0"


def test_collectives_are_identity_in_one_process():
    from hamr_dist.distributed import collectives as C
    t = torch.ones(3)
    C.all_reduce_mean([t, None])
    assert torch.equal(t, torch.ones(3))
    assert C.all_gather_object(5) == [5] and C.broadcast_object("x") == "x"
    assert C.world_size() == 1 and C.rank() == 0


# ---------------------------------------------------------------------------------------------
# hardness actor
# ---------------------------------------------------------------------------------------------
def _stream(n=40, steps=6, world=2, bs=5, seed=0):
    """(step, rank, idx, w) as ranks produce them from one draw, plus the draw itself."""
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, n, size=steps * world * bs)    # repeats on purpose
    out = []
    for r in range(world):
        mine = shard_for_rank(draw, r, world, bs)
        for s in range(steps):
            out.append((s, r, mine[s * bs:(s + 1) * bs],
                        rng.uniform(0.1, 8, bs).astype(np.float32)))
    return draw, out


def test_actor_applies_in_draw_order_whatever_the_arrival_order(ray_local):
    from hamr_dist.distributed.actors import create_hardness_actor
    ray = ray_local
    n, world = 40, 2
    draw, stream = _stream(n=n, world=world)
    # single process, same sample order: the draw's positions in order
    ref = InMemoryHardness(n, gamma=0.9)
    by = {(s, r): (i, w) for s, r, i, w in stream}
    for s in range(6):
        for r in range(world):
            ref.update(*by[(s, r)])
    a = create_hardness_actor("test-order")
    try:
        gen = ray.get(a.begin.remote(n, 0.9, world))
        # rank 1 first, steps backwards: the actor must still apply (0,0),(0,1),(1,0),...
        for s, r, i, w in sorted(stream, key=lambda x: (-x[1], -x[0])):
            a.update.remote(gen, r, s, i, w)
        h = ray.get(a.hardness.remote(gen, 6))
        assert np.array_equal(h, ref.hardness())
        info = ray.get(a.info.remote())
        assert info["updates"] == 12 and info["pending_steps"] == 0
    finally:
        ray.kill(a)


def test_actor_read_waits_for_the_other_ranks_update(ray_local):
    from hamr_dist.distributed.actors import create_hardness_actor
    ray = ray_local
    a = create_hardness_actor("test-wait")
    try:
        gen = ray.get(a.begin.remote(10, 0.5, 2))
        a.update.remote(gen, 0, 0, np.array([1]), np.array([3.0], np.float32))
        pending = a.hardness.remote(gen, 1)
        ready, _ = ray.wait([pending], timeout=0.5)
        assert not ready                          # rank 1's part of step 0 is missing
        a.update.remote(gen, 1, 0, np.array([1]), np.array([5.0], np.float32))
        h = ray.get(pending, timeout=10)
        assert h[1] == pytest.approx(0.5 * (0.5 * 1 + 0.5 * 3) + 0.5 * 5)
    finally:
        ray.kill(a)


def test_client_is_a_store_and_stale_sessions_are_refused(ray_local):
    from hamr_dist.distributed.actors import (HardnessActorLost, HardnessClient,
                                              create_hardness_actor)
    ray = ray_local
    a = create_hardness_actor("test-client")
    try:
        gen = ray.get(a.begin.remote(20, 0.9, 1))
        c = HardnessClient(a, gen, 0)
        assert isinstance(c, HardnessStore)
        local = InMemoryHardness(20, gamma=0.9)
        t0 = time.perf_counter()
        for s in range(50):
            idx = np.arange(s % 20, s % 20 + 1)
            w = np.array([1.0 + s], np.float32)
            c.update(idx, w)
            local.update(idx, w)
        submit = time.perf_counter() - t0
        assert np.array_equal(c.hardness(), local.hardness())
        assert submit < 5.0                       # 50 submissions, no round trip each
        assert np.array_equal(c.draw(3, 1, 1.2, 0.7, 0.0), local.draw(3, 1, 1.2, 0.7, 0.0))
        b = np.linspace(0, 1, 20).astype(np.float32)
        c.set_boost(b)
        local.set_boost(b)
        assert np.allclose(c.probabilities(0.7, 0.7), local.probabilities(0.7, 0.7))
        sd = c.state_dict()
        assert np.array_equal(sd["h"], local.state_dict()["h"])
        # a newer session (a restarted worker group) makes this client's reads fail loudly
        ray.get(a.begin.remote(20, 0.9, 1, sd))
        c.update(np.array([0]), np.array([9.0], np.float32))      # dropped, not applied
        with pytest.raises(HardnessActorLost):
            c.hardness()
        assert ray.get(a.info.remote())["stale_dropped"] >= 1
    finally:
        ray.kill(a)


def test_batched_client_sends_k_steps_per_message_and_reads_see_every_update(ray_local):
    """K steps per message (the Ray runs' default, --hardness-batch-steps): two ranks, steps
    arriving in whole messages, a read taken mid-buffer: h equals the replay in draw order."""
    from hamr_dist.distributed.actors import HardnessClient, create_hardness_actor
    ray = ray_local
    n, world, steps, k = 40, 2, 7, 3
    draw, stream = _stream(n=n, steps=steps, world=world)
    by = {(s, r): (i, w) for s, r, i, w in stream}
    ref = InMemoryHardness(n, gamma=0.9)
    a = create_hardness_actor("test-batched")
    try:
        gen = ray.get(a.begin.remote(n, 0.9, world))
        clients = [HardnessClient(a, gen, r, batch_steps=k) for r in range(world)]
        for s in range(steps - 2):                  # rank 1 first: arrival order must not matter
            for r in reversed(range(world)):
                clients[r].update(*by[(s, r)])
        for s in range(steps - 2):
            for r in range(world):
                ref.update(*by[(s, r)])
        assert [c._sent for c in clients] == [3, 3]          # 5 steps: one message of 3 out
        # a read waits for the buffered steps of both ranks, which their flushes send (as a
        # rank's own read or the end of its training does)
        pending = a.hardness.remote(gen, steps - 2)
        clients[1].flush()
        clients[0].flush()
        assert np.array_equal(ray.get(pending, timeout=30), ref.hardness())
        for s in range(steps - 2, steps):
            for r in range(world):
                clients[r].update(*by[(s, r)])
                ref.update(*by[(s, r)])
        clients[1].flush()
        assert np.array_equal(clients[0].hardness(), ref.hardness())   # sends its buffer first
        info = ray.get(a.info.remote())
        assert info["updates"] == steps * world and info["pending_steps"] == 0
        assert [c._messages for c in clients] == [3, 3]      # 3 + 2 + 2 steps per rank
    finally:
        ray.kill(a)


def test_neighbour_actor_boost_matches_in_process(ray_local, tmp_path):
    from hamr_dist.distributed.actors import create_hardness_actor, create_neighbour_actor
    from hamr_dist.train.loop import local_boost
    from hamr_dist.train.setup import build
    ray = ray_local
    cfg = small_cfg(tmp_path)
    s = build(cfg)
    n = len(s.train.batches)
    h = np.random.default_rng(1).uniform(0.5, 2, n).astype(np.float32)
    want = local_boost(s)(h)
    a = create_hardness_actor("test-nb-h")
    nb = create_neighbour_actor("test-nb", cfg.to_dict())
    try:
        gen = ray.get(a.begin.remote(n, 0.99, 1, {"h": h, "b": np.zeros(n, np.float32)}))
        out = ray.get(nb.refresh.remote(a, gen, 0))
        b = ray.get(a.boost.remote(gen, 0))
        assert np.array_equal(b, want) and out["boosted"] == int((want > 0).sum())
    finally:
        ray.kill(a)
        ray.kill(nb)


# ---------------------------------------------------------------------------------------------
# whole runs
# ---------------------------------------------------------------------------------------------
# hamr-icf: the fine-tuning default; None: the frozen-encoder default (hamr-la)
@pytest.mark.parametrize("method", ["hamr", "hamr-icf", None])
def test_one_ray_worker_matches_in_process(ray_local, tmp_path, method):
    from hamr_dist.distributed.trainer import train_distributed
    from hamr_dist.train.loop import train
    # hamr-icf with its fine-tuning defaults (the encoder stays frozen here to keep the test
    # fast): each worker rescales the class weights from the meta set, and its draw follows the
    # loss with half the importance correction
    kw = {"method": method}
    if method == "hamr-icf":
        kw.update(class_weight_feedback=1.0, hardness_signal="loss", draw_correction=0.5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                     # as in the Ray worker
    try:
        local = train(small_cfg(tmp_path / "local", **kw)).metrics
    finally:
        torch.set_num_threads(threads)
    dist = train_distributed(small_cfg(tmp_path / "ray", num_workers=1, **kw)).metrics
    if method == "hamr-icf":
        assert "class_weight" in dist["history"][-1]
    assert local["method"] == dist["method"] == (method or "hamr-la")
    assert_same_run(local, dist)
    assert dist["ray"]["world_size"] == 1


@pytest.fixture(scope="module")
def two_workers(ray_local):
    """The uninterrupted 2-worker reference run (with consistency recording)."""
    from hamr_dist.distributed.trainer import train_distributed
    tmp = Path(tempfile.mkdtemp(prefix="hamr-2w-"))
    res = train_distributed(small_cfg(tmp, num_workers=2), check_consistency=True)
    return tmp, res.metrics


def test_two_workers_stay_identical_and_agree_on_draws(two_workers):
    tmp, m = two_workers
    epochs = m["ray"]["epochs"]
    assert len(epochs) == 3
    for e in epochs:
        assert len(set(e["draw_digests"])) == 1, e              # same draw on every rank
        assert len(set(e["param_digests"])) == 1, e             # same model after the epoch
        assert len(set(e["wnet_digests"])) == 1, e              # same weight network
    assert len({e["draw_digests"][0] for e in epochs}) == 3     # a new draw every epoch
    assert {w["rank"] for w in m["ray"]["workers"]} == {0, 1}
    out = tmp / "out"                                           # rank 0 exported the best model
    for f in ("metrics.json", "head.pt", "label_map.json", "config.yaml"):
        assert (out / f).is_file(), f


def test_two_workers_pool_the_class_weight_feedback(ray_local, tmp_path):
    """hamr-icf's feedback under 2 workers: each rank evaluates half of the meta set and the
    all-reduce pools the per-class losses, so every rank rescales its class weights alike
    (without the pooling each rank would see another half)."""
    from hamr_dist.distributed.trainer import train_distributed
    cfg = small_cfg(tmp_path, method="hamr-icf", class_weight_feedback=1.0, num_workers=2,
                    num_train_epochs=2)
    m = train_distributed(cfg, check_consistency=True).metrics
    last = m["ray"]["epochs"][-1]
    a, b = last["class_weights"]
    assert a and a == b                               # rescaled (epoch 2) and equal on both
    assert len(set(a.values())) > 1
    assert len(set(last["param_digests"])) == 1


def test_two_worker_hardness_equals_single_process_replay(two_workers):
    """h in the actor == one InMemoryHardness fed the same (indices, w_post) in draw order."""
    tmp, m = two_workers
    logs = {}
    for p in sorted((tmp / "ray" / "run" / "update_logs").glob("rank*.pkl")):
        logs[int(p.name[4:p.name.index("-")])] = pickle.loads(p.read_bytes())
    assert set(logs) == {0, 1}
    n = len(final_state(m)["hardness"]["h"])
    ref = InMemoryHardness(n, gamma=0.99)
    entries = sorted((e, s, r, i, w) for r, log in logs.items() for e, s, i, w in log)
    for e, s, r, i, w in entries:
        ref.update(i, w)
    st = final_state(m)
    assert np.array_equal(st["hardness"]["h"], ref.hardness())
    assert st["epoch"] == 2 and len(st["meta_batches"]) == 2 and len(st["torch_rng"]) == 2


def test_rerun_with_same_name_resumes_from_checkpoint(two_workers, tmp_path):
    """Re-running under the same run name and storage path resumes after the last checkpoint,
    with that checkpoint's hardness: here the finished 3-epoch reference run, extended to 4
    epochs, trains only epoch 4, and epoch 4's draw is the one the checkpointed h gives."""
    import hashlib
    import shutil

    from hamr_dist.distributed.trainer import train_distributed
    from hamr_dist.train.loop import local_boost
    from hamr_dist.train.setup import build
    ref_tmp, ref = two_workers
    shutil.copytree(ref_tmp / "ray", tmp_path / "ray")
    cfg = small_cfg(tmp_path, num_workers=2, num_train_epochs=4)
    m = train_distributed(cfg).metrics
    assert m["ray"]["resumed_from_epoch"] == 3                      # epochs count from 1
    assert [e["epoch"] for e in m["ray"]["epochs"]] == [4]         # only epoch 4 ran
    assert len(m["history"]) == 4 and m["history"][:3] == ref["history"]
    # epoch 4's draw, from the checkpoint's h (and the boost recomputed from it)
    s = build(cfg)
    store = InMemoryHardness(len(s.train.batches), gamma=s.cfg.gamma)
    store.load_state_dict(final_state(ref)["hardness"])
    store.set_boost(local_boost(s)(store.hardness()))
    draw = store.draw(3, s.cfg.seed, s.cfg.oversample_ratio, s.cfg.tau, s.cfg.lam)
    digest = hashlib.sha256(np.ascontiguousarray(draw.astype(np.int64)).tobytes()).hexdigest()[:16]
    assert m["ray"]["epochs"][0]["draw_digests"] == [digest, digest]


def test_rerun_with_other_options_is_refused(tmp_path):
    from hamr_dist.distributed.trainer import _check_run_meta
    from hamr_dist.errors import ConfigError
    assert _check_run_meta(str(tmp_path), "x", small_cfg(tmp_path, num_workers=2)) is True
    assert _check_run_meta(str(tmp_path), "x", small_cfg(tmp_path, num_workers=2,
                                                         num_train_epochs=5)) is False  # resume
    with pytest.raises(ConfigError, match="seed"):
        _check_run_meta(str(tmp_path), "x", small_cfg(tmp_path, num_workers=2, seed=8))


def test_killed_worker_is_replaced_and_run_matches(two_workers, tmp_path):
    """SIGKILL of rank 1 in the middle of epoch 2: Ray Train restarts the group from the
    epoch-1 checkpoint (hardness included) and the run ends as the uninterrupted one."""
    from hamr_dist.distributed.trainer import train_distributed
    _, ref = two_workers
    fault = [{"action": "kill_worker", "rank": 1, "epoch": 1, "step": 5,
              "once": str(tmp_path / "killed")}]
    m = train_distributed(small_cfg(tmp_path, num_workers=2, max_failures=1),
                          faults=fault).metrics
    assert (tmp_path / "killed").is_file()                       # the fault did fire
    assert m["ray"]["resumed_from_epoch"] == 1
    assert m["ray"]["hardness_actor"]["sessions"] == 2           # begun again from the ckpt
    assert_same_run(ref, m)
    assert np.array_equal(final_state(m)["hardness"]["h"], final_state(ref)["hardness"]["h"])
    assert (tmp_path / "out" / "metrics.json").is_file()
    # rank 0 of the new group said so in one plain line (the driver shows it; here: Ray's logs)
    import ray
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    said = [p.name for p in logs.glob("worker-*.err") if "hamr| WARNING worker lost, resuming "
            "from the checkpoint of epoch 1" in p.read_text(errors="replace")]
    assert said, "no 'worker lost' line in the workers' logs"


def test_start_line_tells_a_restart_from_a_resume(caplog):
    from hamr_dist.distributed.trainer import _say_how_it_starts
    ckpt = {"epoch": 1}                                   # the loop counts from 0
    cases = [((ckpt, True, 1), "WARNING", "worker lost, resuming from the checkpoint of epoch 2"),
             ((ckpt, False, 2), "WARNING", "worker lost, resuming from the checkpoint of epoch 2"),
             ((None, True, 2), "WARNING", "worker lost before the first checkpoint"),
             ((ckpt, False, 1), "INFO", "resuming from the checkpoint of epoch 2")]
    for args, level, text in cases:
        caplog.clear()
        with caplog.at_level("INFO", logger="hamr_dist"):
            _say_how_it_starts(*args)
        assert [(r.levelname, r.getMessage()[:len(text)]) for r in caplog.records] == [(level, text)]
    caplog.clear()
    with caplog.at_level("INFO", logger="hamr_dist"):
        _say_how_it_starts(None, True, 1)                 # a new run's first attempt: silent
    assert not caplog.records


def test_driver_shows_only_our_lines_without_prefix_or_colour(capsys, monkeypatch):
    """Ray prints every worker line as '(ActorName pid=..)' in colours, its own bookkeeping
    included; the driver filter keeps our marked lines only, plain."""
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    from hamr_dist.distributed import raylogs
    monkeypatch.delenv("HAMR_LOG", raising=False)
    batch = {"pid": 7, "is_err": True, "lines": [
        "Failed to query Ray Train Controller actor state. State API may be unavailable.",
        "hamr| INFO epoch 1/3: loss 1.0000, dev macro-F1 0.5000",
        "Traceback (most recent call last):",
        "hamr| WARNING worker lost, resuming from the checkpoint of epoch 1",
        "hamr| DEBUG median step 10 ms"]}
    saved = list(dispatcher.handlers)
    rays = []
    try:
        dispatcher.add_handler(raylogs.RAY_PRINTER, rays.append)     # Ray's printer stand-in
        assert raylogs.install_driver_filter()
        dispatcher.emit(batch)
        assert rays == []                                           # replaced, not added to
        dispatcher.handlers = list(saved)
        dispatcher.add_handler(raylogs.RAY_PRINTER, rays.append)
        monkeypatch.setenv("HAMR_LOG", "DEBUG")                     # everything, as Ray prints
        assert not raylogs.install_driver_filter()
        dispatcher.emit(batch)
        assert rays == [batch]
    finally:
        dispatcher.handlers = saved
    assert capsys.readouterr().err.splitlines() == [
        "INFO epoch 1/3: loss 1.0000, dev macro-F1 0.5000",
        "WARNING worker lost, resuming from the checkpoint of epoch 1"]
    # a sweep shows its trials' warnings only
    raylogs._print_marked(batch, min_level=logging.WARNING)
    assert capsys.readouterr().err.splitlines() == [
        "WARNING worker lost, resuming from the checkpoint of epoch 1"]


def test_ray_prints_no_colour_codes_off_a_terminal(monkeypatch):
    """HAMR_LOG=DEBUG keeps Ray's printer; off a terminal (pytest captures stderr) it must
    print without ANSI colour codes."""
    import io

    from ray._private.worker import print_worker_logs

    from hamr_dist.distributed import raylogs
    monkeypatch.delenv("RAY_COLOR_PREFIX", raising=False)
    raylogs.ray_init_kwargs()
    buf = io.StringIO()
    print_worker_logs({"pid": 7, "ip": "h", "localhost": "h", "lines": ["a line"]}, buf)
    assert "\x1b[" not in buf.getvalue() and "a line" in buf.getvalue()


def test_ray_train_settings_leave_the_users_values_and_the_environment_alone(monkeypatch):
    import os

    from hamr_dist.distributed.trainer import _environ, ray_train_env
    poll, watch = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
    monkeypatch.delenv(poll, raising=False)
    monkeypatch.delenv(watch, raising=False)
    assert ray_train_env(local=True) == {poll: "0.5", watch: "0"}
    assert ray_train_env(local=False) == {poll: "0.5"}      # a cluster keeps its watcher
    monkeypatch.setenv(poll, "3")
    assert ray_train_env(local=True) == {watch: "0"}
    with _environ({watch: "0"}):
        assert os.environ[watch] == "0"
    assert watch not in os.environ and os.environ[poll] == "3"


def test_resume_command_is_the_same_command_with_the_run_name():
    from hamr_dist.distributed.trainer import resume_command
    assert resume_command(["train", "--num-workers", "2", "--data", "my data"], "r1") == \
        "hamr train --num-workers 2 --data 'my data' --run-name r1"
    assert resume_command(["train", "--run-name", "old", "--run_name=x", "--seed", "1"], "r2") == \
        "hamr train --seed 1 --run-name r2"


@pytest.mark.slow
def test_ctrl_c_on_a_ray_run_exits_130_with_the_resume_command_and_marks_mlflow_killed(tmp_path):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) once an epoch is done:
    exit 130, one 'hamr: interrupted' line with the resume command, the MLflow run KILLED;
    and what the user saw on the way has no Ray noise and no colour codes (~60 s here)."""
    import os
    import re
    import signal
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient
    out = tmp_path / "out"
    env = dict(os.environ, HAMR_MLFLOW="1", HAMR_LOG="INFO")
    env.pop("RAY_ADDRESS", None)
    p = subprocess.Popen(
        [sys.executable, "-m", "hamr_dist.cli", "train", "--num-workers", "2",
         "--freeze-encoder", "--max-train-samples", "300", "--max-eval-samples", "60",
         "--num-train-epochs", "500", "--output-dir", str(out), "--no-progress",
         "--run-name", "ctrl-c"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True)
    seen = []
    try:
        for line in p.stderr:
            seen.append(line)
            if re.match(r"INFO epoch 1/500: ", line):
                break
        os.killpg(p.pid, signal.SIGINT)
        _, rest = p.communicate(timeout=180)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    err = "".join(seen) + rest
    assert p.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("hamr: interrupted; resume with: hamr train --num-workers 2"), err
    assert last.endswith("--run-name ctrl-c"), err
    assert "\x1b[" not in err and "PlacementGroupCleaner" not in err and "pid=" not in err, err
    c = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    runs = c.search_runs([c.get_experiment_by_name("hamr").experiment_id])
    assert [r.info.status for r in runs] == ["KILLED"], err
    assert runs[0].data.tags.get("hamr.error") == "KeyboardInterrupt"


@pytest.mark.slow
def test_killed_hardness_actor_is_recreated_and_run_completes(two_workers, tmp_path):
    """The hardness actor is killed in epoch 2: Ray restarts it empty, the workers' next read
    fails (unknown session), Ray Train restarts the group from the epoch-1 checkpoint, whose
    ``begin`` refills the new actor; the run ends as the uninterrupted one. (Slow: ~40 s; the
    stale-session detection it relies on is covered in the default suite by
    ``test_client_is_a_store_and_stale_sessions_are_refused``.)"""
    from hamr_dist.distributed.trainer import train_distributed
    _, ref = two_workers
    fault = [{"action": "kill_hardness_actor", "rank": 0, "epoch": 1, "step": 3,
              "once": str(tmp_path / "killed")}]
    m = train_distributed(small_cfg(tmp_path, num_workers=2, max_failures=1),
                          faults=fault).metrics
    assert (tmp_path / "killed").is_file()
    info = m["ray"]["hardness_actor"]
    assert info["sessions"] == 1                 # a new incarnation, begun once from the ckpt
    assert m["ray"]["resumed_from_epoch"] == 1
    assert_same_run(ref, m)
    assert np.array_equal(final_state(m)["hardness"]["h"], final_state(ref)["hardness"]["h"])


def test_reporter_checkpoints_every_n_epochs_and_keeps_the_last_for_the_final(monkeypatch,
                                                                               tmp_path):
    """Reporter without Ray: which reports carry a checkpoint, and what is inside."""
    import ray.train

    from hamr_dist.distributed.trainer import Instrumented, Reporter
    calls = []

    def fake_report(metrics, checkpoint=None):
        st = None
        if checkpoint is not None:    # the real report copies the folder before it is removed
            st = torch.load(Path(checkpoint.path) / "state.pt", weights_only=False)
        calls.append((metrics, st))

    monkeypatch.setattr(ray.train, "report", fake_report)
    cfg = small_cfg(tmp_path, num_train_epochs=5, checkpoint_every=2)
    store = Instrumented(InMemoryHardness(4))
    rep = Reporter(cfg, 0, 1, store, every=2)
    for e in range(5):
        store.draw(e, 0, 1.0, 0.7, 0.0)
        store.update(np.array([e % 4]), np.array([2.0], np.float32))
        rep({"epoch": e + 1, "loss": 1.0, "dev_macro_f1": 0.5},       # records count from 1
            lambda e=e: {"epoch": e, "meta_batches": {"pos": e}, "torch_rng": torch.get_rng_state(),
                         "hardness": store.state_dict(), "model": {}, "wnet": None})
    assert [st is not None for _, st in calls] == [False, True, False, True, False]
    assert calls[1][1]["epoch"] == 1 and calls[1][1]["meta_batches"] == [{"pos": 1}]
    assert all(m["world_size"] == 1 and m["step_time_s"] is not None for m, _ in calls)
    rep.final({"test": {"macro_f1": 0.5}}, tmp_path / "out", socket.gethostname(),
              {"rank": 0})
    final_metrics, final_st = calls[-1]
    assert final_st["epoch"] == 4 and len(final_st["torch_rng"]) == 1    # the last epoch's state
    assert final_metrics["test"]["macro_f1"] == 0.5
    assert [e["epoch"] for e in final_metrics["ray"]["epochs"]] == [1, 2, 3, 4, 5]
