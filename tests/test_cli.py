"""The hamr command as a user runs it: exit codes, one-line errors, YAML configs, predict."""
import json
import os
import subprocess
import sys

import pytest

from hamr_dist.cli import config_from_args, main, parser


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "hamr_dist.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def test_help_explains_every_flag():
    out = run_cli("train", "--help").stdout
    for flag in ["--learning-rate", "--num-train-epochs", "--per-device-train-batch-size",
                 "--max-seq-length", "--seed", "--output-dir", "--meta-scope", "--method",
                 "--freeze-encoder", "--tau", "--lam", "--gamma", "--k", "--config"]:
        assert flag in out


@pytest.mark.parametrize("args,needle", [
    (["--method", "nope"], "invalid choice"),
    (["--data", "/nonexistent/folder"], "/nonexistent/folder"),
    (["--meta-scope", "top0"], "--meta-scope"),
    (["--model", "/nonexistent/model", "--max-train-samples", "20"], "/nonexistent/model"),
])
def test_bad_input_is_one_line_exit_2(args, needle, tmp_path):
    r = run_cli("train", "--output-dir", str(tmp_path), *args)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    err = [l for l in r.stderr.splitlines() if l.startswith("hamr: error") or "error:" in l]
    assert len(err) == 1 and needle in err[0], r.stderr


