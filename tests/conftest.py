"""Shared fixtures. ``ray_local``: one local Ray instance for the whole test session.

Starting Ray costs seconds here, so every test that needs it shares one instance, started on
first use (tests that never ask for it never pay) and shut down at the end of the session.
It is always a fresh local instance (``address="local"``): tests never attach to a cluster
named by ``RAY_ADDRESS``.
"""
from __future__ import annotations

import os

import pytest

RAY_CPUS = 4

# MLflow costs seconds per run (a new sqlite store); tests that check tracking turn it on.
os.environ.setdefault("HAMR_MLFLOW", "0")


def start_local_ray():
    import ray
    if ray.is_initialized():
        return ray
    # faster failure detection for the fault-tolerance tests (the controller polls workers)
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ray.init(address="local", num_cpus=RAY_CPUS, include_dashboard=False,
             log_to_driver=bool(int(os.environ.get("HAMR_TEST_RAY_LOGS", "0"))))
    return ray


@pytest.fixture(scope="session")
def ray_local():
    """The session's local Ray (4 logical CPUs, no dashboard)."""
    ray = start_local_ray()
    yield ray
    ray.shutdown()
