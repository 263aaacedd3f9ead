"""``hamr tune``: hyper-parameter sweeps of HAMR with Ray Tune (objective: dev macro-F1).

Each trial is one training run: with ``--num-workers N >= 1`` the Ray Train run of
``hamr_dist.distributed`` (a ``TorchTrainer`` inside a Tune function trainable; Tune's
``TuneReportCallback`` forwards every epoch's report to the trial), with ``--num-workers 0`` the
in-process loop. Every epoch reports ``dev_macro_f1``, so ASHA (the default scheduler) stops weak
trials early. The best trial is the best (trial, epoch) by dev macro-F1; its full configuration
is written to ``<output_dir>/best_config.yaml``, which ``hamr train --config`` retrains directly.

Default search space (spec sections 1-2; the authors' values are inside every range):

- ``tau``   uniform [0.3, 1.0]         sampling temperature
- ``lam``   uniform [0, 1]             neighbour boost lambda
- ``gamma`` in [0.9, 0.999], log-uniform in 1 - gamma (hardness EMA decay)
- ``k``     choice {5, 10, 20}         neighbours per hard sample

``--space file.yaml`` edits it; keys are ``TrainConfig`` fields, values one of::

    tau: {uniform: [0.5, 0.9]}
    learning_rate: {loguniform: [1.0e-4, 1.0e-2]}
    gamma: {one_minus_loguniform: [0.9, 0.999]}   # log-uniform in 1 - x
    k: {choice: [5, 10]}                          # or just [5, 10]
    meta_scope: {grid: [head, top2]}              # every value, num_samples times
    k_stop: {randint: [1, 5]}                     # integers in [1, 5)
    lam: null                                     # drop from the space (use the base config)
    hard_ratio: 0.1                               # fixed for every trial

MLflow (when on): one parent run for the sweep, and every trial's run nested under it (tag
``mlflow.parentRunId``) in the same store: ``--mlflow-uri``, ``$MLFLOW_TRACKING_URI`` or
``sqlite:///<output_dir>/mlflow.db``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from .config import FIELDS, TrainConfig
from .errors import ConfigError, HamrError

log = logging.getLogger("hamr_dist")

__all__ = ["DEFAULT_SPACE", "load_space", "param_space", "decode", "sweep", "SweepResult",
           "add_tune_parser", "METRIC"]

METRIC = "dev_macro_f1"
ONE_MINUS = "__one_minus"      # suffix of a sampled 1 - x
BASE_KEY = "__hamr_base__"
REGISTRY_KEY = "__hamr_pg_registry__"
DEFAULT_SPACE = {
    "tau": {"uniform": [0.3, 1.0]},
    "lam": {"uniform": [0.0, 1.0]},
    "gamma": {"one_minus_loguniform": [0.9, 0.999]},
    "k": {"choice": [5, 10, 20]},
}
KINDS = ("uniform", "loguniform", "one_minus_loguniform", "choice", "grid", "randint")


# --------------------------------------------------------------------------------------------
# search space
# --------------------------------------------------------------------------------------------
def load_space(path: str | Path | None = None, base: dict | None = None) -> dict:
    """The default space edited by a YAML file (see the module doc); validated."""
    space = dict(DEFAULT_SPACE if base is None else base)
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"search space file {p} not found")
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"search space file {p} is not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"search space file {p} must hold a mapping of option: range")
        for key, spec in raw.items():
            name = str(key).replace("-", "_")
            if spec is None:
                space.pop(name, None)
            else:
                space[name] = spec
    for name, spec in space.items():
        _check(name, spec)
    return space


def _check(name: str, spec) -> None:
    if name not in FIELDS:
        raise ConfigError(f"search space: unknown option {name!r} (see hamr train --help)")
    if name in ("output_dir", "num_workers", "address", "run_name", "storage_path",
                "mlflow", "mlflow_uri", "mlflow_parent_run_id", "experiment_name"):
        raise ConfigError(f"search space: {name!r} is set per sweep, not searched")
    if isinstance(spec, dict):
        if len(spec) != 1 or next(iter(spec)) not in KINDS:
            raise ConfigError(f"search space: {name}: use one of {', '.join(KINDS)} "
                              f"(e.g. {name}: {{uniform: [0, 1]}}), got {spec!r}")
        kind, args = next(iter(spec.items()))
        if kind in ("uniform", "loguniform", "one_minus_loguniform", "randint"):
            if not (isinstance(args, (list, tuple)) and len(args) == 2
                    and all(isinstance(a, (int, float)) for a in args) and args[0] < args[1]):
                raise ConfigError(f"search space: {name}: {kind} needs [low, high] with low < high")
            if kind == "loguniform" and args[0] <= 0:
                raise ConfigError(f"search space: {name}: loguniform needs low > 0")
            if kind == "one_minus_loguniform" and not (args[1] < 1):
                raise ConfigError(f"search space: {name}: one_minus_loguniform needs high < 1")
        elif not (isinstance(args, (list, tuple)) and args):
            raise ConfigError(f"search space: {name}: {kind} needs a non-empty list")


def param_space(space: dict) -> dict:
    """Ray Tune domains for a (validated) space."""
    from ray import tune
    out = {}
    for name, spec in space.items():
        if isinstance(spec, list):
            spec = {"choice": spec}
        if not isinstance(spec, dict):
            out[name] = spec
            continue
        kind, a = next(iter(spec.items()))
        if kind == "uniform":
            out[name] = tune.uniform(float(a[0]), float(a[1]))
        elif kind == "loguniform":
            out[name] = tune.loguniform(float(a[0]), float(a[1]))
        elif kind == "one_minus_loguniform":
            out[name + ONE_MINUS] = tune.loguniform(1.0 - float(a[1]), 1.0 - float(a[0]))
        elif kind == "choice":
            out[name] = tune.choice(list(a))
        elif kind == "grid":
            out[name] = tune.grid_search(list(a))
        elif kind == "randint":
            out[name] = tune.randint(int(a[0]), int(a[1]))
    return out


def decode(trial_config: dict) -> dict:
    """A trial's sampled values as ``TrainConfig`` overrides."""
    out = {}
    for k, v in trial_config.items():
        if k in (BASE_KEY, REGISTRY_KEY):
            continue
        if k.endswith(ONE_MINUS):
            k, v = k[: -len(ONE_MINUS)], 1.0 - float(v)
        if hasattr(v, "item"):
            v = v.item()
        out[k] = v
    return out


