"""hamr tune: the search space, trial resources, reports and MLflow states, the default seed and
grace period; (slow) a small in-process sweep of the default method with nested MLflow runs, and
an ASHA sweep of Ray Train trials of the default method that leaves no placement group, CPU or
RUNNING/FAILED MLflow run behind."""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
import yaml

from hamr_dist import tune as hamr_tune
from hamr_dist.cli import config_from_args, parser
from hamr_dist.config import TrainConfig
from hamr_dist.errors import ConfigError
from hamr_dist.methods import get_method


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
    # unset: the sweep decides (seed: --seed; grace period: default_grace_period)
    assert args.tune_seed is None and args.grace_period is None


# ---------------------------------------------------------------------------------------------
# issue 11: default method with workers, honest trial states, paths, names, seed, grace period
# ---------------------------------------------------------------------------------------------
def test_trial_placement_group_holds_the_neighbour_actor(ray_local):
    """A Ray Train trial of the default method creates the neighbour actor (1 CPU) inside the
    trial, where Ray places it in the trial's placement group: the group must have a bundle it
    fits (it had only {'CPU': 0.01}: every trial failed with 'cannot fit into any bundles')."""
    import dataclasses

    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    cfg = TrainConfig(num_workers=2)                       # the default method
    assert get_method(cfg.method).knn                      # has neighbours
    bundles = hamr_tune.trial_bundles(cfg)
    assert bundles == [{"CPU": 0.01}, {"CPU": 1}]
    assert hamr_tune.trial_bundles(dataclasses.replace(cfg, method="hamr-no-knn")) == [
        {"CPU": 0.01}]
    assert hamr_tune.trial_bundles(dataclasses.replace(cfg, num_workers=0)) == [{"CPU": 1}]
    # concurrency: on 4 CPUs one such trial fits whole (2 workers + 1 + 0.01 CPUs; two would
    # let the trials' groups hold CPUs that neither Train run can then get); three trials of
    # one worker without neighbours (1.01 CPUs each)
    assert ray.cluster_resources()["CPU"] == 4
    assert hamr_tune._fitting_trials(cfg) == 1
    assert hamr_tune._fitting_trials(dataclasses.replace(cfg, method="hamr-no-knn",
                                                         num_workers=1)) == 3

    @ray.remote
    def in_trial(name):       # what train_distributed does inside a trial's process
        from hamr_dist.distributed.actors import create_neighbour_actor
        from hamr_dist.distributed.trainer import _in_placement_group
        assert _in_placement_group()
        a = create_neighbour_actor(name, cfg.to_dict(), num_gpus=0)
        try:
            return ray.get(a.info.remote(), timeout=120)["pid"]
        finally:
            ray.kill(a)

    for i, (b, fits) in enumerate(((bundles, True), ([{"CPU": 0.01}], False))):
        pg = placement_group(b)
        ray.get(pg.ready(), timeout=60)
        try:
            ref = in_trial.options(num_cpus=0.01, scheduling_strategy=PlacementGroupSchedulingStrategy(
                pg, placement_group_bundle_index=0,
                placement_group_capture_child_tasks=True)).remote(f"test-trial-nb-{i}")
            if fits:
                assert ray.get(ref, timeout=180) > 0
            else:
                with pytest.raises(ray.exceptions.RayTaskError, match="cannot fit"):
                    ray.get(ref, timeout=180)
        finally:
            remove_placement_group(pg)


