"""The two long-lived actors of a Ray run, and the worker-side client of the hardness actor.

``HardnessService`` (one named actor per run) owns the hardness h and boost b of the whole
training set (an :class:`InMemoryHardness`, float32). Workers stream ``(indices, w_post)`` to
it without waiting (:class:`HardnessClient.update` is a fire-and-forget ``.remote()``); reads
block. Each update carries ``(rank, seq)`` where ``seq`` is the rank's own step counter, and the
actor applies global step ``seq`` only once every rank's part of it has arrived, in rank order.
The client sends ``batch_steps`` consecutive steps per message (``update_many``; every read sends
what it holds first), so the per-message cost -- a Ray call on the worker's training thread and
the actor's CPU on a machine whose other cores the training uses -- is paid once per K steps.
Since :func:`~hamr_dist.sampling.hardness.shard_for_rank` gives rank r the r-th block of each
global step, that is exactly the order of the epoch draw, so h equals what one process applying
the same ``(indices, w_post)`` in draw order computes, bit for bit, whatever order the
messages arrive in. A read from a rank that has sent ``seq`` updates waits until every global
step below ``seq`` is applied, so every read sees every visit before it.

A run attempt is a *session*: rank 0 calls :meth:`HardnessService.begin` with the checkpoint's
hardness (or none), which returns a fresh generation id that tags every later call. Messages of
an older attempt (a worker group that was torn down) are dropped, and a read with a stale id --
or any read after the actor itself died and was restarted, which forgets the generation --
raises :class:`StaleSession`; the worker turns that into :class:`HardnessActorLost` and fails,
and Ray Train restarts the worker group from the last checkpoint, whose first step is a new
``begin``. So a crash of the hardness actor costs the work since the last checkpoint, exactly
like the crash of a worker, and the resumed run reproduces the uninterrupted one.

``NeighbourService`` (one per run, ``num_gpus=1`` when a spare GPU exists) owns the sentence
embeddings of the training set and the (sharded) FAISS index. On request it pulls h from the
hardness actor, computes the neighbour boost and pushes b back, actor to actor: training
workers never hold embeddings.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid

import numpy as np
import ray

from ..errors import HamrError
from ..sampling.hardness import InMemoryHardness

log = logging.getLogger("hamr_dist")

__all__ = ["HardnessService", "NeighbourService", "HardnessClient", "HardnessActorLost",
           "StaleSession", "create_hardness_actor", "create_neighbour_actor"]

NAMESPACE = "hamr_dist"
READ_TIMEOUT_S = float(os.environ.get("HAMR_HARDNESS_READ_TIMEOUT_S", "300"))


class StaleSession(HamrError):
    """A call tagged with a generation the hardness actor does not (or no longer) serve."""


class HardnessActorLost(HamrError):
    """The hardness actor died, restarted or moved on to a newer session: this worker group's
    view of h is gone, and the run must resume from its last checkpoint."""


class HardnessService:
    """Actor body (async: reads wait for missing updates without blocking the updates)."""

    def __init__(self):
        self.incarnation = uuid.uuid4().hex[:12]
        self.started = time.time()
        self._store: InMemoryHardness | None = None
        self._gen: str | None = None
        self._world = 1
        self._pending: dict[int, dict[int, tuple]] = {}
        self._next = 0                # next global step to apply
        self._version = 0             # bumped on every change of h or b
        self._draw_cache = None
        self._cond: asyncio.Condition | None = None
        self._workers: dict[int, dict] = {}
        self._stats = {"updates": 0, "samples": 0, "stale_dropped": 0, "duplicates": 0,
                       "apply_s": 0.0, "sessions": 0, "messages": 0, "busy_s": 0.0}

    # -- session ----------------------------------------------------------------------------
    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    async def begin(self, n: int, gamma: float, world_size: int, state: dict | None = None,
                    opts: dict | None = None) -> str:
        """Start a session: fresh store of ``n`` samples, optionally loaded from a checkpoint.
        ``opts``: InMemoryHardness options (hardness rule, epoch decay, sampling prior)."""
        store = InMemoryHardness(n, gamma=gamma, **(opts or {}))
        self._closed_epoch = -1
        if state is not None:
            store.load_state_dict(state)
        async with self._condition():
            self._store, self._world = store, int(world_size)
            self._gen = uuid.uuid4().hex[:12]
            self._pending, self._next, self._draw_cache = {}, 0, None
            self._version += 1
            self._workers = {}
            self._stats["sessions"] += 1
            self._condition().notify_all()   # wake (and fail) readers of the old session
        return self._gen

    def _check(self, gen: str) -> None:
        if self._gen is None or gen != self._gen:
            raise StaleSession(
                f"hardness actor {self.incarnation} serves session {self._gen}, not {gen} "
                "(the actor restarted or a newer attempt began)")

    async def register(self, gen: str, rank: int, info: dict) -> None:
        if gen == self._gen:
            self._workers[int(rank)] = dict(info)

    # -- updates ----------------------------------------------------------------------------
    async def update(self, gen: str, rank: int, seq: int, indices, w) -> None:
        self._stats["messages"] += 1
        if gen != self._gen:
            self._stats["stale_dropped"] += 1
            return
        seq, rank = int(seq), int(rank)
        if seq < self._next or rank in self._pending.get(seq, ()):
            self._stats["duplicates"] += 1
            return
        step = self._pending.setdefault(seq, {})
        step[rank] = (indices, w)
        if len(step) == self._world and seq == self._next:
            self._apply_ready()
            async with self._condition():
                self._condition().notify_all()

    async def update_many(self, gen: str, rank: int, seq0: int, parts: list) -> None:
        """Steps ``seq0, seq0+1, ...`` of ``rank`` in one message: ``parts[k] = (indices, w)``."""
        t0 = time.perf_counter()
        self._stats["messages"] += 1
        if gen != self._gen:
            self._stats["stale_dropped"] += len(parts)
            return
        rank = int(rank)
        for k, part in enumerate(parts):
            seq = int(seq0) + k
            if seq < self._next or rank in self._pending.get(seq, ()):
                self._stats["duplicates"] += 1
                continue
            self._pending.setdefault(seq, {})[rank] = part
        if len(self._pending.get(self._next, ())) == self._world:
            self._apply_ready()
            async with self._condition():
                self._condition().notify_all()
        self._stats["busy_s"] += time.perf_counter() - t0

    def _apply_ready(self) -> None:
        t0 = time.perf_counter()
        while len(self._pending.get(self._next, ())) == self._world:
            step = self._pending.pop(self._next)
            for r in sorted(step):
                idx, w = step[r]
                self._store.update(idx, w)
                self._stats["updates"] += 1
                self._stats["samples"] += len(idx)
            self._next += 1
            self._version += 1
        self._stats["apply_s"] += time.perf_counter() - t0

    async def _settled(self, gen: str, upto: int) -> InMemoryHardness:
        """Wait until global steps ``< upto`` are applied (every rank's part has arrived)."""
        self._check(gen)
        if self._next < upto:
            cond = self._condition()
            async with cond:
                try:
                    await asyncio.wait_for(
                        cond.wait_for(lambda: self._next >= upto or gen != self._gen),
                        READ_TIMEOUT_S)
                except asyncio.TimeoutError:
                    have = {r: max((s for s, p in self._pending.items() if r in p), default=None)
                            for r in range(self._world)}
                    raise StaleSession(
                        f"waited {READ_TIMEOUT_S:.0f}s for step {upto - 1}; applied up to "
                        f"{self._next - 1}, latest step buffered per rank: {have}") from None
            self._check(gen)
        return self._store

    # -- reads (HardnessStore) --------------------------------------------------------------
    async def hardness(self, gen: str, upto: int) -> np.ndarray:
        return (await self._settled(gen, upto)).hardness()

    async def boost(self, gen: str, upto: int) -> np.ndarray:
        return (await self._settled(gen, upto)).boost()

    async def probabilities(self, gen: str, upto: int, tau: float, lam: float,
                            eps: float = 1e-6, prior: float = 1.0) -> np.ndarray:
        return (await self._settled(gen, upto)).probabilities(tau, lam, eps, prior)

    async def draw(self, gen: str, upto: int, epoch: int, seed: int, ratio: float, tau: float,
                   lam: float, uniform: bool = False, prior: float = 1.0) -> np.ndarray:
        store = await self._settled(gen, upto)
        key = (gen, self._version, epoch, seed, ratio, tau, lam, uniform, prior)
        if self._draw_cache is None or self._draw_cache[0] != key:   # every rank asks once
            self._draw_cache = (key, store.draw(epoch, seed, ratio, tau, lam, uniform=uniform,
                                                prior=prior))
        return self._draw_cache[1]

    async def state_dict(self, gen: str, upto: int) -> dict:
        return (await self._settled(gen, upto)).state_dict()

    async def stats(self, gen: str, upto: int, tau: float, lam: float, prior: float = 1.0) -> dict:
        return (await self._settled(gen, upto)).stats(tau, lam, prior)

    async def end_epoch(self, gen: str, upto: int, epoch: int) -> None:
        """Every rank calls this after its last update of ``epoch``; it applies once."""
        store = await self._settled(gen, upto)
        if epoch > self._closed_epoch:
            store.end_epoch(epoch)
            self._closed_epoch = int(epoch)
            self._version += 1

    async def set_boost(self, gen: str, b) -> None:
        self._check(gen)
        self._store.set_boost(b)
        self._version += 1

    async def load_state_dict(self, gen: str, state: dict) -> None:
        self._check(gen)
        self._store.load_state_dict(state)
        self._version += 1

    # -- introspection ----------------------------------------------------------------------
    async def info(self) -> dict:
        return {"incarnation": self.incarnation, "generation": self._gen, "pid": os.getpid(),
                "node_id": ray.get_runtime_context().get_node_id(), "next_step": self._next,
                "pending_steps": len(self._pending), "n": self._store.n if self._store else None,
                "workers": dict(self._workers), **self._stats}


class HardnessClient:
    """:class:`~hamr_dist.sampling.hardness.HardnessStore` backed by the hardness actor.

    ``update`` buffers; every ``batch_steps`` updates the buffer goes out as one message that
    only submits (the actor call runs while the worker computes the next steps). Finished calls
    are reaped every ``reap_every`` messages, which surfaces their errors, and at most
    ``max_inflight`` may be outstanding (back-pressure). Every other method sends the buffer
    first, then blocks, so a read sees every update before it.
    """

    def __init__(self, actor, generation: str, rank: int, *, batch_steps: int = 1,
                 reap_every: int = 32, max_inflight: int = 1024):
        if batch_steps < 1:
            raise ValueError(f"batch_steps must be >= 1, got {batch_steps}")
        self.actor, self.generation, self.rank = actor, generation, int(rank)
        self.batch_steps = int(batch_steps)
        self.seq = 0                       # steps of this rank so far (buffered included)
        self._sent = 0                     # steps already sent
        self._buf: list[tuple[np.ndarray, np.ndarray]] = []
        self._messages = 0
        self._inflight: list = []
        self._reap_every, self._max_inflight = reap_every, max_inflight
        self._fresh_boost = None

    def _reap(self, block: bool = False) -> None:
        if not self._inflight:
            return
        try:
            if block:
                ready, rest = ray.wait(self._inflight, num_returns=len(self._inflight) // 2 or 1)
            else:
                ready, rest = ray.wait(self._inflight, num_returns=len(self._inflight), timeout=0)
            ray.get(ready)
        except ray.exceptions.RayError as e:
            raise HardnessActorLost(f"a hardness update failed: {e}") from e
        self._inflight = rest

    def _read(self, method: str, *args):
        self._send()
        self._reap()
        try:
            return ray.get(getattr(self.actor, method).remote(self.generation, self.seq, *args))
        except ray.exceptions.RayError as e:
            raise HardnessActorLost(f"hardness actor unavailable during {method}(): "
                                    f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e

    def _call(self, method: str, *args):
        self._send()
        try:
            return ray.get(getattr(self.actor, method).remote(self.generation, *args))
        except ray.exceptions.RayError as e:
            raise HardnessActorLost(f"hardness actor unavailable during {method}()") from e

    # HardnessStore
    def update(self, indices, w_post) -> None:
        self._buf.append((np.asarray(indices, dtype=np.int64),
                          np.asarray(w_post, dtype=np.float32)))
        self.seq += 1
        if len(self._buf) >= self.batch_steps:
            self._send()

    def _send(self) -> None:
        if not self._buf:
            return
        if len(self._buf) == 1:
            ref = self.actor.update.remote(self.generation, self.rank, self._sent, *self._buf[0])
        else:
            ref = self.actor.update_many.remote(self.generation, self.rank, self._sent, self._buf)
        self._sent += len(self._buf)
        self._buf = []
        self._messages += 1
        self._inflight.append(ref)
        if len(self._inflight) >= self._max_inflight:
            self._reap(block=True)
        elif self._messages % self._reap_every == 0:
            self._reap()

    def hardness(self) -> np.ndarray:
        return self._read("hardness")

    def boost(self) -> np.ndarray:
        return self._read("boost")

    def probabilities(self, tau: float, lam: float, eps: float = 1e-6,
                      prior: float = 1.0) -> np.ndarray:
        return self._read("probabilities", tau, lam, eps, prior)

    def draw(self, epoch: int, seed: int, ratio: float, tau: float, lam: float,
             uniform: bool = False, prior: float = 1.0) -> np.ndarray:
        return self._read("draw", epoch, seed, ratio, tau, lam, uniform, prior)

    def state_dict(self) -> dict:
        return self._read("state_dict")

    def stats(self, tau: float, lam: float, prior: float = 1.0) -> dict:
        return self._read("stats", tau, lam, prior)

    def end_epoch(self, epoch: int | None = None) -> None:
        self._read("end_epoch", -1 if epoch is None else int(epoch))

    def set_boost(self, b) -> None:
        if b is not None and b is self._fresh_boost:   # already pushed by the neighbour actor
            self._fresh_boost = None
            return
        self._call("set_boost", np.asarray(b, dtype=np.float32))

    def load_state_dict(self, d: dict) -> None:
        self._call("load_state_dict", d)

    def fetch_fresh_boost(self) -> np.ndarray:
        """b as the neighbour actor just set it; the loop's following ``set_boost(b)`` with this
        very array is then a no-op instead of a second write."""
        self._fresh_boost = self.boost()
        return self._fresh_boost

    def flush(self) -> None:
        """Send what is buffered and block until every update was received."""
        self._send()
        while self._inflight:
            self._reap(block=True)


class NeighbourService:
    """Actor body: embeddings + FAISS index of the training set; computes b from h."""

    def __init__(self, cfg_dict: dict, use_gpu: bool = False):
        import torch

        from .raylogs import configure_process_logging
        configure_process_logging()      # its lines reach the driver's filter (raylogs)
        torch.set_num_threads(1)
        self.cfg_dict, self.use_gpu = dict(cfg_dict), bool(use_gpu)
        self._emb = self._index = self._cfg = None
        self.stats = {"refreshes": 0, "prepare_s": None, "last_refresh_s": None}

    def prepare(self) -> dict:
        """Load (or compute and cache) the embeddings and build the index; idempotent."""
        if self._index is None:
            from ..config import TrainConfig
            from ..data.prepared import Prepared
            from ..sampling.neighbors import build_index
            from ..train.prepared_setup import prepared_config, prepared_embeddings, training_rows
            t0 = time.perf_counter()
            # the driver has prepared the data already (then this is a no-op); memory-map it
            cfg = prepared_config(TrainConfig(**self.cfg_dict))
            p = Prepared(cfg.data)
            c = cfg.resolved(p.task)
            rows, emb = training_rows(cfg), p.embeddings(cfg.embedder)
            if emb is None:
                self._emb = prepared_embeddings(cfg, rows)
            elif np.array_equal(rows, np.arange(len(emb))):
                self._emb = emb          # float16, memory-mapped: the index reads it in chunks
            else:                        # a subset (meta set moved out): float16 rows
                self._emb = np.asarray(emb[np.asarray(rows, dtype=np.int64)])
            self._index = build_index(self._emb, num_shards=c.num_index_shards,
                                      use_gpu=self.use_gpu, kind=c.knn_index, nlist=c.knn_nlist,
                                      nprobe=c.knn_nprobe, pq_m=c.knn_pq_m)
            self._cfg = c
            self.stats["prepare_s"] = round(time.perf_counter() - t0, 3)
        return {"n": int(self._emb.shape[0]), "dim": int(self._emb.shape[1]), **self.stats}

    def refresh(self, hardness_actor, generation: str, upto: int) -> dict:
        """Pull h, compute the boost, push b: one neighbourhood rebuild (spec section 2)."""
        from ..sampling.neighbors import neighbour_boost
        self.prepare()
        t0 = time.perf_counter()
        h = ray.get(hardness_actor.hardness.remote(generation, upto))
        if h.shape[0] != self._emb.shape[0]:
            raise HamrError(f"hardness covers {h.shape[0]} samples but {self._emb.shape[0]} "
                            "were embedded: the actors were built from different data")
        b = neighbour_boost(self._index, self._emb, h, rho=self._cfg.hard_ratio, k=self._cfg.k,
                            rerank=self._cfg.knn_rerank)
        ray.get(hardness_actor.set_boost.remote(generation, b))
        self.stats["refreshes"] += 1
        self.stats["last_refresh_s"] = round(time.perf_counter() - t0, 4)
        return {"boosted": int((b > 0).sum()), **self.stats}

    def info(self) -> dict:
        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(),
                "use_gpu": self.use_gpu, **self.stats}


def _options(name: str, scheduling_strategy, runtime_env, **opts) -> dict:
    opts.update(name=name, namespace=NAMESPACE)
    if scheduling_strategy is not None:
        opts["scheduling_strategy"] = scheduling_strategy
    if runtime_env:
        opts["runtime_env"] = runtime_env
    return opts


def create_hardness_actor(name: str, *, scheduling_strategy=None, runtime_env=None):
    """Named, owned by the driver, restarted by Ray if it dies (with an empty state: the next
    worker-group attempt reloads h and b from the last checkpoint)."""
    opts = _options(name, scheduling_strategy, runtime_env, max_restarts=-1, max_task_retries=0,
                    num_cpus=0, lifetime=None)
    return ray.remote(HardnessService).options(**opts).remote()


def create_neighbour_actor(name: str, cfg_dict: dict, num_gpus: int = 0, *,
                           scheduling_strategy=None, runtime_env=None):
    opts = _options(name, scheduling_strategy, runtime_env, max_restarts=-1, max_task_retries=2,
                    num_cpus=1, num_gpus=num_gpus)
    return ray.remote(NeighbourService).options(**opts).remote(cfg_dict, use_gpu=num_gpus > 0)