# --------------------------------------------------------------------------------------------
# the trial
# --------------------------------------------------------------------------------------------
def metric_name(name) -> str:
    """A Tune/TensorBoard-legal metric name: class names such as "very positive" become
    ``very_positive`` (TensorBoard refuses names with spaces, one warning per name)."""
    return re.sub(r"[^A-Za-z0-9_.\-/]", "_", str(name))


def _flat(rec: dict) -> dict:
    out = {metric_name(k): v for k, v in rec.items() if k != "dev_per_class_f1"}
    for c, f in (rec.get("dev_per_class_f1") or {}).items():
        out[metric_name(f"dev_f1_{c}")] = f
    return out


def _last_epoch(rec: dict, cfg: TrainConfig) -> bool:
    """Whether ``rec`` (an epoch record; epochs count from 1) is the run's last epoch."""
    if getattr(cfg, "max_steps", -1) > 0:
        return rec.get("global_step", 0) >= cfg.max_steps
    return int(rec["epoch"]) >= cfg.num_train_epochs


# Why a trial reports its last epoch only after the run has finished: ASHA stops a trial at
# max_t, i.e. on its last epoch report, and Tune then ends the trial's process. A report sent
# before the test evaluation, the outputs and MLflow's FINISHED would cut all three off (every
# trial's MLflow run ended FAILED with "SystemExit: 0"), and the trial's thread would unwind its
# model and optimizer while the process exits (Python finalisation ends a thread that frees a
# tensor: a native SIGABRT crash dump through THPVariable_dealloc / pthread_exit).
def _epoch_callback(cfg: TrainConfig):
    """Tune's Train->Tune reporter, forwarding epoch reports only (the final report of a run,
    with test metrics, has no ``dev_macro_f1`` and would count as one more iteration); the last
    epoch's report is held until the final report (see above)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class EpochReports(TuneReportCallback):
        held = None

        def after_report(self, run_context, metrics, checkpoint):
            rec = (metrics or [None])[0] or {}
            if METRIC in rec:
                if _last_epoch(rec, cfg):
                    self.held = _flat(rec)
                else:
                    super().after_report(run_context, [_flat(rec)], None)
            elif "test" in rec and self.held is not None:    # the run has finished
                held, self.held = self.held, None
                super().after_report(run_context, [held], None)

    return EpochReports()


def _in_process_reporter(cfg: TrainConfig):
    """``Runtime.report`` of an in-process trial: every epoch to Tune but the last, which
    :func:`run_trial` reports after the run (see above). Tune stops a trial by raising
    SystemExit out of ``tune.report``; that becomes :class:`tracking.StoppedEarly`, which the
    loop's tracker records as an early stop, not a failure."""
    from ray import tune

    from .tracking import StoppedEarly
    held = {}

    def report(rec, _state):
        if _last_epoch(rec, cfg):
            held["last"] = _flat(rec)
            return
        try:
            tune.report(_flat(rec))
        except SystemExit:
            raise StoppedEarly(int(rec["epoch"])) from None

    return report, held


