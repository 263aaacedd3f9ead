"""The meta-step cost benchmarks: option names, the meta_cost summary and its recommendation."""
import json
from types import SimpleNamespace

import pytest

from benchmarks.meta_cost import summarise, variant_options
from benchmarks.step_time import option_config


def test_option_names():
    assert option_config("every4-fuse") == {"meta_every": 4, "meta_fuse": True}
    assert option_config("mbs8-reuse2") == {"meta_batch_size": 8, "meta_reuse": 2}
    assert variant_options("head") == {}
    assert variant_options("head-every2") == {"meta_every": 2}
    for bad in ("every0", "twice", "mbs"):
        with pytest.raises(SystemExit):
            option_config(bad)
    with pytest.raises(SystemExit):
        variant_options("top2-every2")


def test_every_variant_states_its_levers_whatever_the_package_defaults(monkeypatch):
    """The plain row stays the plain meta step if a lever becomes the package default."""
    import hamr_dist.config
    from benchmarks.meta_cost import make_config
    seen = []
    monkeypatch.setattr(hamr_dist.config, "TrainConfig", lambda **kw: seen.append(kw) or kw)
    args = SimpleNamespace(epochs=1, batch_size=8, lr=1e-4, max_train_samples=10,
                           max_eval_samples=10, max_seq_length=16, cache_dir=None)
    make_config(args, None, "head", 1, "out")
    make_config(args, None, "head-reuse4", 1, "out")
    levers = [{k: kw[k] for k in ("meta_every", "meta_reuse", "meta_fuse")} for kw in seen]
    assert levers == [{"meta_every": 1, "meta_reuse": 1, "meta_fuse": False},
                      {"meta_every": 1, "meta_reuse": 4, "meta_fuse": False}]


def doc_with(dev_every4, tmp_path):
    """Two variants x 2 seeds on one dataset, and a step-time file with their ratios."""
    runs = []
    for seed, (head_dev, head_test) in {1: (0.30, 0.33), 2: (0.34, 0.35)}.items():
        runs.append({"key": f"d|head|{seed}", "dataset": "d", "variant": "head", "seed": seed,
                     "status": "ok", "dev": head_dev, "test": head_test, "wall_time_s": 10})
        runs.append({"key": f"d|head-every4|{seed}", "dataset": "d", "variant": "head-every4",
                     "seed": seed, "status": "ok", "dev": dev_every4[seed], "test": 0.30,
                     "wall_time_s": 8})
    st = tmp_path / "st.json"
    st.write_text(json.dumps({"config": {"device": "cpu", "seq_len": 64, "batch_size": 32},
                              "variants": {"ce": {"ratio_to_ce_median": 1.0},
                                           "hamr[head]": {"ratio_to_ce_median": 1.3},
                                           "hamr[head-every4]": {"ratio_to_ce_median": 1.08}}}))
    doc = {"variants": ["head", "head-every4"], "seeds": [1, 2], "datasets": {"d": {}},
           "runs": runs}
    return summarise(doc, SimpleNamespace(step_time=st, tolerance=1.0))


def test_cheaper_variant_within_noise_is_recommended(tmp_path):
    s = doc_with({1: 0.305, 2: 0.33}, tmp_path)
    assert s["step_ratio_to_ce"] == {"head": 1.3, "head-every4": 1.08}
    assert s["recommendation"]["scope"] == "head-every4"
    p = s["paired_vs_head"]["head-every4"]["d"]["dev"]
    assert p["mean"] == pytest.approx(((0.305 - 0.30) + (0.33 - 0.34)) / 2)
    assert p["seeds"] == 2


def test_cheaper_variant_clearly_worse_is_not_recommended(tmp_path):
    s = doc_with({1: 0.20, 2: 0.201}, tmp_path)      # 12 points below, std 0.07 points
    assert s["recommendation"]["scope"] == "head"
    assert s["recommendation"]["candidates_within_tolerance"] == ["head"]
