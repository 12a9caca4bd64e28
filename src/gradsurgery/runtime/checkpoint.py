"""Crash-safe checkpoints: atomic writes, an integrity check on load, fallback to the previous one.

Writing. :func:`atomic_write_bytes` writes to a temporary file in the target's directory, flushes
and ``fsync`` s it, renames it over the target with ``os.replace`` (atomic on POSIX and Windows
within one file system), then ``fsync`` s the directory so the rename itself survives a power loss.
A process killed at any point leaves either the old file or the new one, never a mix; a failure
while writing removes the temporary file and leaves the old file as it was. The file gets the mode
an ordinary ``open(path, "w")`` would give it (``0o666`` less the umask), not ``mkstemp``'s 0600.

Format. A checkpoint file is a 64-byte header followed by the bytes of ``torch.save(state)``:

    b"GSCKPT01" | payload length (8 bytes, little endian) | SHA-256 of the payload (32 bytes) |
    16 reserved zero bytes | payload

so a truncated or altered file is detected before unpickling, with an error that says what is wrong
(:class:`CheckpointError`). Load it with :func:`load_checkpoint` (plain ``torch.load`` does not
read the header). The payload is read with ``torch.load(weights_only=True)``: a checkpoint cannot
run code, so it may only hold tensors, numbers, strings, lists, tuples and dicts.

Keeping several. :class:`CheckpointManager` names files ``step-00001234.ckpt`` in one directory and
keeps the newest ``keep`` (default 2). :meth:`CheckpointManager.load_latest` tries the newest first;
if it is corrupt it prints one line to stderr, renames it to ``*.ckpt.corrupt`` (out of the
rotation, kept for inspection) and falls back to the one before (the reason to keep two: a disk that
lies about ``fsync``, or a file damaged after it was written). When every checkpoint is unreadable
it raises :class:`CheckpointError` naming each file and its problem, and so does every later
attempt while the directory holds ``*.ckpt.corrupt`` files and no readable checkpoint: an
unreadable run is never silently started over. To start it over, delete the checkpoint directory
(or the ``.corrupt`` files), or start over through the loop (:class:`~.resumable.Resumable` adds
its ``start_over``, e.g. ``--fresh``, to the message).

Example:
    >>> import tempfile, torch
    >>> d = tempfile.mkdtemp()
    >>> mgr = CheckpointManager(d, keep=2)
    >>> for step in (10, 20, 30):
    ...     _ = mgr.save({"step": step, "w": torch.ones(2) * step}, step)
    >>> [p.name for p in mgr.checkpoints()]
    ['step-00000020.ckpt', 'step-00000030.ckpt']
    >>> mgr.load_latest()[0]["step"]
    30
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CheckpointError",
    "CheckpointManager",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "load_checkpoint",
    "save_checkpoint",
]

MAGIC = b"GSCKPT01"
_HEADER = 64


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, altered or not a gradsurgery checkpoint."""


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask (read without changing it where /proc tells it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """:func:`atomic_write_text` of indented JSON (NaN is not allowed: use ``None``)."""
    return atomic_write_text(path, json.dumps(obj, indent=1, allow_nan=False) + "\n")


def _encode(state: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    header = MAGIC + len(payload).to_bytes(8, "little") + hashlib.sha256(payload).digest()
    return header + bytes(_HEADER - len(header)) + payload


def save_checkpoint(state: Any, path: str | Path) -> Path:
    """Serialize ``state`` (tensors, numbers, strings, containers) and write it atomically."""
    return atomic_write_bytes(path, _encode(state))


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> Any:
    """Read a checkpoint written by :func:`save_checkpoint`, checking its length and SHA-256.

    Raises:
        CheckpointError: the file is missing, not a checkpoint, truncated, altered, or unreadable.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {e}") from e
    if len(raw) < _HEADER or raw[: len(MAGIC)] != MAGIC:
        raise CheckpointError(
            f"{path} is not a gradsurgery checkpoint (no {MAGIC.decode()} header; "
            f"{len(raw)} bytes): written by another program, or truncated to almost nothing"
        )
    length = int.from_bytes(raw[8:16], "little")
    digest = raw[16:48]
    payload = raw[_HEADER:]
    if len(payload) != length:
        raise CheckpointError(
            f"checkpoint {path} is truncated: {len(payload)} of {length} payload bytes present "
            "(the write was interrupted or the file was cut)"
        )
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its SHA-256 does not match the one recorded when it "
            "was written"
        )
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as e:  # a valid digest but an unreadable payload: written by a newer torch?
        raise CheckpointError(f"checkpoint {path} cannot be deserialized: {e}") from e


_NAME = re.compile(r"^step-(\d+)\.ckpt$")


class CheckpointManager:
    """Numbered checkpoints in one directory; keeps the newest ``keep`` (see the module docstring)."""

    def __init__(self, directory: str | Path, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.directory = Path(directory)
        self.keep = int(keep)

    def path_for(self, step: int) -> Path:
        return self.directory / f"step-{int(step):08d}.ckpt"

    def checkpoints(self) -> list[Path]:
        """Existing checkpoint files, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [
            (int(m.group(1)), p) for p in self.directory.iterdir() if (m := _NAME.match(p.name))
        ]
        return [p for _, p in sorted(found)]

    def save(self, state: Any, step: int) -> Path:
        """Write ``state`` as the checkpoint of ``step``, then delete all but the newest ``keep``."""
        path = save_checkpoint(state, self.path_for(step))
        for old in self.checkpoints()[: -self.keep]:
            with contextlib.suppress(OSError):
                old.unlink()
        return path

    def corrupt(self) -> list[Path]:
        """Checkpoints set aside as unreadable (``*.ckpt.corrupt``), sorted by name."""
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if p.name.endswith(".ckpt.corrupt"))

    def load_latest(self, map_location: Any = "cpu") -> tuple[Any, Path] | None:
        """``(state, path)`` of the newest readable checkpoint; None when there is none at all.

        A corrupt newest checkpoint is reported on stderr (one line) and the previous one is used.

        Raises:
            CheckpointError: checkpoints exist but none can be read, or none exists and some were
                set aside as corrupt (the run cannot be continued, and is not silently restarted).
        """
        paths = self.checkpoints()
        if not paths:
            corrupt = self.corrupt()
            if corrupt:
                raise CheckpointError(
                    f"no readable checkpoint in {self.directory}: "
                    f"{', '.join(p.name for p in corrupt)} could not be read earlier. "
                    + _START_OVER.format(directory=self.directory)
                )
            return None
        problems = []
        for path in reversed(paths):
            try:
                state = load_checkpoint(path, map_location)
            except CheckpointError as e:
                problems.append(str(e))
                # Out of the rotation (kept for inspection), so that it never displaces a good one.
                with contextlib.suppress(OSError):
                    path.rename(path.with_name(path.name + ".corrupt"))
                continue
            if problems:
                print(
                    f"gradsurgery: skipped unreadable checkpoint(s), resuming from {path}: "
                    + "; ".join(problems),
                    file=sys.stderr,
                    flush=True,
                )
            return state, path
        raise CheckpointError(
            f"no readable checkpoint in {self.directory}: "
            + "; ".join(problems)
            + ". "
            + _START_OVER.format(directory=self.directory)
        )


_START_OVER = "The run cannot be continued; to start it over, delete {directory}"