def test_bad_data_file_names_file_and_line(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for split in ("train", "dev", "test"):
        (d / f"{split}.jsonl").write_text('{"text": "fine", "label": 0}\n{"text": "ok", "label": 1}\n')
    (d / "train.jsonl").write_text('{"text": "fine", "label": 0}\n{"text": "x", "label": [1]}\n')
    r = run_cli("train", "--data", str(d), "--output-dir", str(tmp_path / "o"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "train.jsonl:2" in r.stderr and "label" in r.stderr


def test_yaml_config_and_flag_precedence(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("learning-rate: 0.002\nnum_train_epochs: 3\ntau: 0.5\n")
    args = parser().parse_args(["train", "--config", str(y), "--tau", "0.9"])
    cfg = config_from_args(args)
    assert cfg.learning_rate == 0.002 and cfg.num_train_epochs == 3 and cfg.tau == 0.9
    y.write_text("not_an_option: 1\n")
    assert main(["train", "--config", str(y)]) == 2


def test_train_then_predict(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--freeze-encoder", "--num-train-epochs", "1", "--max-train-samples", "300",
                 "--max-eval-samples", "100", "--output-dir", str(out), "--no-progress",
                 "--method", "ce"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "test macro-F1" in printed and str(out) in printed
    labels = json.loads((out / "label_map.json").read_text())["labels"]
    code = main(["predict", str(out), "--text", "the striker scored twice in the final",
                 "--output", str(tmp_path / "p.jsonl")])
    assert code == 0
    rows = [json.loads(l) for l in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["prediction"] in labels


def test_hugging_face_underscore_spellings(tmp_path):
    """--output_dir as well as --output-dir, for every flag (HF's argument parser does so)."""
    args = parser().parse_args(["train", "--output_dir", str(tmp_path), "--num_train_epochs", "2",
                                "--per_device_train_batch_size", "8", "--learning_rate", "0.01",
                                "--no_freeze_encoder", "--max_seq_length", "64",
                                "--overwrite_output_dir", "--max_steps", "7"])
    cfg = config_from_args(args)
    assert (cfg.output_dir, cfg.num_train_epochs, cfg.per_device_train_batch_size) == (
        str(tmp_path), 2, 8)
    assert cfg.learning_rate == 0.01 and cfg.freeze_encoder is False and cfg.max_seq_length == 64
    assert cfg.max_steps == 7 and args.overwrite_output_dir
    assert config_from_args(parser().parse_args(["train", "--freeze_encoder"])).freeze_encoder
    args = parser().parse_args(["embed", "--data", "d", "--cache_dir", "c"])
    assert args.cache_dir == "c"
    help_text = run_cli("train", "--help").stdout
    assert "--output_dir" not in help_text and "--output-dir" in help_text   # help stays short


def test_help_lists_choices_version_and_embed_description():
    from hamr_dist.config import FIELDS
    wide = subprocess.run([sys.executable, "-m", "hamr_dist.cli", "train", "--help"],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "400"})
    help_text = " ".join(wide.stdout.split("options:", 1)[1].split())
    with_choices = [f for f in FIELDS.values() if f.metadata.get("choices")]
    assert {"method", "task", "pooling", "meta_set", "knn_index", "ner_sample_loss"} <= {
        f.name for f in with_choices}
    train_parser = next(a for a in parser()._actions if a.dest == "command").choices["train"]
    for f in with_choices:
        action = next(a for a in train_parser._actions if a.dest == f.name)
        listed = "one of: " + ", ".join(f.metadata["choices"])
        assert action.help.endswith(listed) and listed in help_text, f.name
    embed = run_cli("embed", "--help").stdout
    assert "neighbour boost" in embed and "cache" in embed
    r = run_cli("--version")
    from hamr_dist import __version__
    assert r.returncode == 0 and r.stdout.strip() == f"hamr {__version__}"


def test_model_path_and_unreachable_hub_name_fail_fast(tmp_path, monkeypatch):
    import time
    t0 = time.time()
    r = run_cli("train", "--output-dir", str(tmp_path / "o"), "--model", str(tmp_path / "nope"))
    startup = time.time() - t0              # what a failing run costs here without any network
    assert r.returncode == 2 and "no such folder" in r.stderr and "Repo id" not in r.stderr
    # a hub name that is neither cached nor reachable: one line within seconds, not 50 s of
    # retries (HF_HUB_OFFLINE unset; a closed local port stands for "no network")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    t0 = time.time()
    r = run_cli("train", "--output-dir", str(tmp_path / "o"), "--model", "no-org/no-such-model")
    assert r.returncode == 2 and time.time() - t0 < startup + 20     # the retries took 50 s
    err = [l for l in r.stderr.splitlines() if l.strip() and not l.startswith("INFO")]
    assert len(err) == 1 and "unreachable" in err[0] and "no-org/no-such-model" in err[0], r.stderr


def test_one_epoch_numbering_console_metrics_mlflow(tmp_path, capsys, monkeypatch):
    from mlflow.tracking import MlflowClient
    out = tmp_path / "run"
    assert main(["train", "--freeze-encoder", "--num-train-epochs", "2", "--max-train-samples",
                 "200", "--max-eval-samples", "60", "--output-dir", str(out), "--no-progress",
                 "--method", "ce", "--mlflow"]) == 0
    printed = capsys.readouterr().out
    best = int(printed.split("best epoch ")[1].split(",")[0])
    m = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in m["history"]] == [1, 2]
    assert m["best_epoch"] == best
    devs = [h["dev_macro_f1"] for h in m["history"]]
    assert devs[best - 1] == max(devs) == m["dev"]["macro_f1"]
    info = json.loads((out / "mlflow_run.json").read_text())
    c = MlflowClient(tracking_uri=info["tracking_uri"])
    assert c.get_run(info["run_id"]).data.metrics["best_epoch"] == best
    assert [x.step for x in c.get_metric_history(info["run_id"], "loss")] == [1, 2]


def test_options_the_run_ignores_are_named_in_a_warning(caplog):
    def warned(*argv):
        caplog.clear()
        with caplog.at_level("WARNING", logger="hamr_dist"):
            config_from_args(parser().parse_args(["train", *argv]))
        return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]

    assert warned("--method", "ce", "--tau", "2", "--k", "5") == [
        "--tau, --k: no effect with --method ce; the run ignores them"]
    assert warned("--method", "focal", "--dice-alpha", "0.1", "--checkpoint-every", "2") == [
        "--checkpoint-every: no effect without Ray workers (--num-workers); the run ignores it",
        "--dice-alpha: no effect with --method focal; the run ignores it"]
    # read by the method, by Ray with workers, or set by a preset rather than the user: quiet
    assert warned("--method", "hamr-la", "--tau", "2", "--class-prior-draw", "0.3") == []
    assert warned("--method", "ce", "--num-workers", "2", "--checkpoint-every", "2") == []
    assert warned("--method", "ce", "--preset", "paper") == []
