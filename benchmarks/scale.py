"""Scaling HAMR to large corpora: wall time and peak memory of each phase of a run, per process,
on synthetic corpora of 10^4 ... 10^8 samples, with the per-sample slope.

Phases (each in a fresh process, so that its peak RSS is its own):

- ``prepare``: read the JSON lines, tokenize the training texts (``encode_records``) and embed
  them with a tiny encoder built here from a config (2-layer BERT, hidden 64, the bundled
  MiniLM tokenizer), as a prepare step must;
- ``setup``: ``train.setup.build`` -- what every Ray worker runs before its first step today;
- ``first_step``: from the built setup to the first hardness update of ``train`` (the draw and
  one HAMR step with the tiny encoder, full fine-tuning, meta scope head);
- ``draw``: the epoch draw of ``ceil(1.2 N)`` indices from the hardness store (no encoder:
  up to 10^8), the previous ``Generator.choice`` draw beside it up to 10^6, and the memory of
  the hardness state and of its checkpoint;
- ``boost``: the kNN boost (index + search over the 20 % hardest) on random 64-d embeddings,
  exact up to 10^5, IVF at 10^6;
- ``updates``: sustained hardness updates/s at N = 10^6 with many simulated senders (Ray
  actors, one per rank) for hardness shards x batched messages (``hardness_shards.py``);
- ``mapped``: a worker opening a memory-mapped token split (``data/mapped.py``) of N random
  records and gathering batches by index: its peak RSS, to compare with ``setup``;
- ``prepare_ray``: ``hamr prepare`` of the corpus on a local Ray (Ray Data, tiny encoder as
  tokenizer and embedder), peak RSS of every process of the run (driver, Ray's own, workers);
- ``train_ray``: a 2-worker ``hamr train --data PREPARED --max-steps 200`` of the tiny encoder:
  seconds from the start to the first step, peak RSS of every process;
- ``train_ray_synth``: the same on a prepared folder written directly (random token ids and
  embeddings, ``synthetic_prepared``), for sizes this machine cannot prepare in the time.

    python -m benchmarks.scale                       # the committed table (about 30 minutes)
    python -m benchmarks.scale --phases draw --draw-sizes 10000 100000000
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hamr_dist.sampling.hardness import InMemoryHardness

from .common import (RESULTS, environment, environment_md, md_table, read_json, write_json,
                     write_text)

WORDS_SEED = 0


# --------------------------------------------------------------------------------------------
# inputs: a synthetic corpus and a tiny encoder, both made here
# --------------------------------------------------------------------------------------------
def tiny_encoder(root: Path) -> str:
    """A 2-layer BERT (hidden 64) with the bundled MiniLM tokenizer, random weights, saved."""
    out = root / "tiny-encoder"
    if not (out / "config.json").is_file():
        import torch
        from transformers import AutoTokenizer, BertConfig, BertModel

        from hamr_dist.embeddings import default_model_path
        tok = AutoTokenizer.from_pretrained(default_model_path())
        torch.manual_seed(0)
        cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=128,
                         max_position_embeddings=128)
        BertModel(cfg).save_pretrained(out)
        tok.save_pretrained(out)
    return str(out)


def corpus(root: Path, n_train: int, n_eval: int = 500) -> str:
    """Short texts (8-30 words from 3,000 vocabulary words), 8 classes of falling size."""
    out = root / f"corpus-{n_train}"
    if (out / "test.jsonl").is_file():
        return str(out)
    from hamr_dist.embeddings import default_model_path
    vocab = [w for w in (Path(default_model_path()) / "vocab.txt").read_text().split()
             if w.isalpha() and len(w) > 2][:3000]
    rng = np.random.default_rng(WORDS_SEED)
    out.mkdir(parents=True, exist_ok=True)
    weights = 0.6 ** np.arange(8)
    for split, size in (("train", n_train), ("dev", n_eval), ("test", n_eval)):
        tmp = out / f"{split}.jsonl.tmp"
        with open(tmp, "w") as f:
            for s in range(0, size, 100_000):
                k = min(100_000, size - s)
                labels = rng.choice(8, size=k, p=weights / weights.sum())
                labels[:8] = np.arange(8)              # every class in every split
                lengths = rng.integers(8, 31, size=k)
                words = rng.integers(0, len(vocab), size=int(lengths.sum()))
                ends = np.cumsum(lengths)
                lines = []
                for j in range(k):
                    text = " ".join(vocab[w] for w in words[ends[j] - lengths[j]:ends[j]])
                    lines.append(json.dumps({"text": text, "label": f"c{labels[j]}"}))
                f.write("\n".join(lines) + "\n")
        tmp.replace(out / f"{split}.jsonl")
    return str(out)


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# --------------------------------------------------------------------------------------------
# phases, each run in a child process
# --------------------------------------------------------------------------------------------
def phase_prepare(n: int, root: Path) -> dict:
    from hamr_dist.data.io import load_data
    from hamr_dist.data.tokenize import encode_records
    from hamr_dist.embeddings import encode_texts
    from transformers import AutoTokenizer
    import torch
    torch.set_num_threads(1)
    model = tiny_encoder(root)
    data_dir = corpus(root, n)
    t0 = time.perf_counter()
    data = load_data(data_dir)
    t1 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(model)
    enc = encode_records(data.train, tok, "cls", 64)
    t2 = time.perf_counter()
    emb = encode_texts([r["text"] for r in data.train], model=model, batch_size=256, max_length=64)
    t3 = time.perf_counter()
    return {"read_s": t1 - t0, "tokenize_s": t2 - t1, "embed_s": t3 - t2, "wall_s": t3 - t0,
            "truncated": enc.truncated, "embedding_shape": list(emb.shape)}


def phase_prepare_ray(n: int, root: Path) -> dict:
    """``hamr prepare`` on a local Ray (every core): Ray Data reads the JSON lines in chunks,
    validates, tokenizes and embeds (tiny encoder) on actor pools; this process writes."""
    from hamr_dist.data.prepare import prepare
    model, data_dir = tiny_encoder(root), corpus(root, n)
    out = root / f"prepared-{n}"
    t0 = time.perf_counter()
    prepare(data_dir, out, model=model, embedder=model, max_seq_length=64, use_ray=True,
            num_cpus=os.cpu_count())
    m = json.loads((out / "manifest.json").read_text())
    return {"wall_s": time.perf_counter() - t0, "timing_s": m["timing_s"],
            "chunks": m["chunks"], "truncated": m["splits"]["train"]["truncated"],
            "bytes_on_disk": sum(f.stat().st_size for f in out.rglob("*") if f.is_file())}


def phase_train_ray(n: int, root: Path, prepared: Path | None = None) -> dict:
    """``hamr train --data PREPARED --model <tiny> --num-workers 2 --max-steps 200`` (full
    fine-tuning, the default method): when the first step happens after the command starts."""
    import dataclasses

    from hamr_dist.config import TrainConfig
    from hamr_dist.distributed.trainer import train_distributed
    model, prepared = tiny_encoder(root), prepared or root / f"prepared-{n}"
    if not (prepared / "manifest.json").is_file():
        phase_prepare_ray(n, root)
    out = root / f"train-out-{n}"
    cfg = TrainConfig(data=str(prepared), model=model, embedder=model, max_seq_length=64,
                      per_device_train_batch_size=32, max_steps=200, num_workers=2,
                      output_dir=str(out), storage_path=str(root / f"ray-runs-{n}"),
                      cache_dir=str(root / "cache"), progress=False, mlflow=False,
                      learning_rate=1e-4, max_eval_samples=500)
    cfg = dataclasses.replace(cfg, run_name=f"scale-{n}-{int(time.time())}")
    t0 = time.time()
    m = train_distributed(cfg).metrics
    ray_info = m["ray"]
    w = next(x for x in ray_info["workers"] if x.get("rank") == 0)
    return {"wall_s": time.time() - t0,
            "first_step_s": w["t_first_update"] - t0 if w.get("t_first_update") else None,
            "worker_start_s": w["t_worker_start"] - t0,
            "worker_setup_s": w["t_setup_done"] - w["t_worker_start"],
            "train_s": w["t_train_done"] - w["t_setup_done"],
            "test_macro_f1": m["test"]["macro_f1"]}


def synthetic_prepared(n: int, root: Path) -> Path:
    """A prepared folder of ``n`` training records written directly (random token ids of 8-40
    tokens, 8 falling classes, random unit embeddings), with dev and test of the 10^5 corpus
    prepared by ``hamr prepare``: what ``prepare_ray`` would write, without its cost, so the
    training side can be measured at sizes this machine cannot prepare in time."""
    import shutil

    from hamr_dist.data.mapped import TokenWriter
    from hamr_dist.data.prepare import embeddings_file
    src, out = root / "prepared-100000", root / f"prepared-synthetic-{n}"
    if (out / "manifest.json").is_file():
        return out
    if not (src / "manifest.json").is_file():
        phase_prepare_ray(100_000, root)
    tmp = root / f".prepared-synthetic-{n}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for split in ("dev", "test"):
        shutil.copytree(src / split, tmp / split)
    m = json.loads((src / "manifest.json").read_text())
    rng = np.random.default_rng(0)
    w = TokenWriter(tmp / "train", "cls", m["pad_id"])
    weights = 0.6 ** np.arange(len(m["label_names"]))
    emb_path = embeddings_file(tmp, m["embeddings"][0]["embedder"])
    emb_path.parent.mkdir(parents=True)
    emb = np.lib.format.open_memmap(emb_path, mode="w+", dtype=np.float16,
                                    shape=(n, m["embeddings"][0]["dim"]))
    for s in range(0, n, 1_000_000):
        k = min(1_000_000, n - s)
        lengths = rng.integers(8, 41, k)
        labels = rng.choice(len(weights), size=k, p=weights / weights.sum())
        labels[:len(weights)] = np.arange(len(weights))
        w.add_flat(rng.integers(1000, 30000, int(lengths.sum())).astype(np.int32), lengths,
                   labels)
        e = rng.standard_normal((k, emb.shape[1])).astype(np.float32)
        emb[s:s + k] = e / np.linalg.norm(e, axis=1, keepdims=True)
    emb.flush()
    del emb
    w.close({"truncated": 0, "dropped_words": 0})
    np.save(tmp / "train" / "cut.npy", np.zeros(n, np.uint8))
    (tmp / "train" / "text.bin").write_bytes(b"")
    np.save(tmp / "train" / "text_offsets.npy", np.zeros(n + 1, np.int64))
    m["splits"]["train"] = {"n": n, "tokens": w.tokens, "truncated": 0, "dropped_words": 0}
    m["source"] = f"synthetic token ids ({n} records)"
    (tmp / "manifest.json").write_text(json.dumps(m, indent=1))
    tmp.replace(out)
    return out


def phase_train_ray_synth(n: int, root: Path) -> dict:
    """``train_ray`` on ``synthetic_prepared(n)``: the training side at any N."""
    return phase_train_ray(n, root, synthetic_prepared(n, root))


class _FirstUpdate(InMemoryHardness):
    """The in-memory hardness store, noting when the first update arrives."""
    first: float | None = None

    def update(self, indices, w_post):
        if self.first is None:
            self.first = time.perf_counter()
        super().update(indices, w_post)


def phase_setup(n: int, root: Path) -> dict:
    import torch

    from hamr_dist.config import TrainConfig
    from hamr_dist.train.loop import Runtime, train
    from hamr_dist.train.setup import build
    torch.set_num_threads(1)
    model, data_dir = tiny_encoder(root), corpus(root, n)
    cfg = TrainConfig(data=data_dir, model=model, embedder=model, method="hamr",
                      max_seq_length=64, per_device_train_batch_size=32, max_steps=1,
                      output_dir=str(root / f"out-{n}"), cache_dir=str(root / "cache"),
                      progress=False, mlflow=False, learning_rate=1e-4)
    t0 = time.perf_counter()
    s = build(cfg)
    t1 = time.perf_counter()
    rss_setup = peak_rss_mb()
    store = _FirstUpdate(len(s.train.batches), gamma=s.cfg.gamma)
    train(cfg, Runtime(progress=False, hardness=store), setup=s)
    return {"setup_s": t1 - t0, "first_step_s": store.first - t1,
            "setup_peak_rss_mb": rss_setup}


def phase_draw(n: int, root: Path) -> dict:
    from hamr_dist.sampling.hardness import epoch_size
    rng = np.random.default_rng(0)
    s = InMemoryHardness(n)
    h = rng.uniform(0.1, 8.0, n).astype(np.float32)
    b = np.where(rng.random(n) < 0.1, rng.uniform(0, 3, n), 0).astype(np.float32)
    s.load_state_dict({**s.state_dict(), "h": h, "b": b})
    del h, b
    state_bytes = sum(v.nbytes for v in s.state_dict().values() if isinstance(v, np.ndarray))
    rss0 = peak_rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    d = s.draw(epoch=1, seed=0, ratio=1.2, tau=0.7, lam=0.7)
    out = {"draw_s": time.perf_counter() - t0, "draw_cpu_s": time.process_time() - c0,
           "m": int(d.size), "state_bytes": int(state_bytes), "rss_before_draw_mb": rss0}
    del d
    if n <= 1_000_000:          # the previous draw: Generator.choice over float64 probabilities
        t0 = time.perf_counter()
        np.random.default_rng([0, 1]).choice(n, size=epoch_size(n, 1.2), replace=True,
                                             p=s.probabilities(0.7, 0.7))
        out["choice_draw_s"] = time.perf_counter() - t0
    if n <= 10_000_000:         # the checkpoint's hardness part, as torch.save writes it
        import torch
        p = root / f"hardness-{n}.pt"
        torch.save(s.state_dict(), p)
        out["checkpoint_bytes"] = p.stat().st_size
        p.unlink()
    return out


def phase_boost(n: int, root: Path) -> dict:
    from hamr_dist.sampling.neighbors import build_index, neighbour_boost
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((n, 64), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    h = rng.uniform(0.1, 8, n).astype(np.float32)
    kind = "flat" if n <= 100_000 else "ivf"
    t0 = time.perf_counter()
    index = build_index(emb, kind=kind)
    t1 = time.perf_counter()
    b = neighbour_boost(index, emb, h, rho=0.2, k=10)
    t2 = time.perf_counter()
    return {"index": kind, "index_s": t1 - t0, "boost_s": t2 - t1, "wall_s": t2 - t0,
            "boosted": int((b > 0).sum())}


def phase_updates(n: int, root: Path, senders: int = 8, steps: int = 400,
                  configs=((1, 1), (1, 8), (2, 8), (4, 8), (4, 32))) -> dict:
    """Every sender is one rank of a ``senders``-rank run; all send ``steps`` updates of 32
    indices as fast as they can, then read h (which waits until everything is applied)."""
    import ray

    from hamr_dist.distributed.hardness_shards import (ShardedHardnessClient,
                                                       create_hardness_shards)

    @ray.remote(num_cpus=0)
    class Sender:
        def run(self, shards, gens, rank, steps, batch_steps, n, go):
            rng = np.random.default_rng(rank)
            idx = rng.integers(0, n, (steps, 32))
            w = rng.uniform(0.1, 8, (steps, 32)).astype(np.float32)
            c = ShardedHardnessClient(shards, gens, rank, batch_steps=batch_steps)
            while time.time() < go:
                time.sleep(0.001)
            for i in range(steps):
                c.update(idx[i], w[i])
            c.hardness()
            return time.time()

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
             log_to_driver=False)
    rows = []
    try:
        pool = [Sender.remote() for _ in range(senders)]
        for shards, batch in configs:
            sh = create_hardness_shards(f"bench-{shards}-{batch}", n, shards)
            gens = sh.begin(0.99, senders)
            go = time.time() + 2.0                       # every sender starts together
            ends = ray.get([p.run.remote(sh, gens, r, steps, batch, n, go)
                            for r, p in enumerate(pool)])
            elapsed = max(ends) - go
            info = sh.info()
            sh.kill()
            rows.append({"shards": shards, "batch_steps": batch, "senders": senders,
                         "updates": senders * steps, "seconds": elapsed,
                         "updates_per_s": senders * steps / elapsed,
                         "actor_apply_s": [round(i["apply_s"], 3) for i in info]})
    finally:
        ray.shutdown()
    return {"rows": rows}


def phase_mapped(n: int, root: Path) -> dict:
    """A worker's side of the prepared format (``data/mapped.py``) without an encoder: write a
    split of ``n`` records of 8-40 random token ids (in this process), then open it in a fresh
    child and gather 200 random batches of 32, as the sampler does."""
    from hamr_dist.data.mapped import TokenWriter
    folder = root / f"mapped-{n}"
    if not (folder / "manifest.json").is_file():
        rng = np.random.default_rng(0)
        w = TokenWriter(folder, "cls", 0)
        for s in range(0, n, 1_000_000):
            k = min(1_000_000, n - s)
            lengths = rng.integers(8, 41, k)
            w.add_flat(rng.integers(1000, 30000, int(lengths.sum())).astype(np.int32), lengths,
                       rng.integers(0, 8, k))
        w.close()
    code = ("import json,resource,time,numpy as np;from hamr_dist.data.mapped import MappedTokens;"
            f"t=time.perf_counter();m=MappedTokens({str(folder)!r});o=time.perf_counter()-t;"
            "r=np.random.default_rng(1);t=time.perf_counter();"
            f"[m(r.integers(0,{n},32)) for _ in range(200)];g=(time.perf_counter()-t)/200;"
            "st={l.split(':')[0]:int(l.split()[1])/1024 for l in open('/proc/self/status') "
            "if l.startswith(('RssAnon','RssFile'))};"
            "print(json.dumps({'open_s':o,'batch_ms':1e3*g,'rss_anon_mb':st['RssAnon'],"
            "'rss_file_mb':st['RssFile'],"
            "'reader_peak_rss_mb':resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    res["bytes_on_disk"] = sum(f.stat().st_size for f in folder.iterdir())
    return res


PHASES = {"prepare": phase_prepare, "setup": phase_setup, "draw": phase_draw,
          "boost": phase_boost, "updates": phase_updates, "mapped": phase_mapped,
          "prepare_ray": phase_prepare_ray, "train_ray": phase_train_ray,
          "train_ray_synth": phase_train_ray_synth}
TREE_PHASES = ("prepare_ray", "train_ray", "train_ray_synth")   # every process's RSS watched


def _tree_rss(root_pid: int) -> dict[int, tuple[str, float, float]]:
    """pid -> (name, RSS MB, anonymous RSS MB) of ``root_pid`` and all its descendants."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    tree, todo = set(), [root_pid]
    while todo:
        p = todo.pop()
        tree.add(p)
        todo += [c for c, pp in parent.items() if pp == p and c not in tree]
    out = {}
    for p in tree:
        try:
            st = {l.split(":")[0]: l.split()[1:] for l in open(f"/proc/{p}/status")}
            name = open(f"/proc/{p}/cmdline").read().replace("\0", " ")[:80] or st["Name"][0]
            out[p] = (name, int(st["VmRSS"][0]) / 1024, int(st["RssAnon"][0]) / 1024)
        except (OSError, KeyError, IndexError):
            pass
    return out


