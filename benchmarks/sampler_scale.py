"""The epoch draw at corpus scale, side by side with another implementation of it: build (scores,
CDF, table) and lookup time, CPU and wall, for ``ceil(1.2 N)`` draws, plus the memory the draw,
the hardness state and its checkpoint take.

    python -m benchmarks.sampler_scale --sizes 10000000 100000000 --repeats 3

Each size runs in one fresh process; the variants alternate inside it (current, other,
current, ...), each repeat a full draw from the same state (h uniform in [0.1, 8], 10 % boosted,
tau = lam = 0.7). The other implementation is ``sampling/draw.py`` as of the ``--baseline``
commit, read from git, so the two are compared on the same machine state. The default baseline
is 241ed87, Walker's alias table with a parallel closed-form build, tried and not adopted
(``results/sampler_scale_alias.md``, where it ran as "current" against the guide table of
d9a6f4b): its lookup is 2.3x cheaper, its build 5.7x dearer, so a whole draw costs more CPU.
The first repeat also pays for touching fresh memory (page faults are dear on the project's
VM; the hardness actor's draws pay them too, as each draw allocates anew): the table reports
medians and, apart, the first repeat.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from .common import RESULTS, environment, environment_md, md_table, write_json, write_text

BASELINE = "241ed87"          # the alias table (tried, not adopted)


def baseline_module(commit: str):
    src = subprocess.run(["git", "show", f"{commit}:hamr_dist/sampling/draw.py"], check=True,
                         capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    path = Path(tempfile.mkdtemp()) / "draw_baseline.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("draw_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def state(n: int):
    rng = np.random.default_rng(0)
    h = rng.uniform(0.1, 8.0, n).astype(np.float32)
    b = np.where(rng.random(n) < 0.1, rng.uniform(0, 3, n), 0).astype(np.float32)
    return h, b


def one_draw(mod, h, b, m: int, threads: int, trace: bool = False) -> dict:
    if trace:
        tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    table = mod.build_table(h, b, 0.7, 0.7)
    t1, c1 = time.perf_counter(), time.process_time()
    d = mod.draw_indices(table, m, seed=0, epoch=1, threads=threads)
    t2, c2 = time.perf_counter(), time.process_time()
    out = {"build_s": t1 - t0, "build_cpu_s": c1 - c0, "lookup_s": t2 - t1,
           "lookup_cpu_s": c2 - c1, "total_s": t2 - t0, "total_cpu_s": c2 - c0,
           "digest": int(d[:1000].sum() + d[-1000:].sum())}
    if trace:
        out["peak_bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    del table, d
    return out


def child(n: int, repeats: int, threads: list[int], baseline: str, checkpoint: bool) -> dict:
    from hamr_dist.sampling import draw as new
    from hamr_dist.sampling.hardness import InMemoryHardness, epoch_size
    old = baseline_module(baseline)
    h, b = state(n)
    m = epoch_size(n, 1.2)
    res = {"n": n, "m": m, "load_avg_before": os.getloadavg(), "runs": []}
    for rep in range(repeats):
        for name, mod in (("current", new), (f"draw.py of {baseline}", old)):
            for th in threads:
                r = one_draw(mod, h, b, m, th, trace=(rep == 0 and th == threads[0]))
                r.update(variant=name, threads=th, repeat=rep, load_avg=os.getloadavg()[0])
                res["runs"].append(r)
                print(json.dumps(r), file=sys.stderr, flush=True)
    s = InMemoryHardness(n)
    s.load_state_dict({**s.state_dict(), "h": h, "b": b})
    res["state_bytes"] = {rule: int(sum(v.nbytes for v in InMemoryHardness(n, rule=rule)
                                        .state_dict().values() if isinstance(v, np.ndarray)))
                          for rule in ("ema", "debiased-ema", "epoch-ema")}
    if checkpoint:
        import torch
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "hardness.pt"
            t0 = time.perf_counter()
            torch.save(s.state_dict(), p)
            res["checkpoint_bytes"] = p.stat().st_size
            res["checkpoint_save_s"] = time.perf_counter() - t0
    return res


def render(res: dict) -> str:
    rows = []
    for r in res["sizes"]:
        groups = {}
        for x in r["runs"]:
            groups.setdefault((x["variant"], x["threads"]), []).append(x)
        base = {k[1]: np.median([x["total_cpu_s"] for x in v]) for k, v in groups.items()
                if k[0] == "current"}
        for (name, th), xs in groups.items():
            med = lambda k: float(np.median([x[k] for x in xs]))
            peak = next((x["peak_bytes"] for x in xs if "peak_bytes" in x), None)
            rows.append([f"{r['n']:,}", name, th, f"{med('build_cpu_s'):.2f} / {med('build_s'):.2f}",
                         f"{med('lookup_cpu_s'):.2f} / {med('lookup_s'):.2f}",
                         f"{med('total_cpu_s'):.2f} / {med('total_s'):.2f}",
                         f"{min(x['total_s'] for x in xs):.2f}",
                         f"{next(x['total_s'] for x in xs if x['repeat'] == 0):.2f}",
                         f"{base[th] / med('total_cpu_s'):.2f}x" if name != "current" else "",
                         f"{peak / 2**20:,.0f}" if peak else "",
                         f"{np.median([x['load_avg'] for x in xs]):.1f}"])
    mem = []
    for r in res["sizes"]:
        sb = r["state_bytes"]
        mem.append([f"{r['n']:,}", *(f"{sb[k] / 2**20:,.0f}" for k in ("ema", "debiased-ema",
                                                                        "epoch-ema")),
                    f"{8 * r['m'] / 2**20:,.0f}",
                    f"{r['checkpoint_bytes'] / 2**20:,.0f}" if "checkpoint_bytes" in r else "-"])
    c = res["config"]
    return "\n".join([
        f"# Epoch draw at scale: the current draw vs draw.py of {c['baseline']} "
        f"(ceil(1.2 N) draws, medians of {c['repeats']} interleaved repeats)", "",
        md_table(["N", "variant", "threads", "build CPU / wall (s)", "lookup CPU / wall (s)",
                  "draw CPU / wall (s)", "best wall (s)", "first wall (s)", "CPU time of current / this",
                  "peak MiB (draw)",
                  "load avg"], rows), "",
        "Memory (MiB): the hardness state by rule, the draw an actor caches and sends, and the "
        "hardness part of a checkpoint (`torch.save` of the state dict):", "",
        md_table(["N", "state ema", "state debiased-ema", "state epoch-ema", "draw (int64)",
                  "checkpoint (ema)"], mem), "",
        "## Provenance", "", environment_md(res["environment"]),
        f"- wall time: {res['wall_time_s']:.0f} s", ""])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000_000, 100_000_000])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--baseline", default=BASELINE)
    p.add_argument("--no-checkpoint", action="store_true")
    p.add_argument("--name", default="sampler_scale")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.repeats, args.threads, args.baseline,
                               not args.no_checkpoint)))
        return 0
    t0 = time.time()
    sizes = []
    for n in args.sizes:
        cmd = [sys.executable, "-m", "benchmarks.sampler_scale", "--child", str(n),
               "--repeats", str(args.repeats), "--baseline", args.baseline,
               "--threads", *map(str, args.threads)] + (["--no-checkpoint"] if args.no_checkpoint
                                                        else [])
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
        sizes.append(json.loads(out.strip().splitlines()[-1]))
    res = {"config": {k: v for k, v in vars(args).items() if k != "child"},
           "environment": environment(), "sizes": sizes, "wall_time_s": time.time() - t0}
    write_json(RESULTS / f"{args.name}.json", res)
    write_text(RESULTS / f"{args.name}.md", render(res))
    print(render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
