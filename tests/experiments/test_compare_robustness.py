"""`compare` under kill -9, Ctrl-C, a second process, unreadable checkpoints and missing data."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gradsurgery.cli_args import UsageError
from gradsurgery.experiments import CompareConfig, run_comparison
from gradsurgery.experiments import compare as compare_module
from gradsurgery.experiments.compare_cli import add_compare_parser, run_compare
from gradsurgery.runtime.lock import DirectoryLock

posix = pytest.mark.skipif(sys.platform == "win32", reason="kill -9 and flock are POSIX")
ROOT = Path(__file__).resolve().parents[2]

POOL_PARENT = """
import concurrent.futures as cf, multiprocessing, os, sys, time
from gradsurgery.experiments import compare
pool = cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
    initializer=compare._worker_init, initargs=(1, (), os.getpid()))
print(pool.submit(os.getpid).result(), flush=True)  # the worker, initialized
pool.submit(time.sleep, 120)
time.sleep(120)
"""

WATCHDOG_CHILD = """
import os, sys, time, types
from gradsurgery.experiments import compare
compare.ctypes = types.SimpleNamespace(CDLL=lambda *a, **k: object())  # no prctl: the fallback
compare._die_with_parent(int(sys.argv[1]), poll_s=0.1)
time.sleep(120)
"""

WATCHDOG_PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(__import__("os").getpid())])
print(child.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _kill_parent_and_wait_for(argv: list[str]) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", *argv], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    worker = 0
    try:
        assert parent.stdout is not None
        worker = int(parent.stdout.readline())
        assert _alive(worker)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 5
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(worker), "the worker outlived its killed parent"
    finally:
        parent.kill()
        if worker and _alive(worker):
            os.kill(worker, signal.SIGKILL)


@posix
def test_workers_die_with_a_kill_9_parent() -> None:
    _kill_parent_and_wait_for([POOL_PARENT])


@posix
def test_without_prctl_the_watchdog_ends_an_orphaned_worker() -> None:
    _kill_parent_and_wait_for([WATCHDOG_PARENT, WATCHDOG_CHILD])


def _config(out: Path, **kw) -> CompareConfig:
    base = {"methods": ["sum"], "seeds": [0], "out": out, "jobs": 1, "threads": 1,
            "verbose": False, "steps": 4, "batch_size": 64, "eval_every": 2}  # fmt: skip
    return CompareConfig(**{**base, **kw})


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gradsurgery")
    add_compare_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["compare", "--no-progress", "--jobs", "1", "--threads", "1", *argv])


@posix
def test_a_second_comparison_in_the_same_out_is_refused_naming_the_pid(tmp_path: Path) -> None:
    held = DirectoryLock(tmp_path, what="compare").acquire()  # as if another process ran there
    try:
        with pytest.raises(UsageError, match=rf"in use by process {os.getpid()}"):
            run_compare(_args("--methods", "sum", "--seeds", "1", "--out", str(tmp_path)))
    finally:
        held.release()
    assert not (tmp_path / "compare.json").exists()


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path: Path, capsys, monkeypatch) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(compare_module, "execute_run", interrupted)
    code = run_compare(_args("--methods", "sum", "--seeds", "1", "--steps", "2", "--out",
                             str(tmp_path)))  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 130 and "interrupted; rerun the same command to continue" in out
    assert "Traceback" not in out + err


def test_a_rerun_says_where_each_run_resumed(tmp_path: Path, capsys) -> None:
    run_comparison(_config(tmp_path))
    (tmp_path / "runs" / "sum" / "seed0" / "result.json").unlink()  # died before result.json
    again = run_comparison(_config(tmp_path, verbose=True))
    assert again.statuses[0]["resumed_from_step"] == 4
    assert "resumed from step 4" in capsys.readouterr().out


def test_an_unreadable_only_checkpoint_fails_every_rerun(tmp_path: Path) -> None:
    run_comparison(_config(tmp_path))
    run_dir = tmp_path / "runs" / "sum" / "seed0"
    (run_dir / "result.json").unlink()
    (ckpt,) = (run_dir / "checkpoints").glob("*.ckpt")
    ckpt.write_bytes(ckpt.read_bytes()[:500])
    for _ in range(2):  # never a silent fresh start
        (status,) = run_comparison(_config(tmp_path)).statuses
        assert status["status"] == "failed"
        assert ckpt.name in status["error"] and "delete" in status["error"]
    assert not (run_dir / "result.json").exists()


def test_missing_data_exits_2_before_any_run_and_writes_nothing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    with pytest.raises(UsageError, match=r"cannot load celeba from .*nowhere.*not found"):
        run_compare(_args("--benchmark", "celeba", "--data-root", str(tmp_path / "nowhere"),
                          "--methods", "sum", "--seeds", "1", "--out", str(out)))  # fmt: skip
    assert not out.exists()