def test_a_finished_trials_controller_goes_before_its_placement_groups(ray_local):
    """Tune calls on_trial_complete while the trial still runs: removing its Train group first
    let the controller start a new group, recorded too late or never, which then held 2 CPUs
    for the rest of the sweep (the next trial's workers timed out). The release now kills the
    controller first, and a group recorded after the release is removed on arrival."""
    import ray
    from ray.util import placement_group_table
    from ray.util.placement_group import placement_group

    def state(pg):
        return placement_group_table().get(pg.id.hex(), {}).get("state")

    @ray.remote(num_cpus=0)
    class Controller:
        def ping(self):
            return 1

    reg = ray.remote(num_cpus=0)(hamr_tune.PlacementGroupRegistry).remote()
    ctl = Controller.remote()
    pg, late = placement_group([{"CPU": 0.01}]), placement_group([{"CPU": 0.01}])
    try:
        ray.get([pg.ready(), late.ready(), ctl.ping.remote()], timeout=60)
        ray.get([reg.add_controller.remote("t1", ctl), reg.add.remote("t1", pg)])

        class Trial:
            trial_id = "t1"
        hamr_tune._release_callback(reg)._release(Trial())
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(ctl.ping.remote(), timeout=60)
        assert state(pg) == "REMOVED"
        ray.get(reg.add.remote("t1", late))          # recorded after the release
        assert state(late) == "REMOVED"
        assert ray.get(reg.pop.remote("t1")) == ([], [])
    finally:
        ray.kill(reg)


def test_metric_names_are_legal_for_tune():
    """Tune's TensorBoard logger warned once per class name with a space ('Summary name
    dev_f1_very positive is illegal'); tensorboardX's own cleaner must leave ours unchanged."""
    from tensorboardX.summary import _clean_tag
    rec = {"epoch": 1, "dev_macro_f1": 0.5, "loss": 1.0,
           "dev_per_class_f1": {"very positive": 0.25, "B-LOC": 0.5, "a/b:c": 0.75}}
    flat = hamr_tune._flat(rec)
    assert all(_clean_tag(k) == k for k in flat), flat
    assert flat["dev_f1_very_positive"] == 0.25 and flat["dev_f1_a/b_c"] == 0.75
    assert flat["dev_macro_f1"] == 0.5 and "dev_per_class_f1" not in flat


def test_best_config_paths_are_resolved(tmp_path, monkeypatch):
    """best_config.yaml is read from anywhere: local paths absolute, hub names untouched."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "sst5").mkdir(parents=True)
    d = {"data": "data/sst5", "model": "sentence-transformers/all-MiniLM-L6-v2",
         "embedder": None, "cache_dir": "cache", "storage_path": "s3://bucket/runs",
         "output_dir": "out/tune", "tau": 0.5}
    r = hamr_tune.resolved_paths(d)
    assert r["data"] == str(tmp_path / "data" / "sst5")
    assert r["cache_dir"] == str(tmp_path / "cache") and r["output_dir"] == str(tmp_path / "out" / "tune")
    assert r["model"] == d["model"] and r["storage_path"] == d["storage_path"]
    assert r["embedder"] is None and r["tau"] == 0.5


def test_default_grace_period_waits_until_the_searched_options_act(tmp_path):
    """At epoch 1 h is uniform and no boost exists yet, so tau, gamma, lambda and k cannot
    change anything: two runs that differ only in them are identical after epoch 1 and differ
    after epoch 2. ASHA's first rung therefore comes at epoch 2 (it was 1: all trials tied)."""
    from hamr_dist.train.loop import train
    base = dict(freeze_encoder=True, num_train_epochs=2, max_train_samples=120,
                max_eval_samples=60, progress=False, mlflow=False, seed=3)
    a = train(TrainConfig(**base, output_dir=str(tmp_path / "a"), tau=0.3, gamma=0.9, lam=0.0,
                          k=5)).metrics["history"]
    b = train(TrainConfig(**base, output_dir=str(tmp_path / "b"), tau=1.0, gamma=0.999, lam=1.0,
                          k=20)).metrics["history"]
    assert (a[0]["loss"], a[0]["dev_macro_f1"]) == (b[0]["loss"], b[0]["dev_macro_f1"])
    assert a[1]["loss"] != b[1]["loss"]

    cfg = TrainConfig(num_train_epochs=5)
    assert hamr_tune.default_grace_period(cfg, hamr_tune.DEFAULT_SPACE) == 2
    assert hamr_tune.default_grace_period(cfg, {"learning_rate": {"loguniform": [1e-4, 1e-2]}}) == 1
    # the boost first acts at epoch knn_build_freq + 1; a fixed value is not searched
    assert hamr_tune.default_grace_period(TrainConfig(num_train_epochs=5, knn_build_freq=3),
                                          {"lam": {"uniform": [0, 1]}, "tau": 0.5}) == 4
    assert hamr_tune.default_grace_period(TrainConfig(num_train_epochs=1),
                                          hamr_tune.DEFAULT_SPACE) == 1


