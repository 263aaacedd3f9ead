"""The quality benchmark harness on a tiny slice of the built-in synthetic corpus: one method
pair, one seed, one epoch. A failing run is recorded and the table goes on; --resume keeps the
successful runs and re-runs the failed one; JSON, markdown and PNG carry the provenance."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("matplotlib")

from benchmarks import quality  # noqa: E402


def test_quality_harness_records_failures_and_resumes(tmp_path, monkeypatch):
    import hamr_dist.train.loop as loop
    real_train = loop.train

    def flaky(cfg, *a, **kw):
        if cfg.method == "ce":
            raise RuntimeError("boom in ce")
        return real_train(cfg, *a, **kw)

    base = ["--tier", "probe", "--datasets", "synthetic", "--methods", "ce", "hamr",
            "--seeds", "1", "--epochs", "1", "--max-train-samples", "120",
            "--max-eval-samples", "60", "--name", "q", "--out-dir", str(tmp_path / "res"),
            "--cache-dir", str(tmp_path / "cache")]
    monkeypatch.setattr(loop, "train", flaky)
    doc = quality.main(base)
    runs = {r["method"]: r for r in doc["runs"]}
    assert runs["ce"]["status"] == "error" and "boom in ce" in runs["ce"]["error"]
    assert "Traceback" in runs["ce"]["traceback"]
    h = runs["hamr"]
    assert h["status"] == "ok" and 0 <= h["test"]["macro_f1"] <= 1
    assert h["best_epoch"] == 1 and h["wall_time_s"] > 0         # epochs count from 1
    assert h["config"]["freeze_encoder"] is True and h["config"]["num_train_epochs"] == 1
    assert h["config"]["learning_rate"] == 1e-3          # resolved, not None

    saved = json.loads((tmp_path / "res" / "q.json").read_text())
    assert saved["environment"]["git"]["commit"] is not None or saved["environment"]["git"] == {
        "commit": None, "branch": None, "dirty": None, "changed_files": []}
    assert {"torch", "python"} <= set(saved["environment"]["versions"])
    assert saved["datasets"]["synthetic"]["rarest"] and saved["timing"]["runs_failed"] == 1
    md = (tmp_path / "res" / "q.md").read_text()
    assert "boom in ce" in md and "git commit" in md
    # the code each run ran, whatever the commit says (a dirty work tree included)
    from benchmarks.common import code_fingerprint
    assert h["code"] == code_fingerprint() and len(h["code"]) == 12
    assert f"{h['code']} (the code that wrote this file): 1 runs" in md

    # resume: hamr is kept (same record), the failed ce runs again and now succeeds
    monkeypatch.setattr(loop, "train", real_train)
    doc2 = quality.main(base + ["--resume"])
    runs2 = {r["method"]: r for r in doc2["runs"]}
    assert runs2["hamr"]["started"] == h["started"]
    assert runs2["ce"]["status"] == "ok" and len(doc2["runs"]) == 2
    assert len(doc2["sessions"]) == 2
    g = doc2["summary"]["synthetic"]["hamr_vs_best_baseline"]
    assert g["best_baseline"] == "ce"
    assert g["gain_test"] == pytest.approx(runs2["hamr"]["test"]["macro_f1"] - runs2["ce"]["test"]["macro_f1"])
    md = (tmp_path / "res" / "q.md").read_text()
    assert "HAMR vs the best baseline" in md and "Ablation" in md and "boom" not in md

    from PIL import Image
    with Image.open(tmp_path / "res" / "q.png") as im:
        prov = json.loads(im.info["Description"])
    assert prov["seeds"] == [1] and prov["common_config"]["freeze_encoder"] is True
    assert "hardware" in prov["environment"]

    # a resumed table grows: another seed of one method keeps the earlier seeds and methods
    grow = list(base)
    grow[grow.index("--methods") + 1:grow.index("--seeds") + 2] = ["ce", "--seeds", "2"]
    doc3 = quality.main(grow + ["--resume"])
    assert doc3["seeds"] == [1, 2] and doc3["methods"] == ["ce", "hamr"]
    assert sorted(r["key"] for r in doc3["runs"]) == ["synthetic|ce|1", "synthetic|ce|2", "synthetic|hamr|1"]
    assert doc3["runs_planned"] == 4 and "seeds [1, 2]" in (tmp_path / "res" / "q.md").read_text()


def test_results_name_no_machine_folders():
    import tempfile

    from benchmarks.common import REPO, portable
    text = json.dumps({"a": str(REPO / "x.py"), "b": str(REPO.parent / "shared" / "d"),
                       "c": f"{tempfile.gettempdir()}/run", "d": str(REPO) + "-other"})
    assert json.loads(portable(text)) == {"a": "./x.py", "b": "../shared/d", "c": "$TMPDIR/run",
                                          "d": f"../{REPO.name}-other"}


def test_merge_keeps_only_the_rows_asked_for():
    from benchmarks.quality_merge import keep
    runs = [{"dataset": d, "method": m, "seed": 1} for d in ("a", "b") for m in ("ce", "hamr")]
    doc = {"runs": runs, "methods": ["ce", "hamr"], "datasets": {"a": "pa", "b": "pb"}}
    out = keep(doc, methods=["ce"], datasets=["b"])
    assert out["runs"] == [{"dataset": "b", "method": "ce", "seed": 1}]
    assert out["methods"] == ["ce"] and out["datasets"] == {"b": "pb"}
    assert keep({**doc, "runs": list(runs)})["runs"] == runs          # no filter: every row


def _doc(name, runs, variants=None):
    """A result document with only what merging reads."""
    return {"name": name, "tier": "probe", "budget": {"epochs": 8, "variants": variants or {}},
            "runs": [{"dataset": d, "method": m, "seed": s, "key": f"{d}|{m}|{s}", "dev": v}
                     for d, m, s, v in runs],
            "datasets": {d: d for d, *_ in runs},
            "methods": list(dict.fromkeys(m for _, m, *_ in runs)),
            "seeds": sorted({s for *_, s, _ in runs}), "sessions": [{"elapsed_s": 1.0}]}


def test_recipe_builds_nested_merges_with_renames_and_filters(tmp_path, monkeypatch):
    from benchmarks import quality_merge as qm
    monkeypatch.setattr(qm, "RESULTS", tmp_path)
    (tmp_path / "base.json").write_text(json.dumps(_doc("base", [
        ("a", "ce", 1, 0.1), ("a", "icf", 1, 0.2), ("b", "ce", 1, 0.3)])))
    (tmp_path / "new.json").write_text(json.dumps(_doc("new", [
        ("a", "hamr-b1", 1, 0.4), ("a", "hamr", 1, 0.5), ("a", "ce", 1, 0.6)],
        {"hamr-b1": ["hamr", {"draw_correction": 1}]})))
    recipes = {"baselines": {"files": ["base"], "methods": ["ce", "icf"], "datasets": ["a"]},
               "table": {"files": ["baselines", "new"],
                         "rename": {"hamr": "hamr-w", "hamr-b1": "hamr"},
                         "about": "two files,\n  one   paragraph"}}
    doc = qm.build("table", recipes)
    rows = {(r["method"], r["dataset"]): r["dev"] for r in doc["runs"]}
    # renamed at once (hamr -> hamr-w, hamr-b1 -> hamr, not chained), the later file's ce wins,
    # dataset b was filtered out by the nested recipe
    assert rows == {("ce", "a"): 0.6, ("icf", "a"): 0.2, ("hamr", "a"): 0.4, ("hamr-w", "a"): 0.5}
    assert doc["budget"]["variants"] == {"hamr": ["hamr", {"draw_correction": 1}]}
    assert doc["about"] == "two files, one paragraph"
    assert doc["merged_from"] == ["baselines", "new"] and len(doc["sessions"]) == 2


def test_committed_recipes_name_files_that_exist():
    from benchmarks.quality_merge import RESULTS, load_recipes
    recipes = load_recipes()
    for name, r in recipes.items():
        for f in r["files"]:
            assert f in recipes or (RESULTS / f"{f}.json").exists(), (name, f)
        if r.get("about"):          # a table's md is rebuilt from here, so it must say how
            assert f"--recipe {name}" in r["about"], name
