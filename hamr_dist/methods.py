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

    @property
    def tracks_hardness(self) -> bool:
        return self.resample


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
]}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r} (choose one of: {', '.join(METHODS)})") from None
