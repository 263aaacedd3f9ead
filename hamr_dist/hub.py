"""Telling a local path from a Hugging Face hub name, and failing fast when the hub is out of
reach: ``from_pretrained`` on an unreachable hub retries for about a minute (twice, for the
tokenizer and the model) before it fails with a page of warnings."""
from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import ConfigError

# a hub repo id: "name" or "owner/name" of letters, digits, "-", "_" and "."
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
PROBE_TIMEOUT_S = 3.0


def offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def looks_like_path(name: str) -> bool:
    """Written as a path (absolute, ./, ../, ~, a backslash, or more than one /), or no valid
    repo id at all: then it can only mean a folder."""
    return (name.startswith(("/", "./", "../", "~", ".\\")) or "\\" in name
            or not _REPO_ID.fullmatch(name))


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """One HTTP request to the hub (``$HF_ENDPOINT`` or huggingface.co), no retries: any HTTP
    answer means reachable; no connection, no TLS or no answer in ``timeout`` s means not."""
    import urllib.error
    import urllib.request
    url = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout)
        return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):      # URLError, timeouts, TLS errors, a malformed endpoint
        return False


def in_local_cache(name: str) -> bool:
    """Whether the hub repo ``name`` has a config.json in the local HF cache."""
    try:
        from huggingface_hub import try_to_load_from_cache
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:       # noqa: BLE001 -- an old or odd cache: let from_pretrained decide
        return False


def check_model_source(name: str, flag: str) -> None:
    """A one-line error, before any loading, for a model that cannot be there: a path that
    does not exist, or a hub name neither cached nor reachable."""
    if Path(name).expanduser().exists():
        return
    if looks_like_path(name):
        raise ConfigError(f"{flag} {name}: no such folder; pass an existing local model folder "
                          f"or a Hugging Face hub name such as sentence-transformers/all-MiniLM-L6-v2")
    if in_local_cache(name) or offline():
        return              # offline: from_pretrained reads the cache and fails fast itself
    if not hub_reachable():
        raise ConfigError(f"{flag} {name}: not a local folder, not in the Hugging Face cache, and "
                          f"the hub is unreachable (no answer within {PROBE_TIMEOUT_S:g} s); "
                          f"pass a local model folder or check the network")
