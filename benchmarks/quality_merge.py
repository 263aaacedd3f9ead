"""Merge quality result files that ran side by side (other seeds or methods of the same budget)
into one table:

    python -m benchmarks.quality_merge A.json B.json ... --name quality_probe
    python -m benchmarks.quality_merge --recipe quality_probe_dc    # a table of merges.toml

Runs are keyed by (dataset, method, seed); a key in a later file replaces the earlier one. The
budgets must agree except for the variants each file defines (their union is kept); every
session of every file is kept, so the wall time stays honest.

Tables whose merge would exceed what a result file may hold (1 MiB) are committed as md and png
only; ``benchmarks/merges.toml`` holds how each is made (its files, renames and row filters, and
the account of its rows that its md shows), so that one command rebuilds it.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import tomllib
from pathlib import Path

from benchmarks.common import RESULTS, Stopwatch, read_json
from benchmarks.quality import slim_history, write_all

RECIPES = Path(__file__).with_name("merges.toml")
SAME = ("epochs", "batch_size", "learning_rate", "max_train_samples", "max_eval_samples",
        "max_seq_length", "early_stopping_patience", "freeze_encoder")


def rename(doc: dict, names: dict) -> dict:
    """Rows renamed (``old=new``), e.g. when a variant became a method's default."""
    for r in doc["runs"]:
        if r["method"] in names:
            r["method"] = names[r["method"]]
            r["key"] = f"{r['dataset']}|{r['method']}|{r['seed']}"
    doc["methods"] = [names.get(m, m) for m in doc["methods"]]
    v = doc["budget"].get("variants") or {}
    doc["budget"]["variants"] = {names.get(k, k): x for k, x in v.items()}
    return doc


def keep(doc: dict, methods=None, datasets=None) -> dict:
    """Only the rows of ``methods`` on ``datasets`` (None: all)."""
    if methods:
        doc["runs"] = [r for r in doc["runs"] if r["method"] in methods]
        doc["methods"] = [m for m in doc["methods"] if m in methods]
    if datasets:
        doc["runs"] = [r for r in doc["runs"] if r["dataset"] in datasets]
        doc["datasets"] = {k: v for k, v in doc["datasets"].items() if k in datasets}
    return doc


def merge(docs: list[dict], name: str) -> dict:
    first = docs[0]
    for d in docs[1:]:
        diff = [k for k in SAME if d["budget"].get(k) != first["budget"].get(k)]
        if d["tier"] != first["tier"] or diff:
            raise SystemExit(f"{d['name']}: another budget ({', '.join(diff) or 'tier'}); not merged")
    runs, datasets, methods, seeds, sessions, variants = {}, {}, [], set(), [], {}
    meta_sets = {}      # the same for every method of a (dataset, seed): kept once
    for d in docs:
        meta_sets.update(d.get("meta_sets") or {})
        for r in d["runs"]:
            if r.get("history"):
                r["history"] = slim_history(r["history"])
            if r.get("meta_set") is not None:
                meta_sets[f"{r['dataset']}|{r['seed']}"] = r.pop("meta_set")
            runs[r["key"]] = r
        for k, v in d["datasets"].items():
            datasets.setdefault(k, v)
        methods += [m for m in d["methods"] if m not in methods]
        seeds |= set(d["seeds"])
        sessions += d["sessions"]
        variants.update(d["budget"].get("variants") or {})
    budget = {**first["budget"], "variants": variants}
    return {**first, "name": name, "budget": budget, "methods": methods, "seeds": sorted(seeds),
            "datasets": datasets, "runs": list(runs.values()), "sessions": sessions,
            "meta_sets": meta_sets,
            "runs_planned": len(datasets) * len(methods) * len(seeds),
            "merged_from": [d["name"] for d in docs]}


def combine(docs: list[dict], name: str, names: dict, methods=None, datasets=None) -> dict:
    """``docs`` renamed, filtered and merged: one step of a recipe or of the command line."""
    return merge([keep(rename(d, names), methods, datasets) for d in docs], name)


def load_recipes(path: Path = RECIPES) -> dict:
    with open(path, "rb") as f:
        recipes = tomllib.load(f)
    clash = [n for n in recipes if (RESULTS / f"{n}.json").exists()]
    if clash:
        raise SystemExit(f"{path}: recipe(s) {clash} share a name with a result file; rename them")
    for n, r in recipes.items():
        odd = set(r) - {"files", "rename", "methods", "datasets", "about"}
        if odd or not r.get("files"):
            raise SystemExit(f"{path}: recipe {n!r} needs 'files' and knows only 'rename', "
                             f"'methods', 'datasets', 'about' (found {sorted(odd)})")
    return recipes


def build(name: str, recipes: dict) -> dict:
    """The merged document of recipe ``name``; a file that names another recipe is built first."""
    r = recipes[name]
    names = r.get("rename", {})
    docs = [build(f, recipes) if f in recipes else read_json(RESULTS / f"{f}.json")
            for f in r["files"]]
    doc = combine(docs, name, names, r.get("methods"), r.get("datasets"))
    if r.get("about"):
        doc["about"] = " ".join(r["about"].split())
    return doc


def write(doc: dict, out_dir: Path, with_json: bool = True) -> None:
    session = {"elapsed_s": 0.0}
    if with_json:
        write_all(doc, out_dir, session, Stopwatch(), indent=None)   # compact: tables grow large
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:     # md and png only: the JSON stays the files'
        write_all(doc, Path(tmp), session, Stopwatch(), indent=None)
        for ext in ("md", "png"):
            src = Path(tmp) / f"{doc['name']}.{ext}"
            if src.exists():
                shutil.copyfile(src, out_dir / src.name)   # another file system, maybe


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="*", type=Path)
    p.add_argument("--name")
    p.add_argument("--recipe", help=f"rebuild a table of {RECIPES.name} (md and png; the JSON with "
                   "--json); its files are read from benchmarks/results")
    p.add_argument("--json", action="store_true", help="with --recipe: write the merged JSON too "
                   "(do not commit one over 1 MiB)")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--rename", nargs="*", default=[], metavar="OLD=NEW",
                   help="rename rows in every file before merging (applied at once, not chained)")
    p.add_argument("--methods", nargs="*", help="keep only these rows (after renaming), e.g. the "
                   "baselines of a file whose other rows are stale")
    p.add_argument("--datasets", nargs="*", help="keep only these datasets")
    a = p.parse_args(argv)
    if a.recipe:
        if a.files or a.name or a.rename or a.methods or a.datasets:
            p.error("--recipe takes its files, name, renames and filters from the recipe")
        recipes = load_recipes()
        if a.recipe not in recipes:
            p.error(f"no recipe {a.recipe!r} in {RECIPES} (there: {', '.join(recipes)})")
        doc = build(a.recipe, recipes)
        write(doc, a.out_dir, with_json=a.json)
    else:
        if not a.files or not a.name:
            p.error("give the result files and --name (or --recipe NAME)")
        doc = combine([read_json(f) for f in a.files], a.name,
                      dict(x.split("=", 1) for x in a.rename), a.methods, a.datasets)
        write(doc, a.out_dir)
    print(f"{len(doc['runs'])} runs -> {a.out_dir / doc['name']}.md")


if __name__ == "__main__":
    main()
