"""One process at a time in a directory: an exclusive ``flock`` on a lock file inside it.

:class:`DirectoryLock` holds ``<directory>/.lock`` locked (``fcntl.flock(LOCK_EX | LOCK_NB)``) for as
long as it is open, and writes the holder's PID into it. A second process that tries to lock the
same directory gets :class:`DirectoryLockedError` naming that PID. The lock belongs to the open
file: it goes away when the holder closes it, exits or is killed (``kill -9`` included), so a stale
lock cannot outlive its process; the file itself is left in place (deleting it would let two
processes lock two different files). Where ``fcntl`` does not exist (Windows) nothing is locked.

Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with DirectoryLock(d, what="run"):
    ...     pass
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import TracebackType

__all__ = ["LOCK_NAME", "DirectoryLock", "DirectoryLockedError"]

LOCK_NAME = ".lock"


class DirectoryLockedError(RuntimeError):
    """Another live process holds the directory's lock; the message names its PID."""


class DirectoryLock:
    """An exclusive lock on ``directory`` (created if missing), held until :meth:`release`.

    Args:
        directory: the directory to lock.
        what: what is locked, for the message (``"run"``, ``"comparison"``).
    """

    def __init__(self, directory: str | Path, *, what: str = "run") -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> DirectoryLock:
        """Take the lock, or raise :class:`DirectoryLockedError` naming the holder's PID."""
        if self._fd is not None:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        if sys.platform != "win32":
            import fcntl

            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_pid(fd)
                os.close(fd)
                who = f"process {holder}" if holder else "another process"
                raise DirectoryLockedError(
                    f"{self.directory} is in use by {who} (another gradsurgery {self.what} is "
                    "running there): wait for it to finish, stop it, or use another output "
                    "directory"
                ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Let go of the lock (closing the file releases it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
