"""Ray Jobs entry points: argv handling, and a real job on a local Ray head (slow).

The slow test starts its own head with ``ray start --head --block`` in a new process group, on
127.0.0.1, free ports and a private ``--temp-dir`` (so that no ``ray.init()`` elsewhere on the
machine finds it), and ends it by signalling that process group: never ``ray stop``, which
would kill every Ray process on the machine.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_job(name: str):
    import importlib.util
    if str(ROOT / "jobs") not in sys.path:
        sys.path.insert(0, str(ROOT / "jobs"))          # as `python jobs/x.py` has it
    spec = importlib.util.spec_from_file_location(f"hamr_job_{name}", ROOT / "jobs" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


job_train = _load_job("train")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_train_job_argv(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_JOB_SUBMISSION_ID", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert job_train.job_argv(["--seed", "1"]) == ["train", "--seed", "1"]
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert job_train.job_argv([]) == ["train", "--num-workers", "1"]
    assert job_train.job_argv(["--num-workers=4"]) == ["train", "--num-workers=4"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://head:5000")
    assert job_train.job_argv(["--num-workers", "2"]) == [
        "train", "--num-workers", "2", "--mlflow-uri", "http://head:5000"]
    assert "--mlflow-uri" not in job_train.job_argv(["--no-mlflow"])


@pytest.mark.parametrize("script,first", [("train.py", "hamr train"), ("embed.py", "hamr embed"),
                                          ("tune.py", "hamr tune")])
def test_entry_points_take_the_cli_flags(script, first):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    out = subprocess.run([sys.executable, str(ROOT / "jobs" / script), "--help"], cwd="/",
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert first in out.stdout


class LocalHead:
    def __init__(self, num_cpus: int = 2):
        self.temp = tempfile.mkdtemp(prefix="hj", dir="/tmp")   # short: socket paths
        self.port, self.dash = free_port(), free_port()
        ports = {"--dashboard-agent-listen-port": free_port(),
                 "--dashboard-agent-grpc-port": free_port(), "--metrics-export-port": free_port(),
                 "--runtime-env-agent-port": free_port(), "--node-manager-port": free_port(),
                 "--object-manager-port": free_port()}
        exe = Path(sys.executable).with_name("ray")
        cmd = [str(exe), "start", "--head", "--block", "--port", str(self.port),
               "--node-ip-address", "127.0.0.1", "--include-dashboard", "true",
               "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dash),
               "--num-cpus", str(num_cpus), "--num-gpus", "0", "--temp-dir", self.temp,
               "--disable-usage-stats"]
        for k, v in ports.items():
            cmd += [k, str(v)]
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"   # job's `python`
        # a throw-away head bound to 127.0.0.1: no token authentication (Ray >= 2.59 enables it
        # by default for `ray start`, and the test's client would need the token)
        env["RAY_AUTH_MODE"] = "disabled"
        self.log = open(Path(self.temp) / "head.log", "wb")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.url = f"http://127.0.0.1:{self.dash}"

    def wait(self, timeout: float = 240) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url + "/api/version", timeout=3) as r:
                    if r.status == 200:
                        return self.url
            except urllib.error.HTTPError as e:
                if e.code == 401:       # up, with Ray's token authentication (~/.ray/auth_token)
                    return self.url
            except OSError:
                pass
            time.sleep(1)
        self.log.flush()
        pytest.fail("ray head did not start:\n" +
                    (Path(self.temp) / "head.log").read_text(errors="replace")[-3000:])

    def stop(self):
        pgid = self.proc.pid
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 15)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            # the head's own children (gcs, raylet, dashboard, workers) share its group
            deadline = time.time() + wait
            while time.time() < deadline and _group_alive(pgid):
                time.sleep(0.5)
            if not _group_alive(pgid):
                break
        self.log.close()
        shutil.rmtree(self.temp, ignore_errors=True)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


@pytest.mark.slow
def test_train_job_on_local_cluster(tmp_path):
    pytest.importorskip("aiohttp_cors", reason="Ray Jobs needs the dashboard: pip install 'ray[default]'")
    from ray.job_submission import JobStatus, JobSubmissionClient
    head = LocalHead(num_cpus=2)
    try:
        url = head.wait()
        client = JobSubmissionClient(url)
        out = tmp_path / "job_out"
        env = {k: os.environ[k] for k in ("HAMR_CACHE", "HF_HOME", "HF_HUB_OFFLINE")
               if k in os.environ}
        entry = ("python jobs/train.py --freeze-encoder --num-train-epochs 1 "
                 f"--max-train-samples 200 --max-eval-samples 100 --output-dir {out} --seed 3")
        job = client.submit_job(
            entrypoint=entry,
            runtime_env={"working_dir": str(ROOT), "env_vars": env,
                         "excludes": [".venv", ".venv-ci", ".git", "outputs", ".ci-cache",
                                      "benchmarks", "*.db", "mlruns"]})
        deadline = time.time() + 540
        status = client.get_job_status(job)
        while status not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            assert time.time() < deadline, client.get_job_logs(job)[-4000:]
            time.sleep(2)
            status = client.get_job_status(job)
        logs = client.get_job_logs(job)
        assert status == JobStatus.SUCCEEDED, logs[-4000:]
        m = json.loads((out / "metrics.json").read_text())
        assert 0.0 <= m["test"]["macro_f1"] <= 1.0
        assert "Ray Train run" in logs and "test macro-F1" in logs   # trained by Ray Train
        # the Ray Train worker (rank 0) logged the run to the default sqlite store
        info = json.loads((out / "mlflow_run.json").read_text())
        assert info["ray_run_name"] and info["run_id"]
    finally:
        head.stop()
