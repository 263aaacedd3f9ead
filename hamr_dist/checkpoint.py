"""Reading a training checkpoint without running code from it.

``torch.load(weights_only=False)`` unpickles anything: a checkpoint directory on shared storage
(``--storage-path``) that someone else can write to would run their code on every node that
resumes. So checkpoints are read with ``weights_only=True`` -- tensors and plain containers --
plus an allow-list for what the loop's state also holds: numpy arrays, numpy scalars and their
dtypes (hardness, the meta-batch order, RNG states). Anything else is refused in one line.
"""
from __future__ import annotations

from pathlib import Path

from .errors import HamrError


def allowed_globals() -> list:
    """numpy's array/scalar reconstruction, ndarray, dtype and the dtype classes."""
    import numpy as np
    try:
        from numpy._core import multiarray
    except ImportError:                    # numpy < 2
        from numpy.core import multiarray
    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype, *dtypes]


def load_state_file(path) -> dict:
    """The object saved at ``path`` with ``torch.save``; raises HamrError when the file holds
    anything beyond tensors, plain containers and numpy data, or cannot be read."""
    import torch
    p = Path(path)
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:      # noqa: BLE001 -- pickle.UnpicklingError for a refused global
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise HamrError(f"checkpoint {p} cannot be loaded safely ({first}); it holds more than "
                        f"tensors and numpy data, or is damaged: resume from another run "
                        f"(--run-name) or remove it") from None
