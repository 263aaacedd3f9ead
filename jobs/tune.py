"""Ray Jobs entry point for ``hamr tune`` (Ray Tune sweep; see ``python jobs/tune.py --help``):

    ray job submit --working-dir . -- python jobs/tune.py --data DATA --num-workers 2 --use-gpu \
        --num-samples 16 --space tune/space.yaml --output-dir /shared/sweeps/sst5 \
        --mlflow-uri http://HEAD_PRIVATE_IP:5000

Inside a Ray job the sweep attaches to the job's cluster (Ray Jobs sets ``RAY_ADDRESS``); every
trial is a Ray Train run with ``--num-workers`` workers (0: the trial trains in its own
process). ``$MLFLOW_TRACKING_URI`` is passed on as ``--mlflow-uri``. The best configuration is
written to ``<output-dir>/best_config.yaml``: ``python jobs/train.py --config`` retrains it.
"""
from __future__ import annotations

import sys

from _common import use_working_dir, with_mlflow_uri


def job_argv(argv: list[str]) -> list[str]:
    return ["tune", *with_mlflow_uri(argv)]


if __name__ == "__main__":
    use_working_dir()
    from hamr_dist.cli import main
    sys.exit(main(job_argv(sys.argv[1:])))
