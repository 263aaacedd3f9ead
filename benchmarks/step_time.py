"""HAMR step / CE step at equal batch, per meta scope, and the HAMR step broken into its parts.

Full fine-tuning of the encoder (bundled all-MiniLM-L6-v2 by default), batch 32, random token
ids of a fixed length so that every variant sees the same shapes. Variants run interleaved in a
shuffled order each repeat; ratios are taken per repeat and reported as medians.

    python -m benchmarks.step_time [--device cuda] [--repeats 15] [--scopes all top2 head]
    python -m benchmarks.step_time --scopes head --options mbs8 every4 reuse4 fuse  # cost levers
    python -m benchmarks.step_time --precisions fp32 bf16                            # autocast

``--options`` adds variants of scope head with the meta step's cost levers
(``hamr_dist/meta/schedule.py``): ``mbs<N>`` meta batch size N, ``every<k>`` a meta update every
k steps, ``reuse<r>`` the meta batch's encoder output reused by r updates, ``fuse`` the meta
batch in the training forward; combine with ``-`` (``reuse2-fuse``). A variant whose cost varies
from step to step (every, reuse) runs a whole period (k or r steps) per repeat and is timed per
step over it. ``--precisions``: each variant in fp32 and/or under bf16 autocast (fp16 on CUDA:
autocast plus a gradient scaler), each HAMR variant compared with the CE step of its precision.

Needs only torch and transformers (runs on a GPU box without Ray/FAISS/MLflow).
"""
from __future__ import annotations

import argparse
import random
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hamr_dist.config import TrainConfig, parse_scope
from hamr_dist.losses import token_ce
from hamr_dist.meta.schedule import MetaSchedule
from hamr_dist.meta.step import current_weights, meta_step
from hamr_dist.meta.weight_net import WeightNet
from hamr_dist.model import HamrModel, load_encoder, scope_parameter_names
from hamr_dist.sampling.hardness import InMemoryHardness
from hamr_dist.train.precision import Precision

PARTS = ["forward", "meta_features", "virtual_step", "meta_loss", "weight_net_update", "real_step",
         "hardness_update"]
OPTION_KEYS = {"mbs": "meta_batch_size", "every": "meta_every", "reuse": "meta_reuse"}


def option_config(name: str) -> dict:
    """'every4-fuse' -> {'meta_every': 4, 'meta_fuse': True} (TrainConfig fields)."""
    out = {}
    for part in name.split("-"):
        m = re.fullmatch(r"(mbs|every|reuse)(\d+)", part)
        if m and int(m.group(2)) >= 1:
            out[OPTION_KEYS[m.group(1)]] = int(m.group(2))
        elif part == "fuse":
            out["meta_fuse"] = True
        else:
            raise SystemExit(f"--options: {part!r} in {name!r} is not mbs<N>, every<k>, reuse<r> "
                             f"or fuse")
    return out


class Clock:
    """Wall time (``cpu=False``), or the CPU time of this thread: with ``--threads 1`` every
    operation runs on it, so that is the step's work whatever else the machine runs."""

    def __init__(self, device, cpu: bool = False):
        self.cuda = device.type == "cuda"
        self.now = time.thread_time if cpu else time.perf_counter
        self.t = self.sync_now()
        self.parts = {}

    def sync_now(self):
        if self.cuda:
            torch.cuda.synchronize()
        return self.now()

    def mark(self, name):
        now = self.sync_now()
        self.parts[name] = self.parts.get(name, 0.0) + now - self.t   # summed over a period
        self.t = now


# all-MiniLM-L6-v2's architecture, for --random-init where the bundled weights are not installed
MINILM = dict(model_type="bert", vocab_size=30522, hidden_size=384, num_hidden_layers=6,
              num_attention_heads=12, intermediate_size=1536, max_position_embeddings=512)


def random_encoder(name, eager):
    """The encoder's architecture with random weights: the same step time (only shapes count)."""
    from transformers import AutoConfig, AutoModel, BertConfig
    cfg = AutoConfig.from_pretrained(name) if name else BertConfig(**{
        k: v for k, v in MINILM.items() if k != "model_type"})
    cfg._attn_implementation = "eager" if eager else "sdpa"
    torch.manual_seed(0)
    return AutoModel.from_config(cfg, attn_implementation="eager" if eager else "sdpa")


def make_model(name, eager, device, n_labels, random_init=False):
    enc = random_encoder(name, eager) if random_init else load_encoder(name, eager=eager)[1]
    torch.manual_seed(0)
    return HamrModel(enc.float(), "cls", n_labels, head_hidden=256, dropout=0.1).to(device)


