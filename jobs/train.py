"""Ray Jobs entry point for ``hamr train``:

    ray job submit --working-dir . -- python jobs/train.py --data DATA --num-workers 4 --use-gpu \
        --storage-path s3://BUCKET/hamr-runs --output-dir /shared/out/run1

Takes every flag of ``hamr train`` (``python jobs/train.py --help``). Inside a Ray job the run
attaches to the job's cluster (Ray Jobs sets ``RAY_ADDRESS``) and always trains with Ray Train,
so the training happens on the cluster's (GPU) workers, not in the driver process on the head:
``--num-workers`` defaults to 1 there. ``$MLFLOW_TRACKING_URI`` of the job (e.g. set with
``--runtime-env-json '{"env_vars": {"MLFLOW_TRACKING_URI": "http://HEAD:5000"}}'``) is passed on
as ``--mlflow-uri``, so that the worker that logs uses it too.
"""
from __future__ import annotations

import sys

from _common import has_flag, in_ray_job, use_working_dir, with_mlflow_uri


def job_argv(argv: list[str]) -> list[str]:
    argv = list(argv)
    if in_ray_job() and not has_flag(argv, "--num-workers"):
        argv += ["--num-workers", "1"]
    return ["train", *with_mlflow_uri(argv)]


if __name__ == "__main__":
    use_working_dir()
    from hamr_dist.cli import main
    sys.exit(main(job_argv(sys.argv[1:])))
