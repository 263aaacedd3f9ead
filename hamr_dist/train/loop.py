"""The one training loop: in-process, or inside a Ray Train worker (``Runtime`` says which).

Per step (spec section 1): forward -> per-sample losses -> [meta step: w_pre, virtual step,
meta loss, f_theta update, w_post] -> real update on mean(w * l) -> hardness EMA.
Per epoch (section 2): [neighbour boost every F epochs] -> draw -> steps -> dev evaluation.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from .. import tracking
from ..config import parse_scope
from ..data.tokenize import to_device
from ..errors import HamrError
from ..losses import (IGNORE, balanced_ce, class_weights_at, entity_groups, per_sample,
                      position_loss)
from ..meta.schedule import MetaSchedule
from ..meta.step import current_weights, loss_ratio_weights, meta_step
from ..meta.weight_net import WeightNet, weight_curve
from ..sampling.hardness import InMemoryHardness, sampling_entropy, shard_for_rank
from ..sampling.importance import importance_stats, importance_weights
from .diagnose import EpochDiagnostics, draws_with_prior, hardness_options, prior_summary
from .class_feedback import feedback_weights
from .evaluate import eval_logits, evaluate
from .lnr import flip_labels
from .precision import Precision
from .setup import Setup, build, train_groups

log = logging.getLogger("hamr_dist")


class TrainingDiverged(HamrError):
    pass


def _no_sync(tensors):
    return None


@dataclass
class Runtime:
    """What differs between one process and one Ray Train worker."""
    rank: int = 0
    world_size: int = 1
    all_reduce_mean: Callable[[list[torch.Tensor]], None] = _no_sync
    hardness: object | None = None          # HardnessStore; None: an in-memory one
    boost: Callable[[np.ndarray], np.ndarray] | None = None   # h -> b; None: local FAISS
    report: Callable[[dict, Callable[[], dict]], None] | None = None  # (metrics, state thunk)
    resume: dict | None = None              # a state from a checkpoint
    device: object | None = None            # None: the GPU when there is one, else the CPU
    progress: bool = True

    @property
    def chief(self) -> bool:
        return self.rank == 0


@dataclass
class Result:
    metrics: dict
    output_dir: Path
    history: list = field(default_factory=list)


def local_boost(s: Setup) -> Callable[[np.ndarray], np.ndarray]:
    """Neighbour boost computed in this process (the Ray path uses the neighbour actor)."""
    from ..progress import phase
    from ..sampling.neighbors import build_index, neighbour_boost
    from .setup import train_embeddings
    c = s.cfg
    emb = train_embeddings(s)
    with phase(f"building the neighbour index over {len(emb)} embeddings ({c.knn_index})",
               announce=len(emb) >= 20000):
        index = build_index(emb, num_shards=c.num_index_shards, kind=c.knn_index,
                            nlist=c.knn_nlist, nprobe=c.knn_nprobe, pq_m=c.knn_pq_m)
    return lambda h: neighbour_boost(index, emb, h, rho=c.hard_ratio, k=c.k, rerank=c.knn_rerank)


def lazy(make: Callable[[], Callable]) -> Callable:
    """Build an expensive callable on first use (runs that never boost never embed)."""
    built = []
    def call(*a):
        if not built:
            built.append(make())
        return built[0](*a)
    return call


def meta_ce(logits, labels):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=IGNORE)


def meta_objective(s: Setup):
    """The meta loss of ``--meta-loss``: mean CE, or CE balanced over classes (NER: entity
    types, B-/I- pooled, O one class)."""
    if s.cfg.meta_loss != "balanced":
        return meta_ce
    groups = torch.as_tensor(entity_groups(s.data.label_names)) if s.data.task == "ner" else None
    return lambda logits, labels: balanced_ce(logits, labels, groups)


class MetaBatches:
    """Endless seeded passes over the meta set; each rank has its own stream."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int):
        self.n, self.bs = n, min(batch_size, n)
        self.rng = np.random.default_rng([seed, rank, 1])
        self.order, self.pos = self.rng.permutation(n), 0

    def next(self) -> np.ndarray:
        if self.pos + self.bs > self.n:
            self.order, self.pos = self.rng.permutation(self.n), 0
        out = self.order[self.pos:self.pos + self.bs]
        self.pos += self.bs
        return out

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state, "order": self.order, "pos": self.pos}

    def load_state_dict(self, d):
        self.rng.bit_generator.state = d["rng"]
        self.order, self.pos = np.asarray(d["order"]), d["pos"]


