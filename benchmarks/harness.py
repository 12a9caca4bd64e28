"""The measuring harness shared by the benchmarks: contenders timed in shuffled rounds, the cost
proxies of one step (aten ops, kernel launches, host syncs), peak memory, the machine.

Every benchmark compares *contenders* that each do the same work their own way: each is a
:class:`Contender` whose ``run()`` is the part under study (forward and backward, or one agent
update) and whose optimizer (if any) makes the step complete. :func:`time_in_rounds` times them
interleaved, one step each per round in a fresh random order, so that machine noise hits all alike;
:func:`count_step` counts what one step asks of the device (:func:`gradsurgery.profiling.count_ops`):
all of it for ops and launches, and the host syncs of ``run()`` alone (the optimizer's own reads of
its CPU step counters are not device syncs).
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

import gradsurgery
from gradsurgery.profiling import OpCount, count_ops

__all__ = [
    "Contender",
    "count_step",
    "machine_info",
    "peak_step_memory",
    "profiled_peak",
    "quartiles",
    "summarize",
    "sync",
    "time_in_rounds",
]


@dataclass
class Contender:
    """One way of doing a step: ``run()`` (the part under study), then ``optimizer.step()``.

    ``step()`` is the whole step: ``zero_grad(set_to_none=True)``, ``run()``, ``step()``.
    """

    name: str
    run: Callable[[], Any]
    optimizer: torch.optim.Optimizer | None = None
    note: str = ""

    def step(self) -> None:
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        self.run()
        if self.optimizer is not None:
            self.optimizer.step()


def sync(device: torch.device | str) -> None:
    """Wait for the device (CUDA), so that a timer brackets the work and not its launch."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_in_rounds(
    contenders: Sequence[Contender],
    warmup: int,
    rounds: int,
    device: torch.device | str,
    seed: int,
) -> dict[str, list[float]]:
    """Seconds per step of each contender; one step each per round, in a shuffled order."""
    for c in contenders:
        for _ in range(warmup):
            c.step()
    sync(device)
    order = list(range(len(contenders)))
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {c.name: [] for c in contenders}
    for _ in range(rounds):
        rng.shuffle(order)
        for k in order:
            c = contenders[k]
            sync(device)
            t0 = time.perf_counter()
            c.step()
            sync(device)
            samples[c.name].append(time.perf_counter() - t0)
    return samples


def count_step(c: Contender) -> dict[str, Any]:
    """What one step of ``c`` asks of the device: ops and launches of the whole step, host syncs
    of ``run()`` (the optimizer's reads of its CPU step counters are not device syncs)."""
    if c.optimizer is not None:
        c.optimizer.zero_grad(set_to_none=True)
    with count_ops() as run_count:
        c.run()
    opt_count = OpCount()
    if c.optimizer is not None:
        with count_ops() as opt_count:
            c.optimizer.step()
    return {
        "ops": run_count.ops + opt_count.ops,
        "launches": run_count.launches + opt_count.launches,
        "syncs": run_count.syncs,
        "sync_events": run_count.sync_events,
        "host_ops": run_count.host_ops,
        "deferred_reads": run_count.deferred_reads,
        "run_ops": run_count.ops,
        "run_launches": run_count.launches,
        "optimizer_ops": opt_count.ops,
        "top_ops": dict(run_count.by_op.most_common(15)),
    }


def quartiles(xs: Sequence[float]) -> tuple[float, float, float]:
    """(q1, median, q3); for fewer than 2 samples all three are the one value."""
    if len(xs) < 2:
        v = float(xs[0]) if xs else float("nan")
        return v, v, v
    q1, med, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, med, q3


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles and inter-quartile range."""
    q1, med, q3 = quartiles(values)
    return {"median": med, "q25": q1, "q75": q3, "iqr": q3 - q1}


def profiled_peak(fn: Callable[[], Any]) -> int | None:
    """Peak bytes of torch CPU tensor memory live during ``fn()``, above the level at its start.

    Reads the allocation/free events that ``torch.profiler`` records with ``profile_memory=True``
    (every allocation and free by torch's CPU allocator, with its size and time), and takes the
    largest running sum. None if this torch does not expose the events.
    """
    try:
        from torch._C._profiler import _EventType
    except ImportError:  # pragma: no cover - depends on the torch build
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
        ) as prof:
            fn()
    events: list[tuple[int, int]] = []
    try:
        stack = list(prof.profiler.kineto_results.experimental_event_tree())
        while stack:
            node = stack.pop()
            if node.tag == _EventType.Allocation:
                f = node.extra_fields
                if str(f.device).startswith("cpu"):
                    events.append((node.start_time_ns, int(f.alloc_size)))
            stack.extend(node.children)
    except (AttributeError, RuntimeError):  # pragma: no cover - private API changed
        return None
    events.sort()
    live = peak = 0
    for _, size in events:
        live += size
        peak = max(peak, live)
    return peak


def peak_step_memory(c: Contender, device: torch.device) -> int | None:
    """Peak extra bytes of one step (see :func:`profiled_peak`; CUDA: max_memory_allocated)."""
    if c.optimizer is not None:
        c.optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        c.step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    return profiled_peak(c.step)


def machine_info(device: torch.device | str) -> dict[str, Any]:
    """torch and Python versions, CPU model and count, threads, device, load average."""
    device = torch.device(device)
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "gradsurgery": gradsurgery.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = os.getloadavg()
    return info
