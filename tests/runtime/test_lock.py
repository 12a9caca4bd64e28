"""A directory is locked by one process at a time; the lock dies with its holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gradsurgery.runtime.lock import DirectoryLock, DirectoryLockedError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")

HOLD = """
import sys, time
from gradsurgery.runtime.lock import DirectoryLock
lock = DirectoryLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_a_second_process_is_refused_naming_the_holder_and_kill_9_frees_it(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(DirectoryLockedError, match=rf"in use by process {holder.pid}\b"):
            DirectoryLock(tmp_path).acquire()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        with DirectoryLock(tmp_path) as lock:  # no stale lock after kill -9
            assert lock.held
            with pytest.raises(DirectoryLockedError, match=str(os.getpid())):
                DirectoryLock(tmp_path).acquire()  # another open file, even in one process
        assert not lock.held
    finally:
        holder.kill()
        holder.wait(10)