def linear_schedule(opt, warmup: int, total: int):
    def f(step):
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def prior_strength(step: int, total: int, warmup_ratio: float) -> float:
    """How much of the class prior applies at 0-based ``step`` of ``total``: a linear ramp
    from 0 to 1 over the first ``warmup_ratio`` of the run (deferred re-balancing, Cao et al.
    2019, made gradual): the model first learns from the data as drawn, then re-balances."""
    if warmup_ratio <= 0:
        return 1.0
    return min(1.0, step / (warmup_ratio * total))


def run_length(c, steps_per_epoch: int) -> tuple[int, int]:
    """(epochs, optimizer steps per worker) of a run. ``--max-steps``, when set, is the number
    of steps and decides the epochs (the last one possibly partial), as in Hugging Face."""
    if c.max_steps > 0:
        return math.ceil(c.max_steps / steps_per_epoch), c.max_steps
    return c.num_train_epochs, steps_per_epoch * c.num_train_epochs


def train(cfg, runtime: Runtime | None = None, setup: Setup | None = None) -> Result:
    rt = runtime or Runtime(progress=cfg.progress)
    t0 = time.time()
    s = setup or build(cfg, device=rt.device)
    c, m, model = s.cfg, s.method, s.model
    torch.manual_seed(c.seed + rt.rank)
    n_train = len(s.train.batches)
    device = next(model.parameters()).device

    groups = train_groups(s)        # hamr-cb's class prior and the diagnostics
    class_weights = s.class_weights     # ICF; --class-weight-feedback rescales it per epoch
    # under Ray the actor holds the store; only rank 0 needs the prior, for the log line
    chief_logs = rt.chief and draws_with_prior(s)
    opts = hardness_options(s) if rt.hardness is None or chief_logs else {}
    store = rt.hardness if rt.hardness is not None else InMemoryHardness(
        n_train, gamma=c.gamma, **opts)
    if rt.chief and opts.get("prior") is not None:
        log.info(prior_summary(s, opts["prior"]))
    diag = EpochDiagnostics(s, groups) if rt.chief else None
    relabel = None          # lnr: the re-balanced training labels, after the warm-up
    boost = (rt.boost or lazy(lambda: local_boost(s))) if m.knn else None
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=c.learning_rate, weight_decay=c.weight_decay)
    ratio = c.oversample_ratio if m.resample else 1.0
    per_rank = len(shard_for_rank(np.arange(math.ceil(ratio * n_train)), 0, rt.world_size,
                                  c.per_device_train_batch_size))
    steps_per_epoch = max(1, math.ceil(per_rank / c.per_device_train_batch_size))
    num_epochs, total = run_length(c, steps_per_epoch)
    sched = linear_schedule(opt, int(c.warmup_ratio * total), total)
    wnet = wnet_opt = None
    if m.meta:
        torch.manual_seed(c.seed)        # identical f_theta on every rank
        wnet = WeightNet(c.wnet_hidden, detach_mean=c.weight_norm == "detached").to(device)
        wnet_opt = torch.optim.Adam(wnet.parameters(), lr=c.wnet_lr, weight_decay=1e-4)
    meta_batches = MetaBatches(len(s.meta.batches), c.meta_batch_size, c.seed, rt.rank)
    amp = Precision.for_run(c, device)          # --bf16 / --fp16 (fp32: no-ops)
    plan = None
    if m.meta:   # when the meta update runs, where its meta batch's encoder output comes from
        plan = MetaSchedule(lambda: to_device(s.meta.batches(meta_batches.next()), device),
                            every=c.meta_every, reuse=c.meta_reuse, fuse=c.meta_fuse,
                            features_ok=not c.freeze_encoder and parse_scope(c.meta_scope) == "head")

    meta_loss_fn = meta_objective(s) if m.meta else None      # built once, not per step
    start_epoch, history, best, best_state, bad_total = 0, [], None, None, 0
    if rt.resume:
        st = rt.resume
        model.load_state_dict(st["model"], strict=False)
        opt.load_state_dict(st["optimizer"]); sched.load_state_dict(st["scheduler"])
        if wnet is not None:
            wnet.load_state_dict(st["wnet"]); wnet_opt.load_state_dict(st["wnet_opt"])
        if rt.chief or rt.hardness is None:
            store.load_state_dict(st["hardness"])
        meta_batches.load_state_dict(st["meta_batches"][rt.rank] if isinstance(
            st["meta_batches"], list) else st["meta_batches"])
        start_epoch, history, best = st["epoch"] + 1, st["history"], st["best"]
        best_state = st.get("best_state")
        relabel = st.get("relabel")
        amp.load_state_dict(st.get("scaler"))
        torch.set_rng_state(st["torch_rng"])
    # MLflow (rank 0; a no-op when off): the run id travels in the state, so a resume continues it
    tracker = tracking.start(c, rank=rt.rank, world_size=rt.world_size, resume=rt.resume)

    def trainable_state():
        return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
                if not c.freeze_encoder or k.startswith("head.")}

    def state() -> dict:
        return {"model": trainable_state(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "wnet": wnet.state_dict() if wnet else None,
                "wnet_opt": wnet_opt.state_dict() if wnet_opt else None,
                "hardness": store.state_dict(), "meta_batches": meta_batches.state_dict(),
                "epoch": epoch, "history": history, "best": best, "best_state": best_state,
                "torch_rng": torch.get_rng_state(), "mlflow_run_id": tracker.run_id,
                "relabel": relabel,
                "scaler": amp.state_dict()}

    # an error marks the MLflow run FAILED instead of leaving it RUNNING (what was logged stays)
    try:
        model.train()
        if c.freeze_encoder:
            model.encoder.eval()
        for epoch in range(start_epoch, num_epochs):
            # Boost from epoch 1 on: at epoch 0 h is still uniform, so "hardest" would be arbitrary.
            if boost is not None and c.lam > 0 and epoch > 0 and epoch % c.knn_build_freq == 0:
                store.set_boost(boost(store.hardness()))
            step = epoch * steps_per_epoch    # steps before this epoch (checkpoints are per epoch)
            feedback = None
            if m.class_weights and c.class_weight_feedback > 0 and epoch > 0:
                # from the model as the last epoch left it (so a resumed run computes the same)
                class_weights, feedback = feedback_weights(
                    model, s, s.class_weights, c.class_weight_feedback,
                    c.per_device_eval_batch_size, rt)
            # the sampling prior's share is set per draw: at the epoch's first step
            share = prior_strength(step, total, c.class_prior_warmup_ratio)
            draw = store.draw(epoch, c.seed, ratio, c.tau, c.lam if m.knn else 0.0,
                              uniform=not m.resample, prior=share)
            mine = shard_for_rank(draw, rt.rank, rt.world_size, c.per_device_train_batch_size)
            iw = None           # --draw-correction: this rank's importance weights
            if m.resample and c.draw_correction > 0:
                iw = importance_weights(store.hardness(), store.boost(), mine, c.tau,
                                        c.lam if m.knn else 0.0, c.draw_correction)
            bar = _progress(rt, min(steps_per_epoch, total - step), epoch, num_epochs)
            losses_seen, weights_seen, bad = [], [], 0
            for start in range(0, len(mine), c.per_device_train_batch_size):
                if step >= total:                      # --max-steps reached mid-epoch
                    break
                step += 1
                idx = mine[start:start + c.per_device_train_batch_size]
                ramp = prior_strength(step - 1, total, c.class_prior_warmup_ratio)
                out = train_step(s, model, opt, wnet, wnet_opt, idx, meta_batches, rt,
                                 amp=amp, plan=plan, step=step - 1, relabel=relabel,
                                 meta_loss_fn=meta_loss_fn,
                                 class_weights=class_weights_at(class_weights, ramp),
                                 sample_weight=None if iw is None else
                                 iw[start:start + c.per_device_train_batch_size])
                if out is None:                       # non-finite: skipped
                    bad += 1; bad_total += 1
                    if bad >= c.max_bad_steps:
                        raise TrainingDiverged(
                            f"{bad} consecutive steps had non-finite loss or gradients at epoch "
                            f"{epoch + 1}; lower --learning-rate or check the data")
                    continue
                bad = 0
                sched.step()
                loss, hard_w, w_post = out
                if hard_w is not None:
                    hard_w = hard_w.cpu()
                    store.update(np.asarray(idx), hard_w.numpy().astype(np.float32))
                if w_post is not None or hard_w is not None:   # the weight diagnostics
                    weights_seen.append((w_post if w_post is not None else hard_w).cpu())
                losses_seen.append(loss)
                if bar:
                    bar.update(1)
                    if bar.n % 10 == 0:
                        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            with amp.autocast():
                dev = evaluate(model, s.dev.batches, s.dev.records, s.dev.encoded.ds, s.data,
                               c.per_device_eval_batch_size)
            if m.resample:
                store.end_epoch(epoch)
            h = store.hardness() if m.resample else None
            rec = epoch_record(epoch, losses_seen, weights_seen, dev, store, c, m, h, bad_total,
                               share)
            if diag is not None:
                flat, shares = diag(model, store, draw, h, weights_seen, c.tau,
                                    c.lam if m.knn else 0.0, share)
                rec.update(flat)
                rec["draw_share"] = shares
            if m.relabel == "lnr" and relabel is None and epoch + 1 >= c.lnr_warmup_epochs:
                relabel = lnr_labels(s, model, c)
                rec["relabelled_share"] = float(np.mean(relabel != train_labels(s)))
            if iw is not None and iw.size:
                rec.update(importance_stats(iw))
            if feedback is not None:
                rec["class_weight"] = feedback
            rec["global_step"] = step
            history.append(rec)
            if best is None or dev["macro_f1"] > best["dev"]["macro_f1"]:
                best = {"epoch": epoch + 1, "dev": dev}
                best_state = trainable_state()
            if bar:
                bar.close()
            if rt.chief:
                log.info("epoch %d/%d: loss %.4f, dev macro-F1 %.4f%s", epoch + 1, num_epochs,
                         rec["loss"], dev["macro_f1"], acting_summary(rec))
            tracker.epoch(rec, h)
            if rt.report:
                rt.report(rec, state)
            patience = c.early_stopping_patience
            if patience and epoch + 1 - best["epoch"] >= patience and epoch + 1 < num_epochs:
                if rt.chief:
                    log.info("early stopping: dev macro-F1 has not improved for %d epochs "
                             "(best: epoch %d)", patience, best["epoch"])
                break

        if c.load_best_model_at_end:
            model.load_state_dict(best_state, strict=False)
        else:          # the last epoch's model (the authors' recipe), reported as such
            best = {"epoch": history[-1]["epoch"], "dev": dev}
        with amp.autocast():
            test = evaluate(model, s.test.batches, s.test.records, s.test.encoded.ds, s.data,
                            c.per_device_eval_batch_size)
        metrics = {"method": c.method, "task": s.data.task, "best_epoch": best["epoch"],
                   "dev": best["dev"], "test": test, "history": history,
                   "truncated": {k: getattr(s, k).encoded.truncated for k in ("train", "dev", "test")},
                   "skipped_steps": bad_total, "meta_set": s.meta_info,
                   "wall_time_s": round(time.time() - t0, 2)}
        out_dir = Path(c.output_dir)
        if rt.chief:
            out_dir = write_outputs_or_rescue(out_dir, s, metrics, wnet)
            tracker.finish(metrics, out_dir, s)
        return Result(metrics, out_dir, history)
    except BaseException as e:
        tracker.fail(e)
        raise


def train_step(s: Setup, model, opt, wnet, wnet_opt, idx, meta_batches, rt: Runtime, *,
               amp: Precision | None = None, plan: MetaSchedule | None = None,
               step: int | None = None, relabel: np.ndarray | None = None,
               meta_loss_fn: Callable | None = None,
               class_weights: torch.Tensor | None = None,
               sample_weight: np.ndarray | None = None):
    """One step; returns (loss, hardness signal or None, post-meta weights or None), or None when
    skipped as non-finite.
    ``amp``: mixed precision (default fp32); ``plan``: the meta schedule (``--meta-every``,
    ``--meta-reuse``, ``--meta-fuse``; default: a meta update with a fresh meta batch every
    step); ``step``: the run's 0-based step, the phase of ``--meta-every``; ``meta_loss_fn``:
    the meta objective (default: ``meta_objective(s)``, built per call); ``class_weights``:
    ICF's weights as they stand this step (``--class-weight-feedback``,
    ``--class-prior-warmup-ratio``; default: ``s.class_weights``); ``sample_weight``: the
    batch's importance weights of ``--draw-correction`` (rescaled here to mean 1)."""
    c, m = s.cfg, s.method
    amp = amp or Precision()
    device = next(model.parameters()).device
    if m.meta and plan is None:
        plan = MetaSchedule(lambda: to_device(s.meta.batches(meta_batches.next()), device))
    if plan is not None and step is not None:
        plan.step = step
    batch = s.train.batches(idx)
    if relabel is not None:                     # lnr: the re-balanced labels
        batch["labels"] = torch.as_tensor(relabel[np.asarray(idx)])
    batch = to_device(batch, device)
    if plan is not None:
        logits = plan.forward(model, batch, amp.autocast)
    else:
        with amp.autocast():
            logits = model(batch)
    logits = logits.float()                   # losses, weights and hardness stay fp32
    labels = batch["labels"]
    if class_weights is None:
        class_weights = s.class_weights
    if s.logit_offsets is not None:           # la: margins in training, plain logits at inference
        logits = logits + s.logit_offsets
    pos = position_loss(m.loss, logits, labels, class_weights, dice_alpha=c.dice_alpha,
                        dice_smooth=c.dice_smooth)
    ner = logits.dim() == 3
    hard = per_sample(pos, labels, "max") if ner else pos          # HAMR's l_i
    train_l = per_sample(pos, labels, c.ner_sample_loss if m.meta else "mean") if ner else pos
    if not torch.isfinite(train_l).all():
        opt.zero_grad(set_to_none=True)
        return None
    signal = w_post = None
    if m.meta and plan.due:
        r = meta_step(model, wnet, wnet_opt, train_l, plan.meta_batch(model, amp.autocast),
                      meta_loss_fn or meta_objective(s), s.scope_names,
                      alpha=c.meta_update_lr, kind=m.meta,
                      w_min=c.w_min, w_max=c.w_max,
                      sync=rt.all_reduce_mean if rt.world_size > 1 else None,
                      signal=hard if ner else None, autocast=amp.autocast, scaler=amp.scaler)
    elif m.meta:                      # --meta-every k: the current f_theta, no meta update
        r = current_weights(wnet, train_l, kind=m.meta, w_min=c.w_min, w_max=c.w_max,
                            signal=hard if ner else None)
    real_l = train_l
    if sample_weight is not None:     # the real update only: the meta step sees the batch as drawn
        u = torch.as_tensor(sample_weight, dtype=train_l.dtype, device=train_l.device)
        real_l = train_l * (u / u.mean())
    if m.meta:
        w_post = r.w_post
        loss = (w_post * real_l).mean()
    else:
        loss = real_l.mean()
    if m.meta or m.resample:
        signal = hardness_signal(c, w_post, hard)
    opt.zero_grad(set_to_none=True)
    amp.backward(loss)                       # fp16: the scaled loss
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if rt.world_size > 1:
        rt.all_reduce_mean(grads)
    amp.unscale(opt)                         # clip the true gradients
    norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None],
                                          c.max_grad_norm)
    if not torch.isfinite(norm):
        opt.zero_grad(set_to_none=True)
        amp.update()                         # fp16 overflow: a smaller scale next step
        return None
    amp.step(opt)
    amp.update()
    return float(loss.detach()), signal, w_post