def _wait_at_exit(thread, timeout_s: float = 60.0) -> None:
    """Let a stopped trial's thread finish unwinding before its process finalises (it ends
    within a moment of Tune's stop; see above)."""
    import atexit

    def wait():
        if thread.is_alive():
            thread.join(timeout_s)

    atexit.register(wait)


def run_trial(config: dict) -> None:
    """Tune function trainable: one training run with the trial's values."""
    import gc
    import threading

    from ray import tune

    from .distributed.raylogs import configure_process_logging
    from .tracking import StoppedEarly
    configure_process_logging()
    ctx = tune.get_context()
    base = dict(config[BASE_KEY])
    values = decode(config)
    trial_id = ctx.get_trial_id()
    out = Path(base["output_dir"]) / "trials" / trial_id
    cfg = TrainConfig(**{**base, **values, "output_dir": str(out), "progress": False,
                         "run_name": f"{base.get('run_name') or 'hamr-tune'}-{trial_id}",
                         "storage_path": None})
    cfg.validate()
    held = {}
    if cfg.num_workers > 0:
        from .distributed.trainer import train_distributed
        callbacks = [_epoch_callback(cfg)]
        if config.get(REGISTRY_KEY):
            callbacks.append(_pg_recorder(config[REGISTRY_KEY], trial_id))
        res = train_distributed(cfg, callbacks=callbacks)
    else:
        from .train.loop import Runtime, train
        _wait_at_exit(threading.current_thread())
        report, held = _in_process_reporter(cfg)
        try:
            res = train(cfg, Runtime(progress=False, report=report))
        except StoppedEarly:
            return
    m = res.metrics
    (out / "trial.json").write_text(json.dumps(
        {"trial_id": trial_id, "values": values, "best_epoch": m.get("best_epoch"),
         "dev": m.get("dev"), "test": m.get("test")}, indent=2, default=str))
    if "last" in held:
        del res
        gc.collect()               # the model and optimizer go now, not while the process exits
        try:
            tune.report(held["last"])
        except SystemExit:         # Tune ends the trial at its last epoch (ASHA's max_t)
            return


# --------------------------------------------------------------------------------------------
# placement groups of stopped trials
# --------------------------------------------------------------------------------------------
# A Ray Train run's placement group belongs to the job, not to the controller actor that
# created it. When Tune ends a trial (ASHA stop, or right after its last report) its process is
# killed, and with it the Train controller -- possibly before the controller removed its
# placement group. Ray 2.60 then relies on a detached PlacementGroupCleaner that asks the state
# API whether the controller is alive; that needs the dashboard and fails where several Ray
# instances share a machine, and the group's CPUs/GPUs stay reserved for the rest of the sweep
# (later trials wait for workers forever). So every trial records its Train controller and
# placement groups in a registry actor of the sweep, and the sweep driver releases them when the
# trial ends: the controller first (Tune calls `on_trial_complete` while the trial still runs;
# a controller that saw its group removed would start a new one, with a group nobody releases),
# then the groups. A group recorded after its trial was released is removed on arrival.
class PlacementGroupRegistry:
    """Actor body: trial id -> the Train controllers and placement groups of its runs."""

    def __init__(self):
        self.groups: dict[str, list] = {}
        self.controllers: dict[str, list] = {}
        self.released: set[str] = set()

    def add(self, trial_id: str, pg) -> None:
        if trial_id in self.released:
            from ray.util import remove_placement_group
            remove_placement_group(pg)
            return
        self.groups.setdefault(trial_id, []).append(pg)

    def add_controller(self, trial_id: str, controller) -> None:
        if trial_id not in self.released:
            self.controllers.setdefault(trial_id, []).append(controller)

    def pop(self, trial_id: str) -> tuple[list, list]:
        self.released.add(trial_id)
        return self.controllers.pop(trial_id, []), self.groups.pop(trial_id, [])


