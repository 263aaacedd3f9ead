"""Hardness shards by index range with batched updates (distributed/hardness_shards.py): the same
h, bit for bit, as one process applying the updates in draw order, whatever the arrival order,
the number of shards or the batch size; states split and merge losslessly; stale sessions fail."""
from __future__ import annotations

import numpy as np
import pytest

from hamr_dist.errors import ConfigError
from hamr_dist.sampling.hardness import InMemoryHardness, shard_for_rank


def stream(n, steps, world, bs, seed=0):
    """Per rank, its (indices, w_post) per step, cut from one draw as the loop cuts it."""
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, n // 2, size=steps * world * bs)    # repeats; half the samples unseen
    per_rank = {}
    for r in range(world):
        mine = shard_for_rank(draw, r, world, bs)
        per_rank[r] = [(mine[s * bs:(s + 1) * bs], rng.uniform(0.1, 8, bs).astype(np.float32))
                       for s in range(steps)]
    return per_rank


def replay(n, per_rank, steps, **opts):
    """One process, draw order: step by step, ranks in order."""
    ref = InMemoryHardness(n, gamma=0.9, **opts)
    for s in range(steps):
        for r in sorted(per_rank):
            ref.update(*per_rank[r][s])
    return ref


def test_split_and_merge_states_round_trip():
    from hamr_dist.distributed.hardness_shards import merge_states, shard_bounds, split_state
    s = InMemoryHardness(11, gamma=0.8, rule="debiased-ema")
    s.update(np.array([1, 4, 4, 10]), np.array([2, 3, 5, 7], np.float32))
    st = s.state_dict()
    bounds = shard_bounds(11, 3)
    assert list(bounds) == [0, 4, 7, 11]
    parts = split_state(st, bounds)
    assert [p["n"] for p in parts] == [4, 3, 4] and parts[2]["rule"] == "debiased-ema"
    assert np.array_equal(parts[1]["visits"], st["visits"][4:7])
    back = merge_states(parts)
    assert back.keys() == st.keys()
    for k, v in st.items():
        assert np.array_equal(back[k], v) if isinstance(v, np.ndarray) else back[k] == v
    with pytest.raises(ConfigError, match="between 1 and"):
        shard_bounds(3, 4)


@pytest.mark.parametrize("rule", ["ema", "debiased-ema", "epoch-ema", "decay-all"])
def test_shard_applies_whole_messages_as_one_update_with_the_same_result(rule):
    """The actor body without Ray: both ranks' steps arrive in messages of different sizes,
    rank 1 first; the complete steps are applied at once (one concatenated update, or step by
    step for decay-all) and h equals the step-by-step replay in draw order, bit for bit."""
    import asyncio

    from hamr_dist.distributed.hardness_shards import HardnessShard
    n, world, steps, bs = 40, 2, 11, 5
    per_rank = stream(n, steps, world, bs, seed=3)
    ref = replay(n, per_rank, steps, rule=rule)

    async def scenario():
        a = HardnessShard()
        gen = await a.begin(n, 0.9, world, None, {"rule": rule})
        for r, size in ((1, 3), (0, 5)):
            for s0 in range(0, steps, size):
                await a.update_many(gen, r, s0, per_rank[r][s0:s0 + size])
        await a.update_many(gen, 0, 2, per_rank[0][2:4])         # duplicates are dropped
        await a.end_epoch(gen, steps, 0)                         # epoch-ema folds in here
        h = await a.hardness(gen, steps)
        return h, a._stats, a._next

    h, stats, applied = asyncio.run(scenario())
    assert applied == steps and stats["updates"] == world * steps and stats["duplicates"] == 2
    ref.end_epoch(0)
    assert np.array_equal(h, ref.hardness())
    assert not np.allclose(h, 1.0)                             # the updates did move h


@pytest.mark.parametrize("shards,batch,rule", [(1, 1, "ema"), (3, 4, "ema"),
                                               (2, 5, "debiased-ema")])
