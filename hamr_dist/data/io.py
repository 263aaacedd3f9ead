"""Load train/dev/test from a folder, a saved Hugging Face dataset or a HF hub name.

A folder holds one file per split, named ``<split>.<ext>``: the split ``train``, ``dev`` (also
``validation``, ``valid``, ``val``) and ``test``; the extension ``.json`` / ``.jsonl`` (a JSON
array or JSON lines, told apart by the first character, not the extension), ``.parquet`` or
``.csv``. CSV columns: ``text,label[,label_text]`` for classification (a label that is a number
is read as a number, the same rule as JSON's: ``1`` and ``1.0`` are class id 1, ``1.5`` is an
error); ``tokens,ner_tags`` for NER, each cell either a JSON list (``["New", "York"]``) or
space-separated (then tokens cannot contain spaces). A parquet file written by HF datasets
keeps its ClassLabel names. Validation, label vocabularies and IOB2 repair: ``schema.py``.
"""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from hamr_dist.data.schema import LoadedData, RawSplit, build, check_task, detect_task, type_name
from hamr_dist.errors import DataError

SPLIT_NAMES = {"train": ("train",), "dev": ("dev", "validation", "valid", "val"),
               "test": ("test",)}
EXTENSIONS = (".jsonl", ".json", ".parquet", ".csv")
_DECIMAL = re.compile(r"[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?")
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def load_data(source: str | Path, task: str | None = None) -> LoadedData:
    """Read and validate a dataset; ``task`` is "cls", "ner" or None (detect from fields)."""
    check_task(task)
    path = Path(source)
    if path.is_dir():
        splits = _read_hf_dir(path) if _is_hf_saved(path) else _read_folder(path)
    elif path.exists():
        raise DataError("is a file, expected a folder", file=path,
                        hint="give the folder that holds train, dev and test files")
    elif _looks_like_hub_name(str(source)):
        splits = _read_hub(str(source))
    else:
        raise DataError("folder not found", file=path,
                        hint="give a folder with train/dev/test files, a saved HF dataset "
                             "or a HF hub dataset name")
    return build(task or detect_task(splits["train"]), splits, str(source))


def _looks_like_hub_name(s: str) -> bool:
    return bool(_HUB_NAME.fullmatch(s)) and not s.lower().endswith(EXTENSIONS)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text[:200] + "...") if len(text) > 200 else text or type(e).__name__


# ---------------------------------------------------------------- folders of files

def split_file(found: list, split: str, folder, name=lambda p: Path(p).name):
    """The one file of ``split`` among ``found`` (the candidates present in ``folder``), else
    the one-line error; ``name`` gives a candidate's file name for the message."""
    if not found:
        stem = SPLIT_NAMES[split][0]
        raise DataError(f"no {split} split", file=folder,
                        hint=f"add {stem}.json, .jsonl, .parquet or .csv"
                             + (" (or validation.*)" if split == "dev" else ""))
    if len(found) > 1:
        raise DataError(f"several files for the {split} split: "
                        + ", ".join(name(p) for p in found), file=folder,
                        hint="keep only one of them")
    return found[0]


def _read_folder(folder: Path) -> dict[str, RawSplit]:
    splits = {}
    for split, stems in SPLIT_NAMES.items():
        found = [p for s in stems for e in EXTENSIONS if (p := folder / (s + e)).is_file()]
        splits[split] = _read_file(split_file(found, split, folder), split)
    return splits


def _read_file(path: Path, split: str) -> RawSplit:
    if path.suffix == ".parquet":
        out = _read_parquet(path, split)
    else:
        text = _decode(path)
        if path.suffix == ".csv":
            out = _read_csv(path, text, split)
        elif text.lstrip()[:1] == "[":
            out = _read_json_array(path, text, split)
        else:
            out = _read_json_lines(path, text, split)
    if not out.records:
        raise DataError("file has no records", file=path, hint="add records or fix the file")
    return out


def _decode(path: Path) -> str:
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError("file is empty", file=path, hint="write the split's records into it")
    bom = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    try:
        return raw[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        off = e.start + bom
        raise DataError(f"bytes that are not UTF-8 at byte offset {off}", file=path,
                        line=raw.count(b"\n", 0, off) + 1,
                        hint="re-save the file as UTF-8") from None


def _bad_json(path: Path, e: json.JSONDecodeError, line: int | None = None) -> DataError:
    return DataError(f"invalid JSON: {e.msg} (column {e.colno})", file=path,
                     line=line if line is not None else e.lineno,
                     hint="each line must hold one JSON object, or the whole file one JSON "
                          "array of objects")


def _objects(path: Path, split: str, records: list, lines: list[int]) -> RawSplit:
    for rec, n in zip(records, lines):
        if not isinstance(rec, dict):
            raise DataError(f"expected a JSON object, got {type_name(rec)}", file=path, line=n,
                            hint="each record must be an object with named fields")
    return RawSplit(split, str(path), records, lines)


def _read_json_lines(path: Path, text: str, split: str, first_line: int = 1) -> RawSplit:
    """``first_line``: the file line ``text`` starts on (a chunk of a larger file)."""
    records, lines = [], []
    # split on "\n" only: str.splitlines would also break at U+2028 etc. inside JSON strings
    for n, line in enumerate(text.split("\n"), first_line):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise _bad_json(path, e, n) from None
            lines.append(n)
    return _objects(path, split, records, lines)


def _read_json_array(path: Path, text: str, split: str) -> RawSplit:
    """Parse element by element so every record knows the line it starts on."""
    dec, ws = json.JSONDecoder(), re.compile(r"\s*")
    records, lines = [], []
    try:
        i = ws.match(text, ws.match(text).end() + 1).end()        # past "["
        line, last = 1, 0
        while text[i] != "]":
            line, last = line + text.count("\n", last, i), i
            rec, i = dec.raw_decode(text, i)
            records.append(rec)
            lines.append(line)
            i = ws.match(text, i).end()
            if text[i] == ",":
                i = ws.match(text, i + 1).end()
                if text[i] == "]":
                    raise ValueError("trailing comma")
            elif text[i] != "]":
                raise ValueError("missing comma")
        if text[i + 1:].strip():
            raise ValueError("data after the array")
    except (ValueError, IndexError):
        # something is malformed: let the standard parser name the error and its line
        try:
            json.loads(text)
        except json.JSONDecodeError as e:
            raise _bad_json(path, e) from None
        raise DataError("invalid JSON array", file=path, hint="fix the JSON syntax") from None
    return _objects(path, split, records, lines)


def _csv_cell(path: Path, line: int, key: str, value: str):
    if key in ("tokens", "ner_tags"):
        s = value.strip()
        if s.startswith("["):
            try:
                return json.loads(s)
            except json.JSONDecodeError as e:
                raise DataError(f"invalid JSON list: {e.msg}", file=path, line=line, field=key,
                                hint="write a JSON list or space-separated values") from None
        return s.split()
    if key == "label" and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)                # CSV has no types: an all-digit label is a class id
    if key == "label" and _DECIMAL.fullmatch(value.strip()):
        return float(value)              # a number, as in JSON: schema.py takes 1.0 as id 1
    return value


