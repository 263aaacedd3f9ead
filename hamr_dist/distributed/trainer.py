"""``hamr train --num-workers N``: the training loop of ``train/loop.py`` inside Ray Train.

The driver (:func:`train_distributed`) starts or attaches to Ray, creates the run's two actors
(hardness, neighbours; see ``actors.py``) and runs a ``TorchTrainer`` whose
``train_loop_per_worker`` (:func:`worker_main`) builds the same ``Setup`` on every rank and calls
the one loop, ``hamr_dist.train.loop.train``, with a ``Runtime`` that plugs in:

- ``all_reduce_mean``: gradients (model and weight network) averaged over the process group
  Ray Train created (gloo on CPU, NCCL on GPU), ``collectives.all_reduce_mean``;
- ``hardness``: a :class:`~hamr_dist.distributed.actors.HardnessClient` (updates streamed to
  the hardness actor, reads blocking), wrapped by :class:`Instrumented` (step timing, draw
  digests, test-only fault injection);
- ``boost``: rank 0 asks the neighbour actor to recompute b from the actor-held h (actor to
  actor), then every rank reads the same b;
- ``report``: :class:`Reporter`, one ``ray.train.report`` per epoch carrying the loop's
  ``state()`` as a checkpoint (every ``checkpoint_every`` epochs), plus a final report with
  the test metrics;
- ``resume``: the state in ``ray.train.get_checkpoint()``, if any (a restarted worker group,
  or a re-run with the same run name and storage path).
"""
from __future__ import annotations

import dataclasses
import hashlib
from contextlib import contextmanager
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from ..errors import ConfigError, HamrError

log = logging.getLogger("hamr_dist")

__all__ = ["train_distributed", "worker_main", "Instrumented", "Reporter", "ensure_ray",
           "absolute_paths", "load_state", "for_rank", "STATE_FILE", "RunInterrupted",
           "resume_command"]

STATE_FILE = "state.pt"
RUN_META = "hamr_run.json"
EXPORT_DIR = "export"
# options that change what a checkpoint means: a re-run under the same name must keep them
FINGERPRINT = ("data", "task", "model", "method", "freeze_encoder", "max_seq_length", "pooling",
               "head_hidden", "max_train_samples", "meta_set", "meta_scope", "seed",
               "per_device_train_batch_size", "wnet_hidden")
ENV_TO_WORKERS = ("HAMR_CACHE", "HAMR_LOG", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                  "TOKENIZERS_PARALLELISM", "HAMR_HARDNESS_READ_TIMEOUT_S", "HAMR_MLFLOW",
                  "MLFLOW_TRACKING_URI")


# --------------------------------------------------------------------------------------------
# driver side
# --------------------------------------------------------------------------------------------
def ensure_ray(address: str | None, num_cpus: int | None = None,
               show_level: int = logging.INFO) -> bool:
    """Connect to Ray; returns True when this call started a local instance (to shut down).

    Already initialised: use it (its logging as it is). ``address`` or ``$RAY_ADDRESS``: attach.
    Otherwise start a local instance with ``num_cpus`` logical CPUs (never attaching to a
    cluster by accident). When this call connects, the workers' output is filtered down to our
    own lines at ``show_level`` or above (``raylogs``; everything with HAMR_LOG=DEBUG).
    """
    import ray

    from .raylogs import install_driver_filter, ray_init_kwargs
    if ray.is_initialized():
        return False
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or os.environ["RAY_ADDRESS"], log_to_driver=True,
                 **ray_init_kwargs())
        install_driver_filter(show_level)
        return False
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **ray_init_kwargs())
    install_driver_filter(show_level)
    return True


def _storage_path(cfg) -> str:
    if cfg.storage_path and "://" in cfg.storage_path:
        return cfg.storage_path
    base = cfg.storage_path or str(Path(cfg.output_dir) / "ray_runs")
    return str(Path(base).expanduser().resolve())


