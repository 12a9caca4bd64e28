"""Aggregate finished ``gradsurgery rl`` runs over seeds: the method-comparison table and curves.

A *study* is a set of run directories (each holding the ``result.json`` that
:func:`gradsurgery.rl.runner.train_rl` writes) that differ only in the method and the seed. The
setting every run must share is the suite's task list and the resolved preset, except the agent's
``method``, ``method_kwargs``, ``seed``, ``device`` and ``log_per_task`` (:func:`setting_of`); runs of different settings are refused with
the fields that differ, because a success rate only compares with one measured under the same
protocol and budget.

For every method the study reports, over its seeds (mean ± sample std, and the Student-t 95 %
interval of :mod:`gradsurgery.runtime.stats`):

* ``final_mean_success`` — the last evaluation's success rate averaged over tasks;
* ``best_mean_success`` — the best such average over the evaluation series (the old papers'
  number; it is biased upwards by the number of evaluations, the same for every method of a study);
* ``final_mean_return`` and the wall-clock time of the run (minutes; only comparable between runs
  that shared the machine the same way);
* per task, the final success rate averaged over seeds;
* when the runs logged gradient diagnostics (``gradsurgery rl --diagnose-every N``), the fraction
  of conflicting task pairs, the mean cosine and the largest/smallest gradient-norm ratio of the
  critic's and the actor's task gradients.

Which of the two success numbers a preset reports (``preset.report``) is marked in the table.
Runs that did not finish (``status != "complete"``) are left out and listed.

Example (two hand-made results of one setting):
    >>> import json, tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> def fake(name, method, seed, successes):
    ...     evals = [{"step": 100 * (k + 1), "mean_success": sum(s) / 2, "mean_return": 1.0,
    ...               "success": {"a": s[0], "b": s[1]}, "return": {"a": 1.0, "b": 1.0},
    ...               "episodes": 1} for k, s in enumerate(successes)]
    ...     result = {"status": "complete", "suite": "a,b", "tasks": ["a", "b"], "method": method,
    ...               "seed": seed, "preset": {"name": "p", "report": "best_mean_success",
    ...               "agent": {"method": method, "method_kwargs": {}}, "budget": {"steps": 200}},
    ...               "steps": 200, "wall_s": 60.0, "evaluations": evals}
    ...     (root / name).mkdir()
    ...     (root / name / "result.json").write_text(json.dumps(result))
    ...     return root / name
    >>> runs = [fake("s0", "sum", 0, [(0, 1), (1, 1)]), fake("s1", "sum", 1, [(1, 1), (0, 1)])]
    >>> study = summarize_study(load_runs(runs))
    >>> row = study["methods"]["sum"]
    >>> row["seeds"], row["final_mean_success"]["mean"], row["best_mean_success"]["mean"]
    ([0, 1], 0.75, 1.0)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gradsurgery.runtime.checkpoint import atomic_write_json, atomic_write_text
from gradsurgery.runtime.stats import clip_ci, mean_ci
from gradsurgery.runtime.values import differences

__all__ = [
    "RunRecord",
    "StudyError",
    "find_run_dirs",
    "load_runs",
    "setting_of",
    "summarize_study",
    "write_study_report",
]

#: Agent fields that may differ between the runs of one study: what is compared (the method and
#: its arguments), the seed, where it ran (the device: the same algorithm; wall times then do not
#: compare) and what is logged.
_COMPARED_AGENT_FIELDS = ("method", "method_kwargs", "seed", "device", "log_per_task")


class StudyError(ValueError):
    """The runs cannot be compared (different settings, duplicates, unreadable results)."""


@dataclass(frozen=True)
class RunRecord:
    """One finished run: where it is and its ``result.json``."""

    path: Path
    result: dict[str, Any]

    @property
    def label(self) -> str:
        """The method with its non-default arguments, e.g. ``cagrad(c=0.4)``."""
        kwargs = self.result.get("preset", {}).get("agent", {}).get("method_kwargs") or {}
        method = str(self.result["method"])
        if not kwargs:
            return method
        return f"{method}({', '.join(f'{k}={v}' for k, v in sorted(kwargs.items()))})"

    @property
    def seed(self) -> int:
        return int(self.result["seed"])

    @property
    def complete(self) -> bool:
        return self.result.get("status") == "complete"


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Every directory at or below ``paths`` that holds a ``result.json`` (sorted)."""
    found: set[Path] = set()
    for p in map(Path, paths):
        if not p.exists():
            raise StudyError(f"{p} does not exist")
        if (p / "result.json").is_file():
            found.add(p)
        found.update(r.parent for r in p.rglob("result.json"))
    return sorted(found)


