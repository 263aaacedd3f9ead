"""cluster.yaml (AWS) and cluster.local.yaml (on-premises) pass Ray's own launcher checks.

Offline: ``prepare_config`` (merges the provider's defaults.yaml, node-type min/max workers)
and ``validate_config`` (Ray's ray-schema.json plus its consistency checks) need neither the
network nor a cloud SDK; cloud-side bootstrapping (key pairs, IAM, subnets: boto3) only happens
in ``ray up`` and is not exercised. The tests block sockets and ``boto3`` to make sure.
"""
from __future__ import annotations

import copy
import re
import socket
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["cluster.yaml", "cluster.local.yaml"]
BUILTIN = {"CPU", "GPU", "memory", "object_store_memory"}


@pytest.fixture
def offline(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the cluster config check tried to use the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setitem(sys.modules, "boto3", None)      # `import boto3` raises ImportError
    monkeypatch.setitem(sys.modules, "botocore", None)


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def prepared(name: str) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config
    cfg = prepare_config(copy.deepcopy(load(name)))
    validate_config(cfg)
    return cfg


@pytest.mark.parametrize("name", CONFIGS)
def test_valid_for_ray(name, offline):
    cfg = prepared(name)
    assert cfg["head_node_type"] in cfg["available_node_types"]
    assert (ROOT / "pyproject.toml").is_file() and cfg["file_mounts"]["~/hamr_dist"] == "."


@pytest.mark.parametrize("name", CONFIGS)
def test_schema_rejects_a_broken_config(name, offline):
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config
    bad = load(name)
    bad["max_wrokers"] = 3                    # a typo: the schema allows no unknown keys
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))


def test_aws_head_runs_no_training_and_workers_have_gpus(offline):
    cfg = prepared("cluster.yaml")
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("GPU", None) == 0 and head["max_workers"] == 0
    assert any("--num-gpus=0" in c for c in cfg["head_start_ray_commands"])
    gpu = {k: v for k, v in types.items() if k != cfg["head_node_type"]}
    assert gpu and all(v["resources"].get("GPU", 0) >= 1 and v["max_workers"] >= 1
                       for v in gpu.values())
    assert sum(v["min_workers"] for v in types.values()) <= cfg["max_workers"]
    # FAISS on GPU where the GPUs are, on CPU on the head
    assert any("[gpu]" in c for c in cfg["worker_setup_commands"])
    assert any("[cpu]" in c for c in cfg["head_setup_commands"])


def test_local_head_runs_no_training(offline):
    raw = load("cluster.local.yaml")
    assert raw["provider"]["head_ip"] and raw["provider"]["worker_ips"]
    cfg = prepared("cluster.local.yaml")
    assert any("--num-gpus=0" in c for c in cfg["head_start_ray_commands"])
    node = next(iter(cfg["available_node_types"].values()))
    assert node["min_workers"] == node["max_workers"] == len(raw["provider"]["worker_ips"])


@pytest.mark.parametrize("name", CONFIGS)
def test_ray_version_pinned_to_ours(name):
    import ray
    cmds = " ".join(load(name)["setup_commands"])
    pins = re.findall(r"ray\[[^\]]*\]==([0-9][^\"' ]*)", cmds)
    assert pins == [ray.__version__], pins


REQUEST = re.compile(r"(?:resources(?:_per_worker)?\s*=|[\"']resources[\"']\s*:)\s*\{([^}]*)\}")


def scan(src: str) -> set[str]:
    names = set()
    for m in REQUEST.finditer(src):
        names |= set(re.findall(r"[\"']([A-Za-z_][\w.:-]*)[\"']\s*:", m.group(1)))
    return names - BUILTIN


def requested_custom_resources() -> set[str]:
    """Custom resource names the code asks Ray for (actor/task options, ScalingConfig)."""
    return set().union(*(scan(py.read_text()) for py in (ROOT / "hamr_dist").rglob("*.py")))


def declared_resources(cfg: dict) -> set[str]:
    names = set()
    for t in cfg["available_node_types"].values():
        names |= set(t.get("resources") or {})
    for cmd in cfg.get("head_start_ray_commands", []) + cfg.get("worker_start_ray_commands", []):
        for m in re.finditer(r"--resources=?\s*'(\{[^']*\})'", cmd):
            names |= set(yaml.safe_load(m.group(1)))
    return names - BUILTIN