def _watch(proc, peaks: dict, stop) -> None:
    while not stop.is_set():
        for p, (name, rss, anon) in _tree_rss(proc.pid).items():
            old = peaks.get(p, (name, 0.0, 0.0))
            peaks[p] = (name if rss >= old[1] else old[0], max(old[1], rss), max(old[2], anon))
        stop.wait(0.5)


def child(phase: str, n: int, root: str) -> None:
    os.environ.setdefault("HAMR_MLFLOW", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t0 = time.perf_counter()
    res = PHASES[phase](n, Path(root))
    res.update(phase=phase, n=n, process_wall_s=time.perf_counter() - t0,
               peak_rss_mb=peak_rss_mb())
    print("RESULT " + json.dumps(res, default=float))


def run_child(phase: str, n: int, root: Path, timeout: float) -> dict:
    import threading
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.scale", "--child", phase, str(n),
                             str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=Path(__file__).resolve().parents[1])
    peaks, stop = {}, threading.Event()
    watcher = threading.Thread(target=_watch, args=(proc, peaks, stop), daemon=True)
    if phase in TREE_PHASES:
        watcher.start()
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"phase": phase, "n": n, "error": f"timed out after {timeout:.0f}s"}
    finally:
        stop.set()
    p = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    lines = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
    if phase in TREE_PHASES and lines:
        res = json.loads(lines[-1][len("RESULT "):])
        top = sorted(peaks.values(), key=lambda v: -v[1])
        res["processes"] = len(peaks)
        res["max_process_rss_mb"] = round(top[0][1], 1) if top else None
        res["max_process_rss_anon_mb"] = round(max(v[2] for v in top), 1) if top else None
        res["top_processes"] = [{"cmd": c, "rss_mb": round(r), "anon_mb": round(a)}
                                for c, r, a in top[:6]]
        return res
    if p.returncode != 0 or not lines:
        tail = (p.stderr.strip().splitlines() or ["?"])[-1]
        return {"phase": phase, "n": n, "error": f"exit {p.returncode}: {tail}",
                "wall_s": time.time() - t0}
    return json.loads(lines[-1][len("RESULT "):])


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def slope(rows, key):
    """Seconds (or MB) per extra sample between the two largest sizes that ran."""
    ok = sorted((r["n"], r[key]) for r in rows if key in r)
    if len(ok) < 2:
        return None
    (n0, v0), (n1, v1) = ok[-2], ok[-1]
    return (v1 - v0) / (n1 - n0)


