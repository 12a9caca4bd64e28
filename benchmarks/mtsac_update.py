r"""Time per multi-task SAC update: unitary scalarization, gradsurgery's PCGrad, textbook PCGrad.

One update (:meth:`gradsurgery.rl.MTSAC.update`) is a gradient step on the twin critics, the actor
and the temperature plus the soft target update: everything a training step does except sampling
and acting. Contenders, each an ``MTSAC`` agent with the same initial weights updating on the same
fixed batch:

* ``raw``: the same agent with each of its ``MultiTaskBackward``\ s replaced by a plain
  ``losses.sum().backward()`` of the per-task mean losses: what a hand-written MT-SAC update does
  (the baseline of the ``× raw`` ratios);
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
hits all alike); per contender the median and inter-quartile range over rounds, and the ratios to
unitary and to raw computed *within each round*, summarized the same way. Beside the times, the
cost proxies of one update (:func:`gradsurgery.profiling.count_ops`): aten ops, kernel launches,
host syncs. The machine's load average is recorded before and after: on a shared machine absolute
times move a lot, ratios less.

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
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from harness import Contender, count_step, summarize, time_in_rounds
from textbook_pcgrad import TextbookPCGrad
from torch import Tensor, nn

import gradsurgery
from gradsurgery.backward import StepResult
from gradsurgery.engines.task_partitioned import TaskBatch
from gradsurgery.rl import MTSAC, SACBatch, SACConfig

RAW = "raw (plain backward)"
UNITARY = "unitary"
OURS = "pcgrad (ours, vmap)"
TEXTBOOK = "pcgrad (textbook, m backward)"
#: the speed issue's targets for ours / unitary: published sizes on a GPU, -cpu sizes on a CPU
TARGETS = {"published": {10: 1.2, 50: 1.4}, "cpu": {10: 1.25, 50: 1.25}}


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


class _StandIn:
    """Stands in for an agent component's ``MultiTaskBackward``: takes the same call, computes the
    per-task mean losses of the task-partitioned batch, and leaves the backward to
    :meth:`backward_losses`."""

    needs_task_gradients = True

    def __init__(self, module: nn.Module, num_tasks: int) -> None:
        self.module = module
        self.num_tasks = num_tasks

    def backward_partitioned(
        self,
        loss_fn: Callable[..., Tensor],
        *batch: Tensor,
        task_ids: Tensor | None = None,
        layout: TaskBatch | None = None,
    ) -> StepResult:
        per_sample = loss_fn(self.module, *batch)
        groups = layout if layout is not None else TaskBatch(task_ids, self.num_tasks)  # type: ignore[arg-type]
        losses = groups.segment_means(per_sample)
        self.backward_losses(losses)
        return StepResult(losses.detach(), groups.tasks, None, torch.ones_like(losses), None, False)

    def backward_losses(self, losses: Tensor) -> None:
        raise NotImplementedError


class RawBackward(_StandIn):
    """The plain ``Σ_i L_i`` backward a hand-written MT-SAC update does."""

    needs_task_gradients = False

    def backward_losses(self, losses: Tensor) -> None:
        losses.sum().backward()


class TextbookBackward(_StandIn):
    """Textbook PCGrad's ``m`` backward passes (shared parameters projected, the rest summed)."""

    def __init__(self, module: nn.Module, num_tasks: int, seed: int = 0) -> None:
        super().__init__(module, num_tasks)
        shared = list(module.shared_parameters())  # type: ignore[operator]
        self.pcgrad = TextbookPCGrad(
            list(module.parameters()), reduction="sum", seed=seed, shared=shared
        )

    def backward_losses(self, losses: Tensor) -> None:
        self.pcgrad.backward(list(losses.unbind()))