def _read_csv(path: Path, text: str, split: str, line_offset: int = 0) -> RawSplit:
    """``line_offset``: added to line numbers (a chunk of a larger file, its header prepended)."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    records, lines = [], []
    try:
        header = reader.fieldnames or []
        for row in reader:
            n = reader.line_num + line_offset
            if None in row:
                raise DataError(f"row has {len(header) + len(row[None])} cells, the header "
                                f"{len(header)}", file=path, line=n,
                                hint="quote cells that contain commas")
            records.append({k: _csv_cell(path, n, k, v) for k, v in row.items() if v is not None})
            lines.append(n)
    except csv.Error as e:
        raise DataError(f"invalid CSV: {_one_line(e)}", file=path,
                        line=reader.line_num + line_offset,
                        hint="check the quoting") from None
    return RawSplit(split, str(path), records, lines)


def _read_parquet(path: Path, split: str) -> RawSplit:
    import pyarrow as pa
    import pyarrow.parquet as pq
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise DataError(f"not a readable parquet file: {_one_line(e)}", file=path,
                        hint="re-write it with pandas.DataFrame.to_parquet or "
                             "datasets.Dataset.to_parquet") from None
    names = {}
    meta = (table.schema.metadata or {}).get(b"huggingface")
    if meta:                              # HF datasets stores its Features here
        try:
            feats = json.loads(meta)["info"]["features"]
            names = {k: n for k, f in feats.items() if (n := _classlabel_names(f))}
        except (ValueError, KeyError, TypeError, AttributeError):
            names = {}
    return RawSplit(split, str(path), table.to_pylist(), None, names)


def _classlabel_names(feat) -> list[str] | None:
    """ClassLabel names from a serialised HF feature, also inside a list/Sequence feature."""
    if isinstance(feat, list) and len(feat) == 1:
        feat = feat[0]
    if isinstance(feat, dict):
        if feat.get("_type") == "ClassLabel":
            return list(feat.get("names") or []) or None
        if "feature" in feat:
            return _classlabel_names(feat["feature"])
    return None


# ---------------------------------------------------------------- Hugging Face datasets

def _is_hf_saved(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _read_hf_dir(path: Path) -> dict[str, RawSplit]:
    import datasets
    try:
        dd = datasets.load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001 - any failure here is a broken dataset folder
        raise DataError(f"cannot read the saved HF dataset: {_one_line(e)}", file=path,
                        hint="save it again with DatasetDict.save_to_disk") from None
    return _hf_splits(dd, str(path))


def _read_hub(name: str) -> dict[str, RawSplit]:
    import datasets
    try:
        dd = datasets.load_dataset(name)
    except Exception as e:  # noqa: BLE001 - network, auth, missing: all mean "not found"
        raise DataError(f"dataset not found locally or on the Hugging Face hub "
                        f"({_one_line(e)})", file=name,
                        hint="check the path or the hub name and your network") from None
    return _hf_splits(dd, name)


def _hf_splits(dd, where: str) -> dict[str, RawSplit]:
    import datasets
    if not isinstance(dd, datasets.DatasetDict):
        raise DataError("the dataset has no named splits", file=where,
                        hint="use a DatasetDict with train, validation and test splits")
    splits = {}
    for split, stems in SPLIT_NAMES.items():
        key = next((s for s in stems if s in dd), None)
        if key is None:
            raise DataError(f"no {split} split (has: {', '.join(dd)})", file=where,
                            hint=f"add a '{'validation' if split == 'dev' else split}' split")
        ds = dd[key]
        names = {}
        for f, feat in ds.features.items():
            inner = getattr(feat, "feature", feat)        # ClassLabel or list of ClassLabel
            if isinstance(inner, datasets.ClassLabel):
                names[f] = list(inner.names)
        if len(ds) == 0:
            raise DataError(f"the {key} split is empty", file=where, hint="add records")
        splits[split] = RawSplit(split, f"{where}[{key}]", ds.to_list(), None, names)
    return splits
