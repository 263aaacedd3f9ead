"""The training configuration: one dataclass, which the CLI, YAML files and Ray share.

Every field carries its help text, so ``hamr train --help`` is generated from here and a YAML
file uses the same names. Names follow Hugging Face TrainingArguments where they overlap.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import ConfigError
from .methods import METHODS, get_method


def opt(default, help: str, choices=None):
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class TrainConfig:
    # data and model
    data: str | None = opt(None, "dataset folder (train/dev/test as JSON, JSON lines, parquet or "
                           "CSV), saved HF dataset dir or HF hub name; default: built-in synthetic corpus")
    task: str | None = opt(None, "cls or ner; detected from the fields when omitted", ["cls", "ner"])
    model: str | None = opt(None, "HF encoder path or name; default: bundled all-MiniLM-L6-v2")
    embedder: str | None = opt(None, "sentence embedder for kNN neighbourhoods; default: bundled all-MiniLM-L6-v2")
    output_dir: str = opt("outputs/run", "where the model, metrics.json and logs are written")
    method: str | None = opt(None, "training method; default (chosen on dev per regime, README "
                             "Results): hamr-icf (HAMR on a class-weighted loss) when the encoder "
                             "trains, hamr-la (HAMR on the logit-adjusted loss, part of its class "
                             "prior in the draw) with --freeze-encoder; hamr is the paper's "
                             "method; also its ablations and the baselines", list(METHODS))
    freeze_encoder: bool = opt(False, "cache encoder features once and train only the head (fast CPU regime)")
    save_encoder: bool = opt(False, "with --freeze-encoder: copy the unchanged encoder into output_dir "
                             "(a self-contained model); default: keep its path and fingerprint")
    max_seq_length: int = opt(128, "max sub-tokens per text; longer inputs are truncated (and counted)")
    pooling: str = opt("mean", "sentence representation for classification", ["mean", "cls"])
    head_hidden: int = opt(256, "hidden units of the MLP head (0: a linear head)")
    dropout: float = opt(0.1, "dropout in the head")
    max_train_samples: int | None = opt(None, "use only the first N training samples (quick runs)")
    max_eval_samples: int | None = opt(None, "use only the first N dev and test samples (quick runs)")
    # optimisation
    learning_rate: float = opt(None, "AdamW learning rate (default 3e-5 fine-tuning, 1e-3 with --freeze-encoder)")
    weight_decay: float = opt(0.01, "AdamW weight decay")
    num_train_epochs: int = opt(5, "epochs")
    max_steps: int = opt(-1, "stop after this many optimizer steps (per worker; -1: off). Overrides "
                         "--num-train-epochs and sets the learning-rate schedule's length, as in "
                         "Hugging Face; the last, partial epoch is evaluated and checkpointed")
    per_device_train_batch_size: int = opt(32, "batch size per worker")
    per_device_eval_batch_size: int = opt(128, "evaluation batch size")
    warmup_ratio: float = opt(0.1, "share of steps with linear warm-up, then linear decay")
    max_grad_norm: float = opt(1.0, "gradient clipping norm")
    max_bad_steps: int = opt(10, "stop after this many consecutive non-finite steps")
    seed: int = opt(42, "random seed (same seed, same numbers on CPU)")
    # HAMR (spec sections 1-3)
    meta_scope: str = opt("head", "parameters of the virtual step: head, topK (top K encoder layers + head) or "
                          "all (the authors' setting); head is the default: as good as all on dev in "
                          "benchmarks/results/meta_scope_cpu.md at a third of its step cost")
    wnet_lr: float = opt(None, "weight network Adam lr (default 1e-4 CLS, 3e-4 NER)")
    wnet_hidden: int = opt(100, "weight network hidden units")
    meta_update_lr: float = opt(None, "alpha of the virtual step (default 2e-4; with --freeze-encoder the head's learning rate)")
    meta_batch_size: int | None = opt(None, "meta-set batch size (default: the train batch size)")
    meta_every: int | None = opt(None, "run the meta update every k steps; the steps between are "
                                 "weighted by the current weight network without updating it (default: 4 "
                                 "when the encoder trains, chosen on dev at 1.05x the step time of 1, "
                                 "benchmarks/results/meta_cost_cpu.md; 1 with --freeze-encoder or --preset paper)")
    meta_reuse: int = opt(1, "scope head, fine-tuned encoder: one meta batch's encoder output serves r "
                          "meta updates (a new meta batch every r)")
    meta_fuse: bool = opt(False, "scope head, fine-tuned encoder: the meta batch goes through the encoder "
                          "in the training batch's forward (one concatenated call)")
    # precision (Hugging Face names): autocast forward passes, fp32 master weights and sampler state
    bf16: bool = opt(False, "bfloat16 autocast (CPU, or GPUs from Ampere on)")
    fp16: bool = opt(False, "float16 autocast with a gradient scaler (CUDA GPUs only)")
    w_min: float = opt(0.1, "lower clip of the normalised weights")
    w_max: float = opt(8.0, "upper clip of the normalised weights")
    gamma: float = opt(0.99, "hardness EMA decay")
    hardness_rule: str | None = opt(None, "how post-meta weights become hardness (default: ema for "
                             "hamr and its ablations, debiased-ema for hamr-cb and hamr-icf): ema (the paper's per-visit "
                             "EMA from 1), debiased-ema (EMA from 0 divided by 1 - gamma^visits), "
                             "epoch-ema (per-epoch mean weight, decayed per epoch by "
                             "--hardness-epoch-gamma), decay-all (the authors' code: decay every "
                             "entry each step, renormalise); see docs/hardness.md",
                             ["ema", "debiased-ema", "epoch-ema", "decay-all"])
    hardness_epoch_gamma: float = opt(0.5, "decay per epoch of --hardness-rule epoch-ema")
    class_prior_power: float | None = opt(None, "hamr-cb's draw, hamr-icf's class weights and "
                                          "the logit shift of la and hamr-la: "
                                          "how far the classes move from their shares in "
                                          "--class-prior-reference towards equal shares "
                                          "(r_c^(1-power) / n_c); 1 balances the classes (ICF), "
                                          "0 keeps the reference's shares; default 0.5 for "
                                          "hamr-cb, hamr-icf and hamr-la, 1 for icf and la "
                                          "(docs/hardness.md)")
    logit_adjust_tau: float = opt(1.0, "la, hamr-la: scale tau of the training logits' shift "
                                  "-tau log w_c (w_c the class weights of "
                                  "--class-prior-power; Menon et al. 2021 use tau 1)")
    class_prior_draw: float | None = opt(None, "hamr-la: the share a of its class prior (on the "
                                         "log scale) that the draw carries, as hamr-cb's prior "
                                         "to the power a, the rest staying in the logit shift "
                                         "-(1 - a) tau log w_c; 0: all in the logits; default "
                                         "0.5 (docs/hardness.md)")
    class_prior_beta: float | None = opt(None, "hamr-cb: count each class by its effective "
                                         "number (1 - beta^n) / (1 - beta) (Cui et al. 2019) "
                                         "instead of n, e.g. 0.999; default: plain counts")
    class_prior_reference: str = opt("dev", "the class shares r_c that hamr-cb's draw and "
                                     "ICF's weights start from: dev (the split the model is "
                                     "judged on, so classes cut in training only are "
                                     "re-balanced fully) or train (n_c^-power)", ["train", "dev"])
    class_prior_warmup_ratio: float = opt(0.0, "share of the training steps over which the class "
                                          "prior (ICF's class weights, hamr-cb's sampling prior) "
                                          "ramps in linearly from none to full; 0: full from the "
                                          "first step (docs/hardness.md)")
    class_weight_feedback: float | None = opt(None, "ICF methods (icf, hamr-icf): after each "
                                              "epoch, scale each class's weight by its mean "
                                              "meta-set loss relative to the mean over classes, "
                                              "to this power (0: static ICF; default 1 for "
                                              "hamr-icf when the encoder trains, else 0; "
                                              "docs/hardness.md)")
    meta_loss: str = opt("mean", "meta objective on the balanced meta set: mean (the paper's mean "
                         "cross-entropy) or balanced (mean over the classes of each class's mean "
                         "loss; NER: per entity type, O one class)", ["mean", "balanced"])
    weight_norm: str = opt("attached", "normalise w by a batch mean that the meta-gradient flows "
                           "through (attached) or not (detached, as the authors' code)",
                           ["attached", "detached"])
    dice_alpha: float = opt(0.01, "dice: exponent of the self-adjusting factor (1-p)^alpha")
    dice_smooth: float = opt(1e-4, "dice: smoothing added to numerator and denominator")
    lnr_threshold: float = opt(3.0, "lnr: z-score threshold t of the flip rate tanh(z - t)")
    lnr_warmup_epochs: int = opt(1, "lnr: epochs of plain CE before the labels are re-balanced")
    probe_size: int = opt(512, "training samples on which the Spearman correlation of hardness "
                          "with the current loss is measured each epoch (0: off)")
    early_stopping_patience: int | None = opt(None, "stop when dev macro-F1 has not improved for "
                                              "this many epochs (default: train every epoch; "
                                              "with HAMR use 4 or more, its dev pauses on the "
                                              "way up: docs/hardness.md)")
    load_best_model_at_end: bool = opt(True, "keep the epoch with the best dev macro-F1 (else the last epoch)")
    preset: str | None = opt(None, "a named recipe whose options apply unless given explicitly: "
                             "paper = the authors' setting (batch 8, 8 epochs, lr 4e-5 CLS / 2e-5 "
                             "NER, max length 512, no warm-up or weight decay, meta scope all, hard "
                             "ratio 0.1, the last epoch's model, bf16 on a GPU); see docs/hardness.md",
                             ["paper"])
    tau: float = opt(0.7, "sampling temperature: p ~ (h + eps)^tau (1 + lambda b)")
    draw_correction: float | None = opt(None, "resampling methods: multiply each drawn sample's "
                                        "loss by (s_i / mean s)^-beta, s_i = (h_i + eps)^tau "
                                        "(1 + lambda b_i), normalised to mean 1 per batch: 1 "
                                        "keeps the hardness draw from shifting the objective "
                                        "(hard samples visited more often, each visit counting "
                                        "less), 0 lets it shift fully (the paper); the class "
                                        "prior is not corrected; default 1 for hamr-la, 0.5 "
                                        "for hamr-icf when the encoder trains, else 0 "
                                        "(docs/hardness.md)")
    lam: float = opt(None, "neighbour boost lambda (default 0.7 CLS, 0.1 NER)")
    k: int = opt(10, "neighbours per hard sample")
    hard_ratio: float = opt(0.2, "share rho of hardest samples whose neighbours are boosted")
    knn_build_freq: int = opt(1, "recompute the neighbour boost every F epochs")
    num_index_shards: int = opt(1, "FAISS index shards (IndexShards)")
    knn_index: str = opt("flat", "neighbour index: flat (exact), ivf (approximate; about 14x faster "
                         "at 10^6 samples with recall@10 1.0 on benchmarks/results/neighbours.md) "
                         "or ivfpq (IVF over product-quantised codes: --knn-pq-m bytes per sample "
                         "instead of 4 d, for 10^7 samples and more)",
                         ["flat", "ivf", "ivfpq"])
    knn_nlist: int | None = opt(None, "IVF lists (default 4*sqrt(N))")
    knn_nprobe: int | None = opt(None, "IVF lists searched per query (default: a tenth of the lists)")
    knn_pq_m: int | None = opt(None, "IVF-PQ: sub-quantizers (bytes of code) per sample; must divide "
                               "the embedding dimension (default: dimension / 8, 48 for 384)")
    knn_rerank: int = opt(0, "IVF-PQ: take R*(k+1) candidates per query and keep the k+1 nearest "
                          "by the exact embeddings (0: off); see benchmarks/results/neighbours_ivfpq.md")
    oversample_ratio: float = opt(1.2, "resampling methods draw ceil(r N) samples per epoch")
    meta_set: str = opt("copy", "balanced meta set: copy drawn train samples or move them out", ["copy", "move"])
    hardness_signal: str | None = opt(None, "what the hardness of a meta method follows: weight = "
                                      "the post-meta weight w (the paper), loss = the loss "
                                      "relative to the batch mean, clipped like w; default loss "
                                      "for hamr-la and for hamr-icf when the encoder trains, "
                                      "else weight (docs/hardness.md)", ["weight", "loss"])
    ner_sample_loss: str | None = opt(None, "NER per-sentence training loss that the meta weights "
                                      "multiply (the weight network's input and the hardness always "
                                      "use max); default: mean for hamr-icf and for hamr-cb with "
                                      "--freeze-encoder, else max (the paper); mix averages the two "
                                      "(docs/hardness.md)",
                                      ["max", "mean", "mix"])
    cache_dir: str | None = opt(None, "embedding/feature cache (default $HAMR_CACHE or ~/.cache/hamr_dist)")
    progress: bool = opt(True, "show a progress bar")
    # Ray (hamr_dist.distributed): --num-workers > 0 trains with Ray Train
    num_workers: int = opt(0, "Ray Train workers (data-parallel); 0 trains in this process without Ray")
    use_gpu: bool = opt(False, "one GPU per Ray worker (NCCL); the neighbour actor takes a spare GPU if any")
    address: str | None = opt(None, "Ray cluster to attach to (default: $RAY_ADDRESS, else start a local Ray)")
    run_name: str | None = opt(None, "Ray Train run name; re-running with the same name and storage path "
                               "resumes from its last checkpoint (default: a new hamr-<time> name)")
    storage_path: str | None = opt(None, "Ray Train checkpoint storage, shared by all nodes "
                                   "(default: <output_dir>/ray_runs)")
    max_failures: int = opt(1, "Ray: restarts of the worker group from the last checkpoint before the run fails (-1: unlimited)")
    checkpoint_every: int = opt(1, "Ray: checkpoint every N epochs (and always after the last)")
    hardness_shards: int = opt(1, "Ray: hardness actors, each holding one index range of h and b (the "
                               "EMA work is spread over them; h stays the same, bit for bit)")
    hardness_batch_steps: int = opt(16, "Ray: a worker sends its hardness updates N steps per message "
                                    "(reads send them first; h is the same for any N); one message "
                                    "per step slows short steps (docs/distributed.md)")
    # MLflow (hamr_dist.tracking): rank 0 logs params, per-epoch metrics, plots and outputs
    mlflow: bool | None = opt(None, "log the run to MLflow (default: on, unless $HAMR_MLFLOW=0)")
    mlflow_uri: str | None = opt(None, "MLflow tracking URI, e.g. http://host:5000 (default: "
                                 "$MLFLOW_TRACKING_URI, else sqlite:///<output_dir>/mlflow.db)")
    experiment_name: str = opt("hamr", "MLflow experiment")
    mlflow_parent_run_id: str | None = opt(None, "nest the MLflow run under this run id (set by hamr tune)")

    def __post_init__(self):
        if self.method is None:     # the dev winner of each regime (README, Results)
            self.method = "hamr-la" if self.freeze_encoder else "hamr-icf"

    def resolved(self, task: str) -> "TrainConfig":
        """Fill task-dependent defaults and validate; returns a new config."""
        c = dataclasses.replace(self, task=task)
        m = get_method(c.method)
        if c.method == "lnr" and task != "cls":
            raise ConfigError("method lnr re-balances sequence labels and supports classification "
                              "only (use --method hamr-cb or icf for NER)")
        split = m.logit_adjust and m.resample
        if c.class_prior_draw is None:    # chosen on dev: docs/hardness.md
            c.class_prior_draw = 0.5 if split else 0.0
        if c.class_prior_draw > 0 and not split:
            raise ConfigError(f"--class-prior-draw splits hamr-la's class prior between the draw "
                              f"and the logits; method {c.method} has no such split (use "
                              f"--method hamr-la, or hamr-cb for a prior in the draw only)")
        # chosen on dev per regime: docs/hardness.md. hamr-la's draw follows the loss, and the
        # correction keeps that draw from shifting the objective (uncorrected it cost dev);
        # hamr-icf's, when the encoder trains, follows the loss half corrected (its weight
        # hardness left that draw uniform); its class-weight feedback (below) is on then too
        icf_ft = m.class_weights and m.meta is not None and not c.freeze_encoder
        if c.hardness_signal is None:
            c.hardness_signal = "loss" if split or icf_ft else "weight"
        if c.draw_correction is None:
            c.draw_correction = 1.0 if split else 0.5 if icf_ft else 0.0
        if c.preset == "paper":
            if c.learning_rate is None:
                c.learning_rate = 2e-5 if task == "ner" else 4e-5
            if not (c.bf16 or c.fp16) and _cuda_bf16():
                c.bf16 = True
        if c.learning_rate is None:
            c.learning_rate = 1e-3 if c.freeze_encoder else 3e-5
        if c.meta_every is None:       # a frozen encoder's meta step costs milliseconds
            c.meta_every = 1 if c.freeze_encoder or c.preset == "paper" else 4
        if c.wnet_lr is None:
            c.wnet_lr = 3e-4 if task == "ner" else 1e-4
        if c.lam is None:
            c.lam = 0.1 if task == "ner" else 0.7
        if c.hardness_rule is None:    # chosen on dev: docs/hardness.md
            # ours (a class prior in the draw or the loss): debiased
            ours = m.has_class_prior and m.resample
            c.hardness_rule = "debiased-ema" if ours else "ema"
        if c.ner_sample_loss is None:  # chosen on dev per regime: docs/hardness.md
            # the max pushes rare entity tokens; ICF's token weights already do, and a converged
            # head (frozen encoder) learns more from every token's loss
            mean = m.class_weights or m.logit_adjust or (m.class_prior and c.freeze_encoder)
            c.ner_sample_loss = "mean" if mean and c.preset != "paper" else "max"
        if c.class_prior_power is None:   # chosen on dev in both regimes: docs/hardness.md
            # hamr-icf's weights and hamr-cb's draw keep half of dev's imbalance; the icf
            # baseline is ICF (power 1)
            ours = m.meta is not None and m.has_class_prior
            c.class_prior_power = 0.5 if ours else 1.0
        if c.class_weight_feedback is None:   # chosen on dev per regime: docs/hardness.md
            # hamr-icf when the encoder trains; the icf baseline stays as its authors define it
            c.class_weight_feedback = 1.0 if icf_ft else 0.0
        if c.meta_update_lr is None:
            c.meta_update_lr = c.learning_rate if c.freeze_encoder else 2e-4
        if c.meta_batch_size is None:
            c.meta_batch_size = c.per_device_train_batch_size
        c.validate()
        return c

    def validate(self) -> None:
        get_method(self.method)
        parse_scope(self.meta_scope)
        for f in dataclasses.fields(self):     # YAML, Tune and code bypass argparse's choices
            allowed, value = f.metadata.get("choices"), getattr(self, f.name)
            if allowed and value is not None and value not in allowed:
                raise ConfigError(f"option --{f.name.replace('_', '-')}={value!r} is not valid "
                                  f"(choose one of: {', '.join(map(str, allowed))})")
        checks = [
            ("num_train_epochs", self.num_train_epochs >= 1, "must be >= 1"),
            ("max_steps", self.max_steps == -1 or self.max_steps >= 1, "must be -1 (off) or >= 1"),
            ("meta_every", self.meta_every is None or self.meta_every >= 1, "must be >= 1"),
            ("meta_reuse", self.meta_reuse >= 1, "must be >= 1"),
            ("fp16", not (self.fp16 and self.bf16), "excludes --bf16: pass one of them"),
            ("fp16", not (self.fp16 and self.num_workers > 0 and not self.use_gpu),
             "needs CUDA GPUs: add --use-gpu, or use --bf16 on CPU workers"),
            ("per_device_train_batch_size", self.per_device_train_batch_size >= 1, "must be >= 1"),
            ("max_seq_length", self.max_seq_length >= 8, "must be >= 8"),
            ("tau", self.tau > 0, "must be > 0"),
            ("draw_correction", self.draw_correction is None or 0 <= self.draw_correction <= 1,
             "must be in [0, 1]"),
            ("gamma", 0 <= self.gamma < 1, "must be in [0, 1)"),
            ("hardness_epoch_gamma", 0 <= self.hardness_epoch_gamma < 1, "must be in [0, 1)"),
            ("class_prior_draw", self.class_prior_draw is None or 0 <= self.class_prior_draw <= 1,
             "must be in [0, 1]"),
            ("class_prior_power", self.class_prior_power is None or self.class_prior_power >= 0,
             "must be >= 0"),
            ("class_prior_beta", self.class_prior_beta is None or 0 < self.class_prior_beta < 1,
             "must be in (0, 1)"),
            ("class_weight_feedback", self.class_weight_feedback is None
             or self.class_weight_feedback >= 0, "must be >= 0"),
            ("class_prior_warmup_ratio", 0 <= self.class_prior_warmup_ratio <= 1,
             "must be in [0, 1]"),
            ("dice_alpha", self.dice_alpha >= 0, "must be >= 0"),
            ("dice_smooth", self.dice_smooth >= 0, "must be >= 0"),
            ("lnr_warmup_epochs", self.lnr_warmup_epochs >= 1, "must be >= 1"),
            ("probe_size", self.probe_size >= 0, "must be >= 0"),
            ("early_stopping_patience", self.early_stopping_patience is None
             or self.early_stopping_patience >= 1, "must be >= 1"),
            ("hard_ratio", 0 < self.hard_ratio <= 1, "must be in (0, 1]"),
            ("k", self.k >= 1, "must be >= 1"),
            ("w_min", 0 <= self.w_min < self.w_max, "must satisfy 0 <= w_min < w_max"),
            ("oversample_ratio", self.oversample_ratio > 0, "must be > 0"),
            ("knn_build_freq", self.knn_build_freq >= 1, "must be >= 1"),
            ("knn_nlist", self.knn_nlist is None or self.knn_nlist >= 1, "must be >= 1"),
            ("knn_nprobe", self.knn_nprobe is None or self.knn_nprobe >= 1, "must be >= 1"),
            ("knn_pq_m", self.knn_pq_m is None or self.knn_pq_m >= 1, "must be >= 1"),
            ("knn_pq_m", self.knn_pq_m is None or self.knn_index == "ivfpq",
             "applies to --knn-index ivfpq only: add --knn-index ivfpq or drop it"),
            ("knn_rerank", self.knn_rerank >= 0, "must be >= 0"),
            ("knn_rerank", self.knn_rerank == 0 or self.knn_index == "ivfpq",
             "applies to --knn-index ivfpq only: add --knn-index ivfpq or drop it"),
            ("num_workers", self.num_workers >= 0, "must be >= 0"),
            ("max_failures", self.max_failures >= -1, "must be >= -1"),
            ("checkpoint_every", self.checkpoint_every >= 1, "must be >= 1"),
            ("hardness_shards", self.hardness_shards >= 1, "must be >= 1"),
            ("hardness_batch_steps", self.hardness_batch_steps >= 1, "must be >= 1"),
        ]
        if self.lam is not None:
            checks.append(("lam", self.lam >= 0, "must be >= 0"))
        if self.learning_rate is not None:
            checks.append(("learning_rate", self.learning_rate > 0, "must be > 0"))
        for name, ok, why in checks:
            if not ok:
                raise ConfigError(f"option --{name.replace('_', '-')}={getattr(self, name)!r} {why}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def reads(self, option: str) -> bool:
        """Whether a run of this config reads ``option``: its method's (Method.reads), and the
        Ray options only when it trains with Ray."""
        if option in RAY_ONLY and not self.num_workers:
            return False
        return get_method(self.method).reads(option)


# Options that only a run with Ray Train workers reads.
RAY_ONLY = ("storage_path", "max_failures", "checkpoint_every", "hardness_shards",
            "hardness_batch_steps")


# The authors' recipe (scripts of their repository, per task): what --preset paper sets unless
# the user gives the option; the task-dependent learning rate and GPU precision are filled in
# TrainConfig.resolved.
PRESETS = {"paper": {"per_device_train_batch_size": 8, "num_train_epochs": 8,
                     "max_seq_length": 512, "warmup_ratio": 0.0, "weight_decay": 0.0,
                     "meta_scope": "all", "hard_ratio": 0.1, "load_best_model_at_end": False}}


def apply_preset(values: dict) -> dict:
    """Options of ``values['preset']`` under the explicitly given ``values``."""
    name = values.get("preset")
    if name is None:
        return values
    if name not in PRESETS:
        raise ConfigError(f"option --preset={name!r} is not valid (choose one of: {', '.join(PRESETS)})")
    return {**PRESETS[name], **values}


def _cuda_bf16() -> bool:
    try:
        import torch
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    except Exception:   # noqa: BLE001 -- no usable CUDA means no mixed precision
        return False


def parse_scope(scope: str) -> int | str:
    """'all' | 'head' | 'topK' -> 'all' | 'head' | K."""
    if scope in ("all", "head"):
        return scope
    m = re.fullmatch(r"top-?(\d+)", scope or "")
    if m and int(m.group(1)) >= 1:
        return int(m.group(1))
    raise ConfigError(f"option --meta-scope={scope!r} is not valid (use all, head, or topK such as top2)")


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config; keys are TrainConfig field names (dashes or underscores)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} not found (pass an existing YAML file to --config)")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0]
        raise ConfigError(f"config file {p} is not valid YAML: {first}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {p} must hold a mapping of option: value")
    out = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in FIELDS:
            raise ConfigError(f"config file {p}: unknown option {key!r} (see hamr train --help)")
        out[name] = value
    return out
