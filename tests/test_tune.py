"""hamr tune: the search space, a small sweep with nested MLflow runs, and (slow) no placement
group or CPU left behind by ASHA-stopped Ray Train trials."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from hamr_dist import tune as hamr_tune
from hamr_dist.cli import config_from_args, parser
from hamr_dist.config import TrainConfig
from hamr_dist.errors import ConfigError


def test_default_space_and_yaml_override(tmp_path):
    from ray.tune.search.sample import Categorical, Float
    sp = hamr_tune.load_space()
    assert set(sp) == {"tau", "lam", "gamma", "k"}
    ps = hamr_tune.param_space(sp)
    assert isinstance(ps["tau"], Float) and (ps["tau"].lower, ps["tau"].upper) == (0.3, 1.0)
    g = ps["gamma" + hamr_tune.ONE_MINUS]          # log scale of 1 - gamma
    assert g.lower == pytest.approx(0.001) and g.upper == pytest.approx(0.1)
    assert isinstance(ps["k"], Categorical) and ps["k"].categories == [5, 10, 20]
    assert hamr_tune.decode({"gamma" + hamr_tune.ONE_MINUS: 0.01, "k": 5}) == {
        "gamma": pytest.approx(0.99), "k": 5}

    f = tmp_path / "space.yaml"
    f.write_text(yaml.safe_dump({"lam": None, "tau": {"uniform": [0.5, 0.9]}, "k": [5, 10],
                                 "learning-rate": {"loguniform": [1e-4, 1e-2]},
                                 "hard_ratio": 0.1}))
    sp = hamr_tune.load_space(f)
    assert "lam" not in sp and sp["hard_ratio"] == 0.1 and "learning_rate" in sp
    ps = hamr_tune.param_space(sp)
    assert ps["hard_ratio"] == 0.1 and ps["k"].categories == [5, 10]

    example = hamr_tune.load_space(Path(__file__).resolve().parents[1] / "tune" / "space.yaml")
    assert {"tau", "lam", "gamma", "k", "learning_rate", "hard_ratio"} == set(example)
    hamr_tune.param_space(example)

    for bad in ({"nope": {"uniform": [0, 1]}}, {"tau": {"uniform": [1, 0]}},
                {"tau": {"normal": [0, 1]}}, {"gamma": {"one_minus_loguniform": [0.9, 1.0]}},
                {"output_dir": ["a", "b"]}):
        f.write_text(yaml.safe_dump(bad))
        with pytest.raises(ConfigError):
            hamr_tune.load_space(f)


def test_tune_cli_flags():
    args = parser().parse_args(["tune", "--num-samples", "3", "--scheduler", "none",
                                "--num-workers", "2", "--tau", "0.5"])
    assert args.num_samples == 3 and args.scheduler == "none"
    cfg = config_from_args(args)
    assert cfg.num_workers == 2 and cfg.tau == 0.5


@pytest.mark.slow
def test_small_sweep_nested_runs_and_retrain_config(ray_local, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = TrainConfig(freeze_encoder=True, num_train_epochs=2, max_train_samples=200,
                      max_eval_samples=100, output_dir=str(tmp_path / "sweep"), mlflow=True,
                      method="hamr-no-knn", seed=1)
    res = hamr_tune.sweep(cfg, {"tau": {"uniform": [0.3, 1.0]},
                                "gamma": {"one_minus_loguniform": [0.9, 0.999]}},
                          num_samples=2, scheduler="none", max_concurrent_trials=2, seed=0)
    assert len(res.results) == 2 and all(r.error is None for r in res.results)
    assert set(res.best_values) == {"tau", "gamma"} and 0.9 <= res.best_values["gamma"] <= 0.999
    assert res.best_dev_macro_f1 == max(r.metrics_dataframe["dev_macro_f1"].max()
                                        for r in res.results)
    # one command retrains it: hamr train --config best_config.yaml
    again = config_from_args(parser().parse_args(["train", "--config", str(res.best_config_path)]))
    assert again.tau == pytest.approx(res.best_values["tau"]) and again.method == "hamr-no-knn"
    assert again.mlflow_parent_run_id is None
    # MLflow: a parent run with one nested run per trial, each with its epochs
    c = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'sweep' / 'mlflow.db'}")
    parent = c.get_run(res.mlflow_run_id)
    assert parent.data.metrics["best_dev_macro_f1"] == pytest.approx(res.best_dev_macro_f1)
    kids = c.search_runs([parent.info.experiment_id],
                         filter_string=f"tags.mlflow.parentRunId = '{res.mlflow_run_id}'")
    assert len(kids) == 2
    for k in kids:
        assert len(c.get_metric_history(k.info.run_id, "dev_macro_f1")) == 2


@pytest.mark.slow
def test_asha_sweep_leaves_no_placement_groups(ray_local, tmp_path):
    """8 trials x 2 Ray Train workers under ASHA: stopped trials must give back their
    placement groups and CPUs (Ray 2.60, Train V2 inside Tune)."""
    import ray
    from ray.util import list_named_actors, placement_group_table

    def live_pgs():        # from the GCS: the session's Ray runs without a dashboard
        return {pg_id: t for pg_id, t in placement_group_table().items()
                if t.get("state") != "REMOVED"}

    def our_actors():
        return [a for a in list_named_actors(all_namespaces=True)
                if a["name"].startswith(("hardness-", "neighbours-"))]

    before, actors_before = set(live_pgs()), len(our_actors())
    cfg = TrainConfig(freeze_encoder=True, num_train_epochs=3, max_train_samples=160,
                      max_eval_samples=80, output_dir=str(tmp_path / "asha"), mlflow=False,
                      method="hamr-no-knn", num_workers=2, seed=2)
    # the learning rate spreads dev macro-F1 widely, so that ASHA has trials to stop
    space = {"learning_rate": {"loguniform": [1e-5, 3e-2]}, "tau": {"uniform": [0.3, 1.0]}}
    res = hamr_tune.sweep(cfg, space, num_samples=8, scheduler="asha", grace_period=1,
                          reduction_factor=2, max_concurrent_trials=2, seed=0)
    total = ray.cluster_resources().get("CPU", 0)
    deadline = time.time() + 90
    while True:
        leaked = {k: v for k, v in live_pgs().items() if k not in before}
        free = ray.available_resources().get("CPU", 0)
        if (not leaked and free == total) or time.time() > deadline:
            break
        time.sleep(2)
    assert not leaked, [(k, v.get("state"), v.get("name")) for k, v in leaked.items()]
    assert free == total, (free, total)
    iters = [len(r.metrics_dataframe) for r in res.results if r.metrics_dataframe is not None]
    assert len(res.results) == 8 and min(iters) < 3, iters      # ASHA stopped some early
    assert len(our_actors()) == actors_before, our_actors()     # the runs' actors are gone
