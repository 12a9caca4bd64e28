"""Seeds and random-number-generator state: everything a run needs to be repeatable and resumable.

A run draws randomness from four places: Python's :mod:`random`, NumPy's legacy global generator,
torch's CPU generator (initialization, dropout, ``vmap`` dropout, routing samples, methods created
without a seed) and, on a GPU, torch's CUDA generators. :func:`seed_everything` seeds all of them
from one integer; :func:`capture_rng_state` / :func:`restore_rng_state` save and restore all of them
as plain Python values and tensors (loadable by ``torch.load(weights_only=True)``).

The order of data is not drawn from these global generators: :func:`derive_seed` gives each epoch
its own seed, so the permutation of epoch ``e`` is a pure function of ``(seed, e)``.

Example:
    >>> seed_everything(3)
    >>> state = capture_rng_state()
    >>> a = torch.rand(2)
    >>> restore_rng_state(state)
    >>> bool((torch.rand(2) == a).all())
    True
    >>> derive_seed(0, "epoch", 1) == derive_seed(0, "epoch", 1) != derive_seed(0, "epoch", 2)
    True
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import torch

__all__ = ["capture_rng_state", "derive_seed", "restore_rng_state", "seed_everything"]


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed determined by ``seed`` and ``keys`` (stable across Python runs and versions)."""
    text = ":".join(str(k) for k in (int(seed), *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(derive_seed(seed, "numpy") % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def capture_rng_state() -> dict[str, Any]:
    """The state of every global generator, as ints, lists and tensors."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (
            str(kind),
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
