"""Record checks, label vocabularies and IOB2 rules for classification (CLS) and NER data.

``io.py`` turns files into :class:`RawSplit` objects (raw dicts + where each came from); this
module validates them and builds :class:`LoadedData` with normalised records:

- CLS ``{"text": str, "label": int}``; NER ``{"tokens": list[str], "tags": list[int]}``, ids into
  ``label_names``.
- CLS labels: an integer class id or a class name; a whole number of any format (JSON ``1.0``,
  CSV ``1.0``, a float parquet column) is the id 1, another number an error. Training data of
  a single class (NER: without any entity) is refused: there is nothing to tell apart.
- CLS label names: ClassLabel names when the source declares them (HF datasets, HF parquet);
  for integer labels ids 0..K-1 named by ``label_text`` (or the id as a string); for string
  labels the sorted names. The vocabulary comes from train: a dev/test label that train lacks,
  or a declared class without a training sample, is an error (it could never be learned or the
  id space would have holes).
- NER tag names: ``"O"``, then ``B-t``, ``I-t`` for each entity type t of train, types sorted.
- IOB2: a tag is ``O``, ``B-<type>`` or ``I-<type>``; anything else (``X-PER``, ``B-``, BIOES
  ``S-``/``E-``) is an error. An ``I-t`` that does not continue a ``t`` entity (after ``O``, at
  the sentence start or after another type) is *repaired* to ``B-t`` -- what seqeval does when
  it reads such a tag -- and the repair count and first location go to ``LoadedData.warnings``.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from hamr_dist.errors import ConfigError, DataError

TASKS = ("cls", "ner")


@dataclass
class LoadedData:
    task: str                      # "cls" or "ner"
    label_names: list[str]         # CLS class names in id order; NER "O", then B-/I- per type
    entity_types: list[str]        # NER: sorted entity types; CLS: []
    train: list[dict]
    dev: list[dict]
    test: list[dict]
    source: str                    # path or HF name it came from
    warnings: list[str] = field(default_factory=list)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


@dataclass
class RawSplit:
    """One split as read from disk: raw records plus where each one is (for messages)."""
    name: str                              # "train", "dev" or "test"
    file: str                              # shown in messages
    records: list
    lines: list[int] | None = None         # line of each record; None -> report record index
    class_names: dict = field(default_factory=dict)  # field -> ClassLabel names, if declared
    first_record: int = 0                  # a chunk of a larger split: index of its first record

    def at(self, i: int) -> dict:
        if self.lines is not None:
            return {"file": self.file, "line": self.lines[i]}
        return {"file": self.file, "record": self.first_record + i}


def check_task(task) -> None:
    if task is not None and task not in TASKS:
        raise ConfigError(f"unknown task {task!r}: use 'cls' (text classification) or 'ner', "
                          "or leave it out to detect it from the fields")


def type_name(v) -> str:
    """JSON-style name of a value's type, for messages."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    return {str: "string", int: "integer", float: "number", list: "list", dict: "object"}.get(
        type(v), type(v).__name__)


def detect_task(split: RawSplit) -> str:
    rec = split.records[0]
    if isinstance(rec, dict):
        if "tokens" in rec and "ner_tags" in rec:
            return "ner"
        if "text" in rec and "label" in rec:
            return "cls"
    keys = ", ".join(sorted(map(str, rec))) if isinstance(rec, dict) else type_name(rec)
    raise DataError(f"cannot tell the task from the fields ({keys})", **split.at(0),
                    hint="records need text+label (classification) or tokens+ner_tags (NER), "
                         "or pass the task explicitly")


def build(task: str, splits: dict[str, RawSplit], source: str) -> LoadedData:
    """Validate the three splits and return normalised :class:`LoadedData`."""
    check_task(task)
    return _build_cls(splits, source) if task == "cls" else _build_ner(splits, source)