def hardness_signal(c, w_post, hard):
    """What the hardness follows this step: the post-meta weights (the paper; ``w_post`` None
    for a method without meta weights) or, with ``--hardness-signal loss`` and without meta
    weights, the per-sample loss relative to the batch mean, clipped like w."""
    if w_post is not None and c.hardness_signal == "weight":
        return w_post
    return loss_ratio_weights(hard, c.w_min, c.w_max)


def acting_summary(rec: dict) -> str:
    """The epoch line's part that says whether HAMR acts (empty for uniform methods)."""
    parts = []
    if "ess_frac" in rec:
        parts.append(f"ESS/N {rec['ess_frac']:.2f}, coverage {rec['coverage']:.2f}, h p1/p50/p99 "
                     f"{rec['hardness_p1']:.2f}/{rec['hardness_p50']:.2f}/{rec['hardness_p99']:.2f}")
    if rec.get("spearman_h_loss") is not None and np.isfinite(rec["spearman_h_loss"]):
        parts.append(f"spearman(h, loss) {rec['spearman_h_loss']:+.2f}")
    if "weight_p1" in rec:
        parts.append(f"w p1/p50/p99 {rec['weight_p1']:.2f}/{rec['weight_p50']:.2f}/"
                     f"{rec['weight_p99']:.2f}")
    if "importance_p1" in rec:                   # --draw-correction
        parts.append(f"importance w p1/p50/p99 {rec['importance_p1']:.2f}/"
                     f"{rec['importance_p50']:.2f}/{rec['importance_p99']:.2f}")
    if rec.get("class_weight"):                  # --class-weight-feedback
        cw = rec["class_weight"]
        lo, hi = min(cw, key=cw.get), max(cw, key=cw.get)
        parts.append(f"class weights {cw[lo]:.2f} ({lo}) to {cw[hi]:.2f} ({hi})")
    return "; " + "; ".join(parts) if parts else ""