def _check_run_meta(storage: str, name: str, cfg) -> bool | None:
    """Refuse to resume a run under the same name with options that change the state's meaning.
    Returns whether the run is new here (None: remote storage, not known)."""
    if "://" in storage:
        return None
    path = Path(storage) / name / RUN_META
    mine = {k: getattr(cfg, k) for k in FINGERPRINT}
    if path.is_file():
        theirs = json.loads(path.read_text()).get("fingerprint", {})
        diff = {k: (theirs.get(k), v) for k, v in mine.items() if k in theirs and theirs[k] != v}
        if diff:
            what = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
            raise ConfigError(f"run {name!r} in {storage} was started with other options ({what}); "
                              "use a new --run-name or the original options")
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"fingerprint": mine, "created": time.time()}, indent=2))
    return True


def absolute_paths(cfg):
    """Ray Train workers run in a directory of their own, so every relative path of the
    config is resolved against the driver's working directory first (a ``data`` or ``model``
    that is no local path, e.g. a hub name, is left alone)."""
    changes = {"output_dir": str(Path(cfg.output_dir).expanduser().resolve())}
    for key in ("data", "model", "embedder", "cache_dir"):
        v = getattr(cfg, key)
        if v and "://" not in v and (key == "cache_dir" or Path(v).expanduser().exists()):
            changes[key] = str(Path(v).expanduser().resolve())
    return dataclasses.replace(cfg, **changes)


