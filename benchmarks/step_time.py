"""HAMR step / CE step at equal batch, per meta scope, and the HAMR step broken into its parts.

Full fine-tuning of the encoder (bundled all-MiniLM-L6-v2 by default), batch 32, random token
ids of a fixed length so that every variant sees the same shapes. Variants run interleaved in a
shuffled order each repeat; ratios are taken per repeat and reported as medians.

    python -m benchmarks.step_time [--device cuda] [--repeats 15] [--scopes all top2 head]

Needs only torch and transformers (runs on a GPU box without Ray/FAISS/MLflow).
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hamr_dist.config import parse_scope
from hamr_dist.losses import token_ce
from hamr_dist.meta.step import meta_step
from hamr_dist.meta.weight_net import WeightNet
from hamr_dist.model import HamrModel, load_encoder, scope_parameter_names
from hamr_dist.sampling.hardness import InMemoryHardness

PARTS = ["forward", "virtual_step", "meta_loss", "weight_net_update", "real_step", "hardness_update"]


class Clock:
    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.t = self.sync_now()
        self.parts = {}

    def sync_now(self):
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def mark(self, name):
        now = self.sync_now()
        self.parts[name] = now - self.t
        self.t = now


def make_model(name, eager, device, n_labels):
    tok, enc = load_encoder(name, eager=eager)
    torch.manual_seed(0)
    return HamrModel(enc.float(), "cls", n_labels, head_hidden=256, dropout=0.1).to(device)


def batch(vocab, bs, length, n_labels, device, gen):
    ids = torch.randint(1000, vocab, (bs, length), generator=gen)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "labels": torch.randint(0, n_labels, (bs,), generator=gen).to(device)}


def ce_step(model, opt, b, clock):
    loss = F.cross_entropy(model(b), b["labels"])
    clock.mark("forward")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    clock.mark("real_step")


def hamr_step(model, opt, wnet, wopt, names, b, mb, store, idx, clock):
    losses = token_ce(model(b), b["labels"])
    clock.mark("forward")
    r = meta_step(model, wnet, wopt, losses, mb, F.cross_entropy, names, alpha=2e-4,
                  mark=clock.mark)
    loss = (r.w_post * losses).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    clock.mark("real_step")
    store.update(idx, r.w_post.cpu().numpy())
    clock.mark("hardness_update")


def run(args) -> dict:
    device = torch.device(args.device)
    torch.set_num_threads(args.threads) if args.threads else None
    n_labels, gen = 5, torch.Generator().manual_seed(0)
    ce_model = make_model(args.model, eager=args.ce_eager, device=device, n_labels=n_labels)
    vocab = ce_model.encoder.config.vocab_size
    variants = {"ce": (ce_model, torch.optim.AdamW(ce_model.parameters(), lr=3e-5), None)}
    for scope in args.scopes:
        # as in training: eager attention only where the virtual step reaches the encoder
        # (scope head never differentiates twice through attention, so it keeps SDPA like CE)
        m = make_model(args.model, eager=parse_scope(scope) != "head", device=device,
                       n_labels=n_labels)
        w = WeightNet().to(device)
        variants[f"hamr[{scope}]"] = (m, torch.optim.AdamW(m.parameters(), lr=3e-5),
                                      (w, torch.optim.Adam(w.parameters(), lr=1e-4),
                                       scope_parameter_names(m, parse_scope(scope))))
    store = InMemoryHardness(100_000)
    times = {k: [] for k in variants}
    parts = {k: {p: [] for p in PARTS} for k in variants}
    order = list(variants)
    for rep in range(args.warmup + args.repeats):
        random.Random(rep).shuffle(order)
        b = batch(vocab, args.batch_size, args.seq_len, n_labels, device, gen)
        mb = batch(vocab, args.batch_size, args.seq_len, n_labels, device, gen)
        idx = np.random.default_rng(rep).integers(0, 100_000, args.batch_size)
        for k in order:
            model, opt, meta = variants[k]
            clock = Clock(device)
            start = clock.t
            if meta is None:
                ce_step(model, opt, b, clock)
            else:
                hamr_step(model, opt, meta[0], meta[1], meta[2], b, mb, store, idx, clock)
            if rep >= args.warmup:
                times[k].append(clock.t - start)
                for p, v in clock.parts.items():
                    parts[k][p].append(v)
    ce = np.asarray(times["ce"])
    out = {"variants": {}}
    for k in variants:
        t = np.asarray(times[k])
        out["variants"][k] = {
            "median_step_s": float(np.median(t)),
            "ratio_to_ce_median": float(np.median(t / ce)),
            "parts_median_s": {p: float(np.median(v)) for p, v in parts[k].items() if v},
        }
    return out


def environment(device) -> dict:
    from benchmarks.common import environment as common_environment
    env = common_environment()
    env["device"] = str(device)
    env["gpu"] = torch.cuda.get_device_name(0) if device.type == "cuda" else None
    return env


def markdown(res) -> str:
    lines = [f"Step time, full fine-tuning, batch {res['config']['batch_size']}, seq len "
             f"{res['config']['seq_len']}, device {res['environment']['device']} "
             f"({res['environment']['gpu'] or res['environment']['hardware']['platform']})", "",
             "| variant | median step (ms) | ratio to CE (median of per-repeat ratios) | "
             + " | ".join(PARTS) + " |", "|---" * (3 + len(PARTS)) + "|"]
    for k, v in res["variants"].items():
        ps = " | ".join(f"{1e3 * v['parts_median_s'].get(p, float('nan')):.1f}" for p in PARTS)
        lines.append(f"| {k} | {1e3 * v['median_step_s']:.1f} | {v['ratio_to_ce_median']:.2f} | {ps} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="HF encoder (default: bundled MiniLM)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--scopes", nargs="+", default=["all", "top2", "head"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--ce-eager", action="store_true",
                   help="CE with eager attention too (default: the encoder's default kernel)")
    p.add_argument("--name", default=None, help="result file stem (default step_time_<device>)")
    p.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    args = p.parse_args(argv)
    t0 = time.time()
    res = run(args)
    res["config"] = vars(args)
    res["environment"] = environment(torch.device(args.device))
    res["wall_time_s"] = round(time.time() - t0, 1)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.name or f"step_time_{torch.device(args.device).type}"
    (out / f"{stem}.json").write_text(json.dumps(res, indent=2))
    (out / f"{stem}.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
