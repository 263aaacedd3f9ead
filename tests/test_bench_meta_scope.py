"""The meta-scope benchmark: its dev-only recommendation rule, and its summary of recorded
quality runs beside the step-time ratios (no training here: the quality harness has its own test)."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("matplotlib")

from benchmarks import meta_scope  # noqa: E402


def stats(dev, std=0.005, test=None):
    return {"dev_mean": dev, "dev_std": std, "test_mean": dev if test is None else test,
            "test_std": std, "wall_mean_s": 10.0}


def test_recommend_cheapest_within_tolerance_on_every_dataset():
    ratios = {"all": 3.5, "top2": 2.3, "head": 1.25}
    per = {"all": {"a": stats(0.40), "b": stats(0.60)},
           "top2": {"a": stats(0.395), "b": stats(0.59)},
           "head": {"a": stats(0.37), "b": stats(0.60)}}       # 3 points short on dataset a
    rec = meta_scope.recommend(per, ["head", "top2", "all"], ["a", "b"], ratios, tol_points=1.0)
    assert rec["scope"] == "top2" and set(rec["candidates_within_tolerance"]) == {"top2", "all"}
    # a seed std larger than the tolerance widens the slack for that scope
    per["head"]["a"] = stats(0.37, std=0.04)
    assert meta_scope.recommend(per, ["head", "top2", "all"], ["a", "b"], ratios, 1.0)["scope"] == "head"
    # test scores never enter the choice
    per["head"]["a"] = stats(0.37, test=0.99)
    assert meta_scope.recommend(per, ["head", "top2", "all"], ["a", "b"], ratios, 1.0)["scope"] == "top2"


def quality_doc(method, dev_by_dataset):
    """A recorded quality table: two seeds per dataset at dev v - 0.01 and v + 0.01."""
    from benchmarks.common import environment
    runs = [{"status": "ok", "dataset": d, "method": method, "seed": seed,
             "dev": {"macro_f1": v + delta}, "test": {"macro_f1": v + delta}}
            for d, v in dev_by_dataset.items() for seed, delta in ((1, -0.01), (2, 0.01))]
    return {"budget": {"epochs": 3, "meta_scope": "x"}, "environment": environment(),
            "datasets": {d: {} for d in dev_by_dataset}, "timing": {"total_wall_s": 60.0},
            "runs": runs,
            "summary": {d: {"methods": {method: stats(v)}} for d, v in dev_by_dataset.items()}}


def test_summary_files_from_recorded_runs(tmp_path):
    for scope, devs in {"ce": {"a": 0.3}, "head": {"a": 0.5}, "all": {"a": 0.52}}.items():
        method = "ce" if scope == "ce" else "hamr"
        (tmp_path / f"ms_{scope}.json").write_text(json.dumps(quality_doc(method, devs)))
    (tmp_path / "st.json").write_text(json.dumps({
        "config": {"device": "cpu", "seq_len": 64, "batch_size": 32},
        "variants": {"ce": {"ratio_to_ce_median": 1.0}, "hamr[all]": {"ratio_to_ce_median": 3.0},
                     "hamr[head]": {"ratio_to_ce_median": 1.2}}}))
    res = meta_scope.main(["--no-run", "--scopes", "head", "all", "--name", "ms", "--out-dir",
                           str(tmp_path), "--step-time", str(tmp_path / "st.json")])
    assert res["datasets"] == ["a"] and res["step_ratio_to_ce"] == {"all": 3.0, "head": 1.2}
    assert res["recommendation"]["scope"] == "all"           # head is 2 points short on dev
    assert res["paired"]["head"]["a"]["dev"]["mean"] == pytest.approx(0.5 - 0.52)
    assert res["paired"]["head"]["a"]["dev"]["seeds"] == 2 and "meta_scope" not in res["budget"]
    md = (tmp_path / "ms.md").read_text()
    assert "hamr, scope head" in md and "1.20" in md and "**all**" in md
    assert (tmp_path / "ms.png").stat().st_size > 0 and (tmp_path / "ms.json").is_file()