def report(res: dict) -> str:
    f = lambda x, d=2: "-" if x is None else f"{x:.{d}f}"  # noqa: E731
    by = {}
    for r in res["runs"]:
        by.setdefault(r["phase"], []).append(r)
    parts = [f"# Large corpora: phase costs per process ({res['date']})", "",
             environment_md(res["environment"]), ""]
    if res.get("earlier_environment"):
        e = res["earlier_environment"]
        parts[-1:-1] = [f"- phases not rerun by this command: commit "
                        f"{(e['git'].get('commit') or '?')[:10]}, load average at start "
                        f"{e['hardware'].get('load_avg_at_start')}; each run's load average "
                        "before it is in the JSON"]
    lines = []
    for phase, key, mem in (("prepare", "wall_s", "peak_rss_mb"),
                            ("setup", "setup_s", "setup_peak_rss_mb"),
                            ("setup", "first_step_s", "peak_rss_mb"),
                            ("draw", "draw_s", "peak_rss_mb"),
                            ("boost", "wall_s", "peak_rss_mb"),
                            ("mapped", "batch_ms", "reader_peak_rss_mb"),
                            ("prepare_ray", "wall_s", "max_process_rss_mb"),
                            ("train_ray", "first_step_s", "max_process_rss_mb"),
                            ("train_ray_synth", "first_step_s", "max_process_rss_mb")):
        rows = sorted(by.get(phase, []), key=lambda r: r["n"])
        name = {"first_step_s": "first step", "prepare_ray": "hamr prepare (Ray Data)",
                "train_ray": "2-worker train: first step",
                "train_ray_synth": "2-worker train: first step (folder written directly)"}.get(
            key if phase == "setup" else phase, phase)
        for r in rows:
            extra = ""
            if "error" in r:
                extra = r["error"]
            elif phase == "prepare":
                extra = (f"read {f(r['read_s'])} s, tokenize {f(r['tokenize_s'])} s, "
                         f"embed {f(r['embed_s'])} s")
            elif phase == "draw":
                extra = (f"CPU {f(r['draw_cpu_s'])} s; state {r['state_bytes'] / 2**20:.0f} MiB"
                         + (f"; checkpoint {r['checkpoint_bytes'] / 2**20:.0f} MiB"
                            if "checkpoint_bytes" in r else "")
                         + (f"; previous Generator.choice draw {f(r['choice_draw_s'])} s"
                            if "choice_draw_s" in r else ""))
            elif phase == "boost":
                extra = f"{r['index']} index {f(r['index_s'])} s, boost {f(r['boost_s'])} s"
            elif phase in TREE_PHASES and "top_processes" in r:
                top = "; ".join(f"{x['cmd'].split()[0].rsplit('/', 1)[-1]} {x['rss_mb']} MB"
                                for x in r["top_processes"][:3])
                extra = (f"{r['processes']} processes, largest RSS {top}; largest private "
                         f"(anon) RSS {f(r['max_process_rss_anon_mb'], 0)} MB")
                if phase == "prepare_ray":
                    extra += (f"; vocabulary pass {r['timing_s']['vocabulary']} s, encode + "
                              f"embed + write {r['timing_s']['encode']} s, {r['chunks']} chunks"
                              f", {r['bytes_on_disk'] / 2**20:.0f} MiB on disk")
                else:
                    extra += (f"; wall {f(r['wall_s'])} s (workers started at "
                              f"{f(r['worker_start_s'])} s, setup {f(r['worker_setup_s'])} s, "
                              f"200 steps + eval {f(r['train_s'])} s)")
            elif phase == "mapped":
                extra = (f"open {1e3 * r['open_s']:.1f} ms, then one batch of 32 per "
                         f"{f(r['batch_ms'])} ms (the wall column, in ms); "
                         f"{r['bytes_on_disk'] / 2**20:.0f} MiB on disk; after 200 batches "
                         f"RSS = {r.get('rss_anon_mb', 0):.0f} MB private + "
                         f"{r.get('rss_file_mb', 0):.0f} MB mapped file pages (page cache, "
                         "shared by the workers of a node)")
            lines.append([name, f"{r['n']:,}", f(r.get(key)), f(r.get(mem), 0), extra])
        s_t, s_m = slope(rows, key), slope(rows, mem)
        if s_t is not None and phase not in ("mapped", "train_ray", "train_ray_synth"):       # a batch's cost does not grow with N
            lines.append([name, "per sample", f"{1e6 * s_t:.1f} µs", f"{1e3 * s_m:.2f} KB"
                          if s_m is not None else "-", "slope between the two largest sizes"])
    parts += [md_table(["phase", "N", "wall (s)", "peak RSS (MB)", "detail"], lines), ""]
    for r in by.get("updates", []):
        if "rows" not in r:
            parts += [f"updates: {r.get('error')}", ""]
            continue
        parts += [f"Hardness updates at N = {r['n']:,}: {r['rows'][0]['senders']} simulated "
                  f"senders (Ray actors, one rank each), 32 indices per update, all sending at "
                  "once until applied:", "",
                  md_table(["shards", "steps per message", "updates", "seconds", "updates/s",
                            "actor time applying (s, per shard)"],
                           [[x["shards"], x["batch_steps"], x["updates"], f(x["seconds"]),
                             f"{x['updates_per_s']:.0f}", x["actor_apply_s"]]
                            for x in r["rows"]]), ""]
    return "\n".join(parts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", nargs=3, metavar=("PHASE", "N", "ROOT"), help=argparse.SUPPRESS)
    p.add_argument("--phases", nargs="+", default=list(PHASES), choices=list(PHASES))
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000],
                   help="corpus sizes for prepare and setup (10^6 needs ~30 GB in setup today)")
    p.add_argument("--draw-sizes", type=int, nargs="+",
                   default=[10_000, 100_000, 1_000_000, 10_000_000, 100_000_000])
    p.add_argument("--boost-sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--updates-n", type=int, default=1_000_000)
    p.add_argument("--mapped-sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--ray-sizes", type=int, nargs="+", default=[100_000, 1_000_000],
                   help="corpus sizes for hamr prepare (Ray Data) and the 2-worker train")
    p.add_argument("--synth-sizes", type=int, nargs="+", default=[1_000_000],
                   help="training records of the directly written prepared folder "
                        "(train_ray_synth)")
    p.add_argument("--workdir", default=None, help="corpora, encoder, caches (default: a temp dir)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per phase run")
    p.add_argument("--out", default=str(RESULTS / "scale"), help="results path without suffix")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the markdown table from the JSON results")
    p.add_argument("--update", action="store_true",
                   help="keep the other runs (phase and size) of an existing result file")
    args = p.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2])
        return 0
    if args.report_only:
        write_text(Path(args.out + ".md"), report(read_json(Path(args.out + ".json"))) + "\n")
        return 0
    root = Path(args.workdir or tempfile.mkdtemp(prefix="hamr-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    res = {"benchmark": "scale", "date": time.strftime("%Y-%m-%d %H:%M"),
           "environment": environment(), "config": vars(args), "runs": []}
    old = read_json(Path(args.out + ".json")) if args.update else None
    plan = []
    for ph in args.phases:
        sizes = {"prepare": args.sizes, "setup": args.sizes, "draw": args.draw_sizes,
                 "boost": args.boost_sizes, "updates": [args.updates_n],
                 "mapped": args.mapped_sizes, "prepare_ray": args.ray_sizes,
                 "train_ray": args.ray_sizes, "train_ray_synth": args.synth_sizes}[ph]
        plan += [(ph, n) for n in sizes]
    keep = [r for r in (old or {}).get("runs", []) if (r["phase"], r["n"]) not in plan]
    for ph, n in plan:
        load = [round(x, 2) for x in os.getloadavg()]
        r = run_child(ph, n, root, args.timeout)
        r["load_avg_before"] = load
        res["runs"].append(r)
        print(json.dumps(r, default=float), flush=True)
        write_json(Path(args.out + ".json"), {**res, "runs": keep + res["runs"]})  # partial
    res["runs"] = keep + res["runs"]
    if old:
        res["earlier_environment"] = (old.get("earlier_environment")   # the kept runs' machine
                                      or old.get("environment"))
    write_json(Path(args.out + ".json"), res)
    write_text(Path(args.out + ".md"), report(res) + "\n")
    print(report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