def _need(split: RawSplit, i: int, names: tuple[str, ...]) -> dict:
    rec = split.records[i]
    if not isinstance(rec, dict):
        raise DataError(f"expected an object, got {type_name(rec)}", **split.at(i),
                        hint="each record must be an object with named fields")
    for f in names:
        if f not in rec:
            raise DataError("missing field", **split.at(i), field=f,
                            hint=f"every record needs the fields {', '.join(names)}")
    return rec


# ---------------------------------------------------------------- classification

def _cls_record(split: RawSplit, i: int) -> tuple[str, object]:
    rec = _need(split, i, ("text", "label"))
    text, label = rec["text"], rec["label"]
    if not isinstance(text, str):
        raise DataError(f"expected a string, got {type_name(text)}", **split.at(i), field="text",
                        hint="the text must be one string")
    if not text.strip():
        raise DataError("text is empty or whitespace only", **split.at(i), field="text",
                        hint="fill in the text or remove the record")
    if isinstance(label, float) and not isinstance(label, bool):
        # one rule for every format: a whole number is a class id (JSON 1.0, CSV "1.0", a
        # float column of parquet), any other number is an error
        if not (label == label and abs(label) != float("inf") and label.is_integer()):
            raise DataError(f"label {label!r} is not a whole number", **split.at(i),
                            field="label", hint="class ids are integers 0..K-1; or use class "
                                                "names")
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, (int, str)):
        raise DataError(f"expected an integer class id or a class name, got {type_name(label)}",
                        **split.at(i), field="label", hint="give one label per record")
    if isinstance(label, str) and not label.strip():
        raise DataError("label is empty", **split.at(i), field="label",
                        hint="give a class name or an integer class id")
    lt = rec.get("label_text")
    if lt is not None and not isinstance(lt, str):
        raise DataError(f"expected a string, got {type_name(lt)}", **split.at(i),
                        field="label_text", hint="label_text is the class name of the label id")
    return text, label


def _absent(split: RawSplit, i: int, label) -> DataError:
    return DataError(f"label {label!r} does not occur in the training split", **split.at(i),
                     field="label", hint="fix the label or add training samples of that class")


def _build_cls(splits: dict[str, RawSplit], source: str) -> LoadedData:
    train = splits["train"]
    rows = [_cls_record(train, i) for i in range(len(train.records))]
    declared = train.class_names.get("label")
    if declared:
        names, ids = _cls_declared(train, rows, declared)
    elif isinstance(rows[0][1], int):
        names, ids = _cls_int_vocab(train, rows)
    else:
        for i, (_, lab) in enumerate(rows):
            if not isinstance(lab, str):
                raise DataError("integer label among string labels", **train.at(i),
                                field="label", hint="use class names everywhere or ids everywhere")
        names = sorted({lab for _, lab in rows})
        index = {n: k for k, n in enumerate(names)}
        ids = [index[lab] for _, lab in rows]
    if len(names) < 2:
        raise DataError(f"every training sample has the class {names[0]!r}: there is nothing to "
                        "tell apart", file=train.file, field="label",
                        hint="a classifier needs training samples of at least two classes")
    out = {"train": [{"text": t, "label": k} for (t, _), k in zip(rows, ids)]}
    int_ids = isinstance(rows[0][1], int) and not declared
    for name in ("dev", "test"):
        out[name] = _cls_eval_split(splits[name], names, int_ids, names if declared else None)
    return LoadedData("cls", names, [], out["train"], out["dev"], out["test"], source, [])


def _cls_declared(train: RawSplit, rows, declared: list[str]):
    """Labels declared by ClassLabel names: ids are indices into them."""
    names = list(declared)
    index = {n: k for k, n in enumerate(names)}
    ids = []
    for i, (_, lab) in enumerate(rows):
        k = lab if isinstance(lab, int) else index.get(lab)
        if k is None or not 0 <= k < len(names):
            raise DataError(f"label {lab!r} is not one of the {len(names)} declared class names",
                            **train.at(i), field="label", hint="fix the label or the class names")
        ids.append(k)
    _no_gaps(train, names, Counter(ids), "declared by the dataset's class names")
    return names, ids


