"""``--max-steps`` (Hugging Face's name): a run bounded by optimizer steps, in-process and with
two Ray workers. The schedule's length is the step bound, the last epoch may be partial."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from hamr_dist.config import TrainConfig
from hamr_dist.errors import ConfigError
from hamr_dist.sampling.hardness import shard_for_rank
from hamr_dist.train.loop import Runtime, train


def cfg_for(tmp: Path, **kw) -> TrainConfig:
    base = dict(method="hamr", freeze_encoder=True, max_train_samples=300, max_eval_samples=100,
                num_train_epochs=1, per_device_train_batch_size=16, seed=7, progress=False,
                output_dir=str(tmp / "out"), storage_path=str(tmp / "ray"), run_name="run",
                mlflow=False)
    base.update(kw)
    return TrainConfig(**base)


def steps_per_epoch(n: int, ratio: float, world: int, bs: int) -> int:
    """Independent of the loop: the rank's share of one epoch's draw, in batches."""
    draw = math.ceil(ratio * n)
    return math.ceil(len(shard_for_rank(list(range(draw)), 0, world, bs)) / bs)


def test_max_steps_overrides_epochs_and_sets_the_schedule(tmp_path):
    c = cfg_for(tmp_path, max_steps=30)
    per_epoch = steps_per_epoch(300, c.oversample_ratio, 1, 16)          # 23
    seen = []
    rt = Runtime(progress=False, report=lambda rec, st: seen.append((rec, st())))
    m = train(c, rt).metrics
    assert [r["global_step"] for r, _ in seen] == [per_epoch, 30]         # 2 epochs, 2nd partial
    assert len(m["history"]) == 2 and m["skipped_steps"] == 0
    st = seen[-1][1]
    # every step was one optimizer step, and the linear schedule ran out exactly at step 30
    assert {int(s["step"]) for s in st["optimizer"]["state"].values()} == {30}
    assert st["scheduler"]["last_epoch"] == 30 and st["scheduler"]["_last_lr"] == [0.0]
    # the first epoch's schedule already knew the total: lr after step 23 = (30-23)/(30-3) lr0
    lr_after_first = seen[0][1]["scheduler"]["_last_lr"][0]
    assert lr_after_first == pytest.approx(c.resolved("cls").learning_rate * 7 / 27)


def test_max_steps_must_be_minus_one_or_positive(tmp_path):
    with pytest.raises(ConfigError, match="max-steps"):
        cfg_for(tmp_path, max_steps=0).validate()


def test_max_steps_with_two_ray_workers(ray_local, tmp_path):
    """Both ranks stop after the same step; the partial last epoch is the checkpointed one and
    the actor applied exactly world * max_steps updates."""
    from hamr_dist.distributed.trainer import train_distributed
    per_epoch = steps_per_epoch(300, 1.2, 2, 16)                          # 12
    c = cfg_for(tmp_path, num_workers=2, max_steps=per_epoch + 3, num_train_epochs=5)
    m = train_distributed(c).metrics
    assert [h["global_step"] for h in m["history"]] == [per_epoch, per_epoch + 3]
    assert [e["epoch"] for e in m["ray"]["epochs"]] == [1, 2]             # epochs count from 1
    assert m["ray"]["hardness_actor"]["updates"] == 2 * (per_epoch + 3)
    st = torch.load(Path(m["ray"]["checkpoint"]) / "state.pt", weights_only=False)
    assert st["epoch"] == 1 and st["scheduler"]["last_epoch"] == per_epoch + 3
