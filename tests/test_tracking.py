"""MLflow tracking: a real tracking server, the sqlite default, an unreachable server, resume."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from hamr_dist import tracking
from hamr_dist.cli import config_from_args, parser
from hamr_dist.config import TrainConfig
from hamr_dist.train.loop import train

SMALL = dict(freeze_encoder=True, num_train_epochs=2, max_train_samples=400, max_eval_samples=150,
             progress=False, seed=7)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(tracking.ENV_SWITCH, raising=False)


class Server:
    """``mlflow server`` on 127.0.0.1 with a sqlite backend, started when the module starts (it
    boots while the other tests train) and killed at the end."""

    def __init__(self, d: Path):
        self.d, port = d, free_port()
        exe = Path(sys.executable).with_name("mlflow")
        cmd = [str(exe) if exe.exists() else "mlflow", "server", "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{d / 'server.db'}",
               "--default-artifact-root", str(d / "artifacts")]
        self.log_f = open(d / "server.log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log_f, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.url = f"http://127.0.0.1:{port}"

    def wait(self, timeout: float = 180) -> str:
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self.url
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.log_f.flush()
                pytest.fail("mlflow server did not start:\n" +
                            (self.d / "server.log").read_text(errors="replace")[-3000:])
            time.sleep(0.5)

    def stop(self):
        for sig, wait in ((15, 2), (9, 10)):     # its own process group: uvicorn and workers
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self.log_f.close()


@pytest.fixture(scope="module", autouse=True)
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("mlflow_server"))
    yield srv
    srv.stop()


@pytest.fixture
def mlflow_server(server):
    return server.wait()


def test_unreachable_server_warns_once(tmp_path, caplog):
    out = tmp_path / "run"
    cfg = TrainConfig(output_dir=str(out), mlflow_uri="http://127.0.0.1:9", method="hamr-no-knn",
                      **dict(SMALL, max_train_samples=200, max_eval_samples=100))
    t0 = time.time()
    with caplog.at_level(logging.WARNING):
        res = train(cfg)
    warned = [r for r in caplog.records if r.name == "hamr_dist" and "MLflow" in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in warned]
    assert "training continues" in warned[0].getMessage()
    assert (out / "metrics.json").is_file() and len(res.history) == 2
    assert not (out / tracking.RUN_FILE).exists()
    assert time.time() - t0 < 300


def test_default_sqlite_store(tmp_path):
    from mlflow.tracking import MlflowClient
    out = tmp_path / "run"
    res = train(TrainConfig(output_dir=str(out), method="hamr-no-knn", mlflow=True,
                            **dict(SMALL, max_train_samples=200, max_eval_samples=100)))
    assert (out / "mlflow.db").is_file()
    info = json.loads((out / tracking.RUN_FILE).read_text())
    assert info["tracking_uri"] == f"sqlite:///{out.resolve() / 'mlflow.db'}"
    c = MlflowClient(tracking_uri=info["tracking_uri"])
    run = c.get_run(info["run_id"])
    assert run.data.params["method"] == "hamr-no-knn"
    assert len(c.get_metric_history(info["run_id"], "loss")) == len(res.history) == 2
    # artifacts next to the database, never in ./mlruns of the working directory
    assert (out / "mlartifacts").is_dir()
    assert Path(run.info.artifact_uri.replace("file://", "")).resolve().is_relative_to(out.resolve())
    assert "metrics.json" in {a.path for a in c.list_artifacts(info["run_id"])}


def test_crashed_run_is_marked_failed_and_keeps_its_epochs(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    import hamr_dist.train.loop as loop
    real, calls = loop.evaluate, []

    def evaluate_then_crash(*a, **kw):
        calls.append(1)
        if len(calls) == 2:                    # dev evaluation of the second epoch
            raise RuntimeError("disk full")
        return real(*a, **kw)

    monkeypatch.setattr(loop, "evaluate", evaluate_then_crash)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="disk full"):
        train(TrainConfig(output_dir=str(out), method="ce", mlflow=True,
                          **dict(SMALL, max_train_samples=200, max_eval_samples=100)))
    info = json.loads((out / tracking.RUN_FILE).read_text())
    c = MlflowClient(tracking_uri=info["tracking_uri"])
    run = c.get_run(info["run_id"])
    assert run.info.status == "FAILED" and run.data.tags["hamr.error"] == "RuntimeError: disk full"
    assert len(c.get_metric_history(info["run_id"], "loss")) == 1      # epoch 1 is kept


def test_switches_and_flags(tmp_path, monkeypatch):
    off = TrainConfig(output_dir=str(tmp_path / "x"), mlflow=False)
    assert tracking.start(off) is tracking.NULL
    monkeypatch.setenv(tracking.ENV_SWITCH, "0")
    assert tracking.start(TrainConfig(output_dir=str(tmp_path / "x"))) is tracking.NULL
    assert tracking.enabled(TrainConfig(mlflow=True))          # the flag beats the env switch
    assert tracking.start(TrainConfig(output_dir=str(tmp_path / "x")), rank=1) is tracking.NULL
    assert not (tmp_path / "x").exists()

    args = parser().parse_args(["train", "--no-mlflow", "--experiment-name", "e1"])
    cfg = config_from_args(args)
    assert cfg.mlflow is False and cfg.experiment_name == "e1"
    cfg = config_from_args(parser().parse_args(["train", "--mlflow-uri", "http://h:5000"]))
    assert cfg.mlflow is None and tracking.tracking_uri(cfg) == "http://h:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert tracking.tracking_uri(TrainConfig()) == "http://env:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.tracking_uri(TrainConfig(output_dir=str(tmp_path))).startswith("sqlite:///")


def test_epoch_metric_names():
    rec = {"epoch": 3, "loss": 0.5, "dev_macro_f1": 0.4, "skipped_steps": 0,
           "dev_per_class_f1": {"B-LOC": 0.1, "a b/c": 0.2, "x:y": 0.3}, "note": "text"}
    m = tracking.epoch_metrics(rec)
    assert m == {"loss": 0.5, "dev_macro_f1": 0.4, "skipped_steps": 0.0, "dev_f1_B-LOC": 0.1,
                 "dev_f1_a b/c": 0.2, "dev_f1_x_y": 0.3}


def test_run_logged_to_server(mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient
    out = tmp_path / "run"
    cfg = TrainConfig(output_dir=str(out), mlflow_uri=mlflow_server, experiment_name="hamr-test",
                      **SMALL)
    res = train(cfg)
    run_id = json.loads((out / tracking.RUN_FILE).read_text())["run_id"]
    c = MlflowClient(tracking_uri=mlflow_server)
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert c.get_experiment(run.info.experiment_id).name == "hamr-test"
    p = run.data.params
    assert p["method"] == "hamr-la" and p["task"] == "cls" and float(p["tau"]) == 0.7   # default
    assert p["hardness_rule"] == "debiased-ema"                          # resolved for hamr-la
    assert float(p["lam"]) == 0.7 and p["freeze_encoder"] == "True"   # the resolved config
    assert run.data.tags["hamr.method"] == "hamr-la"
    for key in ("loss", "dev_macro_f1", "weight_mean", "weight_std", "boosted_share",
                "sampling_entropy", "hardness_mean"):
        hist = c.get_metric_history(run_id, key)
        assert [m.step for m in hist] == [1, 2], key          # epochs count from 1
    dev = c.get_metric_history(run_id, "dev_macro_f1")
    assert [m.value for m in dev] == pytest.approx([h["dev_macro_f1"] for h in res.history])
    classes = res.metrics["dev"]["per_class_f1"]
    for name in classes:
        assert len(c.get_metric_history(run_id, f"dev_f1_{name}")) == 2
    assert run.data.metrics["test_macro_f1"] == pytest.approx(res.metrics["test"]["macro_f1"])
    top = {a.path for a in c.list_artifacts(run_id)}
    assert {"metrics.json", "config.yaml", "weight_curve.json", "hardness_hist.json"} <= top
    plots = {Path(a.path).name for a in c.list_artifacts(run_id, "plots")}
    assert {"weight_curve.png", "hardness_hist.png", "per_class_f1.png",
            "confusion_test.png", "draw_share.png"} <= plots
    hh = json.loads((out / "hardness_hist.json").read_text())
    assert len(hh["epochs"]) == 2 and sum(hh["epochs"][0]["counts"]) == 400

    # a resume (the run id from a checkpoint) continues this run: no second run, no duplicate
    # steps, and epochs of the resumed history that were not logged yet are filled in
    resumed_cfg = TrainConfig(**{**cfg.to_dict(), "task": "cls"})
    t = tracking.start(resumed_cfg, resume={"mlflow_run_id": run_id,
                                            "history": res.history + [dict(res.history[-1], epoch=3)]})
    assert t.run_id == run_id
    assert [m.step for m in c.get_metric_history(run_id, "loss")] == [1, 2, 3]
    assert c.get_run(run_id).info.status == "RUNNING"
    exp = run.info.experiment_id
    assert len(c.search_runs([exp])) == 1


@pytest.mark.slow
def test_worker_restart_continues_the_same_run(ray_local, tmp_path):
    """Ray Train restarts the worker group after a failure in epoch 0 (before any checkpoint)
    and again in epoch 1 (from the epoch-0 checkpoint): still one MLflow run, each epoch once."""
    from mlflow.tracking import MlflowClient
    from hamr_dist.distributed.trainer import train_distributed
    out = tmp_path / "run"
    cfg = TrainConfig(output_dir=str(out), method="hamr-no-knn", mlflow=True, num_workers=1,
                      max_failures=3, **dict(SMALL, max_train_samples=200, max_eval_samples=100))
    faults = [{"action": "raise", "rank": 0, "epoch": 0, "step": 2, "once": str(tmp_path / "f0")},
              {"action": "raise", "rank": 0, "epoch": 1, "step": 2, "once": str(tmp_path / "f1")}]
    train_distributed(cfg, faults=faults)
    assert (tmp_path / "f0").exists() and (tmp_path / "f1").exists()   # both faults fired
    info = json.loads((out / tracking.RUN_FILE).read_text())
    c = MlflowClient(tracking_uri=info["tracking_uri"])
    runs = c.search_runs([c.get_run(info["run_id"]).info.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert [m.step for m in c.get_metric_history(info["run_id"], "loss")] == [1, 2]