def _cls_int_vocab(train: RawSplit, rows):
    """Integer labels: ids 0..K-1, named by label_text when the records carry it."""
    text_of: dict[int, str] = {}
    id_of: dict[str, int] = {}
    for i, (_, lab) in enumerate(rows):
        if not isinstance(lab, int):
            raise DataError("string label among integer labels", **train.at(i), field="label",
                            hint="use class names everywhere or ids everywhere")
        if lab < 0:
            raise DataError(f"negative class id {lab}", **train.at(i), field="label",
                            hint="class ids run 0..K-1")
        lt = train.records[i].get("label_text")
        if lt is None:
            continue
        if text_of.setdefault(lab, lt) != lt:
            raise DataError(f"label_text {lt!r} disagrees with {text_of[lab]!r} given earlier "
                            f"for label {lab}", **train.at(i), field="label_text",
                            hint="each class id needs one name")
        if id_of.setdefault(lt, lab) != lab:
            raise DataError(f"label_text {lt!r} is used for labels {id_of[lt]} and {lab}",
                            **train.at(i), field="label_text", hint="each class name needs one id")
    counts = Counter(lab for _, lab in rows)
    names = [text_of.get(k, str(k)) for k in range(max(counts) + 1)]
    _no_gaps(train, names, counts, f"by the class ids 0..{len(names) - 1}")
    return names, [lab for _, lab in rows]


def _no_gaps(train: RawSplit, names: list[str], counts: Counter, how: str) -> None:
    for k, n in enumerate(names):
        if counts[k] == 0:
            raise DataError(f"class {n!r} (id {k}), declared {how}, has no training sample",
                            file=train.file, field="label",
                            hint="add training samples of that class or renumber the classes")


def _cls_eval_split(split: RawSplit, names: list[str], int_ids: bool, declared) -> list[dict]:
    index = {n: k for k, n in enumerate(names)}
    own = split.class_names.get("label") or declared
    out = []
    for i in range(len(split.records)):
        text, lab = _cls_record(split, i)
        if isinstance(lab, int) and own:        # ClassLabel id of this split -> name
            if not 0 <= lab < len(own):
                raise _absent(split, i, lab)
            lab = own[lab]
        if isinstance(lab, int):
            if not int_ids or not 0 <= lab < len(names):
                raise _absent(split, i, lab)
            k = lab
            lt = split.records[i].get("label_text")
            if lt is not None and lt != names[k] and names[k] != str(k):
                raise DataError(f"label_text {lt!r} disagrees with the training split's name "
                                f"{names[k]!r} for label {k}", **split.at(i), field="label_text",
                                hint="use the same class ids and names in every split")
        else:
            k = index.get(lab)
            if k is None:
                raise _absent(split, i, lab)
        out.append({"text": text, "label": k})
    return out


# ---------------------------------------------------------------- NER

def _valid_tag(tag: str) -> bool:
    return tag == "O" or (len(tag) > 2 and tag[0] in "BI" and tag[1] == "-"
                          and bool(tag[2:].strip()))


class _Repairs:
    """Counts I- tags repaired to B- in one split, remembering the first place."""

    def __init__(self):
        self.n, self.first = 0, None


