"""benchmarks.reproduce re-runs recorded runs from their configs: a fresh record gives back its
numbers (exit 0); a record whose numbers were made otherwise is reported as differing (exit 1);
bad input exits 2."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("matplotlib")

from benchmarks import quality, reproduce  # noqa: E402


def test_reproduce_finds_records_that_the_code_no_longer_gives(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HAMR_CACHE", str(tmp_path / "cache"))
    doc = quality.main(["--tier", "probe", "--datasets", "synthetic", "--methods", "ce", "hamr-cb",
                        "--seeds", "1", "--epochs", "2", "--max-train-samples", "120",
                        "--max-eval-samples", "60", "--name", "q", "--out-dir", str(tmp_path / "res"),
                        "--cache-dir", str(tmp_path / "cache")])
    assert all(r["status"] == "ok" for r in doc["runs"])
    res = tmp_path / "res" / "q.json"
    out = tmp_path / "check.md"
    assert reproduce.main([str(res), "--out", str(out)]) == 0
    md = out.read_text()
    assert md.count("| same |") == 2 and "2 of 2 runs give their recorded numbers" in md
    assert "synthetic · hamr-cb · 1" in md and "git commit" in md

    assert "| same | - |" in md                 # no option resolves otherwise today

    # a record made by other code and defaults: dev 1 point higher, tau resolved to 2 then
    saved = json.loads(res.read_text())
    rec = next(r for r in saved["runs"] if r["method"] == "hamr-cb")
    rec["dev"]["macro_f1"] += 0.01
    rec["config"]["tau"] = 2.0
    res.write_text(json.dumps(saved))
    assert reproduce.main([str(res), "--methods", "hamr-cb", "--out", str(out)]) == 1
    md = out.read_text()
    assert "| differs | tau 2.0->0.7 |" in md and "0 of 1 runs" in md

    assert reproduce.main([str(res), "--seeds", "7"]) == 2
    assert reproduce.main([str(tmp_path / "nope.json")]) == 2
    err = capsys.readouterr().err
    assert "no recorded run matches" in err and "nope.json not found" in err


def test_changed_options_leave_out_what_the_run_does_not_read():
    from hamr_dist.config import TrainConfig
    then = {"tau": 2.0, "class_prior_power": 1.0, "dice_alpha": 0.5, "hardness_batch_steps": 1}
    want = {"ce": [],
            "hamr-cb": ["class_prior_power 1.0->0.5", "tau 2.0->0.7"],
            "dice": ["dice_alpha 0.5->0.01"]}
    for method, listed in want.items():
        rec = {"task": "cls",
               "config": {**TrainConfig(method=method).resolved("cls").to_dict(), **then}}
        assert reproduce.changed_options(rec, TrainConfig(method=method)) == listed, method
    # the Ray option counts once the run trains with Ray workers
    rec = {"task": "cls", "config": {**TrainConfig(method="ce").resolved("cls").to_dict(), **then}}
    assert reproduce.changed_options(rec, TrainConfig(method="ce", num_workers=2)) == [
        "num_workers 0->2", "hardness_batch_steps 1->16"]


def test_every_option_a_method_may_skip_is_an_option():
    from hamr_dist.config import FIELDS, RAY_ONLY
    from hamr_dist.methods import _READ_IF
    assert set(_READ_IF) <= set(FIELDS) and set(RAY_ONLY) <= set(FIELDS)