def _pg_recorder(registry_name: str, trial_id: str):
    """A Ray Train worker-group callback (runs in the controller) that records the controller
    and each worker group's placement group in the sweep's registry."""
    from ray.train.v2._internal.execution.callback import WorkerGroupCallback

    class RecordPlacementGroups(WorkerGroupCallback):
        def _registry(self):
            import ray
            return ray.get_actor(registry_name, namespace=REGISTRY_NAMESPACE)

        def before_worker_group_start(self, worker_group_context):
            import ray
            try:
                me = ray.get_runtime_context().current_actor
                ray.get(self._registry().add_controller.remote(trial_id, me), timeout=30)
            except Exception as e:   # noqa: BLE001 -- bookkeeping must not fail the trial
                log.warning("could not record the Train controller of trial %s: %s", trial_id, e)

        def after_worker_group_start(self, worker_group):
            import ray
            try:
                pg = worker_group.get_worker_group_state().placement_group_handle.placement_group
                ray.get(self._registry().add.remote(trial_id, pg), timeout=30)
            except Exception as e:   # noqa: BLE001 -- bookkeeping must not fail the trial
                log.warning("could not record the placement group of trial %s: %s", trial_id, e)

    return RecordPlacementGroups()


REGISTRY_NAMESPACE = "hamr_dist_tune"


def _release_callback(registry):
    """Tune callback (sweep driver): end a finished trial's Train controller, then remove its
    leftover placement groups."""
    import ray
    from ray import tune
    from ray.util import placement_group_table, remove_placement_group

    class ReleaseTrialPlacementGroups(tune.Callback):
        released = 0

        def _release(self, trial):
            try:
                controllers, groups = ray.get(registry.pop.remote(trial.trial_id), timeout=30)
                for c in controllers:
                    ray.kill(c, no_restart=True)
                table = placement_group_table()
                for pg in groups:
                    if table.get(pg.id.hex(), {}).get("state") not in (None, "REMOVED"):
                        remove_placement_group(pg)
                        type(self).released += 1
            except Exception as e:   # noqa: BLE001
                log.warning("could not release the placement groups of trial %s: %s",
                            trial.trial_id, e)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._release(trial)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._release(trial)

    return ReleaseTrialPlacementGroups()


# --------------------------------------------------------------------------------------------
# what the user sees, and the trials' MLflow runs
# --------------------------------------------------------------------------------------------
def _values_text(values: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in values.items())


def _progress_callback(cfg: TrainConfig, num_samples: int):
    """Tune callback (sweep driver): one plain line per trial start, epoch and end, and the
    table of all trials at the end (:meth:`table`)."""
    from ray import tune
    epochs = cfg.num_train_epochs

    class TrialProgress(tune.Callback):
        def __init__(self):
            self.index: dict[str, int] = {}
            self.best = None

        def _name(self, trial) -> str:
            i = self.index.setdefault(trial.trial_id, len(self.index) + 1)
            return f"trial {i}/{num_samples} ({trial.trial_id})"

        def on_trial_start(self, iteration, trials, trial, **info):
            log.info("%s started: %s", self._name(trial), _values_text(decode(trial.config)))

        def on_trial_result(self, iteration, trials, trial, result, **info):
            f = result.get(METRIC)
            if f is None:
                return
            self.best = f if self.best is None else max(self.best, f)
            log.info("%s epoch %s/%d: dev macro-F1 %.4f (best of the sweep %.4f)",
                     self._name(trial), result.get("epoch", result.get("training_iteration")),
                     epochs, f, self.best)

        def on_trial_complete(self, iteration, trials, trial, **info):
            done = (trial.last_result or {}).get("training_iteration", 0)
            if done < epochs:
                log.info("%s stopped early by ASHA after epoch %d", self._name(trial), done)
            else:
                log.info("%s finished", self._name(trial))

        def on_trial_error(self, iteration, trials, trial, **info):
            first = (str(getattr(trial, "error_message", "") or "")).strip().splitlines()
            log.warning("%s failed%s", self._name(trial), f": {first[-1]}" if first else "")

        def table(self, grid) -> list[dict]:
            """One row per trial: values, epochs run, best dev macro-F1, status; printed."""
            rows = []
            for r in grid:
                df = r.metrics_dataframe
                have = df is not None and METRIC in df
                n = int(df["training_iteration"].max()) if have else 0
                rows.append({
                    "trial": (r.metrics or {}).get("trial_id") or Path(str(r.path)).name,
                    "values": decode(r.config), "epochs": n,
                    "best_dev_macro_f1": float(df[METRIC].max()) if have else None,
                    "status": "failed" if r.error else ("stopped early" if n < epochs
                                                       else "finished")})
            rows.sort(key=lambda t: -(t["best_dev_macro_f1"] or -1))
            lines = [f"{'trial':<12} {'dev F1':>7} {'epochs':>6}  {'status':<13} values"]
            for t in rows:
                f = f"{t['best_dev_macro_f1']:.4f}" if t["best_dev_macro_f1"] is not None else "-"
                lines.append(f"{t['trial']:<12} {f:>7} {t['epochs']:>6}  {t['status']:<13} "
                             f"{_values_text(t['values'])}")
            log.info("trials, best first:\n%s", "\n".join(lines))
            return rows

    return TrialProgress()


