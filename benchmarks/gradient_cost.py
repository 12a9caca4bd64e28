"""What a multi-task gradient step costs: gradsurgery's PCGrad against unitary scalarization and the
textbook PCGrad loop, in time per training step and peak memory.

Three parts:

(i) task-partitioned batch (each sample belongs to one task; Meta-World MT10/MT50 sizes): a
    task-conditioned MLP (39-d observation + one-hot task → 3×400 ReLU → 8), 128 samples per task,
    m = 10 and m = 50. Contenders: a hand-written ``loss.backward()`` (*raw*, the baseline of every
    ratio), unitary through ``MultiTaskBackward(model, "sum")``, textbook PCGrad
    (``benchmarks/textbook_pcgrad.py``), and gradsurgery's PCGrad through ``backward_partitioned``:
    with the batch's layout given (``layout=TaskBatch.balanced(m, n)``, ``check_finite="lazy"``:
    the settings for an accelerator), with task ids and the default eager check, and with
    ``strategy="loop"``.
(ii) shared-input batch: a small CNN trunk (~0.8M parameters, 1×28×28 input, batch 256) with m linear
    heads, m = 3 and m = 40. Contenders: the two unitary baselines, textbook PCGrad, gradsurgery's exact
    PCGrad (``mtl.backward(losses)``) and its representation-level PCGrad
    (``mtl.backward(losses, representation=z)``).
(iii) solver overhead: each registered method's own ``forward`` on a random m×m Gramian (m = 10, 40).

A step is everything a training step does: ``zero_grad``, forward, the per-task gradients, the
aggregation and ``torch.optim.Adam.step``. Every contender trains its own copy of the same initial
model on the same fixed batch. After warm-up the contenders run in rounds, one step each per round in
a freshly shuffled order, so that machine noise hits all alike; we report the median and the
inter-quartile range over rounds, and ratios to the raw ``loss.backward()`` step and to unitary
scalarization through ``MultiTaskBackward``, measured in the same rounds.

Beside the times, the device-independent cost proxies of one step
(:func:`gradsurgery.profiling.count_ops`): aten ops dispatched, kernel launches (ops minus views
and allocations) and host synchronisations, each also as a ratio to the raw step. On an
accelerator a small step's time tracks its launches and syncs.

Peak memory is measured in separate, untimed steps: on CPU, from torch's own allocator events as
recorded by ``torch.profiler`` (``profile_memory=True``): the largest number of bytes of tensor
memory live at any moment of the step, above what was live when the step began (model, data and Adam
state; ``.grad`` freed). On CUDA, ``torch.cuda.max_memory_allocated`` over the same step. See
``benchmarks/README.md`` for what this does and does not include.

Usage::

    python benchmarks/gradient_cost.py                 # full run (several minutes on 2 CPU cores)
    python benchmarks/gradient_cost.py --quick         # tiny smoke run (seconds)
    python benchmarks/gradient_cost.py --device cuda --out runs/bench/gpu.json
    python benchmarks/gradient_cost.py --breakdown     # also time the phases of our PCGrad step
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from harness import (
    Contender,
    count_step,
    machine_info,
    peak_step_memory,
    profiled_peak,
    quartiles,
    sync,
    time_in_rounds,
)
from textbook_pcgrad import TextbookPCGrad
from torch import Tensor, nn

from gradsurgery import MultiTaskBackward, TaskJacobian, TaskStep
from gradsurgery.engines import TaskBatch
from gradsurgery.methods import create_method, method_info, method_names
from gradsurgery.profiling import count_ops

UNITARY = "unitary (MultiTaskBackward 'sum')"
RAW = "unitary (raw loss.backward)"
TEXTBOOK = "textbook PCGrad"
OURS_VMAP = "PCGrad (ours, vmap)"
OURS_IDS = "PCGrad (ours, vmap, task_ids)"
OURS_EXACT = "PCGrad (ours, exact)"
OURS_REPR = "PCGrad (ours, representation)"
STACKED = "PCGrad (ours, repr., stacked)"

# ---------------------------------------------------------------------------------------- settings


@dataclass
class Settings:
    """Sizes and repetition counts; ``--quick`` swaps in tiny ones."""

    obs_dim: int = 39
    hidden: int = 400
    action_dim: int = 8
    samples_per_task: int = 128
    partitioned_tasks: tuple[int, ...] = (10, 50)
    cnn_batch: int = 256
    cnn_width: int = 1024
    cnn_feature: int = 256
    shared_tasks: tuple[int, ...] = (3, 40)
    solver_tasks: tuple[int, ...] = (10, 40)
    solver_dim: int = 2000
    # (warm-up steps, timed rounds) per number of tasks; the slow contenders cost ~m backward passes
    rounds_small_m: tuple[int, int] = (3, 25)
    rounds_large_m: tuple[int, int] = (1, 5)
    large_m: int = 40
    solver_repeats: int = 60
    memory: bool = True
    seed: int = 0


QUICK = Settings(
    hidden=16,
    samples_per_task=4,
    partitioned_tasks=(3,),
    cnn_batch=4,
    cnn_width=16,
    cnn_feature=8,
    shared_tasks=(3,),
    solver_tasks=(4,),
    solver_dim=20,
    rounds_small_m=(1, 2),
    rounds_large_m=(1, 2),
    solver_repeats=2,
)

# ---------------------------------------------------------------------------------------- models


class TaskConditionedMLP(nn.Module):
    """The MT-SAC actor body: ``[observation ‖ one-hot task] → 3×hidden ReLU → out``."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SharedTrunkCNN(nn.Module):
    """A LeNet-style trunk (2 conv + 2 linear; most parameters in the linears) with m linear heads."""

    def __init__(self, num_tasks: int, width: int, feature: int, classes: int = 10) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(1, 16, 5),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Conv2d(16, 32, 5),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, width),
            nn.ReLU(),
            nn.Linear(width, feature),
            nn.ReLU(),
        )
        self.heads = nn.ModuleList(nn.Linear(feature, classes) for _ in range(num_tasks))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        z = self.trunk(x)
        return z, [head(z) for head in self.heads]


