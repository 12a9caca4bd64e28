"""Time per multi-task SAC update: unitary scalarization, gradsurgery's PCGrad, textbook PCGrad.

One update (:meth:`gradsurgery.rl.MTSAC.update`) is a gradient step on the twin critics, the actor
and the temperature plus the soft target update: everything a training step does except sampling
and acting. Contenders, each an ``MTSAC`` agent with the same initial weights updating on the same
fixed batch:

* ``unitary``: ``method="sum"`` — one backward pass of ``Σ_i L_i`` per loss;
* ``pcgrad (ours, vmap)``: ``method="pcgrad"``, ``strategy="vmap"`` — all ``m`` per-task gradients of
  each loss from one vectorized backward over task segments, PCGrad on the ``m × m`` Gramian;
* ``pcgrad (textbook, m backward)``: the same agent with its critic and actor steps done as the
  public PCGrad ports do (``benchmarks/textbook_pcgrad.py``): ``m`` ``backward(retain_graph=True)``
  passes over the whole graph, flat gradient copies, a Python projection loop.

PCGrad is applied to the critic and the actor; the temperatures are per task (the MT-SAC default),
so their step is the plain sum for every contender. Sizes: MT10 (m = 10) and MT50 (m = 50) with
Meta-World's 39-d observations (+ the m-d one-hot inside the networks), 4-d actions, 3×400 actor and
twin critics, 128 transitions per task.

Protocol: after warm-up, rounds of one update per contender in a fresh random order (machine noise
hits all alike); per contender the median and inter-quartile range over rounds, and the ratio to
unitary computed *within each round*, summarized the same way. The machine's load average is
recorded before and after: on a shared machine absolute times move a lot, ratios less.

Usage::

    python benchmarks/mtsac_update.py                       # MT10 and MT50 (minutes on a CPU)
    python benchmarks/mtsac_update.py --quick               # tiny smoke run (seconds)
    python benchmarks/mtsac_update.py --threads 1 --out runs/bench/mtsac_update.json
    python benchmarks/mtsac_update.py --device cuda
    python benchmarks/mtsac_update.py --hidden 256 256 --batch-per-task 32 --sizes 10   # -cpu presets
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from textbook_pcgrad import TextbookPCGrad

import gradsurgery
from gradsurgery.backward import StepResult
from gradsurgery.engines.task_partitioned import TaskBatch
from gradsurgery.rl import MTSAC, SACBatch, SACConfig

UNITARY = "unitary"
OURS = "pcgrad (ours, vmap)"
TEXTBOOK = "pcgrad (textbook, m backward)"
TARGETS = {10: 1.25, 50: 1.5}


@dataclass
class Settings:
    obs_dim: int = 39
    action_dim: int = 4
    hidden: tuple[int, ...] = (400, 400, 400)
    batch_per_task: int = 128
    sizes: tuple[int, ...] = (10, 50)
    rounds: int = 12
    warmup: int = 2

    @classmethod
    def quick(cls) -> Settings:
        return cls(hidden=(32, 32), batch_per_task=8, sizes=(3, 5), rounds=3, warmup=1)


class TextbookBackward:
    """Stands in for an agent component's ``MultiTaskBackward``: per-task losses of the
    task-partitioned batch, then textbook PCGrad's ``m`` backward passes (shared parameters
    projected, the rest summed)."""

    needs_task_gradients = True

    def __init__(self, module: nn.Module, num_tasks: int, seed: int = 0) -> None:
        self.module = module
        self.num_tasks = num_tasks
        shared = list(module.shared_parameters())  # type: ignore[operator]
        self.pcgrad = TextbookPCGrad(
            list(module.parameters()), reduction="sum", seed=seed, shared=shared
        )

    def backward_partitioned(
        self, loss_fn: Callable[..., Tensor], *batch: Tensor, task_ids: Tensor
    ) -> StepResult:
        per_sample = loss_fn(self.module, *batch)
        groups = TaskBatch(task_ids, self.num_tasks, per_sample.dtype)
        losses = groups.segment_means(per_sample)
        self.pcgrad.backward(list(losses.unbind()))
        return StepResult(losses.detach(), groups.tasks, None, torch.ones_like(losses), None, False)


def make_agents(m: int, s: Settings, device: str) -> tuple[dict[str, MTSAC], SACBatch]:
    base = SACConfig(
        hidden_sizes=s.hidden, batch_size_per_task=s.batch_per_task, seed=0, device=device
    )
    agents = {
        UNITARY: MTSAC(base.replace(method="sum"), s.obs_dim, s.action_dim, m),
        OURS: MTSAC(
            base.replace(method="pcgrad", method_kwargs={"seed": 0}, strategy="vmap"),
            s.obs_dim,
            s.action_dim,
            m,
        ),
        TEXTBOOK: MTSAC(base.replace(method="sum"), s.obs_dim, s.action_dim, m),
    }
    tb = agents[TEXTBOOK]
    tb.backward["critic"] = TextbookBackward(tb.critic, m)  # type: ignore[assignment]
    tb.backward["actor"] = TextbookBackward(tb.actor, m)  # type: ignore[assignment]
    replay = agents[UNITARY].make_replay(4 * s.batch_per_task)
    g = torch.Generator().manual_seed(0)
    for _ in range(4 * s.batch_per_task):
        replay.add(
            torch.arange(m),
            torch.randn(m, s.obs_dim, generator=g),
            torch.rand(m, s.action_dim, generator=g) * 2 - 1,
            torch.randn(m, generator=g),
            torch.randn(m, s.obs_dim, generator=g),
            torch.zeros(m),
        )
    batch = replay.sample(s.batch_per_task, torch.Generator().manual_seed(1))
    return agents, batch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def summarize(values: Sequence[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=4) if len(values) >= 2 else [values[0]] * 3
    return {"median": statistics.median(values), "q25": q[0], "q75": q[2], "iqr": q[2] - q[0]}


def run_size(m: int, s: Settings, device: str, rng: random.Random) -> dict[str, Any]:
    agents, batch = make_agents(m, s, device)
    batch = batch.to(device)
    for _ in range(s.warmup):
        for agent in agents.values():
            agent.update(batch)
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in agents}
    rounds = s.rounds if m <= 10 else max(3, s.rounds // 2)
    for _ in range(rounds):
        order = list(agents)
        rng.shuffle(order)
        for name in order:
            _sync(device)
            t0 = time.perf_counter()
            agents[name].update(batch)
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    result: dict[str, Any] = {"num_tasks": m, "rounds": rounds, "contenders": {}}
    for name, ts in times.items():
        ratios = [t / u for t, u in zip(ts, times[UNITARY], strict=True)]
        result["contenders"][name] = {
            "seconds": summarize(ts),
            "ratio_to_unitary": summarize(ratios),
            "raw_seconds": ts,
        }
    # the targets are for the published sizes (3×400 networks, 128 transitions per task)
    published = (s.hidden, s.batch_per_task) == (Settings.hidden, Settings.batch_per_task)
    target = TARGETS.get(m) if published else None
    if target is not None:
        ours = result["contenders"][OURS]["ratio_to_unitary"]["median"]
        result["target_ratio"] = target
        result["meets_target"] = ours <= target
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--sizes", type=int, nargs="*", default=None, help="numbers of tasks")
    parser.add_argument(
        "--hidden", type=int, nargs="+", default=None, help="hidden sizes (default 400 400 400)"
    )
    parser.add_argument(
        "--batch-per-task", type=int, default=None, help="transitions per task (default 128)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    args = parser.parse_args(argv)
    s = Settings.quick() if args.quick else Settings()
    if args.rounds is not None:
        s.rounds = args.rounds
    if args.sizes:
        s.sizes = tuple(args.sizes)
    if args.hidden:
        s.hidden = tuple(args.hidden)
    if args.batch_per_task is not None:
        s.batch_per_task = args.batch_per_task
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rng = random.Random(0)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    sizes = []
    for m in s.sizes:
        res = run_size(m, s, args.device, rng)
        sizes.append(res)
        print(f"m = {m} ({res['rounds']} rounds):")
        for name, c in res["contenders"].items():
            sec, ratio = c["seconds"], c["ratio_to_unitary"]
            print(
                f"  {name:32s} {sec['median'] * 1e3:9.1f} ms  (IQR {sec['iqr'] * 1e3:7.1f})"
                f"   × unitary {ratio['median']:5.2f}  (IQR {ratio['q25']:.2f}–{ratio['q75']:.2f})"
            )
        if "target_ratio" in res:
            print(f"  target for ours: ≤ {res['target_ratio']}×  met: {res['meets_target']}")
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None
    out = {
        "benchmark": "mtsac_update",
        "settings": asdict(s),
        "device": args.device,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "torch": torch.__version__,
        "gradsurgery": getattr(gradsurgery, "__version__", None),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sizes": sizes,
    }
    print(f"load average before {load_before}, after {load_after} on {os.cpu_count()} CPUs")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