def _settle_callback(cfg: TrainConfig, uri: str, parent_run_id: str):
    """Tune callback (sweep driver): when a trial ends, close its MLflow run if the trial's
    process could not (Tune ends the process of a trial that ASHA stops; a Ray Train trial's
    rank 0 dies with it): FINISHED, with ``hamr.stopped_early`` = the last epoch when it
    stopped before the end; FAILED for a trial that errored. Runs already closed are left."""
    from ray import tune

    from .tracking import STOPPED_TAG, settle_runs
    epochs = cfg.num_train_epochs

    class SettleTrialRuns(tune.Callback):
        def _settle(self, trial, status, tags):
            run_name = f"{cfg.run_name or 'hamr-tune'}-{trial.trial_id}"
            settle_runs(uri, cfg.experiment_name,
                        f"tags.`mlflow.parentRunId` = '{parent_run_id}' and "
                        f"tags.`mlflow.runName` = '{run_name}'", status, tags)

        def on_trial_complete(self, iteration, trials, trial, **info):
            done = (trial.last_result or {}).get("training_iteration", 0)
            self._settle(trial, "FINISHED", {STOPPED_TAG: done} if done < epochs else {})

        def on_trial_error(self, iteration, trials, trial, **info):
            self._settle(trial, "FAILED", {"hamr.error": "the trial failed (see the sweep's "
                                           "output)"})

    return SettleTrialRuns()


# --------------------------------------------------------------------------------------------
# the sweep
# --------------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    best_values: dict           # the searched values of the best trial
    best_config: TrainConfig    # base config + best values (output_dir: <output_dir>/best)
    best_dev_macro_f1: float
    best_epoch: int | None
    best_config_path: Path
    results: object             # ray.tune.ResultGrid
    mlflow_run_id: str | None = None
    trials: list = dataclasses.field(default_factory=list)   # one row per trial (best.json)


def _parent_run(cfg: TrainConfig, space: dict, num_samples: int, scheduler: str):
    """The sweep's MLflow parent run (or None), and the URI trials must log to."""
    from . import tracking
    if not tracking.enabled(cfg):
        return None, None
    uri = tracking.tracking_uri(cfg)
    t = tracking.Tracker(dataclasses.replace(cfg, run_name=cfg.run_name or "hamr-tune"), uri=uri)

    def open_parent():
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient
        t.client = c = MlflowClient(tracking_uri=uri)
        if uri.startswith("sqlite:///"):
            Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        t.experiment_id = t._experiment(cfg.experiment_name or "hamr")
        run = c.create_run(t.experiment_id, run_name=cfg.run_name or "hamr-tune",
                           tags={"hamr.kind": "sweep", "hamr.method": cfg.method})
        t.run_id = run.info.run_id
        params = [Param("sweep.num_samples", str(num_samples)),
                  Param("sweep.scheduler", scheduler),
                  Param("sweep.space", json.dumps(space)[:6000])]
        params += [Param(k, str(v)[:6000]) for k, v in cfg.to_dict().items()]
        c.log_batch(t.run_id, params=params)

    t._guard("opening the sweep's parent run", open_parent, probe=True)
    return (t if t.active and t.run_id else None), uri


# options holding a local path: trials run in other processes (and directories), and
# best_config.yaml must retrain from anywhere, so they are stored resolved
PATH_OPTIONS = ("data", "model", "embedder", "cache_dir", "storage_path", "output_dir")


