"""Shared by the Ray Jobs entry points: import the package from the job's working directory."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def use_working_dir() -> None:
    """``--working-dir .`` ships this checkout; make its ``hamr_dist`` the one imported
    (the cluster may have an older version installed)."""
    if (ROOT / "hamr_dist" / "__init__.py").is_file() and str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def has_flag(argv: list[str], *names: str) -> bool:
    """Whether a flag is given, in either spelling (``--num-workers`` or ``--num_workers``)."""
    def norm(a: str) -> str:
        flag, eq, value = a.partition("=")
        return (flag.replace("_", "-") if flag.startswith("--") else flag) + eq + value
    argv = [norm(a) for a in argv]
    return any(a == n or a.startswith(n + "=") for a in argv for n in map(norm, names))


def in_ray_job() -> bool:
    """Ray Jobs sets RAY_ADDRESS (and a submission id) for the entrypoint."""
    return bool(os.environ.get("RAY_ADDRESS") or os.environ.get("RAY_JOB_SUBMISSION_ID"))


def with_mlflow_uri(argv: list[str]) -> list[str]:
    """A job's $MLFLOW_TRACKING_URI becomes --mlflow-uri unless the command says otherwise."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri and not has_flag(argv, "--mlflow-uri", "--no-mlflow"):
        return [*argv, "--mlflow-uri", uri]
    return list(argv)