def train_labels(s: Setup) -> np.ndarray:
    from .setup import train_labels as labels
    return labels(s)


@torch.no_grad()
def lnr_labels(s: Setup, model, c) -> np.ndarray:
    """LNR's re-balanced labels from the current (warmed-up) model's probabilities."""
    n = len(s.train.batches)
    probs = [logits.softmax(-1).cpu().numpy() for _, logits in
             eval_logits(model, s.train.batches, np.arange(n), c.per_device_eval_batch_size)]
    labels = train_labels(s)
    new = flip_labels(np.concatenate(probs), labels, c.lnr_threshold, c.seed)
    log.info("lnr: %d of %d training labels flipped to rarer classes", int((new != labels).sum()), n)
    return new


def epoch_record(epoch, losses, weights, dev, store, c, m, h, bad_total, prior=1.0) -> dict:
    # what users read counts epochs from 1 (console, metrics.json, MLflow steps, Tune); only the
    # loop's own index and the checkpoint's "epoch" count from 0
    rec = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan"),
           "dev_macro_f1": dev["macro_f1"], "dev_per_class_f1": dev["per_class_f1"],
           "skipped_steps": bad_total}
    if weights:
        w = torch.cat(weights)
        rec.update(weight_mean=float(w.mean()), weight_std=float(w.std()) if w.numel() > 1 else 0.0)
    if h is not None:
        b = store.boost()
        rec.update(boosted_share=float((b > 0).mean()),
                   sampling_entropy=sampling_entropy(store.probabilities(
                       c.tau, c.lam if m.knn else 0.0, prior=prior)),
                   hardness_mean=float(h.mean()), hardness_std=float(h.std()))
    return rec