def resolved_paths(d: dict) -> dict:
    """``d`` with every local path option made absolute (hub names and URIs are left alone)."""
    out = dict(d)
    for k in PATH_OPTIONS:
        v = out.get(k)
        if not v or "://" in str(v):
            continue
        p = Path(v).expanduser()
        if k in ("output_dir", "cache_dir", "storage_path") or p.exists():
            out[k] = str(p.resolve())
    return out


# Epoch (counted from 1) whose dev score is the first to depend on an option. At epoch 1 the
# hardness h is still uniform, so the draw is the same whatever tau, gamma or lambda, and the
# neighbour boost first acts at epoch knn_build_freq + 1 (loop: no boost before h has moved).
# Options not listed act from the first step.
def _first_effective_epoch(name: str, cfg: TrainConfig) -> int:
    if name in ("tau", "gamma", "hardness_rule", "hardness_epoch_gamma"):
        return 2
    if name in ("lam", "k", "hard_ratio", "knn_build_freq", "knn_index", "knn_nlist",
                "knn_nprobe", "knn_pq_m", "knn_rerank", "num_index_shards"):
        return cfg.knn_build_freq + 1
    return 1


def default_grace_period(cfg: TrainConfig, space: dict) -> int:
    """ASHA's grace period when none is given: the first epoch at which every searched option
    has acted on dev macro-F1 (so the first rung does not compare trials that are still
    identical), at most the number of epochs."""
    searched = [k for k, v in space.items() if isinstance(v, (dict, list))]
    first = max((_first_effective_epoch(k, cfg) for k in searched), default=1)
    return max(1, min(first, cfg.num_train_epochs))


def trial_bundles(cfg: TrainConfig, trial_cpus: float | None = None) -> list[dict]:
    """The resources of one trial, as placement-group bundles: the trial's own process, and for
    a Ray Train trial of a method with neighbours one CPU for the run's neighbour actor (created
    inside the trial, so Ray places it in the trial's group; reserving it here keeps Tune's count
    of concurrent trials honest). The Train workers get a group of their own from Ray Train."""
    from .methods import get_method
    own = trial_cpus if trial_cpus is not None else (0.01 if cfg.num_workers > 0 else 1)
    bundles = [{"CPU": own}]
    if cfg.num_workers > 0 and get_method(cfg.method).knn:
        bundles.append({"CPU": 1})
    return bundles


