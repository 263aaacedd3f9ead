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