def test_shards_equal_single_process_replay_whatever_the_arrival_order(ray_local, shards,
                                                                       batch, rule):
    from hamr_dist.distributed.hardness_shards import (ShardedHardnessClient,
                                                       create_hardness_shards)
    n, world, steps, bs = 50, 2, 13, 6
    per_rank = stream(n, steps, world, bs)
    ref = replay(n, per_rank, steps, rule=rule)
    sh = create_hardness_shards(f"test-shards-{shards}-{batch}-{rule}", n, shards)
    try:
        gens = sh.begin(0.9, world, opts={"rule": rule})
        clients = [ShardedHardnessClient(sh, gens, r, batch_steps=batch, opts={"rule": rule})
                   for r in range(world)]
        for r in reversed(range(world)):              # rank 1 sends everything first
            for idx, w in per_rank[r]:
                clients[r].update(idx, w)
            clients[r].flush() if r else None         # rank 0 keeps a partial batch buffered
        h = clients[0].hardness()                     # sends the rest, waits for both ranks
        assert np.array_equal(h, ref.hardness())
        assert np.array_equal(clients[1].state_dict()["h"], ref.state_dict()["h"])
        assert np.array_equal(clients[1].draw(2, 7, 1.2, 0.7, 0.0), ref.draw(2, 7, 1.2, 0.7, 0.0))
        info = sh.info()
        assert sum(i["samples"] for i in info) == world * steps * bs   # each visit once
        assert all(i["updates"] == world * steps and i["pending_steps"] == 0 for i in info)
    finally:
        sh.kill()


def test_boost_checkpoint_and_stale_sessions(ray_local):
    from hamr_dist.distributed.actors import HardnessActorLost
    from hamr_dist.distributed.hardness_shards import (ShardedHardnessClient,
                                                       create_hardness_shards)
    n = 30
    sh = create_hardness_shards("test-shards-state", n, 3)
    try:
        c = ShardedHardnessClient(sh, sh.begin(0.9, 1), 0, batch_steps=3)
        local = InMemoryHardness(n, gamma=0.9)
        for s in range(7):
            idx, w = np.array([s, 29 - s, s]), np.array([1 + s, 2, 3], np.float32)
            c.update(idx, w)
            local.update(idx, w)
        b = np.linspace(0, 2, n).astype(np.float32)
        c.set_boost(b)
        local.set_boost(b)
        assert np.array_equal(c.boost(), b)
        np.testing.assert_array_equal(c.probabilities(0.7, 0.7), local.probabilities(0.7, 0.7))
        st = c.state_dict()
        # a new session from the checkpoint (a restarted worker group) continues from it ...
        c2 = ShardedHardnessClient(sh, sh.begin(0.9, 1, state=st), 0)
        assert np.array_equal(c2.hardness(), local.hardness())
        # ... and the old session's client fails loudly instead of reading the new state
        with pytest.raises(HardnessActorLost):
            c.hardness()
        with pytest.raises(ConfigError, match="decay-all"):
            sh.begin(0.9, 1, opts={"rule": "decay-all"})
    finally:
        sh.kill()


def test_two_workers_with_sharded_batched_hardness_equal_the_replay(ray_local, tmp_path):
    """--hardness-shards 2 --hardness-batch-steps 4 in a real 2-worker run (the kNN boost reads
    h and writes b through the shards): h in the final checkpoint == one InMemoryHardness fed
    every rank's logged updates in draw order, and the shards applied every update once."""
    import pickle
    from pathlib import Path

    import torch

    from hamr_dist.config import TrainConfig
    from hamr_dist.distributed.trainer import train_distributed
    cfg = TrainConfig(method="hamr", freeze_encoder=True, max_train_samples=300,
                      max_eval_samples=100, num_train_epochs=3, per_device_train_batch_size=16,
                      seed=7, progress=False, output_dir=str(tmp_path / "out"),
                      storage_path=str(tmp_path / "ray"), run_name="run", mlflow=False,
                      num_workers=2, hardness_shards=2, hardness_batch_steps=4)
    m = train_distributed(cfg, check_consistency=True).metrics
    logs = [pickle.loads(p.read_bytes())
            for p in sorted((tmp_path / "ray" / "run" / "update_logs").glob("rank*.pkl"))]
    assert len(logs) == 2
    st = torch.load(Path(m["ray"]["checkpoint"]) / "state.pt", weights_only=False)
    ref = InMemoryHardness(len(st["hardness"]["h"]), gamma=0.99)
    for e, s, r, i, w in sorted((e, s, r, i, w) for r, log in enumerate(logs)
                                for e, s, i, w in log):
        ref.update(i, w)
    assert np.array_equal(st["hardness"]["h"], ref.hardness())
    assert m["history"][-1]["boosted_share"] > 0                 # b came back through the shards
    for e in m["ray"]["epochs"]:
        assert len(set(e["draw_digests"])) == 1                  # same draw on both ranks
