"""MLflow tracking of a training run: parameters, per-epoch metrics, plots and outputs.

Only rank 0 logs. The loop (``train/loop.py``) calls :func:`start` once, :meth:`Tracker.epoch`
after every epoch and :meth:`Tracker.finish` after writing the outputs. What is logged:

- parameters: the resolved ``TrainConfig`` (one param per field); tags ``hamr.method``,
  ``hamr.task``, ``hamr.world_size``, ``hamr.output_dir`` and, under Ray Train,
  ``hamr.ray_run_name``;
- per epoch (step = the epoch number, counted from 1 like everything a user reads): every
  number of the epoch record (``loss``, ``dev_macro_f1``, ``weight_mean``/``weight_std``,
  ``boosted_share``, ``sampling_entropy``, ``hardness_mean``/``hardness_std``,
  ``skipped_steps``) and ``dev_f1_<class>`` for every class / entity type;
- at the end: ``test_macro_f1``, ``test_accuracy`` or ``test_micro_f1``, ``test_f1_<class>``,
  ``best_epoch``, ``best_dev_macro_f1``, ``wall_time_s``; the artifacts ``metrics.json``,
  ``config.yaml``, ``label_map.json``, ``weight_curve.json``, ``hardness_hist.json`` and (with
  matplotlib) ``plots/``: the weight network curve, hardness histograms per epoch, per-class F1
  bars and, for classification, the test confusion matrix.

Where: ``--mlflow-uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<output_dir>/mlflow.db``
(MLflow 3 has no plain file store by default); artifacts of that default store go to
``<output_dir>/mlartifacts``. Off: ``--no-mlflow`` or ``$HAMR_MLFLOW=0``.

One run per training run, also across restarts: the run id goes into every checkpoint (the
loop's state), and a Ray Train run is found again by its tag ``hamr.ray_run_name``, so a worker
group restarted by Ray Train -- even before its first checkpoint, even on another node -- and a
re-run under the same ``--run-name`` continue the same MLflow run instead of opening a second.
Epochs already logged are not logged twice. ``<output_dir>/mlflow_run.json`` names the run.

Tracking never fails training: every MLflow call is guarded; the first failure (say, a server
that does not answer: probed once with no retries and a short timeout) logs one warning and
turns tracking off for the rest of the run.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("hamr_dist")

__all__ = ["Tracker", "NULL", "start", "enabled", "tracking_uri", "store_lock", "RUN_FILE", "ENV_SWITCH"]

ENV_SWITCH = "HAMR_MLFLOW"
RUN_FILE = "mlflow_run.json"
RAY_RUN_TAG = "hamr.ray_run_name"
STOPPED_TAG = "hamr.stopped_early"     # value: the epoch after which a sweep's scheduler stopped it
# (max retries, timeout s, backoff factor): the first call, then all others
PROBE_HTTP = (0, 3, 0)
CALL_HTTP = (1, 10, 1)
HIST_BINS = 50
HIST_SAMPLES = 50_000      # hardness histograms use at most this many (fixed) samples
ARTIFACTS = ("metrics.json", "config.yaml", "label_map.json", "weight_curve.json")


def enabled(cfg) -> bool:
    if getattr(cfg, "mlflow", None) is not None:
        return bool(cfg.mlflow)
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def default_uri(output_dir) -> str:
    return "sqlite:///" + str(Path(output_dir).expanduser().resolve() / "mlflow.db")


def tracking_uri(cfg) -> str:
    return (getattr(cfg, "mlflow_uri", None) or os.environ.get("MLFLOW_TRACKING_URI")
            or default_uri(cfg.output_dir))


@contextlib.contextmanager
def _http_limits(retries: int, timeout: int, backoff: int):
    """Short MLflow HTTP retries/timeouts for our calls (user-set env values are kept)."""
    want = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": retries, "MLFLOW_HTTP_REQUEST_TIMEOUT": timeout,
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": backoff}
    set_here = [k for k in want if k not in os.environ]
    for k in set_here:
        os.environ[k] = str(want[k])
    try:
        yield
    finally:
        for k in set_here:
            os.environ.pop(k, None)


def _key(name) -> str:
    """An MLflow-legal key (alphanumerics, _ - . / and space)."""
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in str(name))


def _number(v):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return None
    return float(v)


def epoch_metrics(rec: dict) -> dict:
    """The numbers of a loop epoch record, per-class F1 flattened to ``dev_f1_<class>``."""
    out = {}
    for k, v in rec.items():
        if k == "epoch":
            continue
        if k == "dev_per_class_f1" and isinstance(v, dict):
            out.update({_key(f"dev_f1_{c}"): float(f) for c, f in v.items()})
        elif k == "draw_share" and isinstance(v, dict):     # per class: share of draw vs train
            for c, d in v.items():
                out[_key(f"draw_share_{c}")] = float(d["draw"])
                out[_key(f"train_share_{c}")] = float(d["train"])
        elif k == "class_weight" and isinstance(v, dict):   # --class-weight-feedback
            out.update({_key(f"class_weight_{c}"): float(w) for c, w in v.items()})
        elif (x := _number(v)) is not None:
            out[_key(k)] = x
    return out


def final_metrics(metrics: dict) -> dict:
    out = {}
    for k, v in (metrics.get("test") or {}).items():
        if k == "per_class_f1" and isinstance(v, dict):
            out.update({_key(f"test_f1_{c}"): float(f) for c, f in v.items()})
        elif (x := _number(v)) is not None:
            out[_key(f"test_{k}")] = x
    if metrics.get("best_epoch") is not None:
        out["best_epoch"] = float(metrics["best_epoch"])
    if (metrics.get("dev") or {}).get("macro_f1") is not None:
        out["best_dev_macro_f1"] = float(metrics["dev"]["macro_f1"])
    if metrics.get("wall_time_s") is not None:
        out["wall_time_s"] = float(metrics["wall_time_s"])
    return out


def _ray_run_name() -> str | None:
    """The Ray Train run name when called inside a Ray Train worker, else None (a Tune
    trial's function, outside a Train worker, raises in ``get_context`` and gets None)."""
    if "ray" not in sys.modules:
        return None
    try:
        import ray
        if not ray.is_initialized():
            return None
        import ray.train
        return ray.train.get_context().get_experiment_name()
    except Exception:
        return None


class Tracker:
    """Rank 0's MLflow run. Every public method is safe to call: failures are swallowed."""

    def __init__(self, cfg, *, uri: str | None = None, world_size: int = 1):
        self.cfg, self.uri = cfg, uri or tracking_uri(cfg)
        self.world_size = world_size
        self.client = None
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.active = True
        self.logged_steps: set[int] = set()
        self.h_samples: dict[int, np.ndarray] = {}   # epoch -> h of a fixed sample subset
        self._subset = None

    # -- guarded calls ----------------------------------------------------------------------
    def _guard(self, what: str, fn, *a, probe: bool = False, **kw):
        if not self.active:
            return None
        try:
            with _http_limits(*(PROBE_HTTP if probe else CALL_HTTP)):
                return fn(*a, **kw)
        except Exception as e:    # noqa: BLE001 -- tracking must never end a training run
            self.active = False
            first = _first_line(e, 300) or type(e).__name__
            log.warning("MLflow tracking is off for this run: %s at %s failed (%s); training "
                        "continues (--no-mlflow or HAMR_MLFLOW=0 silences this)",
                        what, self.uri, first)
            return None

    # -- lifecycle --------------------------------------------------------------------------
    def open(self, resume: dict | None, history: list | None) -> "Tracker":
        self._guard("connecting", self._open, resume, history, probe=True)
        if self.active and self.run_id:
            self._guard("writing the run file", self._write_run_file)
        return self

    def _open(self, resume, history):
        for name in ("mlflow.store.db.utils", "alembic.runtime.migration", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        from mlflow.tracking import MlflowClient
        cfg = self.cfg
        with store_lock(self.uri):
            self.client = c = MlflowClient(tracking_uri=self.uri)
            self.experiment_id = self._experiment(cfg.experiment_name or "hamr")
        ray_name = _ray_run_name()
        run_id = (resume or {}).get("mlflow_run_id")
        if run_id is None and ray_name:
            found = c.search_runs([self.experiment_id],
                                  filter_string=f"tags.`{RAY_RUN_TAG}` = '{ray_name}'",
                                  max_results=1)
            run_id = found[0].info.run_id if found else None
        if run_id is not None:
            try:
                run = c.get_run(run_id)
                if run.info.experiment_id != self.experiment_id:
                    run_id = None
            except Exception:
                run_id = None
        if run_id is not None:
            self.run_id = run_id
            c.update_run(run_id, status="RUNNING")
            self.logged_steps = {int(m.step) for m in c.get_metric_history(run_id, "loss")}
            log.info("MLflow: continuing run %s (%s)", run_id, self.uri)
        else:
            tags = {"hamr.method": cfg.method, "hamr.task": str(cfg.task),
                    "hamr.world_size": str(self.world_size),
                    "hamr.output_dir": str(Path(cfg.output_dir).resolve())}
            if ray_name:
                tags[RAY_RUN_TAG] = ray_name
            parent = getattr(cfg, "mlflow_parent_run_id", None)
            if parent:
                tags["mlflow.parentRunId"] = parent
            name = cfg.run_name or ray_name or f"{cfg.method}-{Path(cfg.output_dir).name}"
            run = c.create_run(self.experiment_id, run_name=name, tags=tags)
            self.run_id = run.info.run_id
            self._log_params()
            log.info("MLflow: run %s in experiment %r (%s)", self.run_id, cfg.experiment_name,
                     self.uri)
        for rec in history or []:          # epochs of a resumed run not logged yet
            self._log_epoch(rec)

    def _experiment(self, name: str) -> str:
        c = self.client
        exp = c.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        kw = {}
        if self.uri == default_uri(self.cfg.output_dir):
            kw["artifact_location"] = (Path(self.cfg.output_dir).resolve() / "mlartifacts").as_uri()
        try:
            return c.create_experiment(name, **kw)
        except Exception:                  # created concurrently by another run
            exp = c.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def _log_params(self):
        from mlflow.entities import Param
        params = [Param(_key(k), str(v)[:6000]) for k, v in self.cfg.to_dict().items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def _write_run_file(self):
        out = Path(self.cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / RUN_FILE).write_text(json.dumps(
            {"tracking_uri": self.uri, "experiment_name": self.cfg.experiment_name,
             "experiment_id": self.experiment_id, "run_id": self.run_id,
             "ray_run_name": _ray_run_name()}, indent=2))

    # -- per epoch --------------------------------------------------------------------------
    def epoch(self, rec: dict, hardness=None) -> None:
        """Log one epoch record (once per step) and keep a histogram of the hardness h."""
        if not self.active:
            return
        if hardness is not None:
            self._guard("the hardness histogram", self._histogram, int(rec["epoch"]), hardness)
        self._guard("logging epoch metrics", self._log_epoch, rec)

    def _log_epoch(self, rec):
        from mlflow.entities import Metric
        step = int(rec["epoch"])
        if step in self.logged_steps:
            return
        now = int(time.time() * 1000)
        ms = [Metric(k, v, now, step) for k, v in epoch_metrics(rec).items()]
        for i in range(0, len(ms), 1000):
            self.client.log_batch(self.run_id, metrics=ms[i:i + 1000])
        self.logged_steps.add(step)

    def _histogram(self, epoch: int, h):
        h = np.asarray(h, dtype=np.float32)
        if self._subset is None and len(h) > HIST_SAMPLES:
            self._subset = np.sort(np.random.default_rng(0).choice(len(h), HIST_SAMPLES,
                                                                   replace=False))
        self.h_samples[epoch] = (h[self._subset] if self._subset is not None else h).copy()

    def histograms(self) -> dict | None:
        """Per-epoch counts of h on common bins spanning every epoch's values."""
        if not self.h_samples:
            return None
        allv = np.concatenate(list(self.h_samples.values()))
        lo, hi = float(allv.min()), float(allv.max())
        if hi - lo < 1e-9:
            lo, hi = lo - 0.05, hi + 0.05
        edges = np.linspace(lo, hi, HIST_BINS + 1)
        return {"edges": edges.tolist(), "sampled": self._subset is not None,
                "epochs": [{"epoch": e, "counts": np.histogram(v, edges)[0].tolist()}
                           for e, v in sorted(self.h_samples.items())]}

    # -- end ----------------------------------------------------------------------------------
    def finish(self, metrics: dict, out_dir, setup=None) -> None:
        """Final metrics, output files, plots; marks the run FINISHED."""
        if not self.active:
            return
        out = Path(out_dir)
        self._guard("logging final metrics", self._log_final, metrics)
        hist = self.histograms()
        if hist is not None:
            self._guard("writing hardness_hist.json",
                        (out / "hardness_hist.json").write_text, json.dumps(hist))
        for name in ARTIFACTS + ("hardness_hist.json",):
            if (out / name).is_file():
                self._guard(f"uploading {name}", self.client.log_artifact, self.run_id,
                            str(out / name))
        if self.active:
            try:
                plots = make_plots(out, metrics, setup)
            except Exception as e:   # noqa: BLE001 -- plots are a convenience
                log.warning("MLflow: plots skipped (%s)", e)
                plots = []
            for p in plots:
                self._guard(f"uploading {p.name}", self.client.log_artifact, self.run_id, str(p),
                            "plots")
        self._guard("closing the run", self.client.set_terminated, self.run_id, "FINISHED")

    def fail(self, exc: BaseException) -> None:
        """The run ended by an error: tag it and mark it FAILED (KILLED for Ctrl-C), so it does
        not stay RUNNING; everything logged so far stays. A resume reopens it as RUNNING.
        A :class:`StoppedEarly` (a sweep's scheduler ended the trial) is no error: FINISHED,
        tagged ``hamr.stopped_early``."""
        if not self.active:
            return
        if isinstance(exc, StoppedEarly):
            self._guard("tagging the early stop", self.client.set_tag, self.run_id,
                        STOPPED_TAG, str(exc.epoch))
            self._guard("closing the run", self.client.set_terminated, self.run_id, "FINISHED")
            return
        # a sweep that stopped this trial closed its run already; what fails afterwards is the
        # trial being torn down (its actors go first), not the trial
        run = self._guard("reading the run", self.client.get_run, self.run_id)
        if run is not None and STOPPED_TAG in run.data.tags:
            return
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        first = _first_line(exc, 500)
        self._guard("tagging the error", self.client.set_tag, self.run_id, "hamr.error",
                    f"{type(exc).__name__}: {first}" if first else type(exc).__name__)
        self._guard("closing the run", self.client.set_terminated, self.run_id, status)

    def _log_final(self, metrics):
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        ms = [Metric(k, v, now, 0) for k, v in final_metrics(metrics).items()]
        if ms:
            self.client.log_batch(self.run_id, metrics=ms)


@contextlib.contextmanager
def store_lock(uri: str):
    """Serialise opening a sqlite store across processes. Its first use creates the schema
    (alembic migrations); two runs or sweep trials doing that at once race, and the loser
    used to lose its tracking. An exclusive ``flock`` on ``<db>.lock`` makes the second wait
    until the first has created the schema and the experiment."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl
    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class StoppedEarly(Exception):
    """A sweep's scheduler (ASHA) stopped this trial after ``epoch`` epochs: not a failure."""

    def __init__(self, epoch: int):
        super().__init__(f"stopped early by the sweep's scheduler after epoch {epoch}")
        self.epoch = epoch


def settle_runs(uri: str, experiment_name: str, filter_string: str, status: str,
                tags: dict | None = None) -> int:
    """Close the runs matching ``filter_string`` that are still RUNNING (or were closed by the
    exit of a stopped trial, ``hamr.error`` SystemExit) with ``status`` and ``tags``: for runs
    whose process was killed before it could close them (Ctrl-C on a Ray run, a sweep trial).
    Returns how many; never raises (one warning)."""
    try:
        from mlflow.tracking import MlflowClient
        with _http_limits(*CALL_HTTP):
            c = MlflowClient(tracking_uri=uri)
            exp = c.get_experiment_by_name(experiment_name or "hamr")
            if exp is None:
                return 0
            done = 0
            for run in c.search_runs([exp.experiment_id], filter_string=filter_string):
                stale = run.info.status == "FAILED" and str(
                    run.data.tags.get("hamr.error", "")).startswith("SystemExit")
                if run.info.status != "RUNNING" and not stale:
                    continue
                if stale:
                    c.delete_tag(run.info.run_id, "hamr.error")
                for k, v in (tags or {}).items():
                    c.set_tag(run.info.run_id, k, str(v))
                c.set_terminated(run.info.run_id, status)
                done += 1
            return done
    except Exception as e:   # noqa: BLE001 -- bookkeeping must never fail the caller
        log.warning("MLflow: could not mark runs %s at %s (%s)", status, uri,
                    _first_line(e, 300) or type(e).__name__)
        return 0


def close_ray_run(cfg, ray_run_name: str, status: str, error: str | None = None) -> int:
    """Close the MLflow run of the Ray Train run ``ray_run_name`` (found by its tag) from the
    driver, when its rank 0 was killed before it could (no-op with tracking off)."""
    if not enabled(cfg):
        return 0
    tags = {"hamr.error": error} if error else {}
    return settle_runs(tracking_uri(cfg), cfg.experiment_name,
                       f"tags.`{RAY_RUN_TAG}` = '{ray_run_name}'", status, tags)


def _first_line(e: BaseException, limit: int) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:limit] if lines else ""


class _Null:
    """Tracking off (or not rank 0): every call does nothing."""
    run_id = None
    active = False

    def epoch(self, rec, hardness=None):
        pass

    def finish(self, metrics, out_dir, setup=None):
        pass

    def fail(self, exc):
        pass


NULL = _Null()


def start(cfg, *, rank: int = 0, world_size: int = 1, resume: dict | None = None):
    """The run's tracker on rank 0 when tracking is on, else a no-op tracker."""
    if rank != 0 or not enabled(cfg):
        return NULL
    history = (resume or {}).get("history") if resume else None
    return Tracker(cfg, world_size=world_size).open(resume, history)


# --------------------------------------------------------------------------------------------
# plots (matplotlib, optional)
# --------------------------------------------------------------------------------------------
def make_plots(out: Path, metrics: dict, setup=None) -> list[Path]:
    """PNG files under ``out/plots``; [] without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("MLflow: matplotlib not installed, no plots (pip install 'hamr-dist[plots]')")
        return []
    d = out / "plots"
    d.mkdir(parents=True, exist_ok=True)
    made = []

    def save(fig, name):
        p = d / name
        fig.tight_layout()
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p)

    wc = out / "weight_curve.json"
    if wc.is_file():
        cur = json.loads(wc.read_text())
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(cur["z"], cur["sigmoid_f"], lw=2)
        ax.set_xlabel("standardised loss z")
        ax.set_ylabel("sigmoid(f_theta(z))")
        ax.set_title("weight network w(z)")
        ax.grid(alpha=0.3)
        save(fig, "weight_curve.png")

    hh = out / "hardness_hist.json"
    if hh.is_file():
        hist = json.loads(hh.read_text())
        edges = np.asarray(hist["edges"])
        mids = (edges[:-1] + edges[1:]) / 2
        fig, ax = plt.subplots(figsize=(6, 3.8))
        cmap = plt.get_cmap("viridis")
        n = max(1, len(hist["epochs"]) - 1)
        for i, e in enumerate(sorted(hist["epochs"], key=lambda e: e["epoch"])):
            ax.step(mids, e["counts"], where="mid", color=cmap(i / n), label=f"epoch {e['epoch']}")
        ax.set_xlabel("hardness h (EMA of post-meta weights)")
        ax.set_ylabel("training samples")
        ax.set_title("hardness distribution per epoch")
        ax.legend(fontsize=7, ncol=2)
        save(fig, "hardness_hist.png")

    shares = [r for r in metrics.get("history") or [] if r.get("draw_share")]
    if shares:
        save(draw_share_figure(plt, shares), "draw_share.png")

    dev, test = (metrics.get("dev") or {}), (metrics.get("test") or {})
    names = list((test.get("per_class_f1") or dev.get("per_class_f1") or {}).keys())
    if names:
        x = np.arange(len(names))
        fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(names) + 2), 3.8))
        for off, (label, part) in zip((-0.2, 0.2), (("dev (best epoch)", dev), ("test", test))):
            vals = [float((part.get("per_class_f1") or {}).get(c, math.nan)) for c in names]
            ax.bar(x + off, vals, width=0.4, label=label)
        ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("F1")
        ax.set_title("per-class F1")
        ax.legend(fontsize=8)
        save(fig, "per_class_f1.png")

    if setup is not None and getattr(setup.data, "task", None) == "cls":
        from .train.evaluate import confusion, predict
        pred = predict(setup.model, setup.test.batches, setup.cfg.per_device_eval_batch_size)
        gold = [r["label"] for r in setup.test.records]
        labels = list(setup.data.label_names)
        cm = np.asarray(confusion(gold, pred, len(labels)))
        cj = d / "confusion_test.json"
        cj.write_text(json.dumps({"labels": labels, "matrix": cm.tolist()}))
        made.append(cj)
        fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(labels) + 2.5),) * 2)
        ax.imshow(cm, cmap="Blues")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        ax.set_title("test confusion matrix")
        if len(labels) <= 20:
            top = cm.max() if cm.size else 0
            for i in range(cm.shape[0]):
                for j in range(cm.shape[1]):
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if cm[i, j] > top / 2 else "black")
        save(fig, "confusion_test.png")
    return made


def draw_share_figure(plt, history: list):
    """Each class's share of the epoch draw over epochs (lines) against its share of the training
    set (dashed): a sampler that acts moves the lines away from the dashes."""
    names = list(history[0]["draw_share"])
    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    for i, c in enumerate(names):
        col = cmap(i % cmap.N)
        ax.plot(epochs, [r["draw_share"][c]["draw"] for r in history], "-o", ms=3, color=col,
                label=c)
        ax.axhline(history[0]["draw_share"][c]["train"], ls="--", lw=0.8, color=col)
    ax.set_xlabel("epoch")
    ax.set_ylabel("share (NER: sentences containing the type)")
    ax.set_title("draw share per class (dashed: training share)")
    ax.legend(fontsize=7, ncol=2)
    return fig