@pytest.mark.parametrize("name", CONFIGS)
def test_custom_resources_requested_are_declared(name, offline):
    cfg = prepared(name)
    missing = requested_custom_resources() - declared_resources(cfg)
    assert not missing, f"{name} declares no node with custom resource(s) {sorted(missing)}"


def test_resource_scan_finds_requests():
    """The scanner itself: it would notice a custom resource in an actor's options."""
    src = 'opts = dict(num_cpus=1, resources={"hamr_head": 1, "GPU": 1})\nx = {"resources": {"big_mem": 2}}\n'
    assert scan(src) == {"hamr_head", "big_mem"}


def commands(cfg: dict) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands",
            "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")
    return [c for k in keys for c in (cfg.get(k) or [])]


ANY_INTERFACE = re.compile(r"(?:^|[\s=:'\"/])(?:0\.0\.0\.0|::|\[::\])(?:$|[\s:'\"/])")


@pytest.mark.parametrize("name", CONFIGS)
def test_nothing_listens_on_every_interface(name, offline):
    """The dashboard serves the Ray Jobs API (anyone who reaches it runs code on the cluster):
    loopback only, reached through `ray dashboard`'s SSH tunnel. MLflow: the private interface,
    behind MLflow's basic-auth app, credentials from a mounted file, none in the config."""
    cfg = prepared(name)
    for cmd in commands(cfg):
        assert not ANY_INTERFACE.search(cmd), f"{name}: binds every interface: {cmd}"
    head = " ".join(cfg["head_start_ray_commands"])
    assert re.search(r"ray start --head\b[^;]*--dashboard-host[= ]127\.0\.0\.1\b", head)
    mlflow = [c for c in cfg["head_start_ray_commands"] if "mlflow server" in c]
    assert len(mlflow) == 1 and "--app-name basic-auth" in mlflow[0]
    assert "$MLFLOW_TRACKING_PASSWORD" in mlflow[0] and "admin_password = %s" in mlflow[0]
    assert cfg["file_mounts"]["~/.hamr/mlflow.env"] == "~/.hamr/mlflow.env"
    for cmd in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]:
        if "ray start" in cmd:      # every Ray process inherits the MLflow credentials
            assert cmd.index(". $HOME/.hamr/mlflow.env") < cmd.index("ray start")


def test_any_interface_pattern():
    """The check itself: it notices every spelling of a wildcard bind, and only those."""
    for bad in ("--dashboard-host=0.0.0.0", "mlflow server --host 0.0.0.0 --port 5000",
                "--host '0.0.0.0'", "--host :: --port 1", "--bind [::]:5000"):
        assert ANY_INTERFACE.search(bad), bad
    for ok in ("--dashboard-host=127.0.0.1", "--host 10.0.0.10", "--port=6379",
               "pip install 'ray==2.60.0'"):
        assert not ANY_INTERFACE.search(ok), ok


@pytest.mark.parametrize("name", CONFIGS)
def test_commands_are_valid_shell(name):
    import subprocess
    for cmd in commands(load(name)):
        r = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
        assert r.returncode == 0, (cmd, r.stderr)


def test_checkpoints_are_read_weights_only(tmp_path):
    """A checkpoint that would run code when unpickled is refused; the loop's state (tensors,
    numpy arrays and scalars, RNG states, plain containers) loads."""
    import numpy as np
    import torch
    from hamr_dist.checkpoint import load_state_file
    from hamr_dist.errors import HamrError
    state = {"model": {"w": torch.ones(2)}, "hardness": {"h": np.arange(3, dtype=np.float32),
             "visits": np.zeros(3, dtype=np.int64)}, "order": np.array([2, 0, 1]),
             "score": np.float64(0.5), "rng": np.random.default_rng(1).bit_generator.state,
             "torch_rng": torch.get_rng_state(), "history": [{"epoch": 1, "loss": 0.3}]}
    torch.save(state, tmp_path / "state.pt")
    back = load_state_file(tmp_path / "state.pt")
    assert np.array_equal(back["hardness"]["h"], state["hardness"]["h"])
    assert back["score"] == 0.5 and back["rng"] == state["rng"]

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (marker.write_text, ("code ran",))
    torch.save({"model": {}, "x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(HamrError, match="cannot be loaded safely"):
        load_state_file(tmp_path / "evil.pt")
    assert not marker.exists()
