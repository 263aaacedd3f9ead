"""The hamr command as a user runs it: exit codes, one-line errors, YAML configs, predict."""
import json
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
