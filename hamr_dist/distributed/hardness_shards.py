"""Hardness state sharded by index range, fed by batched updates: throughput that grows with
the cluster while keeping the single actor's exact-once, draw-order semantics.

One hardness actor applies every update of every worker; per update it pays a Ray message
(~0.7 ms of actor time on the project's VM) and the EMA itself (~0.14 ms), so it saturates
near 1,000-1,400 updates/s (``benchmarks/results/hardness_scale.md``), about what 64 GPUs at
10 steps/s send. Two levers, independent and combinable:

- **Batched messages.** :class:`ShardedHardnessClient` keeps consecutive steps of its rank and
  sends them as one ``update_many`` message per shard (and at once before any read, so a read
  still sees every update before it). A worker sends one message per ``batch_steps`` steps on
  average whatever the number of shards S: it sends each shard its parts of ``S *
  batch_steps`` steps at once. So the Ray calls a worker makes do not grow with S, and each
  shard receives 1/S of the messages (and 1/S of the indices) the single actor would: the
  per-message cost, which dominates the actor's time at a worker's batch sizes, is split
  over the shards like the EMA work (``benchmarks/results/hardness_throughput.md``).
- **Shards by index range.** Samples ``[lo_j, hi_j)`` live in shard actor ``j`` (a
  :class:`HardnessShard`, i.e. the ordinary ``HardnessService`` over that range). A step's
  ``(indices, w_post)`` is split by range, order kept, and every shard receives every step of
  every rank (an empty part where the step has none of its samples), so each shard applies its
  parts in the same (step, rank) order the single actor would. An index lives in exactly one
  shard, so the EMA of every sample sees its visits in exactly the same order as before: h is
  bit-identical to the single actor's and to one process replaying the draw. The EMA work is
  spread over the shards, which Ray places on different CPUs or nodes.

Reads gather the shards' states and concatenate them; h, the checkpoint state, probabilities,
the epoch draw and the draw diagnostics are then computed by an :class:`InMemoryHardness`
rebuilt from the merged state, i.e. by the very code the single actor runs, so they are the
same numbers on every rank (``debiased-ema`` fills unvisited samples with the mean of the
visited ones: the merged store takes that mean over all shards). The ``decay-all`` rule
rescales h by its global mean after every update and so cannot be split by range: it needs
one shard.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import ray

from ..errors import ConfigError
from ..sampling.hardness import InMemoryHardness
from .actors import NAMESPACE, HardnessActorLost, HardnessService

log = logging.getLogger("hamr_dist")

__all__ = ["HardnessShard", "HardnessShards", "ShardedHardnessClient", "ShardsView",
           "shard_bounds", "split_state", "merge_states", "create_hardness_shards",
           "create_shard_actors", "worker_session"]


class HardnessShard(HardnessService):
    """A hardness actor over one index range that takes several steps per message and applies
    every complete step at once.

    It works on the base class's bookkeeping (``_pending``, ``_next``, ``_world``): steps are
    buffered per (seq, rank) as ``update``/``update_many`` do, and :meth:`_apply_ready` concatenates
    the parts of all complete steps in (step, rank) order into one store update. Each sample's
    EMA then sees its visits in the same order as step-by-step application, so h is the same bit
    for bit, while the per-call cost of the update (a dozen numpy calls) is paid once per
    message instead of once per part -- which matters once a step is split over shards.
    ``decay-all`` (a global rescale after every update) is applied step by step.
    """

    def _apply_ready(self) -> None:
        if self._store.rule == "decay-all":
            return super()._apply_ready()
        t0 = time.perf_counter()
        idx, w = [], []
        while len(self._pending.get(self._next, ())) == self._world:
            step = self._pending.pop(self._next)
            for r in sorted(step):
                i, x = step[r]
                idx.append(np.asarray(i, dtype=np.int64).ravel())
                w.append(np.asarray(x, dtype=np.float32).ravel())
                self._stats["updates"] += 1
                self._stats["samples"] += idx[-1].size
            self._next += 1
            self._version += 1
        if idx:
            self._store.update(np.concatenate(idx), np.concatenate(w))
        self._stats["apply_s"] += time.perf_counter() - t0


def shard_bounds(n: int, shards: int) -> np.ndarray:
    """``shards + 1`` boundaries of contiguous, near-equal index ranges covering ``[0, n)``."""
    if shards < 1 or shards > n:
        raise ConfigError(f"hardness shards must be between 1 and the number of samples ({n}), "
                          f"got {shards}")
    return np.linspace(0, n, shards + 1).round().astype(np.int64)


def _is_per_sample(v, n: int) -> bool:
    return isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == n


def split_state(state: dict | None, bounds: np.ndarray) -> list:
    """A store state (or options dict) cut into the shards' ranges: every array with one entry
    per sample is sliced, ``n`` becomes the range's length, everything else is copied."""
    if state is None:
        return [None] * (len(bounds) - 1)
    n = int(bounds[-1])
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        part = {}
        for k, v in state.items():
            v = np.asarray(v) if isinstance(v, (list, tuple)) and len(v) == n else v
            part[k] = v[lo:hi] if _is_per_sample(v, n) else v
        if "n" in state:
            part["n"] = int(hi - lo)
        out.append(part)
    return out