def _worker_env() -> dict:
    env = {k: os.environ[k] for k in ENV_TO_WORKERS if k in os.environ}
    for k in ("HAMR_CACHE", "HF_HOME"):
        if k in env:
            env[k] = str(Path(env[k]).expanduser().resolve())
    # Ray Train routes print() to a logger, which defeats libraries that capture stdout
    # (dill, used by datasets' fingerprints, then dumps bytecode into the logs)
    env.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH",
                   os.environ.get("RAY_TRAIN_ENABLE_PRINT_PATCH", "0"))
    return {"env_vars": env}


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C ended a Ray Train run; its checkpoints stay, ``--run-name`` resumes it."""

    def __init__(self, run_name: str):
        super().__init__(run_name)
        self.run_name = run_name


def resume_command(argv: list[str], run_name: str) -> str:
    """The command line that resumes an interrupted run: the same one, with ``--run-name``."""
    import shlex
    args, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--run-name", "--run_name"):
            skip = True
            continue
        if a.startswith(("--run-name=", "--run_name=")):
            continue
        args.append(a)
    return shlex.join(["hamr", *args, "--run-name", run_name])


def _note_ctrl_c(trainer) -> list:
    """A list that gets an entry when Ctrl-C arrives while ``trainer.fit()`` runs.

    Inside fit, Ray Train (2.60) installs a SIGINT handler that aborts the run gracefully
    (controller and workers), after which the driver's pending ``ray.get`` leaves fit with
    ``SystemExit(1)`` -- indistinguishable from other exits unless we note the signal. So the
    trainer's handler registration is wrapped: Ray's handler stays, ours runs first. (Another
    Ray version without this method: Ctrl-C still stops the run, only the message differs.)
    """
    import signal
    seen: list = []
    register = getattr(trainer, "_register_sigint_handler", None)
    if register is None:
        return seen

    def wrapped(controller):
        register(controller)
        rays = signal.getsignal(signal.SIGINT)

        def on_sigint(signum, frame):
            seen.append(signum)
            if callable(rays):
                rays(signum, frame)
            else:
                raise KeyboardInterrupt
        signal.signal(signal.SIGINT, on_sigint)

    trainer._register_sigint_handler = wrapped
    return seen


def ray_train_env(local: bool) -> dict:
    """Ray Train's own settings for a run, where the user has not set them: the controller polls
    the workers every 0.5 s instead of 2 s, so the end of a run (several polls) is noticed
    sooner; on one machine there is no preemption to watch, so the watcher actor -- one more
    process started while the workers set up -- is left out. ``benchmarks/ray_overhead.py``
    runs Ray Train's defaults beside these."""
    env = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
    if local:
        env["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
    return {k: v for k, v in env.items() if k not in os.environ}


@contextmanager
def _environ(values: dict):
    """``values`` in ``os.environ`` while the trainer starts its controller (Ray Train hands
    its variables from the driver's environment to the controller and the workers)."""
    os.environ.update(values)
    try:
        yield
    finally:
        for k in values:
            os.environ.pop(k, None)


def _driver_node_only() -> bool:
    """The Ray cluster is this machine alone (e.g. ``ray.init(address="local")``)."""
    import ray
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return len(nodes) == 1 and nodes[0]["NodeID"] == ray.get_runtime_context().get_node_id()


def _in_placement_group() -> bool:
    """True inside a task or actor whose placement group captures its children (a Tune trial)."""
    from ray.util import get_current_placement_group
    return get_current_placement_group() is not None


def _neighbour_gpus(num_workers: int, use_gpu: bool) -> int:
    import ray
    total = int(ray.cluster_resources().get("GPU", 0))
    spare = total - (num_workers if use_gpu else 0)
    return 1 if spare >= 1 else 0


def train_distributed(cfg, *, placement_strategy: str = "PACK", actor_options: dict | None = None,
                      check_consistency: bool = False, faults: list | None = None,
                      torch_threads: int = 1, keep_actors: bool = False,
                      callbacks: list | None = None):
    """Run ``cfg`` with ``cfg.num_workers`` Ray Train workers; returns a ``loop.Result``.

    ``actor_options``: extra Ray options per actor (``{"hardness": {...}, "neighbour": {...}}``,
    e.g. a scheduling strategy). ``check_consistency``: every epoch, gather a digest of every
    rank's parameters and record every rank's hardness updates under the run directory (tests).
    ``faults``: test-only failure injection, see :class:`Instrumented`.
    ``callbacks``: Ray Train ``UserCallback``s for the run (``hamr tune`` passes Tune's
    ``TuneReportCallback``, which forwards every epoch report to the trial).
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ..methods import get_method
    from ..train.loop import Result
    from .actors import NAMESPACE, create_hardness_actor, create_neighbour_actor

    if cfg.num_workers < 1:
        raise ConfigError("train_distributed needs --num-workers >= 1")
    cfg.validate()
    cfg = absolute_paths(cfg)
    method = get_method(cfg.method)
    started = ensure_ray(cfg.address, num_cpus=max(os.cpu_count() or 1, cfg.num_workers + 2))
    from ..train.prepared_setup import prepared_config
    cfg = prepared_config(cfg, use_ray=True)   # raw data: prepared once (Ray Data); workers map it
    name = cfg.run_name or time.strftime("hamr-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]
    storage = _storage_path(cfg)
    new_run = _check_run_meta(storage, name, cfg)
    tag = f"{name}-{uuid.uuid4().hex[:6]}"
    actor_options = actor_options or {}
    env = _worker_env()
    hard = neigh = None
    shard_actors = []
    sharded = cfg.hardness_shards > 1    # h and b by index range over several actors
    t0 = time.time()
    try:
        if sharded:
            from .hardness_shards import create_shard_actors
            shard_actors = create_shard_actors(f"hardness-{tag}", cfg.hardness_shards,
                                               runtime_env=env)
            hard = shard_actors[0]
        else:
            hard = create_hardness_actor(f"hardness-{tag}", runtime_env=env,
                                         **actor_options.get("hardness", {}))
        if method.knn:
            # inside a Tune trial the actor is captured by the trial's placement group, where
            # `hamr tune` reserved one CPU bundle for it (tune.trial_bundles); elsewhere it may
            # take a spare GPU
            gpus = 0 if _in_placement_group() else _neighbour_gpus(cfg.num_workers, cfg.use_gpu)
            neigh = create_neighbour_actor(f"neighbours-{tag}", cfg.to_dict(), num_gpus=gpus,
                                           runtime_env=env, **actor_options.get("neighbour", {}))
            neigh.prepare.remote()   # embeddings + index while the workers start
        loop_config = {
            "cfg": cfg.to_dict(), "namespace": NAMESPACE, "hardness_actor": f"hardness-{tag}",
            "neighbour_actor": f"neighbours-{tag}" if neigh is not None else None,
            "driver_host": socket.gethostname(), "check_consistency": check_consistency,
            "faults": list(faults or []), "torch_threads": torch_threads,
            "run_dir": str(Path(storage) / name) if "://" not in storage else None,
            "new_run": bool(new_run),
        }
        if sharded:
            loop_config.update(hardness_actor=f"hardness-{tag}-0", hardness_shards=[
                f"hardness-{tag}-{j}" for j in range(cfg.hardness_shards)])
        trainer = TorchTrainer(
            worker_main, train_loop_config=loop_config,
            scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                         placement_strategy=placement_strategy),
            run_config=RunConfig(
                name=name, storage_path=storage,
                failure_config=FailureConfig(max_failures=cfg.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=2),
                worker_runtime_env=env, callbacks=list(callbacks or [])))
        log.info("Ray Train run %r: %d worker(s), checkpoints in %s", name, cfg.num_workers,
                 Path(storage) / name if "://" not in storage else f"{storage}/{name}")
        interrupted = _note_ctrl_c(trainer)
        try:
            with _environ(ray_train_env(local=started or _driver_node_only())):
                result = trainer.fit()
        except SystemExit:
            if interrupted:      # Ray's handler aborted the run; ray.get then exits the driver
                raise KeyboardInterrupt from None
            raise
        except Exception as e:   # TrainingFailedError and friends: say what and where
            raise HamrError(f"distributed training failed (run {name!r}, storage {storage}; "
                            f"re-run with --run-name {name} to resume): {e}") from e
        metrics = dict(result.metrics or {})
        if "test" not in metrics:
            raise HamrError(f"run {name!r} ended without final metrics")
        ray_info = metrics.setdefault("ray", {})
        ray_info.update(run_name=name, storage_path=storage,
                        checkpoint=result.checkpoint.path if result.checkpoint else None,
                        driver_wall_time_s=round(time.time() - t0, 2), driver_t0=t0)
        if hard is not None:
            try:
                ray_info["hardness_actor"] = ray.get(hard.info.remote(), timeout=30)
            except Exception:                                  # informative only
                pass
        if neigh is not None:
            try:
                ray_info["neighbour_actor"] = ray.get(neigh.info.remote(), timeout=30)
            except Exception:
                pass
        out = Path(cfg.output_dir)
        _collect_export(result.checkpoint, out)
        return Result(metrics, out, metrics.get("history", []))
    except KeyboardInterrupt:
        # Ctrl-C (before fit, or inside it: see _note_ctrl_c). Rank 0 was killed with the
        # workers before it could close its MLflow run, so the driver marks it KILLED.
        from .. import tracking
        tracking.close_ray_run(cfg, name, "KILLED", "KeyboardInterrupt")
        raise RunInterrupted(name) from None
    finally:
        if not keep_actors:
            for a in (*shard_actors[1:], hard, neigh):
                if a is not None:
                    try:
                        ray.kill(a)
                    except Exception:
                        pass
        if started:
            ray.shutdown()


def _collect_export(checkpoint, out: Path) -> None:
    """Rank 0 wrote the outputs itself when it shares the driver's host; otherwise they came
    back inside the final checkpoint and are copied to ``out`` here."""
    if checkpoint is None:
        return
    with checkpoint.as_directory() as d:
        src = Path(d) / EXPORT_DIR
        if src.is_dir():
            shutil.copytree(src, out, dirs_exist_ok=True)


# --------------------------------------------------------------------------------------------
# worker side
# --------------------------------------------------------------------------------------------
def _digest(arr) -> str:
    a = np.ascontiguousarray(arr)
    return hashlib.sha256(a.tobytes()).hexdigest()[:16]


def _state_digest(tensors: dict | None) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors or {}):
        h.update(k.encode())
        h.update(tensors[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class Instrumented:
    """A HardnessStore wrapper that times steps, digests draws and (tests) injects faults.

    ``faults``: dicts ``{"action": "kill_worker" | "kill_hardness_actor" | "raise", "rank": r,
    "epoch": e, "step": s, "once": path}``: after the s-th hardness update of epoch e on rank r,
    SIGKILL this worker process / kill the hardness actor (Ray restarts it, empty) / raise. A
    fault fires once per ``once`` marker file, so the restarted attempt runs clean, and only
    after Ray Train has committed every checkpoint reported so far.
    """

    def __init__(self, store, rank: int = 0, faults: list | None = None, actor=None,
                 record: bool = False):
        self.store, self.rank, self.actor = store, rank, actor
        self.faults = [f for f in (faults or []) if int(f.get("rank", 0)) == rank]
        self.epoch, self.step = -1, 0
        self.times: list[float] = []
        self.draws: dict[int, str] = {}
        self.record = record
        self.log: list[tuple[int, int, np.ndarray, np.ndarray]] = []
        self.first_update: float | None = None   # wall clock of the run's first step

    # HardnessStore, delegated
    def hardness(self):
        return self.store.hardness()

    def boost(self):
        return self.store.boost()

    def set_boost(self, b):
        self.store.set_boost(b)

    def probabilities(self, tau, lam, eps=1e-6, prior=1.0):
        return self.store.probabilities(tau, lam, eps, prior)

    def state_dict(self):
        return self.store.state_dict()

    def stats(self, tau, lam, prior=1.0):
        return self.store.stats(tau, lam, prior)

    def end_epoch(self, epoch=None):
        self.store.end_epoch(epoch)

    def load_state_dict(self, d):
        self.store.load_state_dict(d)

    def draw(self, epoch, seed, ratio, tau, lam, uniform=False, prior=1.0):
        d = self.store.draw(epoch, seed, ratio, tau, lam, uniform=uniform, prior=prior)
        self.epoch, self.step = int(epoch), 0
        self.draws[int(epoch)] = _digest(np.asarray(d, dtype=np.int64))
        self.times = [time.perf_counter()]
        return d

    def update(self, indices, w_post):
        self.store.update(indices, w_post)
        self.times.append(time.perf_counter())
        if self.first_update is None:
            self.first_update = time.time()
        if self.record:
            self.log.append((self.epoch, self.step, np.array(indices, dtype=np.int64),
                             np.array(w_post, dtype=np.float32)))
        self.step += 1
        for f in self.faults:
            if int(f["epoch"]) == self.epoch and int(f["step"]) == self.step:
                self._fire(f)

    def step_times(self) -> list[float]:
        """Seconds between successive updates of the current epoch (the first counted from
        the draw): one training step each, hardness submission included."""
        return list(np.diff(self.times)) if len(self.times) > 1 else []

    def _fire(self, f: dict) -> None:
        marker = f.get("once")
        if marker:
            if os.path.exists(marker):
                return
            Path(marker).write_text(f"{f['action']} at epoch {self.epoch} step {self.step}\n")
        # Ray Train registers a reported checkpoint when its controller next polls the
        # workers; a crash just after a report can lose it (the run then resumes from the
        # checkpoint before). Tests want a known resume point, so wait for the commit.
        import ray.train
        ray.train.get_all_reported_checkpoints(
            consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED, timeout_s=120)
        log.warning("fault injection: %s (rank %d, epoch %d, step %d)", f["action"], self.rank,
                    self.epoch, self.step)
        if f["action"] == "kill_worker":
            os.kill(os.getpid(), signal.SIGKILL)
        elif f["action"] == "kill_hardness_actor":
            import ray
            ray.kill(self.actor, no_restart=False)
        elif f["action"] == "raise":
            raise RuntimeError(f"injected failure at epoch {self.epoch} step {self.step}")
        else:
            raise ValueError(f"unknown fault action {f['action']!r}")


class Reporter:
    """``Runtime.report``: one ``ray.train.report`` per epoch, a checkpoint every ``every``.

    The checkpoint is the loop's ``state()`` with the per-rank parts (meta-batch stream,
    torch RNG) gathered from all ranks into lists indexed by rank, so that a resumed rank r
    continues exactly its own streams. The last epoch's state is not reported at once: it goes
    with the final report (test metrics, best model), which a resume of a finished run reuses.
    """

    def __init__(self, cfg, rank: int, world: int, store: Instrumented, *, every: int = 1,
                 check: bool = False, resume_raw: dict | None = None):
        self.cfg, self.rank, self.world, self.store = cfg, rank, world, store
        self.every, self.check = max(1, every), check
        self.resume_raw = resume_raw
        self.last_dir: str | None = None
        self.epochs: list[dict] = []

    def _save(self, state: dict) -> str:
        import torch
        d = tempfile.mkdtemp(prefix="hamr-ckpt-")
        torch.save(state, Path(d) / STATE_FILE)
        return d

    def _drop(self, d: str | None) -> None:
        if d and os.path.isdir(d):
            shutil.rmtree(d, ignore_errors=True)

    def __call__(self, rec: dict, state_thunk) -> None:
        import ray.train
        from .collectives import all_gather_object
        epoch = int(rec["epoch"]) - 1      # records count epochs from 1, the loop from 0
        if self.cfg.max_steps > 0:         # --max-steps decides the epochs (loop.run_length)
            last = rec.get("global_step", 0) >= self.cfg.max_steps
        else:
            last = epoch + 1 >= self.cfg.num_train_epochs
        need_state = last or (epoch + 1) % self.every == 0
        st = state_thunk() if (need_state or self.check) else None
        steps = self.store.step_times()
        mine = {"draw": self.store.draws.get(epoch),
                "step_time_s": float(np.median(steps)) if steps else None}
        if st is not None:
            mine["meta_batches"], mine["torch_rng"] = st["meta_batches"], st["torch_rng"]
            if self.check:
                mine["params"] = _state_digest(st["model"])
                mine["wnet"] = _state_digest(st["wnet"])
                # the class-weight feedback, pooled over the ranks' meta shards
                mine["class_weight"] = rec.get("class_weight")
        every_rank = all_gather_object(mine)
        summary = {"epoch": epoch + 1,
                   "draw_digests": [r["draw"] for r in every_rank],
                   "step_time_s": [r["step_time_s"] for r in every_rank]}
        if self.check:
            summary["param_digests"] = [r["params"] for r in every_rank]
            summary["wnet_digests"] = [r["wnet"] for r in every_rank]
            summary["class_weights"] = [r["class_weight"] for r in every_rank]
        self.epochs.append(summary)
        metrics = {**rec, "world_size": self.world,
                   "step_time_s": summary["step_time_s"][0]}
        ckpt_dir = None
        if need_state and self.rank == 0:
            st = dict(st, meta_batches=[r["meta_batches"] for r in every_rank],
                      torch_rng=[r["torch_rng"] for r in every_rank], world_size=self.world,
                      cfg=self.cfg.to_dict())
            ckpt_dir = self._save(st)
        if self.rank == 0 and metrics["step_time_s"] is not None:
            log.debug("epoch %d: median step %.1f ms on rank 0", epoch + 1,
                      1000 * metrics["step_time_s"])
        if ckpt_dir is not None and not last:
            from ray.train import Checkpoint
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(ckpt_dir))
            self._drop(ckpt_dir)
        else:
            ray.train.report(metrics)
            if ckpt_dir is not None:
                self._drop(self.last_dir)
                self.last_dir = ckpt_dir

    def final(self, metrics: dict, output_dir: Path, driver_host: str, info: dict) -> None:
        """The last report: test metrics + a checkpoint of the last epoch's state (+ the
        exported model when this rank 0 does not share the driver's file system)."""
        import ray.train
        from ray.train import Checkpoint

        from .collectives import all_gather_object
        workers = all_gather_object(info)
        if self.rank != 0:
            ray.train.report({})
            return
        d = self.last_dir
        if d is None:                       # resumed a finished run: no epoch ran here
            d = self._save(self.resume_raw)
        if driver_host != socket.gethostname() and Path(output_dir).is_dir():
            shutil.copytree(output_dir, Path(d) / EXPORT_DIR, dirs_exist_ok=True)
        out = dict(metrics)
        out["ray"] = {"world_size": self.world, "workers": workers, "epochs": self.epochs,
                      # the last epoch of the checkpoint, counted from 1 like all a user reads
                      "resumed_from_epoch": _plus_one((self.resume_raw or {}).get("epoch"))}
        ray.train.report(out, checkpoint=Checkpoint.from_directory(d))
        self._drop(d)
        self.last_dir = None