def test_trial_reports_hold_the_last_epoch_and_turn_a_stop_into_an_early_stop(monkeypatch):
    """In-process trials: Tune ends a trial by raising SystemExit out of tune.report; that is
    an early stop (not a failure), and the last epoch is reported only after the run."""
    from ray import tune

    from hamr_dist.tracking import StoppedEarly
    sent = []

    def fake_report(metrics):
        sent.append(metrics["epoch"])
        if metrics["epoch"] == 2:
            raise SystemExit(0)

    monkeypatch.setattr(tune, "report", fake_report)
    report, held = hamr_tune._in_process_reporter(TrainConfig(num_train_epochs=3))
    report({"epoch": 1, "dev_macro_f1": 0.4, "dev_per_class_f1": {"a b": 0.4}}, None)
    report({"epoch": 3, "dev_macro_f1": 0.6}, None)            # the last: held back
    assert sent == [1] and held["last"]["epoch"] == 3
    with pytest.raises(StoppedEarly) as e:
        report({"epoch": 2, "dev_macro_f1": 0.5}, None)
    assert e.value.epoch == 2 and sent == [1, 2]


def test_ray_trial_reports_hold_the_last_epoch_until_the_final_report(monkeypatch):
    """Ray Train trials: the last epoch reaches Tune with the final report (test metrics,
    outputs and MLflow written), so ASHA's stop at max_t cannot cut them off."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class Queue(list):
        put = list.append

    def init(self):
        self._training_actor_item_queue = Queue()

    monkeypatch.setattr(TuneReportCallback, "__init__", init)
    cb = hamr_tune._epoch_callback(TrainConfig(num_train_epochs=2))
    q = cb._training_actor_item_queue
    cb.after_report(None, [{"epoch": 1, "dev_macro_f1": 0.4}, {}], None)
    assert [m["epoch"] for m in q] == [1]
    cb.after_report(None, [{"epoch": 2, "dev_macro_f1": 0.5}, {}], None)
    assert len(q) == 1                                            # held
    cb.after_report(None, [{"test": {"macro_f1": 0.5}, "best_epoch": 2}, {}], None)
    assert [m["epoch"] for m in q] == [1, 2] and "test" not in q[1]


def test_a_stopped_trials_thread_is_waited_for_at_exit(tmp_path):
    """The native crash of trial processes (SIGABRT, 'Fatal Python error: Aborted', a stack
    through THPVariable_dealloc / pthread_exit): Tune runs a trial in a daemon thread, and a
    process that exits while such a thread still frees tensors aborts. A stopped trial's thread
    is therefore waited for at exit; without the wait the same script aborts."""
    import subprocess
    import sys
    import textwrap
    script = tmp_path / "exit.py"
    script.write_text(textwrap.dedent("""
        import sys, threading, time
        import torch
        from hamr_dist.tune import _wait_at_exit
        torch.set_num_threads(1)
        until = time.time() + 1.0
        def unwinding():                 # a stopped trial's thread, releasing its tensors
            while time.time() < until:
                xs = [torch.randn(64, 64) for _ in range(100)]
                del xs
        t = threading.Thread(target=unwinding, daemon=True)
        t.start()
        if sys.argv[1] == "wait":
            _wait_at_exit(t)
        """))

    def run(mode):
        return subprocess.run([sys.executable, str(script), mode], capture_output=True,
                              text=True, timeout=120)
    ok = run("wait")
    assert ok.returncode == 0, ok.stderr
    assert any(run("no").returncode != 0 for _ in range(3))        # the crash it prevents


def test_stopped_early_is_finished_with_a_tag_not_failed(tmp_path):
    from mlflow.tracking import MlflowClient

    from hamr_dist import tracking
    cfg = TrainConfig(output_dir=str(tmp_path / "o"), mlflow=True, run_name="t")
    t = tracking.Tracker(cfg).open(None, None)
    t.fail(tracking.StoppedEarly(2))
    run = MlflowClient(tracking_uri=t.uri).get_run(t.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[tracking.STOPPED_TAG] == "2" and "hamr.error" not in run.data.tags
    # a run left behind (RUNNING, or FAILED by a stopped trial's exit) is settled from outside
    t2 = tracking.Tracker(cfg).open(None, None)
    t2.fail(SystemExit(0))
    assert MlflowClient(tracking_uri=t.uri).get_run(t2.run_id).info.status == "FAILED"
    n = tracking.settle_runs(t.uri, "hamr", f"attributes.run_id = '{t2.run_id}'", "FINISHED",
                             {tracking.STOPPED_TAG: 1})
    run2 = MlflowClient(tracking_uri=t.uri).get_run(t2.run_id)
    assert n == 1 and run2.info.status == "FINISHED" and "hamr.error" not in run2.data.tags
    assert tracking.settle_runs(t.uri, "hamr", f"attributes.run_id = '{t.run_id}'",
                                "FAILED") == 0                  # a closed run is left alone
    # a worker of a stopped Ray Train trial that fails while the trial is torn down (its
    # hardness actor killed first) does not turn the stopped trial into a failed one
    t2.fail(RuntimeError("HardnessActorLost: a hardness update failed"))
    run2 = MlflowClient(tracking_uri=t.uri).get_run(t2.run_id)
    assert run2.info.status == "FINISHED" and "hamr.error" not in run2.data.tags


def _write_dataset(folder: Path, n_train: int = 160) -> None:
    """A small dataset folder (JSON lines, class names as labels) from the synthetic corpus."""
    from hamr_dist.data.synthetic import make_synthetic
    d = make_synthetic(seed=0, n_train=n_train)
    folder.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        (folder / f"{split}.jsonl").write_text("".join(
            json.dumps({"text": r["text"], "label": d.label_names[r["label"]]}) + "\n"
            for r in getattr(d, split)))


def _trial_runs(client, parent_run_id):
    exp = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")


def _assert_honest_trial_runs(client, res, epochs):
    """Every trial's run FINISHED, none FAILED; those ASHA stopped tagged with their epoch."""
    ran = {(r.metrics or {}).get("trial_id"): len(r.metrics_dataframe) for r in res.results}
    kids = _trial_runs(client, res.mlflow_run_id)
    assert len(kids) == len(res.results)
    for k in kids:
        trial = k.info.run_name.rsplit("-", 1)[-1]
        n = ran[trial]
        assert k.info.status == "FINISHED", (k.info.run_name, k.info.status, k.data.tags)
        assert "hamr.error" not in k.data.tags, k.data.tags
        assert k.data.tags.get("hamr.stopped_early") == (str(n) if n < epochs else None)
        assert len(client.get_metric_history(k.info.run_id, "dev_macro_f1")) >= n
        if n == epochs:                          # ran to the end: test metrics logged too
            assert "test_macro_f1" in k.data.metrics