def sweep(cfg: TrainConfig, space: dict | None = None, *, num_samples: int = 8,
          scheduler: str = "asha", grace_period: int | None = None, reduction_factor: int = 2,
          max_concurrent_trials: int | None = None, trial_cpus: float | None = None,
          seed: int | None = None) -> SweepResult:
    """Run a sweep around ``cfg`` (the base configuration of every trial).

    ``seed``: of the random search (default: ``cfg.seed``, so a sweep is reproducible by
    default). ``grace_period``: ASHA's, default :func:`default_grace_period`."""
    import ray
    from ray import tune
    from ray.tune.search import BasicVariantGenerator
    from .distributed.raylogs import debug
    from .distributed.trainer import ensure_ray

    space = load_space(None, space) if space is not None else load_space()
    if num_samples < 1:
        raise ConfigError("--num-samples must be >= 1")
    if scheduler not in ("asha", "none"):
        raise ConfigError("--scheduler must be asha or none")
    if grace_period is not None and grace_period < 1:
        raise ConfigError("--grace-period must be >= 1")
    cfg.validate()
    out = Path(cfg.output_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    # the sweep shows its own progress lines; of the trials' output only warnings. A local
    # instance holds at least one trial (its workers, the neighbour actor, the trial itself).
    started = ensure_ray(cfg.address, num_cpus=max(os.cpu_count() or 1, cfg.num_workers + 2),
                         show_level=logging.WARNING)
    if not debug():         # Tune's own console output (a banner, paths): our lines instead
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    parent, uri = _parent_run(cfg, space, num_samples, scheduler)
    base = resolved_paths(dict(cfg.to_dict(), output_dir=str(out)))
    if parent is not None:      # every trial logs into the parent's store, nested under it
        base.update(mlflow_uri=uri, mlflow_parent_run_id=parent.run_id, mlflow=True)
    else:                       # tracking off, or its store unreachable (warned once)
        base.update(mlflow=False)
    grace = grace_period if grace_period is not None else default_grace_period(cfg, space)
    sched = None
    if scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler
        sched = ASHAScheduler(time_attr="training_iteration", max_t=cfg.num_train_epochs,
                              grace_period=min(grace, cfg.num_train_epochs),
                              reduction_factor=reduction_factor)
    if cfg.num_workers > 0:
        fit = _fitting_trials(cfg, trial_cpus)
        if max_concurrent_trials is not None and max_concurrent_trials > fit:
            log.warning("--max-concurrent-trials %d: only %d trial(s) of %d Ray Train worker(s)"
                        "%s fit the cluster's resources at once; running %d at a time",
                        max_concurrent_trials, fit, cfg.num_workers,
                        " and a neighbour actor" if len(trial_bundles(cfg)) > 1 else "", fit)
        max_concurrent_trials = min(max_concurrent_trials or fit, fit)
    # (Tune ignores max_concurrent_trials for a given generator: it goes to the generator)
    search_alg = BasicVariantGenerator(random_state=cfg.seed if seed is None else seed,
                                       max_concurrent=max_concurrent_trials or 0)
    name = cfg.run_name or time.strftime("hamr-tune-%Y%m%d-%H%M%S")
    registry, extra = None, {}
    progress = _progress_callback(cfg, num_samples)
    callbacks = [progress]
    if parent is not None:
        callbacks.append(_settle_callback(cfg, uri, parent.run_id))
    if cfg.num_workers > 0:
        reg_name = f"pg-registry-{name}-{os.getpid()}-{time.time_ns() % 10**6}"
        registry = ray.remote(num_cpus=0)(PlacementGroupRegistry).options(
            name=reg_name, namespace=REGISTRY_NAMESPACE).remote()
        callbacks.append(_release_callback(registry))
        extra[REGISTRY_KEY] = reg_name
    tuner = tune.Tuner(
        tune.with_resources(run_trial, tune.PlacementGroupFactory(trial_bundles(cfg, trial_cpus))),
        param_space={**param_space(space), BASE_KEY: base, **extra},
        # reuse_actors=False: a trial that ASHA stops must end its process, so that the Ray
        # Train controller, workers, placement group and hardness/neighbour actors it owns go
        # with it (a reused trial actor keeps a stopped trial's fit() running and its CPUs held)
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", num_samples=num_samples,
                                    scheduler=sched, search_alg=search_alg, reuse_actors=False),
        run_config=tune.RunConfig(name=name, storage_path=str(out / "tune"), verbose=0,
                                  callbacks=callbacks))
    if sched is not None and grace >= cfg.num_train_epochs > 1:
        log.info("ASHA stops no trial: its grace period (%d epochs, see docs/tune.md) is not "
                 "below --num-train-epochs %d", grace, cfg.num_train_epochs)
    log.info("sweep %r: %d trial(s)%s, %s; seed %d", name, num_samples,
             f" x {cfg.num_workers} Ray Train worker(s)" if cfg.num_workers else "",
             f"ASHA (grace period {min(grace, cfg.num_train_epochs)} epoch(s), max "
             f"{cfg.num_train_epochs})" if sched else "no early stopping",
             cfg.seed if seed is None else seed)
    try:
        grid = tuner.fit()
        ok = [r for r in grid if r.error is None and r.metrics_dataframe is not None
              and METRIC in r.metrics_dataframe]
        if not ok:
            errs = "; ".join(str(r.error).splitlines()[0] for r in grid if r.error)[:2000]
            raise HamrError(f"no trial of the sweep finished an epoch ({errs or 'no results'})")
        best = grid.get_best_result(metric=METRIC, mode="max", scope="all")
        df = best.metrics_dataframe
        row = df.loc[df[METRIC].idxmax()]
        values = decode(best.config)
        best_cfg = TrainConfig(**{**base, **values, "output_dir": str(out / "best"),
                                  "run_name": None, "mlflow_parent_run_id": None,
                                  "mlflow": cfg.mlflow, "mlflow_uri": cfg.mlflow_uri})
        path = out / "best_config.yaml"
        path.write_text(yaml.safe_dump(best_cfg.to_dict(), sort_keys=False))
        trials = progress.table(grid)
        summary = {"best_values": values, "best_dev_macro_f1": float(row[METRIC]),
                   "best_epoch": int(row["epoch"]) if "epoch" in row and not math.isnan(row["epoch"]) else None,
                   "trials": len(grid), "errors": sum(1 for r in grid if r.error),
                   "stopped_early": sum(1 for t in trials if t["status"] == "stopped early"),
                   "seed": cfg.seed if seed is None else seed,
                   "grace_period": min(grace, cfg.num_train_epochs) if sched else None,
                   "per_trial": trials, "retrain": f"hamr train --config {path}"}
        (out / "best.json").write_text(json.dumps(summary, indent=2, default=str))
        if parent is not None:
            _close_parent(parent, values, summary, path, out)
        return SweepResult(values, best_cfg, summary["best_dev_macro_f1"], summary["best_epoch"],
                           path, grid, parent.run_id if parent is not None else None, trials)
    finally:
        if registry is not None:
            try:
                ray.kill(registry)
            except Exception:   # noqa: BLE001
                pass
        if started:
            ray.shutdown()


