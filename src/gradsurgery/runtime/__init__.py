"""The runtime layer under both training loops (supervised :mod:`gradsurgery.experiments` and RL
:mod:`gradsurgery.rl`); it knows nothing of either, of datasets or of environments.

* :mod:`.checkpoint` — atomic writes, checksummed checkpoints, a rotating :class:`CheckpointManager`.
* :mod:`.resumable` — one resume protocol for every loop: format, fingerprint, refusal with the
  differences.
* :mod:`.runlog` — progress bar, JSON Lines log, TensorBoard writer, peak memory.
* :mod:`.seeding` — seeds and the state of every global generator; :func:`derive_seed`.
* :mod:`.stats` — mean, standard deviation and Student-t intervals over seeds.
* :mod:`.values` — JSON-safe floats, nested-dict differences, ``KEY=VALUE`` parsing.
"""

from gradsurgery.runtime.checkpoint import (
    CheckpointError,
    CheckpointManager,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
)
from gradsurgery.runtime.resumable import Resumable, ResumeError
from gradsurgery.runtime.seeding import (
    capture_rng_state,
    derive_seed,
    restore_rng_state,
    seed_everything,
)
from gradsurgery.runtime.stats import MeanCI, mean_ci, t_quantile
from gradsurgery.runtime.values import differences, finite_or_none

__all__ = [
    "CheckpointError",
    "CheckpointManager",
    "MeanCI",
    "Resumable",
    "ResumeError",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "capture_rng_state",
    "derive_seed",
    "differences",
    "finite_or_none",
    "load_checkpoint",
    "mean_ci",
    "restore_rng_state",
    "save_checkpoint",
    "seed_everything",
    "t_quantile",
]
