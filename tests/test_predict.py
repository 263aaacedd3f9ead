"""hamr predict as a user runs it: one output line per input line, one-line errors (exit 2)."""
import json

import pytest

from hamr_dist.cli import main

from test_export import trained


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A small trained output directory with its encoder copied (encoder/ + head.pt)."""
    tmp = tmp_path_factory.mktemp("predict")
    _, out = trained(tmp, str(tmp / "cache"), save_encoder=True)
    return out


def predict_rows(model_dir, tmp_path, *args):
    out = tmp_path / "p.jsonl"
    assert main(["predict", str(model_dir), *args, "--output", str(out)]) == 0
    return [json.loads(l) for l in out.read_text().splitlines()]


def one_line_error(capsys, *argv) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hamr: error: ") and "Traceback" not in err[0]
    return err[0]


def test_blank_lines_keep_one_output_line_per_input_line(model_dir, tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("the striker scored twice\n\n   \nrain all day tomorrow\n")
    rows = predict_rows(model_dir, tmp_path, "--input", str(f))
    assert len(rows) == 4
    assert [r["prediction"] is None for r in rows] == [False, True, True, False]
    assert rows[0]["input"] == "the striker scored twice" and rows[3]["input"] == "rain all day tomorrow"
    j = tmp_path / "in.jsonl"
    j.write_text('{"text": "simmer the sauce"}\n\n{"text": "stocks fell"}\n')
    rows = predict_rows(model_dir, tmp_path, "--input", str(j))
    assert [r["prediction"] is None for r in rows] == [False, True, False]


def test_empty_inputs_are_refused(model_dir, tmp_path, capsys):
    assert "text 2 is empty" in one_line_error(capsys, "predict", str(model_dir), "--text", "ok", "")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert "is empty" in one_line_error(capsys, "predict", str(model_dir), "--input", str(empty))


def test_broken_output_dirs_are_one_line_errors(model_dir, tmp_path, capsys):
    import shutil
    no_head = tmp_path / "no_head"
    shutil.copytree(model_dir, no_head)
    (no_head / "head.pt").unlink()
    assert "no head.pt" in one_line_error(capsys, "predict", str(no_head), "--text", "x")

    cut = tmp_path / "cut"
    shutil.copytree(model_dir, cut)
    weights = cut / "encoder" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert "could not be loaded" in one_line_error(capsys, "predict", str(cut), "--text", "x")

    assert "no such folder" in one_line_error(capsys, "predict", str(tmp_path / "nope"),
                                              "--text", "x")
    assert "not a trained hamr output directory" in one_line_error(
        capsys, "predict", str(tmp_path), "--text", "x")