def _ner_record(split: RawSplit, i: int, repairs: _Repairs) -> tuple[list[str], list[str]]:
    rec = _need(split, i, ("tokens", "ner_tags"))
    tokens, tags = rec["tokens"], rec["ner_tags"]
    if not isinstance(tokens, list):
        raise DataError(f"expected a list of strings, got {type_name(tokens)}", **split.at(i),
                        field="tokens", hint='write tokens as a list, e.g. ["New", "York"]')
    if not tokens:
        raise DataError("sentence has no tokens", **split.at(i), field="tokens",
                        hint="remove the empty record")
    for j, tok in enumerate(tokens):
        if not isinstance(tok, str):
            raise DataError(f"token {j} is {type_name(tok)}, expected a string", **split.at(i),
                            field="tokens", hint="every token must be a string")
    if not isinstance(tags, list):
        raise DataError(f"expected a list of tags, got {type_name(tags)}", **split.at(i),
                        field="ner_tags", hint='write tags as a list, e.g. ["B-LOC", "I-LOC"]')
    if len(tags) != len(tokens):
        raise DataError(f"{len(tags)} tags for {len(tokens)} tokens", **split.at(i),
                        field="ner_tags", hint="give exactly one tag per token")
    names = split.class_names.get("ner_tags")
    out = []
    prev = None                                  # entity type of the previous tag, None for O
    for j, tag in enumerate(tags):
        if isinstance(tag, int) and not isinstance(tag, bool):
            if not names:
                raise DataError(f"integer tag {tag} at token {j} but no tag names are known",
                                **split.at(i), field="ner_tags",
                                hint="write tags as strings like 'B-PER', or use a HF dataset "
                                     "with ClassLabel tag names")
            if not 0 <= tag < len(names):
                raise DataError(f"tag id {tag} at token {j} is not one of the {len(names)} "
                                "declared tag names", **split.at(i), field="ner_tags",
                                hint="fix the tag id")
            tag = names[tag]
        if not isinstance(tag, str) or not _valid_tag(tag):
            raise DataError(f"tag {tag!r} at token {j} is not IOB2", **split.at(i),
                            field="ner_tags", hint="use 'O', 'B-<type>' or 'I-<type>'")
        kind = None if tag == "O" else tag[2:]
        if tag[0] == "I" and prev != kind:
            tag = "B-" + kind
            repairs.n += 1
            if repairs.first is None:
                where = split.at(i)
                repairs.first = (f"{where['file']}:{where['line']}" if "line" in where
                                 else f"{where['file']} record {where['record']}") + f" token {j}"
        prev = kind
        out.append(tag)
    return tokens, out


def _build_ner(splits: dict[str, RawSplit], source: str) -> LoadedData:
    parsed, warnings = {}, []
    for name in ("train", "dev", "test"):
        split, rep = splits[name], _Repairs()
        parsed[name] = [_ner_record(split, i, rep) for i in range(len(split.records))]
        if rep.n:
            warnings.append(f"{split.file}: repaired {rep.n} I- tag(s) that did not continue an "
                            f"entity to B- (IOB2); first at {rep.first}")
    train = splits["train"]
    types = sorted({t[2:] for _, tags in parsed["train"] for t in tags if t != "O"})
    declared = train.class_names.get("ner_tags") or []
    for t in sorted({n[2:] for n in declared if _valid_tag(n) and n != "O"}):
        if t not in types:
            raise DataError(f"entity type {t!r}, declared by the dataset's tag names, has no "
                            "training mention", file=train.file, field="ner_tags",
                            hint="add training sentences with that type or drop its tag names")
    if not types:
        raise DataError("no training sentence has an entity (every tag is O): there is nothing "
                        "to learn", file=train.file, field="ner_tags",
                        hint="add sentences with B-/I- tags to the training split")
    label_names = ["O"] + [f"{p}-{t}" for t in types for p in "BI"]
    index = {n: k for k, n in enumerate(label_names)}
    out = {}
    for name in ("train", "dev", "test"):
        split, recs = splits[name], []
        for i, (tokens, tags) in enumerate(parsed[name]):
            for tag in tags:
                if tag not in index:
                    raise DataError(f"entity type {tag[2:]!r} does not occur in the training "
                                    "split", **split.at(i), field="ner_tags",
                                    hint="fix the tag or add training sentences with that type")
            recs.append({"tokens": list(tokens), "tags": [index[t] for t in tags]})
        out[name] = recs
    return LoadedData("ner", label_names, types, out["train"], out["dev"], out["test"], source,
                      warnings)