def merge_states(parts: list[dict]) -> dict:
    """The inverse of :func:`split_state`."""
    sizes = [int(p["n"]) for p in parts]
    out = {}
    for k, v in parts[0].items():
        if all(_is_per_sample(p[k], s) for p, s in zip(parts, sizes)):
            out[k] = np.concatenate([p[k] for p in parts])
        else:
            out[k] = v
    out["n"] = sum(sizes)
    return out


class HardnessShards:
    """The shard actors of one run and their index ranges (picklable: handles and bounds)."""

    def __init__(self, actors: list, bounds: np.ndarray):
        if len(actors) != len(bounds) - 1:
            raise ValueError("one actor per index range")
        self.actors, self.bounds = list(actors), np.asarray(bounds, dtype=np.int64)

    @property
    def n(self) -> int:
        return int(self.bounds[-1])

    def begin(self, gamma: float, world_size: int, state: dict | None = None,
              opts: dict | None = None) -> list[str]:
        """Open a session on every shard (from a checkpoint's state, split); returns the
        generation ids, one per shard, that the clients tag their calls with."""
        # the sampling prior is not needed by the shards: probabilities are computed from the
        # merged state by the client, which has the whole prior
        opts = {k: v for k, v in (opts or {}).items() if k != "prior"}
        if len(self.actors) > 1 and opts.get("rule") == "decay-all":
            raise ConfigError("the decay-all hardness rule rescales h by its global mean after "
                              "every update, so it cannot be sharded: use one hardness shard")
        states = split_state(state, self.bounds)
        return ray.get([a.begin.remote(int(hi - lo), gamma, world_size, st, opts)
                        for a, lo, hi, st in zip(self.actors, self.bounds[:-1], self.bounds[1:],
                                                 states)])

    def info(self) -> list[dict]:
        return ray.get([a.info.remote() for a in self.actors])

    def kill(self) -> None:
        for a in self.actors:
            try:
                ray.kill(a)
            except Exception:                                       # already gone
                pass


def _spawn(name: str, shards: int, scheduling_strategy=None, runtime_env=None) -> list:
    """``shards`` named shard actors ``<name>-<j>``, restarted by Ray if they die (empty: the
    next worker-group attempt reloads them from the checkpoint, as for the single actor).
    SPREAD placement by default, so that the shards' EMA work lands on different nodes."""
    opts = dict(namespace=NAMESPACE, max_restarts=-1, max_task_retries=0, num_cpus=0,
                scheduling_strategy=scheduling_strategy or "SPREAD")
    if runtime_env:
        opts["runtime_env"] = runtime_env
    return [ray.remote(HardnessShard).options(name=f"{name}-{j}", **opts).remote()
            for j in range(shards)]


def create_hardness_shards(name: str, n: int, shards: int, *, scheduling_strategy=None,
                           runtime_env=None) -> HardnessShards:
    """Shard actors over ``n`` samples in ``shards`` near-equal index ranges."""
    bounds = shard_bounds(n, shards)
    return HardnessShards(_spawn(name, shards, scheduling_strategy, runtime_env), bounds)


