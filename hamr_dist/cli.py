"""The ``hamr`` command: train, prepare, predict, embed, cache, tune.

Flags of ``hamr train`` are generated from ``TrainConfig`` (one source of truth with YAML files);
precedence is defaults < ``--config file.yaml`` < flags on the command line.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import types
import typing
from pathlib import Path

from . import __version__
from .config import FIELDS, RAY_ONLY, TrainConfig, apply_preset, load_yaml
from .errors import ConfigError, HamrError

log = logging.getLogger("hamr_dist")


def _field_type(f):
    hints = typing.get_type_hints(TrainConfig)
    t = hints[f.name]
    if isinstance(t, types.UnionType) or typing.get_origin(t) is typing.Union:
        t = next(a for a in typing.get_args(t) if a is not type(None))
    return t


def add_config_flags(p: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(TrainConfig):
        t = _field_type(f)
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        help_ = f.metadata["help"] + ("" if default is None else f" (default: {default})")
        if f.metadata.get("choices"):
            help_ += "; one of: " + ", ".join(map(str, f.metadata["choices"]))
        if t is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=help_)
        else:
            p.add_argument(flag, type=t, default=argparse.SUPPRESS, metavar=f.name.upper(),
                           choices=f.metadata.get("choices"), help=help_)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = load_yaml(args.config) if getattr(args, "config", None) else {}
    values.update({k: v for k, v in vars(args).items() if k in FIELDS})
    given = set(values)
    values = apply_preset(values)
    if not values.get("data") and "freeze_encoder" not in values:
        # The built-in demo must finish in minutes on a laptop CPU: head-only on cached features.
        log.info("no --data: training on the built-in synthetic corpus with --freeze-encoder "
                 "(pass --no-freeze-encoder for full fine-tuning)")
        values["freeze_encoder"] = True
    for name, v in list(values.items()):
        t = _field_type(FIELDS[name])
        if v is not None and t in (int, float) and not isinstance(v, (int, float)):
            try:
                values[name] = t(v)
            except (TypeError, ValueError):
                raise ConfigError(f"option {name} must be a number, got {v!r}") from None
    cfg = TrainConfig(**values)
    cfg.validate()
    # options given that this run will not read: a warning, not an error (a YAML file or a
    # sweep may set them for every method)
    idle = [k for k in FIELDS if k in given and not cfg.reads(k)]
    for why, names in (("without Ray workers (--num-workers)", [k for k in idle if k in RAY_ONLY]),
                       (f"with --method {cfg.method}", [k for k in idle if k not in RAY_ONLY])):
        if names:
            log.warning("%s: no effect %s; the run ignores %s",
                        ", ".join(f"--{k.replace('_', '-')}" for k in names), why,
                        "it" if len(names) == 1 else "them")
    return cfg


def cmd_train(args) -> int:
    from .outputs import output_dir_lock
    cfg = config_from_args(args)
    # before any work: a folder that cannot be written fails now, not after training, and a
    # second run into the same folder refuses (or waits, --overwrite-output-dir)
    with output_dir_lock(cfg.output_dir, wait=args.overwrite_output_dir):
        if cfg.num_workers > 0:
            from .distributed.trainer import train_distributed
            res = train_distributed(cfg)
        else:
            from .train.loop import train
            res = train(cfg)
    m = res.metrics
    print(f"method {m['method']} ({m['task']}): best epoch {m['best_epoch']}, "
          f"dev macro-F1 {m['dev']['macro_f1']:.4f}, test macro-F1 {m['test']['macro_f1']:.4f}")
    print(f"outputs in {res.output_dir.resolve()} (metrics.json, model, label_map.json, config.yaml)")
    return 0


def _blank(item) -> bool:
    return item is None or (isinstance(item, str) and not item.strip()) or (
        isinstance(item, list) and not item)


def _read_inputs(args) -> list:
    """The items to label, one per input line: a blank line is None (it gets an output line
    with prediction null, so output line i always answers input line i)."""
    if args.text:
        for i, t in enumerate(args.text, 1):
            if not t.strip():
                raise ConfigError(f"--text: text {i} is empty; give non-empty texts (training "
                                  f"refuses empty texts too)")
        return list(args.text)
    path = Path(args.input)
    if not path.is_file():
        raise ConfigError(f"input file {path} not found (pass a .txt or .jsonl file to --input)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"input file {path} is not UTF-8 text (byte {e.start}); re-save it "
                          f"as UTF-8") from None
    if not text.strip():
        raise ConfigError(f"input file {path} is empty; write one text (or JSON object) per line")
    lines = text.split("\n")
    if lines and lines[-1] == "":          # the final newline ends the last line, adds none
        lines.pop()
    if path.suffix != ".jsonl":
        return [l.rstrip("\r") if l.strip() else None for l in lines]
    items = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            items.append(None)
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{i}: invalid JSON ({e.msg})") from None
        item = obj.get("tokens", obj.get("text")) if isinstance(obj, dict) else obj
        if not isinstance(item, (str, list)):
            raise ConfigError(f"{path}:{i}: expected a string, a token list or an object with "
                              f"\"text\" or \"tokens\"")
        items.append(None if _blank(item) else item)
    return items


def cmd_predict(args) -> int:
    from .predict import Predictor
    items = _read_inputs(args)
    pred = Predictor(args.model_dir)
    keep = [i for i, x in enumerate(items) if x is not None]
    labels = dict(zip(keep, pred([items[i] for i in keep])))
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        for i, item in enumerate(items):
            out.write(json.dumps({"input": item if item is not None else "",
                                  "prediction": labels.get(i)}, ensure_ascii=False) + "\n")
    finally:
        if args.output:
            out.close()
    return 0


def cmd_embed(args) -> int:
    import numpy as np
    from .embeddings import cached_embeddings
    from .train.setup import embedding_texts
    from .data.io import load_data
    data = load_data(args.data)
    texts = embedding_texts(data.train, data.task)
    emb = cached_embeddings(texts, model=args.embedder, cache_dir=args.cache_dir)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, emb)
    print(f"{len(texts)} training texts embedded ({emb.shape[1]} dims) -> {out.resolve()}")
    return 0


def cmd_prepare(args) -> int:
    """Read, validate, tokenize and embed a dataset once into a folder every worker maps."""
    import time
    from .data.prepare import prepare
    from .data.prepared import Prepared
    out = Path(args.output_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite_output_dir:
        raise ConfigError(f"--output-dir {out} exists and is not empty; pass "
                          "--overwrite-output-dir to replace it")
    t0 = time.perf_counter()
    prepare(args.data, out, task=args.task, model=args.model,
            max_seq_length=args.max_seq_length, embedder=args.embedder,
            embed=args.embeddings, meta_set=args.meta_set, seed=args.seed,
            use_ray=args.ray, address=args.address, num_cpus=args.num_cpus,
            chunk_bytes=args.chunk_mb << 20)
    p = Prepared(out)
    counts = ", ".join(f"{s} {p.n(s)}" for s in ("train", "dev", "test"))
    cut = p.manifest["splits"]["train"]["truncated"]
    print(f"prepared {p.task} data ({counts}; {len(p.label_names)} labels; {cut} training "
          f"samples truncated at {args.max_seq_length}) in {time.perf_counter() - t0:.0f} s "
          f"-> {out.resolve()}")
    print(f"train with: hamr train --data {out} --max-seq-length {args.max_seq_length}"
          + (f" --model {args.model}" if args.model else ""))
    return 0


def _size(path: Path) -> tuple[int, int]:
    files = [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else []
    return sum(f.stat().st_size for f in files), len(files)


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def cmd_cache(args) -> int:
    """What the cache holds (cached encoder features, sentence embeddings, rescued outputs),
    or, with --clear, remove it."""
    import shutil
    from .train.features import cache_root
    root = cache_root(args.cache_dir)
    if args.clear:
        size, n = _size(root)
        shutil.rmtree(root, ignore_errors=True)
        print(f"removed {root} ({_human(size)} in {n} files)")
        return 0
    total, count = _size(root)
    print(f"cache {root}: {_human(total)} in {count} files")
    if root.is_dir():
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            size, n = _size(sub)
            print(f"  {sub.name + '/':<12} {_human(size):>9}  {n} files")
    print("clear it with: hamr cache --clear" + (f" --cache-dir {args.cache_dir}"
                                                 if args.cache_dir else ""))
    return 0


class HelpFormatter(argparse.HelpFormatter):
    """Wraps help text at spaces only, so that values such as hamr-la or debiased-ema are never
    split over two lines."""
    def _split_lines(self, text, width):
        import textwrap
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hamr", description="HAMR (Hardness-Aware Meta-Resample) for "
                                "imbalanced text classification and NER.")
    p.add_argument("--version", action="version", version=f"hamr {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="fine-tune an encoder with HAMR or a baseline",
                       formatter_class=HelpFormatter,
                       description="Train on a dataset folder, a HF dataset, or (no --data) the "
                       "built-in synthetic corpus.")
    t.add_argument("--config", help="YAML file of options (names as the flags, - or _)")
    t.add_argument("--overwrite-output-dir", action="store_true",
                   help="when another run is writing --output-dir, wait for it to end and then "
                        "write over its outputs (default: refuse at once, naming its pid)")
    add_config_flags(t)
    t.set_defaults(func=cmd_train)

    pr = sub.add_parser("predict", help="label new texts or token lists with a trained output_dir")
    pr.add_argument("model_dir", help="output_dir of a finished 'hamr train'")
    src = pr.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", nargs="+", help="texts (cls) or whitespace-tokenised sentences (ner)")
    src.add_argument("--input", help=".txt (one per line) or .jsonl ({text} or {tokens}) file; one "
                     "output line per input line (a blank line gets prediction null)")
    pr.add_argument("--output", help="write JSON lines here instead of stdout")
    pr.set_defaults(func=cmd_predict)

    e = sub.add_parser("embed", help="compute (and cache) sentence embeddings of a training set",
                       description="Embed the training texts of a dataset with the sentence "
                       "embedder that HAMR's neighbour boost uses, write them to a .npy file and "
                       "keep them in the cache, so later runs on this dataset skip the step.")
    e.add_argument("--data", required=True, help="dataset folder or HF dataset")
    e.add_argument("--embedder", help="sentence embedder (default: bundled all-MiniLM-L6-v2)")
    e.add_argument("--output", default="embeddings.npy", help="where to write the .npy (default: embeddings.npy)")
    e.add_argument("--cache-dir", help="embedding cache (default $HAMR_CACHE or ~/.cache/hamr_dist)")
    e.set_defaults(func=cmd_embed)

    pp = sub.add_parser(
        "prepare", help="read, validate, tokenize and embed a dataset once (Ray Data)",
        description="Prepare a dataset once for training on any number of workers: a Ray Data "
        "pipeline reads it in chunks (JSON, JSON lines, CSV, parquet, HF datasets; local or any "
        "pyarrow file system URI such as s3://bucket/corpus), validates every record, tokenizes "
        "in batches, embeds the training texts on an actor pool (one GPU per actor when the "
        "cluster has GPUs) and writes memory-mappable token shards, labels, embeddings, the "
        "label vocabulary, the balanced meta set and a manifest. Then: hamr train --data "
        "OUTPUT_DIR.")
    pp.add_argument("--data", required=True, help="dataset folder, URI, saved HF dataset or hub name")
    pp.add_argument("--output-dir", required=True, help="the prepared folder to write")
    pp.add_argument("--overwrite-output-dir", action="store_true",
                    help="replace --output-dir when it exists and is not empty")
    pp.add_argument("--task", choices=["cls", "ner"], help="detected from the fields when omitted")
    pp.add_argument("--model", help="the encoder whose tokenizer to use (default: bundled "
                    "all-MiniLM-L6-v2); training must use the same")
    pp.add_argument("--max-seq-length", type=int, default=128,
                    help="max sub-tokens per text; longer ones are truncated and counted (default: 128)")
    pp.add_argument("--embedder", help="sentence embedder for the kNN boost (default: bundled "
                    "all-MiniLM-L6-v2)")
    pp.add_argument("--embeddings", action=argparse.BooleanOptionalAction, default=True,
                    help="compute the training texts' sentence embeddings (default: yes)")
    pp.add_argument("--meta-set", choices=["copy", "move"], default="copy",
                    help="balanced meta set written beside the data (training computes others "
                         "from the labels; default: copy)")
    pp.add_argument("--seed", type=int, default=0, help="seed of that meta set (default: 0)")
    pp.add_argument("--address", help="Ray cluster to run on (else $RAY_ADDRESS, else a local Ray)")
    pp.add_argument("--num-cpus", type=int, help="CPUs of a local Ray (default: all)")
    pp.add_argument("--ray", action=argparse.BooleanOptionalAction, default=True,
                    help="run on Ray Data (default); --no-ray runs the same steps in this process")
    pp.add_argument("--chunk-mb", type=int, default=4,
                    help="MB of JSON lines / CSV per chunk (one Ray task each; default: 4)")
    pp.set_defaults(func=cmd_prepare)

    c = sub.add_parser("cache", help="show the size of the feature/embedding cache, or clear it",
                       description="The cache keeps encoder features (--freeze-encoder) and "
                       "sentence embeddings (the neighbour boost) per dataset and model, so later "
                       "runs skip computing them; it also holds outputs rescued when output_dir "
                       "could not be written. Everything in it can be recomputed.")
    c.add_argument("--clear", action="store_true", help="delete the cache folder")
    c.add_argument("--cache-dir", help="cache folder (default $HAMR_CACHE or ~/.cache/hamr_dist)")
    c.set_defaults(func=cmd_cache)

    from .tune import add_tune_parser      # hamr tune: Ray Tune sweeps
    add_tune_parser(sub, add_config_flags)
    underscore_aliases(p)
    return p


def underscore_aliases(p: argparse.ArgumentParser, seen=None) -> None:
    """Accept ``--output_dir`` for ``--output-dir`` (and so on for every flag of every
    subcommand), as Hugging Face's argument parser does; the aliases stay out of ``--help``."""
    seen = set() if seen is None else seen
    if id(p) in seen:
        return
    seen.add(id(p))
    for a in list(p._actions):
        if isinstance(a, argparse._SubParsersAction):
            for sp in a.choices.values():
                underscore_aliases(sp, seen)
            continue
        for s in list(a.option_strings):
            if not s.startswith("--") or "-" not in s[2:]:
                continue
            alias = "--" + s[2:].replace("-", "_")
            if alias in p._option_string_actions:
                continue
            if isinstance(a, argparse.BooleanOptionalAction) and s.startswith("--no-"):
                # the action tells on from off by the "--no-" prefix: off needs its own action
                p.add_argument(alias, dest=a.dest, action="store_const", const=False,
                               default=argparse.SUPPRESS, help=argparse.SUPPRESS)
            else:
                p._option_string_actions[alias] = a


def main(argv=None) -> int:
    logging.basicConfig(level=os.environ.get("HAMR_LOG", "INFO"), format="%(levelname)s %(message)s")
    for noisy in ("transformers", "datasets", "faiss", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except HamrError as e:
        print(f"hamr: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        run_name = getattr(e, "run_name", None)     # a Ray run: its checkpoints resume it
        if run_name:
            from .distributed.trainer import resume_command
            cmd = resume_command(sys.argv[1:] if argv is None else list(argv), run_name)
            print(f"hamr: interrupted; resume with: {cmd}", file=sys.stderr)
        else:
            print("hamr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
