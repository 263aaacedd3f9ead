"""The ``hamr`` command: train, predict, embed.

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

from .config import FIELDS, TrainConfig, load_yaml
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
        if t is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=help_)
        else:
            p.add_argument(flag, type=t, default=argparse.SUPPRESS, metavar=f.name.upper(),
                           choices=f.metadata.get("choices"), help=help_)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = load_yaml(args.config) if getattr(args, "config", None) else {}
    values.update({k: v for k, v in vars(args).items() if k in FIELDS})
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
    return cfg


def cmd_train(args) -> int:
    cfg = config_from_args(args)
    if cfg.num_workers > 0:
        from .distributed.trainer import train_distributed
        res = train_distributed(cfg)
    else:
        from .train.loop import train
        res = train(cfg)
    m = res.metrics
    print(f"method {m['method']} ({m['task']}): best epoch {m['best_epoch'] + 1}, "
          f"dev macro-F1 {m['dev']['macro_f1']:.4f}, test macro-F1 {m['test']['macro_f1']:.4f}")
    print(f"outputs in {res.output_dir.resolve()} (metrics.json, model, label_map.json, config.yaml)")
    return 0


def _read_inputs(args) -> list:
    if args.text:
        return list(args.text)
    path = Path(args.input)
    if not path.is_file():
        raise ConfigError(f"input file {path} not found (pass a .txt or .jsonl file to --input)")
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix == ".jsonl":
        items = []
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}:{i}: invalid JSON ({e.msg})") from None
            items.append(obj.get("tokens", obj.get("text")) if isinstance(obj, dict) else obj)
        return items
    return [l for l in lines if l.strip()]


def cmd_predict(args) -> int:
    from .predict import Predictor
    pred = Predictor(args.model_dir)
    items = _read_inputs(args)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    for item, label in zip(items, pred(items)):
        out.write(json.dumps({"input": item, "prediction": label}, ensure_ascii=False) + "\n")
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hamr", description="HAMR (Hardness-Aware Meta-Resample) for "
                                "imbalanced text classification and NER.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="fine-tune an encoder with HAMR or a baseline",
                       description="Train on a dataset folder, a HF dataset, or (no --data) the "
                       "built-in synthetic corpus.")
    t.add_argument("--config", help="YAML file of options (names as the flags, - or _)")
    add_config_flags(t)
    t.set_defaults(func=cmd_train)

    pr = sub.add_parser("predict", help="label new texts or token lists with a trained output_dir")
    pr.add_argument("model_dir", help="output_dir of a finished 'hamr train'")
    src = pr.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", nargs="+", help="texts (cls) or whitespace-tokenised sentences (ner)")
    src.add_argument("--input", help=".txt (one per line) or .jsonl ({text} or {tokens}) file")
    pr.add_argument("--output", help="write JSON lines here instead of stdout")
    pr.set_defaults(func=cmd_predict)

    e = sub.add_parser("embed", help="compute (and cache) sentence embeddings of a training set")
    e.add_argument("--data", required=True, help="dataset folder or HF dataset")
    e.add_argument("--embedder", help="sentence embedder (default: bundled all-MiniLM-L6-v2)")
    e.add_argument("--output", default="embeddings.npy", help="where to write the .npy (default: embeddings.npy)")
    e.add_argument("--cache-dir", help="embedding cache (default $HAMR_CACHE or ~/.cache/hamr_dist)")
    e.set_defaults(func=cmd_embed)

    from .tune import add_tune_parser      # hamr tune: Ray Tune sweeps
    add_tune_parser(sub, add_config_flags)
    return p


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
    except KeyboardInterrupt:
        print("hamr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