def _progress(rt: Runtime, total, epoch, epochs):
    if not (rt.progress and rt.chief):
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=f"epoch {epoch + 1}/{epochs}", leave=False, dynamic_ncols=True)


def write_outputs_or_rescue(out: Path, s: Setup, metrics: dict, wnet) -> Path:
    """write_outputs to ``out``; if that fails (disk full, folder gone or read-only since the
    start check), to a fresh rescue folder, saying where: a trained model is never lost."""
    try:
        write_outputs(out, s, metrics, wnet)
        return out
    except OSError as e:
        from ..outputs import rescue_dir
        alt = rescue_dir(out)
        log.warning("could not write the outputs to %s (%s); saving them to %s instead",
                    out, e.strerror or e, alt)
        write_outputs(alt, s, metrics, wnet)
        return alt


def write_outputs(out: Path, s: Setup, metrics: dict, wnet) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # a frozen encoder is unchanged: referenced (path + fingerprint), copied only if asked
    from ..model import default_model
    ref = (s.cfg.model or default_model()) if s.cfg.freeze_encoder and not s.cfg.save_encoder else None
    s.model.save(out, s.tokenizer, s.data.label_names,
                 extra={"max_seq_length": s.cfg.max_seq_length}, encoder_ref=ref)
    (out / "label_map.json").write_text(json.dumps(
        {"task": s.data.task, "labels": s.data.label_names,
         "entity_types": s.data.entity_types}, indent=2))
    (out / "config.yaml").write_text(yaml.safe_dump(s.cfg.to_dict(), sort_keys=False))
    if wnet is not None:
        (out / "weight_curve.json").write_text(json.dumps(weight_curve(wnet)))
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2))
    tmp.replace(out / "metrics.json")
