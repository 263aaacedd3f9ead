"""What governs the spread of HAMR's post-meta weights (issue 9, item 3).

    python -m benchmarks.weight_spread                       # synthetic and sst5, frozen encoder
    python -m benchmarks.weight_spread --datasets sst5 --seeds 1 2

For each setting of the levers that could widen w = clip(sigmoid(f(z)) / mean_B, w_min, w_max)
(the weight network's learning rate, the batch mean attached or detached, the meta batch size,
the virtual step size alpha) one short probe-tier run records, per epoch, the weights' p1 / p50 /
p99, their std, and at the end the learned curve sigmoid(f(z)) at z = -3 and +3 and dev
macro-F1. Writes benchmarks/results/weight_spread.{json,md} with hardware and versions.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.common import (RESULTS, Stopwatch, environment, environment_md, md_table, now_iso,
                               write_json, write_text)

SETTINGS = {   # label: TrainConfig overrides on top of hamr-cb, debiased-ema
    "default": {},
    "wnet_lr 1e-3": {"wnet_lr": 1e-3},
    "wnet_lr 1e-2": {"wnet_lr": 1e-2},
    "detached mean": {"weight_norm": "detached"},
    "detached, wnet_lr 1e-3": {"weight_norm": "detached", "wnet_lr": 1e-3},
    "meta batch 128": {"meta_batch_size": 128},
    "meta batch 8": {"meta_batch_size": 8},
    "alpha x10": {"meta_update_lr": 1e-2},
}


def run(dataset: str | None, seed: int, over: dict, epochs: int) -> dict:
    from hamr_dist.config import TrainConfig
    from hamr_dist.train.loop import train
    with tempfile.TemporaryDirectory(prefix="wspread-") as out:
        cfg = TrainConfig(data=dataset, method="hamr-cb", hardness_rule="debiased-ema",
                          freeze_encoder=True, num_train_epochs=epochs, seed=seed, output_dir=out,
                          progress=False, mlflow=False, **over)
        res = train(cfg)
        curve = json.loads((Path(out) / "weight_curve.json").read_text())
    hist = [{k: h.get(k) for k in ("epoch", "weight_p1", "weight_p50", "weight_p99", "weight_std",
                                   "weight_clip_min_share", "weight_clip_max_share")}
            for h in res.history]
    return {"dev_macro_f1": res.metrics["dev"]["macro_f1"], "history": hist,
            "curve_at_-3": curve["sigmoid_f"][0], "curve_at_+3": curve["sigmoid_f"][-1]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["synthetic", "sst5"])
    p.add_argument("--seeds", nargs="+", type=int, default=[1])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--name", default="weight_spread")
    a = p.parse_args(argv)
    from benchmarks.quality import resolve_dataset
    sw = Stopwatch()
    doc = {"name": a.name, "started": now_iso(), "environment": environment(),
           "command": "python -m benchmarks.weight_spread " + " ".join(argv or []),
           "epochs": a.epochs, "seeds": a.seeds, "settings": SETTINGS, "runs": []}
    for spec in a.datasets:
        name, path = resolve_dataset(spec)
        for label, over in SETTINGS.items():
            for seed in a.seeds:
                r = run(path, seed, over, a.epochs)
                doc["runs"].append({"dataset": name, "setting": label, "seed": seed, **r})
                last = r["history"][-1]
                print(f"{name:8s} {label:24s} seed {seed}: w p1/p50/p99 {last['weight_p1']:.2f}/"
                      f"{last['weight_p50']:.2f}/{last['weight_p99']:.2f}, curve "
                      f"{r['curve_at_-3']:.2f}->{r['curve_at_+3']:.2f}, dev {r['dev_macro_f1']:.4f}",
                      flush=True)
    doc["wall_s"] = sw()
    write_json(RESULTS / f"{a.name}.json", doc)
    rows = []
    for r in doc["runs"]:
        last = r["history"][-1]
        rows.append([r["dataset"], r["setting"], r["seed"], f"{last['weight_p1']:.2f}",
                     f"{last['weight_p50']:.2f}", f"{last['weight_p99']:.2f}",
                     f"{last['weight_std']:.3f}", f"{r['curve_at_-3']:.2f} -> {r['curve_at_+3']:.2f}",
                     f"{100 * r['dev_macro_f1']:.1f}"])
    md = [f"# Spread of the post-meta weights (`{a.name}`)", "",
          f"hamr-cb with debiased-ema hardness, frozen bundled encoder, {a.epochs} epochs; the "
          "weights of the last epoch. Curve: sigmoid(f_theta(z)) at z = -3 and z = +3.", "",
          md_table(["dataset", "setting", "seed", "w p1", "w p50", "w p99", "w std", "curve",
                    "dev F1"], rows), "", "## Provenance", "", environment_md(doc["environment"]),
          f"- command: {doc['command']}", f"- wall time: {doc['wall_s'] / 60:.1f} min"]
    write_text(RESULTS / f"{a.name}.md", "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
