"""A dataset split as independent chunks, so that a large corpus is read in parallel and no
process ever holds a whole split.

:func:`plan` lists the chunks of every split of a source (a folder as ``io.py`` reads it, a
pyarrow file system URI such as ``s3://bucket/corpus``, or a saved / hub Hugging Face dataset);
:func:`read_chunk` parses one into a :class:`RawSplit` whose records know their file line (or
record index), so the checks of ``schema.py`` name the same place as for a whole file.

- JSON lines: byte ranges that end at a newline (about ``chunk_bytes`` each); the planner
  counts newlines on the way, so every chunk knows the line it starts on.
- CSV: the same, cut only at newlines outside quoted cells (an even number of ``"`` before
  them); chunks after the first get the header line prepended.
- a JSON array: one chunk (it cannot be cut without parsing it; use JSON lines for big data).
- parquet: one chunk per row group; Hugging Face datasets: ranges of ``chunk_rows`` rows.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hamr_dist.data.io import (EXTENSIONS, SPLIT_NAMES, _classlabel_names, _is_hf_saved, split_file,
                               _looks_like_hub_name, _one_line, _read_csv, _read_json_array,
                               _read_json_lines)
from hamr_dist.data.schema import RawSplit
from hamr_dist.errors import DataError

CHUNK_BYTES = 4 << 20
CHUNK_ROWS = 50_000
_BLOCK = 8 << 20


@dataclass(frozen=True)
class Chunk:
    split: str               # train, dev or test
    file: str                # path or URI, as messages show it
    kind: str                # lines, csv, json, parquet, hf, hub
    start: int = 0           # byte (lines, csv), row group (parquet), row (hf, hub)
    end: int = 0
    first_line: int = 1      # lines, csv: file line of ``start``; parquet, hf: first record index
    header: str = ""         # csv chunks after the first: the header line
    key: str = ""            # hf, hub: the split's name in the DatasetDict


def _fs(source: str):
    """(pyarrow file system, path in it) for a local path or a URI."""
    from pyarrow import fs
    if "://" in source:
        try:
            return fs.FileSystem.from_uri(source)
        except Exception as e:  # noqa: BLE001 - unknown scheme, no credentials, ...
            raise DataError(f"cannot open the file system: {_one_line(e)}", file=source,
                            hint="give a local folder or a URI pyarrow can open (s3://, "
                                 "gs://, hdfs://, file://)") from None
    return fs.LocalFileSystem(), str(Path(source).expanduser().resolve())


def _is_file(filesystem, path: str) -> bool:
    from pyarrow import fs
    return filesystem.get_file_info(path).type == fs.FileType.File


def plan(source: str, chunk_bytes: int = CHUNK_BYTES, chunk_rows: int = CHUNK_ROWS) -> list[Chunk]:
    """Every chunk of train, dev and test, in order (folder errors as ``io.load_data``)."""
    from pyarrow import fs
    local = "://" not in source
    path = Path(source)
    if local and path.is_dir() and _is_hf_saved(path):
        return _plan_hf(str(path), "hf", chunk_rows)
    if local and not path.exists():
        if _looks_like_hub_name(source):
            return _plan_hf(source, "hub", chunk_rows)
        raise DataError("folder not found", file=path,
                        hint="give a folder with train/dev/test files, a saved HF dataset "
                             "or a HF hub dataset name")
    filesystem, root = _fs(source)
    info = filesystem.get_file_info(root)
    if info.type == fs.FileType.File:
        raise DataError("is a file, expected a folder", file=source,
                        hint="give the folder that holds train, dev and test files")
    if info.type != fs.FileType.Directory:
        raise DataError("folder not found", file=source,
                        hint="give a folder with train/dev/test files")
    out = []
    shown = source.rstrip("/") if not local else str(path)
    for split, stems in SPLIT_NAMES.items():
        found = [(f"{root}/{s}{e}", f"{shown}/{s}{e}") for s in stems for e in EXTENSIONS
                 if _is_file(filesystem, f"{root}/{s}{e}")]
        path, shown_file = split_file(found, split, shown, name=lambda f: Path(f[0]).name)
        key = shown_file if not local else path       # what read_chunk opens (_fs)
        out += _plan_file(filesystem, path, shown_file, key, split, chunk_bytes)
    return out


def _plan_file(filesystem, path: str, shown: str, key: str, split: str,
               chunk_bytes: int) -> list[Chunk]:
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq
        try:
            with filesystem.open_input_file(path) as f:
                meta = pq.ParquetFile(f).metadata
                rows = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        except Exception as e:  # noqa: BLE001 - any failure means an unreadable file
            raise DataError(f"not a readable parquet file: {_one_line(e)}", file=shown,
                            hint="re-write it with pandas.DataFrame.to_parquet or "
                                 "datasets.Dataset.to_parquet") from None
        firsts = [sum(rows[:g]) for g in range(len(rows))]
        return [Chunk(split, shown, "parquet", g, g + 1, firsts[g], key=key)
                for g in range(len(rows))] or [Chunk(split, shown, "parquet", 0, 0, 0, key=key)]
    is_csv = path.endswith(".csv")
    cuts, size, header, first = _cuts(filesystem, path, chunk_bytes, is_csv)
    if not first.strip():
        raise DataError("file is empty", file=shown, hint="write the split's records into it")
    if not is_csv and first.lstrip(b"\xef\xbb\xbf").lstrip()[:1] == b"[":
        return [Chunk(split, shown, "json", 0, size, 1, key=key)]
    kind = "csv" if is_csv else "lines"
    bounds = cuts + [(size, None)]
    return [Chunk(split, shown, kind, a, b, line, header if (is_csv and a > 0) else "", key)
            for (a, line), (b, _) in zip(bounds, bounds[1:]) if b > a]


def _cuts(filesystem, path: str, chunk_bytes: int, is_csv: bool):
    """Byte offsets (with their line numbers) where chunks start, the file size, the CSV header
    line, and the first non-blank bytes (to tell a JSON array and an empty file)."""
    cuts, pos, lines, quotes, target = [(0, 1)], 0, 1, 0, chunk_bytes
    header, first = "", b""
    with filesystem.open_input_stream(path) as f:
        while block := f.read(_BLOCK):
            if not first.strip():
                first += block[:4096]
            if is_csv and not header and pos == 0:
                end = block.find(b"\n")
                header = block[:end + 1 if end >= 0 else len(block)].decode("utf-8", "replace")
                header = header.lstrip("\ufeff")
            i = 0
            while pos + len(block) > target:
                nl = block.find(b"\n", max(i, target - pos))
                if nl < 0:
                    break
                if is_csv:
                    quotes += block.count(b'"', i, nl)
                lines += block.count(b"\n", i, nl) + 1
                i = nl + 1
                if is_csv and quotes % 2:        # inside a quoted cell: the next newline
                    target = pos + i
                    continue
                cuts.append((pos + i, lines))
                target = pos + i + chunk_bytes
            lines += block.count(b"\n", i)
            if is_csv:
                quotes += block.count(b'"', i)
            pos += len(block)
    return cuts, pos, header, first


def _plan_hf(source: str, kind: str, chunk_rows: int) -> list[Chunk]:
    dd = _open_hf(source, kind)
    import datasets
    if not isinstance(dd, datasets.DatasetDict):
        raise DataError("the dataset has no named splits", file=source,
                        hint="use a DatasetDict with train, validation and test splits")
    out = []
    for split, stems in SPLIT_NAMES.items():
        key = next((s for s in stems if s in dd), None)
        if key is None:
            raise DataError(f"no {split} split (has: {', '.join(dd)})", file=source,
                            hint=f"add a '{'validation' if split == 'dev' else split}' split")
        n = len(dd[key])
        if n == 0:
            raise DataError(f"the {key} split is empty", file=source, hint="add records")
        out += [Chunk(split, f"{source}[{key}]", kind, a, min(n, a + chunk_rows), a, key=key)
                for a in range(0, n, chunk_rows)]
    return out


def _open_hf(source: str, kind: str):
    import datasets
    try:
        if kind == "hf":
            return datasets.load_from_disk(source)
        return datasets.load_dataset(source)
    except Exception as e:  # noqa: BLE001 - a broken folder, network, auth: all one message
        if kind == "hf":
            raise DataError(f"cannot read the saved HF dataset: {_one_line(e)}", file=source,
                            hint="save it again with DatasetDict.save_to_disk") from None
        raise DataError(f"dataset not found locally or on the Hugging Face hub "
                        f"({_one_line(e)})", file=source,
                        hint="check the path or the hub name and your network") from None


def _read_range(chunk: Chunk) -> bytes:
    filesystem, path = _fs(chunk.key)
    with filesystem.open_input_file(path) as f:
        f.seek(chunk.start)
        return f.read(chunk.end - chunk.start)


def _decode(chunk: Chunk, raw: bytes) -> str:
    bom = 3 if chunk.start == 0 and raw.startswith(b"\xef\xbb\xbf") else 0
    try:
        return raw[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        off = e.start + bom
        raise DataError(f"bytes that are not UTF-8 at byte offset {chunk.start + off}",
                        file=chunk.file, line=chunk.first_line + raw.count(b"\n", 0, off),
                        hint="re-save the file as UTF-8") from None


def read_chunk(chunk: Chunk) -> RawSplit:
    """The chunk's records, each knowing its file line or record index."""
    if chunk.kind in ("hf", "hub"):
        return _read_hf(chunk)
    if chunk.kind == "parquet":
        return _read_parquet_group(chunk)
    text = _decode(chunk, _read_range(chunk))
    path = Path(chunk.file)
    if chunk.kind == "json":
        return _read_json_array(path, text, chunk.split)
    if chunk.kind == "csv":
        if chunk.header:
            return _read_csv(path, chunk.header + text, chunk.split, chunk.first_line - 2)
        return _read_csv(path, text, chunk.split)
    return _read_json_lines(path, text, chunk.split, chunk.first_line)