def batch(vocab, bs, length, n_labels, device, gen):
    ids = torch.randint(1000, vocab, (bs, length), generator=gen)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "labels": torch.randint(0, n_labels, (bs,), generator=gen).to(device)}


def real_step(model, opt, loss, amp):
    opt.zero_grad(set_to_none=True)
    amp.backward(loss)
    amp.unscale(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    amp.step(opt)
    amp.update()


def ce_step(model, opt, b, clock, amp):
    with amp.autocast():
        logits = model(b)
    loss = F.cross_entropy(logits.float(), b["labels"])
    clock.mark("forward")
    real_step(model, opt, loss, amp)
    clock.mark("real_step")


def hamr_step(model, opt, wnet, wopt, names, b, plan, store, idx, clock, amp):
    """One training step as ``train_step`` takes it (forward, maybe fused; meta update when due,
    else the current f_theta; real step; hardness update)."""
    losses = token_ce(plan.forward(model, b, amp.autocast).float(), b["labels"])
    clock.mark("forward")
    if plan.due:
        mb = plan.meta_batch(model, amp.autocast)
        clock.mark("meta_features")        # the cached / fused encoder output (else ~0)
        r = meta_step(model, wnet, wopt, losses, mb, F.cross_entropy, names, alpha=2e-4,
                      mark=clock.mark, autocast=amp.autocast, scaler=amp.scaler)
    else:
        r = current_weights(wnet, losses)
        clock.mark("weight_net_update")
    real_step(model, opt, (r.w_post * losses).mean(), amp)
    clock.mark("real_step")
    store.update(idx, r.w_post.cpu().numpy())
    clock.mark("hardness_update")
    plan.advance()


def variant_specs(args) -> dict:
    """name -> (scope or None for CE, option string or None, precision name)."""
    specs = {}
    for prec in args.precisions:
        suffix = "" if prec == "fp32" else f"+{prec}"
        specs[f"ce{suffix}"] = (None, None, prec)
        for scope in args.scopes:
            specs[f"hamr[{scope}]{suffix}"] = (scope, None, prec)
        for opt in args.options:
            specs[f"hamr[head-{opt}]{suffix}"] = ("head", opt, prec)
    return specs


def run(args) -> dict:
    device = torch.device(args.device)
    torch.set_num_threads(args.threads) if args.threads else None
    n_labels, gen = 5, torch.Generator().manual_seed(0)
    specs = variant_specs(args)
    vocab = None
    variants = {}
    for k, (scope, opt_name, prec) in specs.items():
        amp = Precision.for_run(TrainConfig(bf16=prec == "bf16", fp16=prec == "fp16"), device)
        if scope is None:
            m = make_model(args.model, eager=args.ce_eager, device=device, n_labels=n_labels,
                           random_init=args.random_init)
            vocab = vocab or m.encoder.config.vocab_size
            variants[k] = dict(model=m, opt=torch.optim.AdamW(m.parameters(), lr=3e-5), amp=amp,
                               period=1)
            continue
        # as in training: eager attention only where the virtual step reaches the encoder
        # (scope head never differentiates twice through attention, so it keeps SDPA like CE)
        m = make_model(args.model, eager=parse_scope(scope) != "head", device=device,
                       n_labels=n_labels, random_init=args.random_init)
        vocab = vocab or m.encoder.config.vocab_size
        oc = option_config(opt_name) if opt_name else {}
        mbs = oc.get("meta_batch_size", args.batch_size)
        mgen = torch.Generator().manual_seed(1)
        plan = MetaSchedule(lambda mbs=mbs, mgen=mgen: batch(vocab, mbs, args.seq_len, n_labels,
                                                             device, mgen),
                            every=oc.get("meta_every", 1), reuse=oc.get("meta_reuse", 1),
                            fuse=oc.get("meta_fuse", False), features_ok=scope == "head")
        w = WeightNet().to(device)
        variants[k] = dict(model=m, opt=torch.optim.AdamW(m.parameters(), lr=3e-5), amp=amp,
                           wnet=w, wopt=torch.optim.Adam(w.parameters(), lr=1e-4),
                           names=scope_parameter_names(m, parse_scope(scope)), plan=plan,
                           period=max(plan.every, plan.reuse))
    store = InMemoryHardness(100_000)
    times = {k: [] for k in variants}
    parts = {k: {p: [] for p in PARTS} for k in variants}
    order = list(variants)
    for rep in range(args.warmup + args.repeats):
        random.Random(rep).shuffle(order)
        b = batch(vocab, args.batch_size, args.seq_len, n_labels, device, gen)
        idx = np.random.default_rng(rep).integers(0, 100_000, args.batch_size)
        for k in order:
            v = variants[k]
            clock = Clock(device, cpu=args.clock == "cpu")
            start = clock.t
            for _ in range(v["period"]):      # a whole period: every/reuse cost varies per step
                if "plan" not in v:
                    ce_step(v["model"], v["opt"], b, clock, v["amp"])
                else:
                    hamr_step(v["model"], v["opt"], v["wnet"], v["wopt"], v["names"], b,
                              v["plan"], store, idx, clock, v["amp"])
            if rep >= args.warmup:
                times[k].append((clock.t - start) / v["period"])
                for p, t in clock.parts.items():
                    parts[k][p].append(t / v["period"])
        if rep >= args.warmup and times["ce"]:
            print(f"repeat {rep + 1 - args.warmup}/{args.repeats}: " + ", ".join(
                f"{k} {times[k][-1] / times['ce'][-1]:.2f}" for k in variants if k != "ce"),
                flush=True)
    out = {"variants": {}}
    for k in variants:
        prec = specs[k][2]
        ce = np.asarray(times["ce" if prec == "fp32" else f"ce+{prec}"])
        t = np.asarray(times[k])
        out["variants"][k] = {
            "scope": specs[k][0], "options": specs[k][1], "precision": prec,
            "steps_per_repeat": variants[k]["period"],
            "median_step_s": float(np.median(t)),
            "ratio_to_ce_median": float(np.median(t / ce)),
            "parts_median_s": {p: float(np.median(v)) for p, v in parts[k].items() if v},
        }
        if prec != "fp32":
            base = specs[k][0] is None and "ce" or k.rsplit("+", 1)[0]
            if base in times:
                out["variants"][k]["speedup_vs_fp32_median"] = float(
                    np.median(np.asarray(times[base]) / t))
    return out


def environment(device) -> dict:
    from benchmarks.common import environment as common_environment
    env = common_environment()
    env["device"] = str(device)
    env["gpu"] = torch.cuda.get_device_name(0) if device.type == "cuda" else None
    return env


def markdown(res) -> str:
    clock = "thread CPU time" if res["config"].get("clock") == "cpu" else "wall time"
    lines = [f"Step time ({clock}), full fine-tuning, batch {res['config']['batch_size']}, seq len "
             f"{res['config']['seq_len']}, device {res['environment']['device']} "
             f"({res['environment']['gpu'] or res['environment']['hardware']['platform']}), "
             f"{res['config']['repeats']} repeats; parts in ms per step (a period's mean for "
             f"every/reuse variants)", "",
             "| variant | median step (ms) | ratio to CE (median of per-repeat ratios) | "
             "speed-up vs fp32 | " + " | ".join(PARTS) + " |", "|---" * (4 + len(PARTS)) + "|"]
    for k, v in res["variants"].items():
        ps = " | ".join(f"{1e3 * v['parts_median_s'].get(p, float('nan')):.1f}" for p in PARTS)
        sp = v.get("speedup_vs_fp32_median")
        lines.append(f"| {k} | {1e3 * v['median_step_s']:.1f} | {v['ratio_to_ce_median']:.2f} | "
                     f"{'-' if sp is None else f'{sp:.2f}'} | {ps} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="HF encoder (default: bundled MiniLM)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--scopes", nargs="+", default=["all", "top2", "head"])
    p.add_argument("--options", nargs="*", default=[],
                   help="scope-head cost levers: mbs<N>, every<k>, reuse<r>, fuse, combined with -")
    p.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16", "fp16"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="cpu: this thread's CPU time instead of wall time (CPU device, --threads 1): "
                        "the step's own work, unaffected by other jobs on a shared machine")
    p.add_argument("--random-init", action="store_true",
                   help="the encoder's architecture (--model's config, default MiniLM-L6) with "
                        "random weights: same step time, no weights needed (e.g. a bare GPU box)")
    p.add_argument("--ce-eager", action="store_true",
                   help="CE with eager attention too (default: the encoder's default kernel)")
    p.add_argument("--name", default=None, help="result file stem (default step_time_<device>)")
    p.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    args = p.parse_args(argv)
    if args.clock == "cpu" and (args.device != "cpu" or args.threads != 1):
        p.error("--clock cpu needs --device cpu and --threads 1 (all work on one thread)")
    t0 = time.time()
    res = run(args)
    res["config"] = vars(args)
    res["environment"] = environment(torch.device(args.device))
    res["wall_time_s"] = round(time.time() - t0, 1)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.name or f"step_time_{torch.device(args.device).type}"
    from benchmarks.common import write_json, write_text   # no machine folders in results
    write_json(out / f"{stem}.json", res)
    write_text(out / f"{stem}.md", markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
