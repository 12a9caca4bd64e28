"""One resume protocol for every training loop: a checkpoint names its kind, format and run.

A loop that can be stopped and continued (the supervised :class:`~gradsurgery.experiments.Trainer`,
the RL runner :func:`~gradsurgery.rl.runner.train_rl`) holds one :class:`Resumable` for its
checkpoint directory and follows one protocol:

1. ``found = resumable.load()`` before anything is built or written: None when there is nothing to
   continue, else ``(payload, path)`` of the newest readable checkpoint (read on the CPU; a corrupt
   newest one is set aside with a note on stderr and the one before it used; when none is
   readable, :class:`~gradsurgery.runtime.checkpoint.CheckpointError` naming the files and how to
   start over, on this and every later attempt: :class:`CheckpointManager`);
2. the loop restores itself from ``payload`` (its own keys, the envelope removed);
3. ``resumable.save(payload, step)`` whenever the loop checkpoints (written atomically, the newest
   ``keep`` kept).

The envelope. :meth:`Resumable.save` writes one dict: the loop's payload plus the keys

* ``"kind"`` — which loop wrote it (e.g. ``"gradsurgery.rl.runner"``);
* ``"format"`` — the number of that loop's layout, raised whenever the layout changes;
* ``"fingerprint"`` — a nested dict of what must match for the run to be continued (the
  configuration that changes what is computed: the seed, the method, the model, ...);
* ``"device"`` — only when the loop passes ``device``: where it ran (continued only on the same kind
  of device: ``cpu``, ``cuda``, ...).

:meth:`Resumable.load` refuses, with a :class:`ResumeError` that says what to do, a checkpoint of
another kind or format, one whose fingerprint differs (each difference listed as ``key: checkpoint
OLD, now NEW``), and one written on another kind of device. The payload must not use the envelope's
keys. Old checkpoints are not converted: a loop that changes its layout raises its format number
and older checkpoints are refused.

Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> run = Resumable(d, kind="demo", format=1, fingerprint={"seed": 0, "lr": 0.1})
    >>> run.load() is None
    True
    >>> _ = run.save({"step": 5}, 5)
    >>> payload, path = run.load()
    >>> payload, path.name
    ({'step': 5}, 'step-00000005.ckpt')
    >>> other = Resumable(d, kind="demo", format=1, fingerprint={"seed": 0, "lr": 0.2})
    >>> other.load()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    gradsurgery.runtime.resumable.ResumeError: ... (lr: checkpoint 0.1, now 0.2): ...
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from gradsurgery.runtime.checkpoint import CheckpointError, CheckpointManager
from gradsurgery.runtime.values import differences

__all__ = ["ENVELOPE_KEYS", "Resumable", "ResumeError"]

#: The keys :meth:`Resumable.save` adds to a payload (a payload may not use them).
ENVELOPE_KEYS = frozenset({"kind", "format", "fingerprint", "device"})

#: At most this many fingerprint differences are listed in a refusal (then a count of the rest).
_MAX_LISTED = 8

_DEFAULT_START_OVER = "delete it to start over"


class ResumeError(ValueError):
    """A checkpoint cannot be continued by this run: another loop, another layout, another run
    configuration, or another kind of device. The message says why and what to do."""


class Resumable:
    """The checkpoints of one run in ``directory``, and the rules for continuing one.

    Args:
        directory: the checkpoint directory (created on the first save).
        kind: which loop writes these checkpoints.
        format: the number of the loop's checkpoint layout.
        fingerprint: what must match for a checkpoint to be continued (a nested dict of plain
            values: compared leaf by leaf with :func:`~gradsurgery.runtime.values.differences`).
        keep: how many checkpoints to keep (the newest).
        device: where the run computes, when a checkpoint may only be continued on the same kind
            of device; None: not recorded, not checked.
        start_over: how to start the run over, for the refusal message (e.g. ``"start over
            (resume=False / --fresh)"``).
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        kind: str,
        format: int,
        fingerprint: Mapping[str, Any],
        keep: int = 2,
        device: str | torch.device | None = None,
        start_over: str = "delete it to start over",  # _DEFAULT_START_OVER
    ) -> None:
        self.manager = CheckpointManager(directory, keep=keep)
        self.kind = kind
        self.format = int(format)
        self.fingerprint = dict(fingerprint)
        self.device = str(device) if device is not None else None
        self.start_over = start_over

    @property
    def directory(self) -> Path:
        return self.manager.directory

    def envelope(self) -> dict[str, Any]:
        """The keys :meth:`save` adds to every payload."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "format": self.format,
            "fingerprint": self.fingerprint,
        }
        if self.device is not None:
            out["device"] = self.device
        return out

    def save(self, payload: Mapping[str, Any], step: int) -> Path:
        """Write ``payload`` with the envelope as the checkpoint of ``step`` (atomically; the
        newest ``keep`` are kept) and return its path."""
        clash = ENVELOPE_KEYS & set(payload)
        if clash:
            raise ValueError(f"a checkpoint payload may not use the keys {sorted(clash)}")
        return self.manager.save({**self.envelope(), **payload}, step)

    def load(self) -> tuple[dict[str, Any], Path] | None:
        """``(payload, path)`` of the newest readable checkpoint, read on the CPU (the loop moves
        what it needs to its device); None when the directory holds none.

        Raises:
            ResumeError: the checkpoint belongs to another loop, layout, run or kind of device.
            CheckpointError: checkpoints exist but none can be read.
        """
        try:
            found = self.manager.load_latest(map_location="cpu")
        except CheckpointError as e:
            if self.start_over == _DEFAULT_START_OVER:
                raise
            raise CheckpointError(f"{e}, or {self.start_over}") from None
        if found is None:
            return None
        state, path = found
        return self.check(state, path), path

    def check(self, state: Mapping[str, Any], path: str | Path) -> dict[str, Any]:
        """The payload of a checkpoint ``state`` read from ``path``, if this run may continue it.

        Raises:
            ResumeError: as :meth:`load`.
        """
        kind, fmt = state.get("kind"), state.get("format")
        if kind != self.kind:
            raise ResumeError(
                f"{path} is not a {self.kind} checkpoint (kind {kind!r}, format {fmt!r}): use "
                f"another output directory, or {self.start_over}"
            )
        if fmt != self.format:
            raise ResumeError(
                f"{path} has checkpoint format {fmt!r}, expected {self.format} (written by another "
                f"version of gradsurgery): use another output directory, or {self.start_over}"
            )
        problems = differences(
            state.get("fingerprint"),
            self.fingerprint,
            template="{key}: checkpoint {old!r}, now {new!r}",
        )
        if problems:
            listed = problems[:_MAX_LISTED]
            if len(problems) > _MAX_LISTED:
                listed.append(f"and {len(problems) - _MAX_LISTED} more")
            raise ResumeError(
                f"{self.directory} holds a checkpoint of a different run configuration "
                f"({'; '.join(listed)}): use another output directory, or {self.start_over}"
            )
        self._check_device(state.get("device"))
        return {k: v for k, v in state.items() if k not in ENVELOPE_KEYS}

    def _check_device(self, written_on: Any) -> None:
        if self.device is None:
            return
        if written_on is None or torch.device(written_on).type != torch.device(self.device).type:
            raise ResumeError(
                f"the checkpoint was written on {written_on}; resume on the same kind of device "
                f"(now {self.device}) or {self.start_over}"
            )

    def clear(self) -> None:
        """Delete the checkpoint directory (starting the run over)."""
        shutil.rmtree(self.directory, ignore_errors=True)