def load_runs(paths: Iterable[str | Path]) -> list[RunRecord]:
    """Read the ``result.json`` of every run at or below ``paths``."""
    records = []
    for d in find_run_dirs(paths):
        try:
            result = json.loads((d / "result.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise StudyError(f"cannot read {d / 'result.json'}: {e}") from e
        missing = [
            k for k in ("method", "seed", "tasks", "preset", "evaluations") if k not in result
        ]
        if missing:
            raise StudyError(f"{d / 'result.json'} is not an rl result (missing {missing})")
        records.append(RunRecord(d, result))
    if not records:
        raise StudyError("no result.json found under " + ", ".join(map(str, paths)))
    return records


def setting_of(result: dict[str, Any]) -> dict[str, Any]:
    """What the runs of one study must share: the tasks and the preset, less the method and seed."""
    preset = json.loads(json.dumps(result["preset"]))
    agent = preset.get("agent", {})
    for key in _COMPARED_AGENT_FIELDS:
        agent.pop(key, None)
    overrides = preset.get("overrides", {})
    if isinstance(overrides.get("agent"), dict):
        for key in _COMPARED_AGENT_FIELDS:
            overrides["agent"].pop(key, None)
    return {"tasks": list(result["tasks"]), "preset": preset}


def _check_comparable(records: Sequence[RunRecord]) -> dict[str, Any]:
    reference = setting_of(records[0].result)
    for r in records[1:]:
        diff = differences(reference, setting_of(r.result))
        if diff:
            shown = "; ".join(diff[:6]) + (f"; ... ({len(diff)} in all)" if len(diff) > 6 else "")
            raise StudyError(
                f"{r.path} was run under a different setting than {records[0].path}: {shown}"
            )
    seen: dict[tuple[str, int], Path] = {}
    for r in records:
        key = (r.label, r.seed)
        if key in seen:
            raise StudyError(f"{r.path} and {seen[key]} are both {r.label} seed {r.seed}")
        seen[key] = r.path
    return reference


def _ci(
    values: Sequence[float | None], low: float | None = None, high: float | None = None
) -> dict[str, Any] | None:
    """Mean ± t-interval, the interval cut to ``[low, high]`` (a success rate's [0, 1])."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    return clip_ci(mean_ci(vals), low, high).to_dict() if vals else None


def _series(result: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps, mean success and per-task success matrix of a run's evaluations."""
    tasks = result["tasks"]
    evals = result["evaluations"]
    steps = np.array([e["step"] for e in evals], dtype=np.int64)
    per_task = np.array([[e["success"][t] for t in tasks] for e in evals], dtype=np.float64)
    per_task = per_task.reshape(len(evals), len(tasks))
    return steps, per_task.mean(axis=1), per_task


def summarize_study(records: Sequence[RunRecord]) -> dict[str, Any]:
    """The study's numbers: per method over seeds, and per task (see the module docstring)."""
    complete = [r for r in records if r.complete]
    incomplete = [
        {"path": str(r.path), "status": r.result.get("status"), "steps": r.result.get("steps")}
        for r in records
        if not r.complete
    ]
    if not complete:
        raise StudyError("none of the runs finished (status 'complete')")
    setting = _check_comparable(complete)
    tasks = setting["tasks"]
    by_method: dict[str, list[RunRecord]] = {}
    for r in sorted(complete, key=lambda r: (r.label, r.seed)):
        by_method.setdefault(r.label, []).append(r)
    methods: dict[str, Any] = {}
    for label, runs in by_method.items():
        finals, bests, returns, walls = [], [], [], []
        per_task_final = []
        curves = []
        for r in runs:
            steps, mean, per_task = _series(r.result)
            if len(steps) == 0:
                raise StudyError(f"{r.path} finished without any evaluation")
            finals.append(float(mean[-1]))
            bests.append(float(mean.max()))
            returns.append(r.result["evaluations"][-1].get("mean_return"))
            walls.append(r.result.get("wall_s"))
            per_task_final.append(per_task[-1])
            curves.append((steps, mean))
        n_eval = min(len(c[0]) for c in curves)
        curve_steps = np.mean([c[0][:n_eval] for c in curves], axis=0)
        curve = np.array([c[1][:n_eval] for c in curves])
        methods[label] = {
            "seeds": [r.seed for r in runs],
            "runs": [str(r.path) for r in runs],
            "final_mean_success": _ci(finals, 0.0, 1.0),
            "best_mean_success": _ci(bests, 0.0, 1.0),
            "final_mean_return": _ci(returns),
            "wall_min": _ci([w / 60.0 if w is not None else None for w in walls], 0.0),
            "per_seed": {
                str(r.seed): {"final_mean_success": f, "best_mean_success": b}
                for r, f, b in zip(runs, finals, bests, strict=True)
            },
            "final_success_per_task": dict(
                zip(tasks, np.mean(per_task_final, axis=0).tolist(), strict=True)
            ),
            "diagnostics": _diagnostics_over_seeds(runs),
            "curve": {
                "steps": curve_steps.tolist(),
                "mean": curve.mean(axis=0).tolist(),
                "std": (curve.std(axis=0, ddof=1) if len(runs) > 1 else 0 * curve[0]).tolist(),
            },
        }
    return {
        "setting": setting,
        "suite": complete[0].result.get("suite"),
        "report": setting["preset"].get("report"),
        "methods": methods,
        "incomplete": incomplete,
    }


_DIAG_FIELDS = ("mean_fraction_conflicting", "mean_cosine", "mean_grad_norm_ratio")


def _diagnostics_over_seeds(runs: Sequence[RunRecord]) -> dict[str, Any] | None:
    """Per diagnosed loss (critic, actor), each run's mean conflict statistics over seeds."""
    per_run = [r.result.get("diagnostics") for r in runs]
    if not any(per_run):
        return None
    out: dict[str, Any] = {}
    losses = sorted({loss for d in per_run if d for loss in d})
    for loss in losses:
        out[loss] = {
            f: _ci([(d or {}).get(loss, {}).get(f) for d in per_run]) for f in _DIAG_FIELDS
        }
        out[loss]["runs"] = sum(1 for d in per_run if d and loss in d)
    return out


def _cell(ci: dict[str, Any] | None, scale: float = 100.0, digits: int = 1) -> str:
    if ci is None:
        return "–"
    if ci["std"] is None:
        return f"{ci['mean'] * scale:.{digits}f} (n=1)"
    return (
        f"{ci['mean'] * scale:.{digits}f} ± {ci['std'] * scale:.{digits}f} "
        f"[{ci['low'] * scale:.{digits}f}, {ci['high'] * scale:.{digits}f}]"
    )


def _markdown(study: dict[str, Any]) -> str:
    preset = study["setting"]["preset"]
    budget = preset.get("budget", {})
    report = study["report"]
    tasks = study["setting"]["tasks"]
    lines = [
        f"# {study['suite']}: {', '.join(study['methods'])}",
        "",
        f"Preset `{preset.get('name')}` (reports `{report}`), {budget.get('steps', '?'):,} steps "
        f"per task, {len(tasks)} tasks. Cells: mean ± std [Student-t 95 % CI] over seeds, success in %.",
    ]
    overrides = preset.get("overrides") or {}
    if any(overrides.get(k) for k in overrides):
        lines.append(f"Overrides of the preset: `{json.dumps(overrides, sort_keys=True)}`.")
    lines += [
        "",
        "| method | seeds | final mean success | best mean success | final mean return | wall (min) |",
        "|---|---|---|---|---|---|",
    ]
    for label, row in study["methods"].items():
        final = _cell(row["final_mean_success"])
        best = _cell(row["best_mean_success"])
        if report == "final_mean_success":
            final = f"**{final}**"
        elif report == "best_mean_success":
            best = f"**{best}**"
        lines.append(
            f"| {label} | {len(row['seeds'])} | {final} | {best} | "
            f"{_cell(row['final_mean_return'], 1.0)} | {_cell(row['wall_min'], 1.0)} |"
        )
    lines += [
        "",
        f"The preset's reported number is in bold. Per seed ({report.split('_')[0]}):",
        "",
    ]
    key = report if report in ("final_mean_success", "best_mean_success") else "final_mean_success"
    for label, row in study["methods"].items():
        per_seed = ", ".join(
            f"seed {s}: {100 * v[key]:.0f}" for s, v in sorted(row["per_seed"].items())
        )
        lines.append(f"* {label}: {per_seed}")
    labels = list(study["methods"])
    lines += [
        "",
        "Final success per task (%, mean over seeds):",
        "",
        "| task | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for t in tasks:
        cells = [f"{100 * study['methods'][m]['final_success_per_task'][t]:.0f}" for m in labels]
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    diagnosed = {k: v["diagnostics"] for k, v in study["methods"].items() if v["diagnostics"]}
    if diagnosed:
        lines += [
            "",
            "Gradient conflict over the diagnosed updates (`--diagnose-every`; mean over seeds):",
            "",
            "| method | loss | runs | pairs conflicting (%) | mean cosine | max/min grad norm |",
            "|---|---|---|---|---|---|",
        ]
        for label, d in diagnosed.items():
            for loss, row in d.items():
                conflict, cosine, ratio = (row[f] for f in _DIAG_FIELDS)
                lines.append(
                    f"| {label} | {loss} | {row['runs']} | {_cell(conflict, digits=0)} | "
                    f"{_cell(cosine, 1.0, 2)} | {_cell(ratio, 1.0, 1)} |"
                )
    if study["incomplete"]:
        lines += ["", "Left out (not finished):", ""]
        lines += [
            f"* {r['path']} ({r['status']} at step {r['steps']})" for r in study["incomplete"]
        ]
    return "\n".join(lines) + "\n"


_BAND = "band: ±1 std over seeds (cut to [0, 100] %)"


def _plot(study: dict[str, Any], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for label, row in study["methods"].items():
        c = row["curve"]
        steps, mean, std = np.array(c["steps"]), np.array(c["mean"]), np.array(c["std"])
        ax.plot(steps, 100 * mean, label=f"{label} (n={len(row['seeds'])})", linewidth=1.4)
        low, high = np.clip(mean - std, 0.0, 1.0), np.clip(mean + std, 0.0, 1.0)
        ax.fill_between(steps, 100 * low, 100 * high, alpha=0.15, linewidth=0)
    ax.fill_between([], [], [], color="grey", alpha=0.3, linewidth=0, label=_BAND)
    ax.set_xlabel("steps per task")
    ax.set_ylabel("mean success over tasks (%)")
    ax.set_title(f"{study['suite']}, preset {study['setting']['preset'].get('name')}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def write_study_report(paths: Iterable[str | Path], out: str | Path) -> dict[str, Path]:
    """Summarize the runs at or below ``paths`` into ``out``: ``report.md``, ``report.json`` and
    ``mean_success.png`` (mean success over tasks against steps, mean ± std over seeds; the
    legend names the band)."""
    study = summarize_study(load_runs(list(paths)))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return {
        "markdown": atomic_write_text(out / "report.md", _markdown(study)),
        "json": atomic_write_json(out / "report.json", study),
        "plot": _plot(study, out / "mean_success.png"),
    }