def _no_native_crash_in_ray_logs():
    import ray
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    crashed = [p.name for p in logs.glob("worker-*") if "Fatal Python error"
               in p.read_text(errors="replace")]
    assert not crashed, crashed


@pytest.mark.slow
def test_small_sweep_default_method_nested_runs_and_retrain_config(ray_local, tmp_path,
                                                                    monkeypatch):
    """In-process trials of the default method (the neighbour boost computed in the trial),
    started from a relative data path; ASHA with an explicit grace period of 1."""
    from mlflow.tracking import MlflowClient
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    _write_dataset(tmp_path / "data")
    cfg = TrainConfig(data="data", freeze_encoder=True, num_train_epochs=2,
                      max_train_samples=160, max_eval_samples=60, output_dir="sweep",
                      mlflow=True, seed=1)
    assert get_method(cfg.method).knn          # the default method: neighbours in the trial
    space = {"learning_rate": {"loguniform": [1e-5, 3e-2]}, "tau": {"uniform": [0.3, 1.0]},
             "gamma": {"one_minus_loguniform": [0.9, 0.999]}}
    res = hamr_tune.sweep(cfg, space, num_samples=4, scheduler="asha", grace_period=1,
                          max_concurrent_trials=2)
    assert len(res.results) == 4 and all(r.error is None for r in res.results)
    assert set(res.best_values) == {"learning_rate", "tau", "gamma"}
    assert res.best_dev_macro_f1 == max(r.metrics_dataframe["dev_macro_f1"].max()
                                        for r in res.results)
    # one command retrains it, from anywhere: paths in best_config.yaml are absolute
    written = yaml.safe_load(res.best_config_path.read_text())
    assert written["data"] == str(tmp_path / "data")
    assert written["output_dir"] == str(tmp_path / "sweep" / "best")
    monkeypatch.chdir("/")
    again = config_from_args(parser().parse_args(["train", "--config", str(res.best_config_path)]))
    assert again.tau == pytest.approx(res.best_values["tau"]) and again.method == cfg.method
    assert again.mlflow_parent_run_id is None and Path(again.data).is_dir()
    # MLflow: a parent run with one nested run per trial, each honest about how it ended
    c = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'sweep' / 'mlflow.db'}")
    parent = c.get_run(res.mlflow_run_id)
    assert parent.data.metrics["best_dev_macro_f1"] == pytest.approx(res.best_dev_macro_f1)
    _assert_honest_trial_runs(c, res, 2)
    summary = json.loads((tmp_path / "sweep" / "best.json").read_text())
    assert summary["errors"] == 0 and summary["seed"] == 1 and len(summary["per_trial"]) == 4
    # reproducible by default (the seed is --seed): the same first draws in a second sweep
    monkeypatch.chdir(tmp_path)
    res2 = hamr_tune.sweep(dataclasses.replace(cfg, output_dir="sweep2", num_train_epochs=1,
                                               mlflow=False), space, num_samples=2,
                           scheduler="none", max_concurrent_trials=2)

    def sampled(results):
        order = sorted(results, key=lambda r: r.metrics["trial_id"].rsplit("_", 1)[-1])
        return [hamr_tune.decode(r.config) for r in order]
    assert sampled(res2.results) == sampled(res.results)[:2]
    _no_native_crash_in_ray_logs()


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
    from mlflow.tracking import MlflowClient
    cfg = TrainConfig(freeze_encoder=True, num_train_epochs=3, max_train_samples=160,
                      max_eval_samples=80, output_dir=str(tmp_path / "asha"), mlflow=True,
                      num_workers=2, seed=2)
    assert get_method(cfg.method).knn      # the default: every trial creates a neighbour actor
    # the learning rate spreads dev macro-F1 widely, so that ASHA has trials to stop
    space = {"learning_rate": {"loguniform": [1e-5, 3e-2]}, "tau": {"uniform": [0.3, 1.0]}}
    res = hamr_tune.sweep(cfg, space, num_samples=5, scheduler="asha", grace_period=1,
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
    assert len(res.results) == 5 and min(iters) < 3, iters      # ASHA stopped some early
    assert len(our_actors()) == actors_before, our_actors()     # the runs' actors are gone
    _assert_honest_trial_runs(MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'asha' / 'mlflow.db'}"),
                              res, 3)
    _no_native_crash_in_ray_logs()
