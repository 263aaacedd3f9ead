"""Each method is a set of switches over one training loop; a new method is one new entry.

| method            | loss  | class weights | meta weights     | sampler              | hardness driven by |
|-------------------|-------|---------------|------------------|----------------------|--------------------|
| ce                | CE    | -             | -                | uniform permutation  | -                  |
| icf               | CE    | N / (C n_c)   | -                | uniform permutation  | -                  |
| focal             | focal | -             | -                | uniform permutation  | -                  |
| dice              | Dice  | -             | -                | uniform permutation  | -                  |
| mwn               | CE    | -             | MWN (raw loss)   | uniform permutation  | -                  |
| hamr              | CE    | -             | HAMR (z-score)   | hardness + kNN boost | w_post             |
| hamr-no-resample  | CE    | -             | HAMR (z-score)   | uniform permutation  | -                  |
| hamr-no-meta      | CE    | -             | -                | hardness + kNN boost | clip(l/mean_B l)   |
| hamr-no-knn       | CE    | -             | HAMR (z-score)   | hardness, lambda = 0 | w_post             |
| hamr-cb           | CE    | -             | HAMR (z-score)   | class prior x hardness + kNN | w_post     |
| hamr-icf          | CE    | ~r_c^.5 / n_c | HAMR (z-score)   | hardness + kNN boost | w_post             |
| la                | LA-CE | -             | -                | uniform permutation  | -                  |
| hamr-la           | LA-CE | -             | HAMR (z-score)   | prior^a x hardness + kNN | w_post         |
| lnr               | CE    | -             | -                | uniform permutation  | -                  |

hamr-cb is ours, not the paper's: the draw is p_i ~ r_c(i)^(1-power) / n_c(i) (h_i+eps)^tau
(1 + lambda b_i), a class prior (dev's class shares r_c tempered towards equal; power 1 balances
the classes) that the hardness refines within and across classes. hamr-icf (also
ours) puts the class prior into the loss instead, class weights per position (NER: per token,
so entity tokens outweigh O inside a sentence) with the same tempered dev shares (power 1 would
be ICF's N / (C n_c)), under the paper's meta weights and sampler. lnr (Hu et al.,
ICML 2025) trains CE on labels re-balanced once, after a CE warm-up, by flipping majority-class
samples that the model finds close to a rarer class (classification only). la is the
logit-adjusted loss of Menon et al. (ICLR 2021): during training every logit is shifted by
-tau log w_c, w_c the class's ICF weight (log of its training share with power 1), so rare
classes must win by a margin and the plain logits at inference are re-balanced. hamr-la (ours)
splits the tempered dev prior of hamr-cb and hamr-icf between the draw (hamr-cb's prior to the
power a, --class-prior-draw) and such a shift of the training logits, -(1 - a) tau log w_c.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class Method:
    name: str
    loss: str = "ce"              # ce | focal | dice
    class_weights: bool = False   # ICF
    meta: str | None = None       # None | "hamr" | "mwn"
    resample: bool = False        # hardness-driven sampler instead of a uniform permutation
    knn: bool = False             # neighbourhood boost (lambda > 0)
    class_prior: bool = False     # sampling prior n_c^-power (hamr-cb)
    relabel: str | None = None    # None | "lnr"
    logit_adjust: bool = False    # training logits shifted by -tau log w_c (la)

    @property
    def tracks_hardness(self) -> bool:
        return self.resample

    @property
    def has_class_prior(self) -> bool:
        """A class prior in the loss weights, the draw or the logits (icf, hamr-cb, hamr-icf,
        la, hamr-la)."""
        return self.class_weights or self.class_prior or self.logit_adjust

    def reads(self, option: str) -> bool:
        """Whether this method's training reads ``option`` (a TrainConfig field); an option not
        listed in ``_READ_IF`` is read by every method. Lets a report leave out options that
        differ between two runs but cannot change them."""
        need = _READ_IF.get(option)
        return need is None or need(self)


def _meta(m: Method) -> bool:
    return m.meta is not None


# Options that only some methods read (conservative: an option read on any path of a method,
# diagnostics included, counts as read).
_READ_IF = {
    **dict.fromkeys(("tau", "gamma", "hardness_rule", "hardness_epoch_gamma", "hardness_signal",
                     "draw_correction", "oversample_ratio"), lambda m: m.resample),
    **dict.fromkeys(("lam", "k", "hard_ratio", "knn_build_freq", "num_index_shards", "knn_index",
                     "knn_nlist", "knn_nprobe", "knn_pq_m", "knn_rerank", "embedder"),
                    lambda m: m.knn),
    **dict.fromkeys(("wnet_lr", "wnet_hidden", "meta_update_lr", "meta_every", "meta_reuse",
                     "meta_fuse", "meta_loss", "weight_norm"), _meta),
    "class_prior_power": lambda m: m.has_class_prior,
    "class_prior_reference": lambda m: m.has_class_prior,
    # effective-number counts of the draw's class prior (hamr-cb, hamr-la)
    "class_prior_beta": lambda m: m.resample and (m.class_prior or m.logit_adjust),
    "class_prior_draw": lambda m: m.logit_adjust and m.resample,
    "logit_adjust_tau": lambda m: m.logit_adjust,
    "class_weight_feedback": lambda m: m.class_weights,
    "dice_alpha": lambda m: m.loss == "dice",
    "dice_smooth": lambda m: m.loss == "dice",
    "lnr_threshold": lambda m: m.relabel == "lnr",
    "lnr_warmup_epochs": lambda m: m.relabel == "lnr",
}


METHODS = {m.name: m for m in [
    Method("ce"),
    Method("icf", class_weights=True),
    Method("focal", loss="focal"),
    Method("dice", loss="dice"),
    Method("mwn", meta="mwn"),
    Method("hamr", meta="hamr", resample=True, knn=True),
    Method("hamr-no-resample", meta="hamr"),
    Method("hamr-no-meta", resample=True, knn=True),
    Method("hamr-no-knn", meta="hamr", resample=True),
    Method("hamr-cb", meta="hamr", resample=True, knn=True, class_prior=True),
    Method("hamr-icf", class_weights=True, meta="hamr", resample=True, knn=True),
    Method("lnr", relabel="lnr"),
    Method("la", logit_adjust=True),
    Method("hamr-la", logit_adjust=True, meta="hamr", resample=True, knn=True),
]}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r} (choose one of: {', '.join(METHODS)})") from None
