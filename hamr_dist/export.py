"""How a trained model is written to ``output_dir`` and read back by ``hamr predict``.

An output directory is what it looks like. Three layouts, named in ``hamr_model.json``
(``"encoder": {"kind": ...}``):

- ``hf``: the directory *is* a Hugging Face model: ``config.json`` (architecture, ``id2label``)
  and ``model.safetensors`` hold the encoder with the trained head converted into Hugging Face's
  own head, so ``AutoModelForSequenceClassification`` / ``AutoModelForTokenClassification`` and
  ``pipeline(...)`` load it without custom code and predict what ``hamr predict`` predicts.
  Written whenever the head can be expressed exactly by one of those heads (:func:`hf_layout`).
- ``folder``: the encoder is a plain ``AutoModel`` under ``encoder/`` and the head is ours
  (``head.pt``). There is deliberately no ``config.json`` at the top: loaded as a Hugging Face
  model it would get a freshly initialised head and answer at random without a word, so
  transformers fails loudly instead. Heads that no Hugging Face head can express: mean pooling
  (the default for classification) and MLP heads over tokens (NER).
- ``ref``: a ``--freeze-encoder`` run did not change the encoder, so by default it is not copied
  (90 MB for the default encoder, per run); ``hamr_model.json`` keeps its path or hub name and
  its fingerprint, and loading checks that the encoder there is still the same one.
  ``--save-encoder`` copies it instead (then the ``hf`` or ``folder`` layout).

The tokenizer is always saved at the top. Directories of earlier versions (the encoder at the
top beside ``head.pt``, no ``"format"`` in ``hamr_model.json``) load as before.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from torch import nn

from .errors import ConfigError

HEAD_FILE, META_FILE = "head.pt", "hamr_model.json"
FORMAT = 2
ENCODER_DIR = "encoder"
# model files of any earlier save into the same folder (the layouts differ in which they keep)
_MODEL_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", HEAD_FILE)
HF_CLASSES = {"cls": "ElectraForSequenceClassification", "ner": "ElectraForTokenClassification"}


# ---------------------------------------------------------------- Hugging Face heads

def hf_layout(model) -> str | None:
    """The Hugging Face class that computes exactly what ``model`` computes, or None.

    BERT-architecture encoders (BERT, MiniLM, ELECTRA's discriminator, ...) are ELECTRA encoders
    with the same parameter names. ELECTRA's sequence head is dropout, dense (H x H), GELU,
    dropout, out_proj on the first token: our MLP head with ``--pooling cls`` and
    ``--head-hidden`` <= H (the unused hidden units get zero weights: GELU(0) = 0). Its token
    head is one linear layer: our NER head with ``--head-hidden 0``."""
    cfg = getattr(model.encoder, "config", None)
    if cfg is None or cfg.model_type not in ("bert", "electra"):
        return None
    if getattr(cfg, "position_embedding_type", "absolute") not in (None, "absolute"):
        return None
    if cfg.model_type == "electra" and cfg.embedding_size != cfg.hidden_size:
        return None
    hidden, dim = model.head_cfg["head_hidden"], model.head_cfg["dim"]
    if dim != cfg.hidden_size:
        return None
    if model.task == "cls" and model.pooling == "cls" and 0 < hidden <= dim:
        return HF_CLASSES["cls"]
    if model.task == "ner" and hidden == 0:
        return HF_CLASSES["ner"]
    return None


def to_hf(model, label_names, max_seq_length: int | None = None):
    """The ELECTRA model with our encoder weights and our head converted into its head."""
    import transformers
    from transformers import ElectraConfig
    kind = hf_layout(model)
    if kind is None:
        raise ValueError("this head has no exact Hugging Face equivalent")
    src = model.encoder.config
    keep = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size", "hidden_act", "hidden_dropout_prob",
            "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
            "initializer_range", "layer_norm_eps", "pad_token_id")
    names = list(label_names)
    cfg = ElectraConfig(**{k: getattr(src, k) for k in keep}, embedding_size=src.hidden_size,
                        classifier_dropout=model.head_cfg["dropout"], num_labels=len(names),
                        id2label=dict(enumerate(names)),
                        label2id={n: i for i, n in enumerate(names)}, architectures=[kind])
    hf = getattr(transformers, kind)(cfg)
    state = {}
    for k, v in model.encoder.state_dict().items():
        if k.startswith("pooler."):          # BERT's pooler: no part of our model
            continue
        state["electra." + k.removeprefix("electra.")] = v.detach().float().cpu()
    lin = [m for m in model.head.net if isinstance(m, nn.Linear)]
    if kind == HF_CLASSES["cls"]:
        (w1, b1), (w2, b2) = [(m.weight.detach().cpu(), m.bias.detach().cpu()) for m in lin]
        h, dim, n = w1.shape[0], w1.shape[1], w2.shape[0]
        dense_w, dense_b = torch.zeros(dim, dim), torch.zeros(dim)
        dense_w[:h], dense_b[:h] = w1, b1
        out_w = torch.zeros(n, dim)
        out_w[:, :h] = w2
        state.update({"classifier.dense.weight": dense_w, "classifier.dense.bias": dense_b,
                      "classifier.out_proj.weight": out_w, "classifier.out_proj.bias": b2})
    else:
        state.update({"classifier.weight": lin[0].weight.detach().cpu(),
                      "classifier.bias": lin[0].bias.detach().cpu()})
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [k for k in missing if "position_ids" not in k]
    if missing or unexpected:
        raise ValueError(f"conversion to {kind} left parameters unset: {missing or unexpected}")
    return hf.eval()


class HFModel(nn.Module):
    """A Hugging Face classification model behind our ``model(batch) -> logits`` interface."""

    def __init__(self, hf):
        super().__init__()
        self.hf = hf

    def forward(self, batch):
        return self.hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


# ---------------------------------------------------------------- save

def _clear(out: Path) -> None:
    """Model files of an earlier run into this folder go: they belong to another layout."""
    for name in _MODEL_FILES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / ENCODER_DIR, ignore_errors=True)


def save(model, out_dir, tokenizer, label_names, extra: dict | None = None,
         encoder_ref: str | None = None) -> str:
    """Write ``model`` to ``out_dir`` in the layout that fits (see the module doc); returns the
    layout's name."""
    from .embeddings import default_model_path, model_fingerprint
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _clear(out)
    extra = dict(extra or {})
    max_len = extra.get("max_seq_length")
    old_max = tokenizer.model_max_length
    if max_len:       # a pipeline that truncates (truncation=True) cuts where training did
        tokenizer.model_max_length = max_len
    try:
        tokenizer.save_pretrained(out)
    finally:
        tokenizer.model_max_length = old_max
    meta = {"format": FORMAT, "task": model.task, "label_names": list(label_names),
            "pooling": model.pooling, **model.head_cfg, **extra}
    if encoder_ref is not None:
        ref = str(Path(encoder_ref).expanduser().resolve()) if Path(
            encoder_ref).expanduser().exists() else encoder_ref
        meta["encoder"] = {"kind": "ref", "path": ref, "fingerprint": model_fingerprint(ref)}
        if ref == str(Path(default_model_path()).resolve()):
            meta["encoder"]["bundled"] = True     # found again after the venv moves
        torch.save(model.head.state_dict(), out / HEAD_FILE)
    elif (kind := hf_layout(model)) is not None:
        to_hf(model, label_names).save_pretrained(out)
        meta["encoder"] = {"kind": "hf", "class": kind}
    else:
        model.encoder.save_pretrained(out / ENCODER_DIR)
        torch.save(model.head.state_dict(), out / HEAD_FILE)
        meta["encoder"] = {"kind": "folder", "path": ENCODER_DIR}
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    return meta["encoder"]["kind"]


# ---------------------------------------------------------------- load

def _first(e: BaseException) -> str:
    return ((str(e).strip().splitlines() or [type(e).__name__])[0])[:200]


def load_head(path: Path):
    """``head.pt`` as a state dict of tensors; never runs code from the file."""
    f = path / HEAD_FILE
    if not f.is_file():
        raise ConfigError(f"{path} has no {HEAD_FILE}: the output directory is incomplete; "
                          f"train again or restore the file")
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:      # noqa: BLE001 -- truncated, not a torch file, unsafe contents
        raise ConfigError(f"{f} cannot be read ({_first(e)}); train again or restore the "
                          f"file") from None


def load(path):
    """(model, tokenizer, meta) from an output directory of ``hamr train``."""
    from transformers import AutoTokenizer

    from .model import HamrModel, load_encoder
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path}: no such folder; pass the output_dir of a finished "
                          f"'hamr train'")
    if not (path / META_FILE).is_file():
        raise ConfigError(f"{path} is not a trained hamr output directory (no {META_FILE}); "
                          f"pass the output_dir of a finished 'hamr train'")
    try:
        meta = json.loads((path / META_FILE).read_text())
        task, names = meta["task"], meta["label_names"]
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path / META_FILE} is damaged ({_first(e)}); train again") from None
    enc_info = meta.get("encoder") or {"kind": "legacy"}
    kind = enc_info.get("kind")
    if kind == "hf":
        import transformers
        cls = ("AutoModelForSequenceClassification" if task == "cls"
               else "AutoModelForTokenClassification")
        try:
            tok = AutoTokenizer.from_pretrained(str(path))
            hf = getattr(transformers, cls).from_pretrained(str(path)).float()
        except Exception as e:  # noqa: BLE001 -- missing or truncated weights, bad config
            raise ConfigError(f"the model in {path} cannot be loaded ({_first(e)}); train "
                              f"again or restore its files") from None
        return HFModel(hf).eval(), tok, meta
    if kind == "legacy":                 # earlier versions: the encoder at the top
        tok, enc = load_encoder(str(path), eager=False, flag="the output directory")
    else:
        if kind == "ref":
            src = enc_info["path"]
            if enc_info.get("bundled"):
                from .embeddings import default_model_path
                src = default_model_path()
            _check_reference(path, src, enc_info.get("fingerprint"))
        elif kind == "folder":
            src = str(path / enc_info.get("path", ENCODER_DIR))
        else:
            raise ConfigError(f"{path / META_FILE}: unknown encoder layout {kind!r}; this "
                              f"hamr is older than the one that trained it")
        _, enc = load_encoder(src, eager=False, flag="the trained model's encoder")
        try:
            tok = AutoTokenizer.from_pretrained(str(path))
        except Exception as e:  # noqa: BLE001
            raise ConfigError(f"the tokenizer in {path} cannot be loaded ({_first(e)})") from None
    head = load_head(path)
    model = HamrModel(enc, task, len(names), meta["head_hidden"], meta["dropout"],
                      meta["pooling"], meta["dim"])
    try:
        model.head.load_state_dict(head)
    except (RuntimeError, KeyError) as e:
        raise ConfigError(f"{path / HEAD_FILE} does not fit {META_FILE} ({_first(e)}); "
                          f"train again") from None
    return model.eval(), tok, meta


def _check_reference(path: Path, src: str, fingerprint: str | None) -> None:
    from .embeddings import model_fingerprint
    if not Path(src).exists() and src.startswith("/"):
        raise ConfigError(f"{path} was trained with the frozen encoder {src}, which no longer "
                          f"exists; restore it, or train again with --save-encoder to keep a "
                          f"copy in the output directory")
    if fingerprint and model_fingerprint(src) != fingerprint:
        raise ConfigError(f"the frozen encoder {src} of {path} has changed since training "
                          f"(fingerprint {model_fingerprint(src)[:18]}..., trained with "
                          f"{fingerprint[:18]}...); restore it, or train again with "
                          f"--save-encoder")