def count(params: Sequence[Tensor] | nn.Module) -> int:
    items = params.parameters() if isinstance(params, nn.Module) else params
    return sum(p.numel() for p in items)


# ---------------------------------------------------------------------------------------- contenders


def _adam(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=3e-4)


def partitioned_contenders(
    m: int, s: Settings, device: torch.device
) -> tuple[list[Contender], dict[str, Any]]:
    """Part (i): the task-conditioned MLP on a task-partitioned batch (task-major order)."""
    gen = torch.Generator().manual_seed(s.seed)
    n = s.samples_per_task
    task_ids = torch.arange(m).repeat_interleave(n)
    obs = torch.randn(m * n, s.obs_dim, generator=gen)
    x = torch.cat([obs, F.one_hot(task_ids, m).float()], dim=1).to(device)
    # per-task target offsets make the tasks pull the shared weights in different directions
    y = torch.randn(m, 1, s.action_dim, generator=gen) + 0.3 * torch.randn(
        m, n, s.action_dim, generator=gen
    )
    y = y.reshape(m * n, s.action_dim).to(device)
    task_ids = task_ids.to(device)
    layout = TaskBatch.balanced(m, n, device=device)
    torch.manual_seed(s.seed)
    base = TaskConditionedMLP(s.obs_dim + m, s.hidden, s.action_dim).to(device)

    def loss_fn(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return ((model(x) - y) ** 2).mean(dim=1)

    def contender(
        name: str, note: str, make: Callable[[nn.Module], Callable[[], Any]]
    ) -> Contender:
        model = copy.deepcopy(base)
        return Contender(name, make(model), _adam(model), note)

    def raw(model: nn.Module) -> Callable[[], Any]:
        return lambda: loss_fn(model, x, y).view(m, n).mean(dim=1).sum().backward()

    def mtb(method: str, by_ids: bool = False, **kw: Any) -> Callable[[nn.Module], Any]:
        def make(model: nn.Module) -> Callable[[], Any]:
            if method == "pcgrad":
                kw.setdefault("seed", s.seed)
            mtl = MultiTaskBackward(model, method, num_tasks=m, **kw)
            if by_ids:
                return lambda: mtl.backward_partitioned(loss_fn, x, y, task_ids=task_ids)
            return lambda: mtl.backward_partitioned(loss_fn, x, y, layout=layout)

        return make

    def textbook(model: nn.Module) -> Callable[[], Any]:
        tb = TextbookPCGrad(list(model.parameters()), reduction="sum", seed=s.seed)
        return lambda: tb.backward(list(loss_fn(model, x, y).view(m, n).mean(dim=1)))

    lazy = {"check_finite": "lazy"}
    out = [
        contender(RAW, "one backward of Σ L_i, written by hand", raw),
        contender(UNITARY, "backward_partitioned(layout=...), method 'sum'", mtb("sum", **lazy)),
        contender(TEXTBOOK, "m × backward(retain_graph) + Python loop", textbook),
        contender(
            OURS_VMAP,
            "backward_partitioned(layout=...), check_finite='lazy'",
            mtb("pcgrad", **lazy),
        ),
        contender(
            OURS_IDS,
            "backward_partitioned(task_ids=...), default eager finite check",
            mtb("pcgrad", by_ids=True),
        ),
        contender(
            "PCGrad (ours, loop)",
            "backward_partitioned(layout=...), strategy='loop'",
            mtb("pcgrad", strategy="loop", **lazy),
        ),
    ]
    info = {
        "part": "task-partitioned",
        "model": f"MLP {s.obs_dim}+{m} → 3×{s.hidden} ReLU → {s.action_dim}",
        "m": m,
        "batch": m * n,
        "samples_per_task": n,
        "d_shared": count(base),
        "d_total": count(base),
    }
    return out, info


def shared_contenders(
    m: int, s: Settings, device: torch.device
) -> tuple[list[Contender], dict[str, Any]]:
    """Part (ii): the CNN trunk with m heads on a shared-input batch."""
    gen = torch.Generator().manual_seed(s.seed)
    x = torch.randn(s.cnn_batch, 1, 28, 28, generator=gen).to(device)
    ys = torch.randint(0, 10, (m, s.cnn_batch), generator=gen).to(device)
    torch.manual_seed(s.seed)
    base = SharedTrunkCNN(m, s.cnn_width, s.cnn_feature).to(device)

    def forward(model: SharedTrunkCNN) -> tuple[Tensor, list[Tensor]]:
        """The representation and the m task losses as a list of scalars, which every contender is
        given (each task's backward then runs through its own head only)."""
        z, logits = model(x)
        return z, [F.cross_entropy(lg, y) for lg, y in zip(logits, ys, strict=True)]

    def contender(
        name: str, note: str, make: Callable[[SharedTrunkCNN], Callable[[], Any]]
    ) -> Contender:
        model = copy.deepcopy(base)
        return Contender(name, make(model), _adam(model), note)

    def raw(model: SharedTrunkCNN) -> Callable[[], Any]:
        return lambda: torch.stack(forward(model)[1]).sum().backward()

    def mtb(method: str, rep: bool = False, stack: bool = False) -> Callable[..., Any]:
        def make(model: SharedTrunkCNN) -> Callable[[], Any]:
            kw: dict[str, Any] = {"seed": s.seed} if method == "pcgrad" else {}
            mtl = MultiTaskBackward(model, method, shared=model.trunk, check_finite="lazy", **kw)

            def run() -> Any:
                z, losses = forward(model)
                given: Any = torch.stack(losses) if stack else losses
                return mtl.backward(given, representation=z if rep else None)

            return run

        return make

    def textbook(model: SharedTrunkCNN) -> Callable[[], Any]:
        # shared= : project the trunk only and give each head its own gradient, as gradsurgery
        # does, so both compute the same update (the ports flatten the heads too)
        tb = TextbookPCGrad(
            list(model.parameters()),
            reduction="sum",
            seed=s.seed,
            shared=list(model.trunk.parameters()),
        )
        return lambda: tb.backward(forward(model)[1])

    out = [
        contender(RAW, "one backward of Σ L_i, written by hand", raw),
        contender(UNITARY, "mtl.backward(losses) with method 'sum'", mtb("sum")),
        contender(TEXTBOOK, "m × backward(retain_graph) + Python loop", textbook),
        contender(OURS_EXACT, "mtl.backward(losses)", mtb("pcgrad")),
        contender(
            OURS_REPR,
            "mtl.backward(losses, representation=z): approximate, MGDA-UB style",
            mtb("pcgrad", rep=True),
        ),
        contender(
            STACKED,
            "as above, the losses passed as one stacked (m,) tensor instead of a list",
            mtb("pcgrad", rep=True, stack=True),
        ),
    ]
    info = {
        "part": "shared-input",
        "model": (
            f"CNN 1×28×28 → conv5(16) → conv5(32) → {s.cnn_width} → {s.cnn_feature}, "
            f"{m} linear heads"
        ),
        "m": m,
        "batch": s.cnn_batch,
        "d_shared": count(base.trunk),
        "d_total": count(base),
        "representation_dim": s.cnn_feature,
    }
    return out, info


# ---------------------------------------------------------------------------------------- solvers


def conflicting_jacobian(m: int, d: int, seed: int) -> Tensor:
    """``m × d`` rows around a common direction, about a third of them pointing against it."""
    gen = torch.Generator().manual_seed(seed)
    common = torch.randn(d, generator=gen)
    signs = torch.where(torch.rand(m, generator=gen) < 0.35, -1.0, 1.0)
    scales = torch.rand(m, 1, generator=gen) * 2 + 0.1  # unequal magnitudes
    return scales * (torch.randn(m, d, generator=gen) + signs[:, None] * common)


class _SolverCall:
    """Calls a method on a fixed step (its own step counter advancing), syncing on CUDA."""

    def __init__(
        self,
        methods: dict[str, Any],
        losses: Tensor,
        tasks: Tensor,
        gramian: Tensor,
        jacobian: TaskJacobian,
        device: torch.device,
    ) -> None:
        self.methods, self.losses, self.tasks = methods, losses, tasks
        self.gramian, self.jacobian, self.device = gramian, jacobian, device
        self.steps = dict.fromkeys(methods, 0)

    def __call__(self, name: str) -> Any:
        method = self.methods[name]
        step = TaskStep(
            losses=self.losses,
            tasks=self.tasks,
            num_tasks=self.losses.shape[0],
            step=self.steps[name],
            gramian=self.gramian,
            jacobian=self.jacobian if method.requires == "jacobian" else None,
            live_losses=None,
        )
        self.steps[name] += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = method(step)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return out


def solver_overhead(s: Settings, device: torch.device) -> dict[str, Any]:
    """Time of each registered method's own forward on an m×m Gramian, in rounds."""
    names = method_names()
    results: dict[str, Any] = {"methods": {}, "skipped": {}, "d": s.solver_dim}
    for m in s.solver_tasks:
        jac_matrix = conflicting_jacobian(m, s.solver_dim, s.seed + m).to(device)
        jacobian = TaskJacobian([jac_matrix])
        gramian = jacobian.gramian()
        losses = torch.rand(m, generator=torch.Generator().manual_seed(m)).to(device) + 0.5
        tasks = torch.arange(m, device=device)
        methods: dict[str, Any] = {}
        for name in names:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    methods[name] = create_method(name).to(device)
            except Exception as e:
                results["skipped"].setdefault(name, f"construct: {type(e).__name__}: {e}")
        call = _SolverCall(methods, losses, tasks, gramian, jacobian, device)
        alive = []
        for name in methods:
            try:
                for _ in range(3):
                    call(name)
                alive.append(name)
            except Exception as e:
                results["skipped"].setdefault(name, f"forward: {type(e).__name__}: {e}")
        samples: dict[str, list[float]] = {name: [] for name in alive}
        rng = random.Random(s.seed)
        for _ in range(s.solver_repeats):
            rng.shuffle(alive)
            for name in alive:
                t0 = time.perf_counter()
                call(name)
                samples[name].append(time.perf_counter() - t0)
        for name in sorted(samples):
            q1, med, q3 = quartiles(samples[name])
            peak = (
                profiled_peak(lambda name=name, call=call: call(name))
                if device.type == "cpu"
                else None
            )
            with count_ops() as k:
                call(name)
            entry = results["methods"].setdefault(
                name,
                {
                    "requires": methods[name].requires,
                    "paper": method_info(name).paper,
                    "by_m": {},
                },
            )
            entry["by_m"][str(m)] = {
                "samples_ms": [1e3 * t for t in samples[name]],
                "median_ms": 1e3 * med,
                "q1_ms": 1e3 * q1,
                "q3_ms": 1e3 * q3,
                "peak_bytes": peak,
                "launches": k.launches,
                "syncs": k.syncs,
                "host_ops": k.host_ops,
                "gramian_bytes": m * m * gramian.element_size(),
                "jacobian_bytes": m * s.solver_dim * gramian.element_size(),
            }
    return results


# ---------------------------------------------------------------------------------------- breakdown


def pcgrad_breakdown(m: int, s: Settings, device: torch.device, repeats: int) -> dict[str, float]:
    """Median ms of each phase of our task-partitioned PCGrad step, next to the unitary step.

    Phases are timed one after another in the same loop iteration (no overlap), with the library's
    public pieces: the vmap engine, ``TaskJacobian.gramian``, the method, ``combine`` and ``.grad``
    writes, Adam. ``MultiTaskBackward`` overhead is the full step minus the sum of the phases.
    """
    from gradsurgery.engines.task_partitioned import TaskPartitionedJacobian

    contenders, _ = partitioned_contenders(m, s, device)
    by_name = {c.name: c for c in contenders}
    gen = torch.Generator().manual_seed(s.seed)
    n = s.samples_per_task
    task_ids = torch.arange(m).repeat_interleave(n).to(device)
    obs = torch.randn(m * n, s.obs_dim, generator=gen)
    x = torch.cat([obs, F.one_hot(task_ids.cpu(), m).float()], dim=1).to(device)
    y = torch.randn(m * n, s.action_dim, generator=gen).to(device)
    torch.manual_seed(s.seed)
    model = TaskConditionedMLP(s.obs_dim + m, s.hidden, s.action_dim).to(device)
    opt = _adam(model)
    engine = TaskPartitionedJacobian(model, "vmap")
    method = create_method("pcgrad", seed=s.seed)

    def loss_fn(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return ((model(x) - y) ** 2).mean(dim=1)

    phases: dict[str, list[float]] = {
        k: []
        for k in (
            "unitary step (raw)",
            "unitary forward+backward (raw)",
            "PCGrad step (MultiTaskBackward, vmap)",
            "group batch by task ids (TaskBatch; layout=: 0)",
            "vmap engine: forward + per-task grads",
            "Gramian (TaskJacobian.gramian)",
            "method forward (pcgrad weights)",
            "combine + write .grad",
            "Adam step",
        )
    }

    def timed(key: str, fn: Callable[[], Any]) -> Any:
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        phases[key].append(time.perf_counter() - t0)
        return out

    raw_model = copy.deepcopy(model)
    raw_opt = _adam(raw_model)

    def raw_fb() -> None:
        losses = loss_fn(raw_model, x, y).view(m, n).mean(dim=1)
        losses.sum().backward()

    for it in range(repeats + 2):
        if it == 2:
            for v in phases.values():
                v.clear()
        timed("unitary step (raw)", by_name[RAW].step)
        timed("PCGrad step (MultiTaskBackward, vmap)", by_name[OURS_VMAP].step)
        raw_opt.zero_grad(set_to_none=True)
        timed("unitary forward+backward (raw)", raw_fb)
        opt.zero_grad(set_to_none=True)
        groups = timed(
            "group batch by task ids (TaskBatch; layout=: 0)",
            lambda: TaskBatch(task_ids, m, torch.float32),
        )
        grads = timed(
            "vmap engine: forward + per-task grads",
            lambda groups=groups: engine(loss_fn, (x, y), groups, m),
        )
        gram = timed("Gramian (TaskJacobian.gramian)", grads.jacobian.gramian)
        step = TaskStep(losses=grads.losses, tasks=grads.tasks, num_tasks=m, step=it, gramian=gram)
        agg = timed("method forward (pcgrad weights)", lambda step=step: method(step))

        def write(agg: Any = agg, grads: Any = grads) -> None:
            for p, g in zip(model.parameters(), grads.jacobian.combine(agg.weights), strict=True):
                p.grad = g

        timed("combine + write .grad", write)
        timed("Adam step", opt.step)
    return {k: 1e3 * statistics.median(v) for k, v in phases.items()}


# ---------------------------------------------------------------------------------------- report


def _events(names: Sequence[str]) -> str:
    """``a ×3, b`` for a list of event names."""
    counts = Counter(names)
    return ", ".join(f"{k} ×{v}" if v > 1 else k for k, v in counts.items())


def _fmt_mb(b: int | None) -> str:
    return "n/a" if b is None else f"{b / 2**20:.1f}"


def run_part(
    label: str,
    contenders: list[Contender],
    info: dict[str, Any],
    s: Settings,
    device: torch.device,
) -> dict[str, Any]:
    m = info["m"]
    warmup, rounds = s.rounds_large_m if m >= s.large_m else s.rounds_small_m
    t0 = time.perf_counter()
    samples = time_in_rounds(contenders, warmup, rounds, device, s.seed + m)
    wall = time.perf_counter() - t0
    counts = {c.name: count_step(c) for c in contenders}
    memory = {c.name: (peak_step_memory(c, device) if s.memory else None) for c in contenders}
    ref, raw = samples[UNITARY], samples[RAW]
    ref_med, raw_med = statistics.median(ref), statistics.median(raw)
    raw_counts = counts[RAW]
    methods: dict[str, Any] = {}
    for c in contenders:
        xs = samples[c.name]
        q1, med, q3 = quartiles(xs)
        paired = [a / b for a, b in zip(xs, raw, strict=True)]
        pq1, pmed, pq3 = quartiles(paired)
        k = counts[c.name]
        methods[c.name] = {
            "note": c.note,
            "samples_ms": [1e3 * t for t in xs],
            "median_ms": 1e3 * med,
            "q1_ms": 1e3 * q1,
            "q3_ms": 1e3 * q3,
            "ratio_to_unitary": med / ref_med,
            "ratio_to_raw": med / raw_med,
            "paired_ratio_to_raw_median": pmed,
            "paired_ratio_to_raw_q1": pq1,
            "paired_ratio_to_raw_q3": pq3,
            "counts": k,
            "ops_ratio_to_raw": k["ops"] / raw_counts["ops"],
            "launches_ratio_to_raw": k["launches"] / raw_counts["launches"],
            "syncs_added": k["syncs"] - raw_counts["syncs"],
            "peak_extra_bytes": memory[c.name],
        }
    mem_ref = memory[RAW]
    print(
        f"\n== {label}: {info['model']}; m = {m}, batch {info['batch']}, "
        f"d_shared = {info['d_shared']:,}; {rounds} rounds after {warmup} warm-up ({wall:.0f} s)"
    )
    header = (
        f"{'method':<34} {'ms/step':>8} {'IQR':>15} {'× raw':>6} {'paired':>13} {'× sum':>6}"
        f" {'ops':>5} {'×raw':>5} {'launch':>6} {'×raw':>5} {'syncs':>5} {'peak MB':>8} {'×raw':>5}"
    )
    print(header)
    print("-" * len(header))
    for name, r in methods.items():
        mem = r["peak_extra_bytes"]
        mem_ratio = f"{mem / mem_ref:.2f}" if mem is not None and mem_ref else "n/a"
        iqr = f"{r['q1_ms']:.1f}–{r['q3_ms']:.1f}"
        paired = (
            f"{r['paired_ratio_to_raw_median']:.2f}({r['paired_ratio_to_raw_q1']:.2f}–"
            f"{r['paired_ratio_to_raw_q3']:.2f})"
        )
        k = r["counts"]
        print(
            f"{name:<34} {r['median_ms']:>8.1f} {iqr:>15} {r['ratio_to_raw']:>6.2f} {paired:>13} "
            f"{r['ratio_to_unitary']:>6.2f} {k['ops']:>5} {r['ops_ratio_to_raw']:>5.2f} "
            f"{k['launches']:>6} {r['launches_ratio_to_raw']:>5.2f} {k['syncs']:>5} "
            f"{_fmt_mb(mem):>8} {mem_ratio:>5}"
        )
    print(
        "  ops/launches: the whole step (Adam included); syncs: host synchronisations of the "
        "forward+backward part (not the optimizer's reads of its CPU step counters)"
    )
    for name, r in methods.items():
        if r["counts"]["sync_events"]:
            print(f"  syncs of {name}: {_events(r['counts']['sync_events'])}")
    elem = 4  # float32
    analytic = {
        "jacobian_bytes_m_x_d_shared": m * info["d_shared"] * elem,
        "jacobian_bytes_m_x_d_total": m * info["d_total"] * elem,
        "gramian_bytes": m * m * elem,
    }
    print(
        f"  analytic: J (m × d_total, float32) = {_fmt_mb(analytic['jacobian_bytes_m_x_d_total'])} "
        f"MB; Gramian = {analytic['gramian_bytes']} bytes"
    )
    return {
        **info,
        "warmup": warmup,
        "rounds": rounds,
        "wall_s": wall,
        "methods": methods,
        "analytic_memory": analytic,
    }


def print_solvers(res: dict[str, Any], ms: Sequence[int]) -> None:
    print(
        f"\n== solver overhead: method forward on an m×m Gramian (J: m × {res['d']}, random, "
        "with conflicts)"
    )
    print(
        "  launches: device kernels of one call (host-side solves: 0 plus the transfers); "
        "syncs: host synchronisations; peak B: bytes the forward allocates at its peak"
    )
    cols = "".join(
        f"{'m=' + str(m) + ' ms':>11}{'× pcgrad':>9}{'launch':>7}{'sync':>5}{'peak B':>9}"
        for m in ms
    )
    header = f"{'method':<16}{'needs':>9}" + cols
    print(header)
    print("-" * len(header))
    pc = res["methods"].get("pcgrad", {}).get("by_m", {})
    for name, entry in res["methods"].items():
        row = f"{name:<16}{entry['requires']:>9}"
        for m in ms:
            r = entry["by_m"].get(str(m))
            if r is None:
                row += f"{'—':>11}{'':>9}{'':>7}{'':>5}{'':>9}"
                continue
            base = pc.get(str(m), {}).get("median_ms")
            ratio = f"{r['median_ms'] / base:.2f}" if base else "n/a"
            peak = "n/a" if r["peak_bytes"] is None else str(r["peak_bytes"])
            row += f"{r['median_ms']:>11.3f}{ratio:>9}{r['launches']:>7}{r['syncs']:>5}{peak:>9}"
        print(row)
    for name, why in res["skipped"].items():
        print(f"  skipped {name}: {why}")


def check_targets(parts: dict[str, Any], device: torch.device) -> list[dict[str, Any]]:
    """The speed issue's targets for this device, each with the measured value and a verdict.

    Time targets are ratios to the raw ``loss.backward()`` step (CPU targets on a CPU, GPU targets
    on CUDA); the proxy targets (ops, syncs) hold on any device.
    """
    out = []
    gpu = device.type == "cuda"

    def add(what: str, value: float, limit: float | None) -> None:
        met = None if limit is None else value <= limit
        out.append({"target": what, "measured": value, "limit": limit, "met": met})

    for key, part in parts.items():
        meths, m = part["methods"], part["m"]
        if part["part"] == "task-partitioned":
            ours, unit = meths[OURS_VMAP], meths[UNITARY]
            limit = (1.3 if m <= 10 else 1.5) if gpu else (1.2 if m <= 10 else 1.3)
            add(f"{key}: {OURS_VMAP} step ≤ {limit}× raw", ours["ratio_to_raw"], limit)
            add(f"{key}: MultiTaskBackward 'sum' ≤ 1.05× raw", unit["ratio_to_raw"], 1.05)
            add(f"{key}: 'sum' ops ≤ 1.1× raw ops", unit["ops_ratio_to_raw"], 1.1)
            add(f"{key}: PCGrad ops ≤ 2× raw ops", ours["ops_ratio_to_raw"], 2.0)
            add(f"{key}: 'sum' host syncs added (layout given)", unit["syncs_added"], 0)
            add(
                f"{key}: PCGrad host syncs added (layout given; 1 = the host solve)",
                ours["syncs_added"],
                1,
            )
            add(f"{key}: textbook PCGrad × raw (info)", meths[TEXTBOOK]["ratio_to_raw"], None)
        else:
            exact, tb = meths[OURS_EXACT]["median_ms"], meths[TEXTBOOK]["median_ms"]
            add(
                f"{key}: exact PCGrad / textbook (≤ 0.35 at m = 40 on a GPU)",
                exact / tb,
                (0.35 if gpu and m >= 40 else 1.0),
            )
            add(
                f"{key}: representation PCGrad ≤ 1.3× raw",
                meths[OURS_REPR]["ratio_to_raw"],
                1.3,
            )
            add(f"{key}: 'sum' ≤ 1.05× raw", meths[UNITARY]["ratio_to_raw"], 1.05)
    return out


def _parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Settings, torch.device]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few steps (smoke run)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", default="runs/bench/gradient_cost.json", help="JSON output path")
    parser.add_argument(
        "--parts", default="partitioned,shared,solver", help="comma list of parts to run"
    )
    parser.add_argument("--rounds", type=int, default=None, help="override the timed rounds")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory steps")
    parser.add_argument("--breakdown", action="store_true", help="time the phases of our PCGrad")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    s = copy.deepcopy(QUICK if args.quick else Settings())
    s.seed = args.seed
    s.memory = not args.no_memory
    if args.rounds is not None:
        s.rounds_small_m = (s.rounds_small_m[0], args.rounds)
        s.rounds_large_m = (s.rounds_large_m[0], args.rounds)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    return args, s, device


def _warn_if_loaded(machine: dict[str, Any]) -> None:
    load = machine.get("load_average_at_start")
    if load and os.cpu_count() and load[0] > os.cpu_count():
        print(
            f"WARNING: load average {load[0]:.1f} exceeds the {os.cpu_count()} CPUs: other processes "
            "compete for the cores; absolute times are inflated and noisier (ratios less so)"
        )


def _run_parts(parts: set[str], s: Settings, device: torch.device, result: dict[str, Any]) -> None:
    if "partitioned" in parts:
        for m in s.partitioned_tasks:
            contenders, info = partitioned_contenders(m, s, device)
            result["parts"][f"partitioned_m{m}"] = run_part(
                "(i) task-partitioned", contenders, info, s, device
            )
    if "shared" in parts:
        for m in s.shared_tasks:
            contenders, info = shared_contenders(m, s, device)
            result["parts"][f"shared_m{m}"] = run_part(
                "(ii) shared-input", contenders, info, s, device
            )
    if "solver" in parts:
        result["solver"] = solver_overhead(s, device)
        print_solvers(result["solver"], s.solver_tasks)


def _run_breakdown(s: Settings, device: torch.device, quick: bool) -> dict[str, Any]:
    out = {}
    for m in s.partitioned_tasks:
        ph = pcgrad_breakdown(m, s, device, repeats=5 if quick else 20)
        out[f"partitioned_m{m}"] = ph
        print(f"\n== breakdown of our PCGrad step (task-partitioned, m = {m}), median ms")
        for k, v in ph.items():
            print(f"  {k:<40}{v:>9.2f}")
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args, s, device = _parse(argv)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    t_start = time.perf_counter()
    result: dict[str, Any] = {
        "config": {**asdict(s), "device": str(device), "quick": args.quick},
        "machine": machine_info(device),
        "parts": {},
    }
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{result['machine']['cpu']}, device {device}"
    )
    _warn_if_loaded(result["machine"])
    _run_parts(parts, s, device, result)
    if args.breakdown:
        result["breakdown"] = _run_breakdown(s, device, args.quick)
    result["targets"] = check_targets(result["parts"], device) if not args.quick else []
    if result["targets"]:
        print("\n== targets from the issue")
        for t in result["targets"]:
            verdict = {True: "MET", False: "MISSED", None: "info"}[t["met"]]
            print(f"  [{verdict:>6}] {t['target']}: {t['measured']:.2f}")
    result["wall_s"] = time.perf_counter() - t_start
    if hasattr(os, "getloadavg"):
        result["machine"]["load_average_at_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {out} ({result['wall_s']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