def _fitting_trials(cfg: TrainConfig, trial_cpus: float | None = None) -> int:
    """How many distributed trials the cluster holds at once now (at least 1). Tune reserves a
    trial's own group (the trial, the neighbour actor) before its Ray Train run asks for the
    workers' group; with more trials at once than fit whole, the trials' groups can take the
    CPUs every Train run waits for, and no trial gets its workers."""
    import ray
    res = ray.cluster_resources()
    need = {"CPU": sum(b.get("CPU", 0) for b in trial_bundles(cfg, trial_cpus))
            + (0 if cfg.use_gpu else cfg.num_workers)}
    if cfg.use_gpu:
        need["GPU"] = cfg.num_workers
    fits = [int(res.get(k, 0) // v) for k, v in need.items() if v > 0]
    return max(1, min(fits)) if fits else 1


def _close_parent(parent, values, summary, path, out) -> None:
    from mlflow.entities import Metric, Param

    def close():
        c = parent.client
        c.log_batch(parent.run_id,
                    metrics=[Metric("best_dev_macro_f1", summary["best_dev_macro_f1"],
                                    int(time.time() * 1000), 0)],
                    params=[Param(f"best.{k}", str(v)[:6000]) for k, v in values.items()])
        c.log_artifact(parent.run_id, str(path))
        c.log_artifact(parent.run_id, str(out / "best.json"))
        c.set_terminated(parent.run_id, "FINISHED")
    parent._guard("closing the sweep's parent run", close)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def add_tune_parser(sub, add_config_flags) -> None:
    from .cli import HelpFormatter
    t = sub.add_parser("tune", help="hyper-parameter sweep with Ray Tune (objective: dev macro-F1)",
                       formatter_class=HelpFormatter,
                       description="Sweep tau, lam, gamma and k (or a --space YAML) around a "
                       "base configuration given by the usual train flags; writes "
                       "<output-dir>/best_config.yaml for `hamr train --config`.")
    t.add_argument("--config", help="YAML file of base train options")
    t.add_argument("--space", help="YAML file editing the search space (see docs)")
    t.add_argument("--num-samples", type=int, default=8, help="trials (default: 8)")
    t.add_argument("--scheduler", choices=["asha", "none"], default="asha",
                   help="asha stops weak trials early (default: asha)")
    t.add_argument("--grace-period", type=int, default=None,
                   help="ASHA: epochs every trial runs before it can be stopped (default: the "
                   "first epoch at which every searched option has acted, 2 for the default "
                   "space; see docs/tune.md)")
    t.add_argument("--max-concurrent-trials", type=int, default=None,
                   help="trials at once (default: as many as resources allow)")
    t.add_argument("--tune-seed", type=int, default=None,
                   help="seed of the random search (default: --seed, so a sweep is reproducible)")
    add_config_flags(t)
    t.set_defaults(func=cmd_tune)


def cmd_tune(args) -> int:
    from .cli import config_from_args
    cfg = config_from_args(args)
    if "output_dir" not in vars(args) and not (args.config and "output_dir" in
                                                (yaml.safe_load(Path(args.config).read_text()) or {})):
        cfg = dataclasses.replace(cfg, output_dir="outputs/tune")
    res = sweep(cfg, load_space(args.space), num_samples=args.num_samples,
                scheduler=args.scheduler, grace_period=args.grace_period,
                max_concurrent_trials=args.max_concurrent_trials, seed=args.tune_seed)
    print(f"best dev macro-F1 {res.best_dev_macro_f1:.4f}"
          + (f" (epoch {res.best_epoch})" if res.best_epoch is not None else "")
          + ": " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in res.best_values.items()))
    print(f"best configuration: {res.best_config_path}")
    print(f"retrain it: hamr train --config {res.best_config_path}")
    return 0