class ShardedHardnessClient:
    """:class:`~hamr_dist.sampling.hardness.HardnessStore` over hardness shards, one per rank.

    ``update`` buffers; every ``S * batch_steps`` steps (S shards: one message per
    ``batch_steps`` steps on average) the buffer is split by shard and sent, one
    ``update_many`` message per shard, without waiting (finished messages are reaped, which
    surfaces errors; at most ``max_inflight`` per shard are outstanding). Every read first sends
    what is buffered, then blocks until each shard has applied all steps before this rank's.
    """

    def __init__(self, shards: HardnessShards, generations: list[str], rank: int, *,
                 batch_steps: int = 8, max_inflight: int = 256, opts: dict | None = None):
        if batch_steps < 1:
            raise ValueError(f"batch_steps must be >= 1, got {batch_steps}")
        self.shards, self.gens, self.rank = shards, list(generations), int(rank)
        self.batch_steps, self.max_inflight = int(batch_steps), int(max_inflight)
        self._every = self.batch_steps * len(shards.actors)     # steps per send
        self.opts = dict(opts or {})
        self.seq = 0                       # steps of this rank so far (buffered included)
        self._sent = 0                     # steps already sent
        self._buf: list[tuple[np.ndarray, np.ndarray]] = []
        self._inflight: list = []
        self._fresh_boost = None

    # -- updates ------------------------------------------------------------------------------
    def update(self, indices, w_post) -> None:
        self._buf.append((np.asarray(indices, dtype=np.int64).ravel(),
                          np.asarray(w_post, dtype=np.float32).ravel()))
        self.seq += 1
        if len(self._buf) >= self._every:
            self._send()

    def _send(self) -> None:
        if not self._buf:
            return
        bounds, S = self.shards.bounds, len(self.shards.actors)
        if S == 1:
            per_shard = [self._buf]
        else:       # all steps at once: a stable sort by shard keeps (step, position) order
            k = len(self._buf)
            idx = np.concatenate([i for i, _ in self._buf])
            w = np.concatenate([x for _, x in self._buf])
            sid = np.searchsorted(bounds, idx, side="right") - 1
            step = np.repeat(np.arange(k), [i.size for i, _ in self._buf])
            order = np.argsort(sid, kind="stable")
            idx, w = idx[order] - bounds[sid[order]], w[order]
            cut = np.cumsum(np.bincount(sid * k + step, minlength=S * k))[:-1]
            idx, w = np.split(idx, cut), np.split(w, cut)  # part (j, t) at j * k + t
            per_shard = [list(zip(idx[j * k:(j + 1) * k], w[j * k:(j + 1) * k]))
                         for j in range(S)]
        for a, gen, parts in zip(self.shards.actors, self.gens, per_shard):
            self._inflight.append(a.update_many.remote(gen, self.rank, self._sent, parts))
        self._sent += len(self._buf)
        self._buf = []
        self._reap(block=len(self._inflight) >= self.max_inflight * S)

    def _reap(self, block: bool = False) -> None:
        if not self._inflight:
            return
        try:
            if block:
                ready, rest = ray.wait(self._inflight, num_returns=len(self._inflight) // 2 or 1)
            else:
                ready, rest = ray.wait(self._inflight, num_returns=len(self._inflight),
                                       timeout=0)
            ray.get(ready)
        except ray.exceptions.RayError as e:
            raise HardnessActorLost(f"a hardness update failed: {e}") from e
        self._inflight = rest

    def flush(self) -> None:
        """Send what is buffered and block until every message was received."""
        self._send()
        while self._inflight:
            self._reap(block=True)

    # -- reads --------------------------------------------------------------------------------
    def _gather(self, method: str, *args) -> list:
        self._send()
        self._reap()
        refs = [getattr(a, method).remote(g, self.seq, *args)
                for a, g in zip(self.shards.actors, self.gens)]
        try:
            return ray.get(refs)
        except ray.exceptions.RayError as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise HardnessActorLost(f"a hardness shard is unavailable during {method}(): "
                                    f"{first}") from e

    def _each(self, method: str, args_per_shard: list) -> None:
        try:
            ray.get([getattr(a, method).remote(g, *args)
                     for a, g, args in zip(self.shards.actors, self.gens, args_per_shard)])
        except ray.exceptions.RayError as e:
            raise HardnessActorLost(f"a hardness shard is unavailable during {method}()") from e

    def _merged_store(self) -> InMemoryHardness:
        st = merge_states(self._gather("state_dict"))
        store = InMemoryHardness(st["n"], gamma=st.get("gamma", 0.99), **self.opts)
        store.load_state_dict(st)
        return store

    def hardness(self) -> np.ndarray:
        return self._merged_store().hardness()

    def boost(self) -> np.ndarray:
        return np.concatenate(self._gather("boost"))

    def state_dict(self) -> dict:
        return self._merged_store().state_dict()

    def probabilities(self, tau: float, lam: float, eps: float = 1e-6,
                      prior: float = 1.0) -> np.ndarray:
        return self._merged_store().probabilities(tau, lam, eps, prior)

    def draw(self, epoch: int, seed: int, ratio: float, tau: float, lam: float,
             uniform: bool = False, prior: float = 1.0) -> np.ndarray:
        return self._merged_store().draw(epoch, seed, ratio, tau, lam, uniform=uniform,
                                         prior=prior)

    def stats(self, tau: float, lam: float, prior: float = 1.0) -> dict:
        return self._merged_store().stats(tau, lam, prior)

    def end_epoch(self, epoch: int | None = None) -> None:
        self._gather("end_epoch", -1 if epoch is None else int(epoch))

    def set_boost(self, b) -> None:
        if b is not None and b is self._fresh_boost:     # already pushed by the neighbour actor
            self._fresh_boost = None
            return
        b = np.asarray(b, dtype=np.float32).ravel()
        lo_hi = zip(self.shards.bounds[:-1], self.shards.bounds[1:])
        self._each("set_boost", [(b[lo:hi],) for lo, hi in lo_hi])

    def load_state_dict(self, d: dict) -> None:
        self._each("load_state_dict", [(s,) for s in split_state(d, self.shards.bounds)])

    def fetch_fresh_boost(self) -> np.ndarray:
        self._fresh_boost = self.boost()
        return self._fresh_boost


# --------------------------------------------------------------------------------------------
# the training run's side (trainer.py)
# --------------------------------------------------------------------------------------------
def create_shard_actors(name: str, shards: int, *, runtime_env=None) -> list:
    """The driver's part: the shard actors (handles, named ``<name>-<j>``); their index ranges
    are fixed by rank 0 once the training set is built."""
    return _spawn(name, shards, runtime_env=runtime_env)


def worker_session(names: list[str], n: int, gamma: float, world: int, rank: int,
                   state: dict | None, opts: dict | None, batch_steps: int):
    """A rank's side of a sharded session: rank 0 begins it on every shard (from the
    checkpoint's state, split), every rank gets a client. Returns ``(client, view)``, the view
    being what the neighbour actor reads h from and writes b to (:class:`ShardsView`)."""
    from .collectives import broadcast_object
    actors = [ray.get_actor(x, namespace=NAMESPACE) for x in names]
    shards = HardnessShards(actors, shard_bounds(n, len(actors)))
    gens = shards.begin(gamma, world, state, opts) if rank == 0 else None
    gens = broadcast_object(gens)
    client = ShardedHardnessClient(shards, gens, rank, batch_steps=batch_steps, opts=opts)
    return client, ShardsView(shards, gens, opts)


@ray.remote(num_cpus=0)
def _view_hardness(shards, gens, opts, upto):
    c = ShardedHardnessClient(shards, gens, -1, opts=opts)
    c.seq = int(upto)
    return c.hardness()


@ray.remote(num_cpus=0)
def _view_set_boost(shards, gens, opts, b):
    ShardedHardnessClient(shards, gens, -1, opts=opts).set_boost(b)


class _ViewMethod:
    def __init__(self, fn, view):
        self.fn, self.view = fn, view

    def remote(self, generation, *args):        # the generation is the view's own (per shard)
        v = self.view
        return self.fn.remote(v.shards, v.gens, v.opts, *args)


class ShardsView:
    """The sharded state as the neighbour actor sees a hardness actor: ``hardness.remote(gen,
    upto)`` (merged h once every step below ``upto`` is applied) and ``set_boost.remote(gen,
    b)`` (split by range), each a small Ray task."""

    def __init__(self, shards: HardnessShards, gens: list[str], opts: dict | None):
        self.shards, self.gens, self.opts = shards, list(gens), dict(opts or {})

    @property
    def hardness(self):
        return _ViewMethod(_view_hardness, self)

    @property
    def set_boost(self):
        return _ViewMethod(_view_set_boost, self)