def _plus_one(epoch):
    return None if epoch is None else int(epoch) + 1


def load_state(checkpoint) -> dict | None:
    """The loop state inside a Ray checkpoint (None without one)."""
    if checkpoint is None:
        return None
    from ..checkpoint import load_state_file
    with checkpoint.as_directory() as d:
        p = Path(d) / STATE_FILE
        if not p.is_file():
            return None
        return load_state_file(p)     # weights only: a checkpoint cannot run code


def for_rank(state: dict | None, rank: int, world: int) -> dict | None:
    """The checkpoint as rank ``rank`` resumes it: its own meta-batch stream and RNG."""
    if state is None:
        return None
    st = dict(state)
    if st.get("world_size", world) != world:
        log.warning("resuming a %s-worker checkpoint with %d workers: per-rank streams are "
                    "reassigned, results will differ from an uninterrupted run",
                    st.get("world_size"), world)
    for key in ("meta_batches", "torch_rng"):
        v = st.get(key)
        if isinstance(v, list):
            st[key] = v[rank] if rank < len(v) else v[rank % len(v)]
    return st


def _say_how_it_starts(resume_raw: dict | None, new_run: bool, sessions: int) -> None:
    """Rank 0's one line about where this attempt starts. A checkpoint in a run this driver
    started, or a second session of the run's hardness actor, means Ray Train replaced a lost
    worker (or actor) and restarted the group; a checkpoint on a first attempt of a re-run under
    the same name is a resume the user asked for."""
    restarted = sessions > 1 or (new_run and resume_raw is not None)
    if restarted and resume_raw is not None:
        log.warning("worker lost, resuming from the checkpoint of epoch %d",
                    resume_raw["epoch"] + 1)
    elif restarted:
        log.warning("worker lost before the first checkpoint, starting again from epoch 1")
    elif resume_raw is not None:
        log.info("resuming from the checkpoint of epoch %d", resume_raw["epoch"] + 1)