def make_agents(m: int, s: Settings, device: str) -> tuple[dict[str, MTSAC], SACBatch]:
    base = SACConfig(
        hidden_sizes=s.hidden, batch_size_per_task=s.batch_per_task, seed=0, device=device
    )
    agents = {
        RAW: MTSAC(base.replace(method="sum"), s.obs_dim, s.action_dim, m),
        UNITARY: MTSAC(base.replace(method="sum"), s.obs_dim, s.action_dim, m),
        OURS: MTSAC(
            base.replace(method="pcgrad", method_kwargs={"seed": 0}, strategy="vmap"),
            s.obs_dim,
            s.action_dim,
            m,
        ),
        TEXTBOOK: MTSAC(base.replace(method="sum"), s.obs_dim, s.action_dim, m),
    }
    for name, stand_in in ((RAW, RawBackward), (TEXTBOOK, TextbookBackward)):
        agent = agents[name]
        for key, module in (("critic", agent.critic), ("actor", agent.actor)):
            agent.backward[key] = stand_in(module, m)  # type: ignore[assignment]
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


def run_size(m: int, s: Settings, device: str, seed: int) -> dict[str, Any]:
    agents, batch = make_agents(m, s, device)
    batch = batch.to(device)
    contenders = [
        Contender(name, lambda agent=agent: agent.update(batch)) for name, agent in agents.items()
    ]
    rounds = s.rounds if m <= 10 else max(3, s.rounds // 2)
    times = time_in_rounds(contenders, s.warmup, rounds, device, seed)
    result: dict[str, Any] = {"num_tasks": m, "rounds": rounds, "contenders": {}}
    raw_counts = None
    for c in contenders:
        ts = times[c.name]
        counts = count_step(c)
        raw_counts = counts if c.name == RAW else raw_counts
        result["contenders"][c.name] = {
            "seconds": summarize(ts),
            "ratio_to_unitary": summarize([t / u for t, u in zip(ts, times[UNITARY], strict=True)]),
            "ratio_to_raw": summarize([t / u for t, u in zip(ts, times[RAW], strict=True)]),
            "raw_seconds": ts,
            "counts": counts,
        }
    assert raw_counts is not None
    for c in result["contenders"].values():
        c["ops_ratio_to_raw"] = c["counts"]["ops"] / raw_counts["ops"]
        c["launches_ratio_to_raw"] = c["counts"]["launches"] / raw_counts["launches"]
    published = (s.hidden, s.batch_per_task) == (Settings.hidden, Settings.batch_per_task)
    cpu_sizes = (s.hidden, s.batch_per_task) == ((256, 256), 32)
    kind = "published" if published else ("cpu" if cpu_sizes else None)
    target = TARGETS[kind].get(m) if kind is not None else None
    if target is not None:
        ours = result["contenders"][OURS]["ratio_to_unitary"]["median"]
        result["target_ratio"] = target
        result["target_sizes"] = kind
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
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    sizes = []
    for m in s.sizes:
        res = run_size(m, s, args.device, seed=m)
        sizes.append(res)
        print(f"m = {m} ({res['rounds']} rounds; ratios are medians of per-round ratios):")
        print(
            f"  {'contender':32s} {'ms':>9} {'IQR':>8} {'× unitary':>10} {'× raw':>7} "
            f"{'ops':>6} {'×raw':>5} {'launch':>6} {'×raw':>5} {'syncs':>5}"
        )
        for name, c in res["contenders"].items():
            sec, k = c["seconds"], c["counts"]
            print(
                f"  {name:32s} {sec['median'] * 1e3:9.1f} {sec['iqr'] * 1e3:8.1f} "
                f"{c['ratio_to_unitary']['median']:10.2f} {c['ratio_to_raw']['median']:7.2f} "
                f"{k['ops']:>6} {c['ops_ratio_to_raw']:5.2f} {k['launches']:>6} "
                f"{c['launches_ratio_to_raw']:5.2f} {k['syncs']:>5}"
            )
        for name, c in res["contenders"].items():
            if c["counts"]["sync_events"]:
                events = Counter(c["counts"]["sync_events"])
                text = ", ".join(f"{k} ×{v}" if v > 1 else k for k, v in events.items())
                print(f"  syncs of {name}: {text}")
        if "target_ratio" in res:
            print(
                f"  target for ours at the {res['target_sizes']} sizes: ≤ {res['target_ratio']}× "
                f"unitary; met: {res['meets_target']}"
            )
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