def _read_parquet_group(chunk: Chunk) -> RawSplit:
    import pyarrow.parquet as pq
    filesystem, path = _fs(chunk.key)
    try:
        with filesystem.open_input_file(path) as f:
            pf = pq.ParquetFile(f)
            table = (pf.read_row_group(chunk.start) if chunk.end > chunk.start
                     else pf.schema_arrow.empty_table())
            meta = (pf.schema_arrow.metadata or {}).get(b"huggingface")
    except Exception as e:  # noqa: BLE001
        raise DataError(f"not a readable parquet file: {_one_line(e)}", file=chunk.file,
                        hint="re-write it with pandas.DataFrame.to_parquet or "
                             "datasets.Dataset.to_parquet") from None
    names = {}
    if meta:                              # HF datasets stores its Features here
        try:
            feats = json.loads(meta)["info"]["features"]
            names = {k: n for k, f in feats.items() if (n := _classlabel_names(f))}
        except (ValueError, KeyError, TypeError, AttributeError):
            names = {}
    return RawSplit(chunk.split, chunk.file, table.to_pylist(), None, names, chunk.first_line)


def _read_hf(chunk: Chunk) -> RawSplit:
    import datasets
    source = chunk.file[:-len(f"[{chunk.key}]")]
    ds = _open_hf(source, chunk.kind)[chunk.key]
    names = {}
    for f, feat in ds.features.items():
        inner = getattr(feat, "feature", feat)        # ClassLabel or list of ClassLabel
        if isinstance(inner, datasets.ClassLabel):
            names[f] = list(inner.names)
    rows = ds.select(range(chunk.start, chunk.end)).to_list()
    return RawSplit(chunk.split, chunk.file, rows, None, names, chunk.start)