def worker_main(config: dict) -> None:
    """``train_loop_per_worker``: one rank of the run."""
    t_start = time.time()      # start-up timeline (benchmarks/ray_overhead.py): worker entered
    import ray
    import ray.train
    import torch

    from ..config import TrainConfig
    from ..train.loop import Runtime, hardness_options, train
    from ..train.setup import build
    from .actors import HardnessClient
    from .collectives import all_reduce_mean, barrier, broadcast_object
    from .raylogs import configure_process_logging

    torch.set_num_threads(int(config.get("torch_threads", 1)))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    configure_process_logging()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cfg = TrainConfig(**config["cfg"])
    cfg = dataclasses.replace(cfg, progress=False)
    resume_raw = load_state(ray.train.get_checkpoint())

    # CPU workers stay on the CPU even on a GPU node; GPU workers use the device Ray gave them
    if cfg.use_gpu:
        import ray.train.torch as ray_torch
        device = ray_torch.get_device()
    else:
        device = torch.device("cpu")
    setup = build(cfg, device=device)
    t_setup = time.time()
    n = len(setup.train.batches)
    ns = config["namespace"]
    hard = ray.get_actor(config["hardness_actor"], namespace=ns)
    neigh = ray.get_actor(config["neighbour_actor"], namespace=ns) if config.get(
        "neighbour_actor") else None

    target = hard          # what the neighbour actor reads h from and writes b to
    if config.get("hardness_shards"):   # h by index range (hardness_shards.py)
        from ..train.loop import hardness_options as options
        from .hardness_shards import worker_session
        client, target = worker_session(config["hardness_shards"], n, setup.cfg.gamma, world,
                                        rank, resume_raw["hardness"] if resume_raw else None,
                                        options(setup), cfg.hardness_batch_steps)
        gen = client.gens[0]
        if rank == 0:
            _say_how_it_starts(resume_raw, config.get("new_run", False),
                               ray.get(hard.info.remote())["sessions"])
    else:
        gen = None
        if rank == 0:   # a new session: h and b from the checkpoint, or fresh
            gen = ray.get(hard.begin.remote(n, setup.cfg.gamma, world,
                                            resume_raw["hardness"] if resume_raw else None,
                                            hardness_options(setup)))
            _say_how_it_starts(resume_raw, config.get("new_run", False),
                               ray.get(hard.info.remote())["sessions"])
        gen = broadcast_object(gen)
        client = HardnessClient(hard, gen, rank, batch_steps=cfg.hardness_batch_steps)
    info = {"rank": rank, "pid": os.getpid(), "host": socket.gethostname(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "t_worker_start": t_start, "t_setup_done": t_setup}
    hard.register.remote(gen, rank, info)
    store = Instrumented(client, rank, config.get("faults"), actor=hard,
                         record=bool(config.get("check_consistency")))

    boost = None
    if neigh is not None:
        def boost(_h):
            # rank 0 has the neighbour actor pull h and push b; the broadcast is the barrier
            # after which every rank reads the same b from the hardness actor
            client.flush()   # batched updates out first: the neighbour actor waits for them
            done = ray.get(neigh.refresh.remote(target, gen, client.seq)) if rank == 0 else None
            broadcast_object(done)
            return client.fetch_fresh_boost()

    reporter = Reporter(cfg, rank, world, store, every=cfg.checkpoint_every,
                        check=bool(config.get("check_consistency")), resume_raw=resume_raw)
    rt = Runtime(rank=rank, world_size=world, all_reduce_mean=all_reduce_mean, hardness=store,
                 boost=boost, report=reporter, resume=for_rank(resume_raw, rank, world),
                 progress=False, device=device)
    res = train(cfg, rt, setup=setup)
    client.flush()
    if store.record and config.get("run_dir"):
        _write_update_log(Path(config["run_dir"]), rank, store.log)
    barrier()
    info["t_train_done"] = time.time()
    info["t_first_update"] = store.first_update
    reporter.final(res.metrics, res.output_dir, config["driver_host"], info)


def _write_update_log(run_dir: Path, rank: int, entries) -> None:
    """Every hardness update this rank sent, as (epoch, step, indices, w_post) tuples
    (consistency checks replay them); one file per worker process."""
    import pickle
    d = run_dir / "update_logs"
    d.mkdir(parents=True, exist_ok=True)
    with open(d / f"rank{rank}-{os.getpid()}.pkl", "wb") as f:
        pickle.dump(entries, f)
