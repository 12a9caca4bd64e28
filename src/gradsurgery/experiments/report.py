"""The comparison report: tables over seeds, Δm%, time, memory, learning curves, diagnostics.

:func:`write_report` reads the ``result.json`` of every planned run and writes

* ``report.json`` — everything below, machine-readable;
* ``report.csv`` — one row per (method, task, metric), plus rows ``task=""`` for ``delta_m%``,
  ``time_per_step_ms``, ``peak_memory_mib``: ``n, mean, std, ci95_low, ci95_high, ci_clipped,
  median, q1, q3`` (the interval for the metrics and Δm%, the median and quartiles for time and
  memory);
* ``report.md`` — the table: one row per method, one column per reported task metric (the spec's
  metrics, e.g. accuracy; fractions shown in %), then Δm%, time per step and peak memory. A metric
  cell is ``mean ± std [95 % CI]`` over seeds, the interval ``mean ± t_{0.975, n−1} · std / √n``
  (Student t, :mod:`.stats`) cut to the metric's possible range (:func:`metric_range`: fractions
  such as accuracy in [0, 1], shown as [0, 100] %; angles in [0, 180]; other lower-is-better
  metrics, errors, ≥ 0), a cut interval marked † and counted in the notes. Time per step and peak
  memory are skewed by a slow or loaded run and bounded below by 0: their cells are the ``median
  [first quartile, third quartile]`` over seeds. Bold: the best mean of each metric column and of
  Δm%, every row tied with it at the printed precision. A diagnostics table follows when the runs
  recorded tragic-triad statistics;
* ``learning_curves.png`` — per task, the first reported metric on the evaluation set against the
  step: mean over seeds with a band of ± one standard deviation over seeds (cut to the metric's
  range), one line per method (the single-task baseline dashed); ``train_loss.png`` — the same for
  each task's training loss (averaged over the steps between evaluations). The legend names the
  band.

Δm% (:func:`gradsurgery.metrics.delta_m`, the "drop" convention of the CAGrad / Nash-MTL / FAMO
tables: lower is better, averaged over all reported metrics). Reference: the single-task baselines
when they were run (each metric averaged over their seeds); otherwise unitary scalarization
(``sum``, else ``mean``) of the same comparison, and the report says so. Δm% is computed per seed
of the method against that averaged reference, then summarized over seeds like the metrics.
Time per step: each run's median (ms); peak memory: each run's (MiB; the measure is named).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradsurgery.data import BenchmarkSpec, benchmark_spec
from gradsurgery.experiments.runner import SINGLE_TASK, RunSpec, read_result
from gradsurgery.metrics import delta_m
from gradsurgery.runtime.checkpoint import atomic_write_json, atomic_write_text
from gradsurgery.runtime.stats import MeanCI, clip_ci, mean_ci, median_iqr

__all__ = ["collect", "metric_range", "summarize", "write_report"]

_PERCENT = {
    "accuracy",
    "error",
    "mIoU",
    "pixel_accuracy",
    "within_11.25",
    "within_22.5",
    "within_30",
}
_ANGLES = {"mean_angle", "median_angle"}
_BAND = "band: ±1 std over seeds"
_DIAG_FIELDS = (
    "mean_fraction_conflicting",
    "fraction_steps_any_conflict",
    "mean_cosine",
    "min_cosine",
    "mean_fraction_condition_a",
    "mean_fraction_both",
)

Results = dict[str, dict[str, float]]


def collect(out: Path, runs: Sequence[RunSpec]) -> dict[str, Any]:
    """Finished results by method and seed: ``{"methods": {m: {seed: result}}, "single": {seed:
    {task: result}}, "missing": [labels]}``."""
    methods: dict[str, dict[int, dict[str, Any]]] = {}
    single: dict[int, dict[str, dict[str, Any]]] = {}
    missing: list[str] = []
    for run in runs:
        res = read_result(out / "runs" / run.relative_dir())
        if not run.single_task:
            methods.setdefault(run.method, {})
        if res is None:
            missing.append(run.label)
            continue
        if run.single_task:
            single.setdefault(run.seed, {})[str(run.task)] = res
        else:
            methods[run.method][run.seed] = res
    return {"methods": methods, "single": single, "missing": missing}


Bounds = tuple[float | None, float | None]


def metric_range(metric: str, higher_is_better: bool) -> Bounds:
    """The values a metric can take, from its definition: the fractions (accuracy, error, mIoU,
    pixel accuracy, the share of normals within an angle) in [0, 1]; the angular errors in
    [0, 180] degrees; any other lower-is-better metric (an absolute or relative error, a loss)
    ≥ 0; otherwise unbounded (None)."""
    if metric in _PERCENT:
        return 0.0, 1.0
    if metric in _ANGLES:
        return 0.0, 180.0
    return (None, None) if higher_is_better else (0.0, None)


def _ci(values: Sequence[float | None], bounds: Bounds = (None, None)) -> dict[str, Any] | None:
    xs = [v for v in values if v is not None and not math.isnan(v)]
    return clip_ci(mean_ci(xs), *bounds).to_dict() if xs else None


def _spread(values: Sequence[float | None]) -> dict[str, Any] | None:
    """Median and quartiles (and the mean) of a run measure over seeds."""
    xs = [v for v in values if v is not None and not math.isnan(v)]
    if not xs:
        return None
    return {**median_iqr(xs).to_dict(), "mean": math.fsum(xs) / len(xs)}


def _mean_results(per_seed: Sequence[Results], spec: BenchmarkSpec) -> Results:
    out: Results = {}
    for task, directions in spec.higher_is_better().items():
        for metric in directions:
            vals = [r[task][metric] for r in per_seed if r.get(task, {}).get(metric) is not None]
            if vals:
                out.setdefault(task, {})[metric] = math.fsum(vals) / len(vals)
    return out


def summarize(collected: dict[str, Any], spec: BenchmarkSpec) -> dict[str, Any]:
    """Statistics over seeds per method (see the module docstring)."""
    directions = spec.higher_is_better()
    task_names = list(spec.task_names)

    # single-task baselines: one combined result per seed that has every task
    single_seeds: dict[int, dict[str, Any]] = {
        seed: by_task
        for seed, by_task in collected["single"].items()
        if set(by_task) >= set(task_names)
    }
    rows: dict[str, dict[int, dict[str, Any]]] = dict(collected["methods"])
    if single_seeds:
        combined: dict[int, dict[str, Any]] = {}
        for seed, by_task in single_seeds.items():
            metrics = {t: by_task[t]["final_metrics"][t] for t in task_names}
            times = [by_task[t]["time_per_step_ms"] for t in task_names]
            mems = [by_task[t]["peak_memory_mib"] for t in task_names]
            combined[seed] = {
                "final_metrics": metrics,
                "time_per_step_ms": math.fsum(times),  # one step of every task's model
                "peak_memory_mib": max(mems),
                "memory_measure": by_task[task_names[0]].get("memory_measure", ""),
                "history": None,
                "diagnostics": None,
            }
        rows = {SINGLE_TASK: combined, **rows}

    reference_label = None
    reference: Results | None = None
    if SINGLE_TASK in rows:
        reference_label = SINGLE_TASK
    else:
        for candidate in ("sum", "mean"):
            if rows.get(candidate):
                reference_label = candidate
                break
    if reference_label is not None:
        reference = _mean_results(
            [r["final_metrics"] for r in rows[reference_label].values()], spec
        )

    summary: dict[str, Any] = {}
    for label, by_seed in rows.items():
        seeds = sorted(by_seed)
        entry: dict[str, Any] = {"seeds": seeds, "metrics": {}}
        for task, metric_dirs in directions.items():
            for metric, higher in metric_dirs.items():
                vals = [by_seed[s]["final_metrics"].get(task, {}).get(metric) for s in seeds]
                bounds = metric_range(metric, higher)
                entry["metrics"].setdefault(task, {})[metric] = _ci(vals, bounds)
        deltas: list[float | None] = []
        if reference is not None:
            for s in seeds:
                try:
                    deltas.append(delta_m(by_seed[s]["final_metrics"], reference, spec))
                except (KeyError, ValueError):
                    deltas.append(None)
        entry["delta_m"] = _ci(deltas)
        entry["time_per_step_ms"] = _spread([by_seed[s]["time_per_step_ms"] for s in seeds])
        entry["peak_memory_mib"] = _spread([by_seed[s]["peak_memory_mib"] for s in seeds])
        entry["memory_measure"] = next(
            (by_seed[s].get("memory_measure") for s in seeds if by_seed[s].get("memory_measure")),
            "",
        )
        diags = [d for s in seeds if (d := by_seed[s].get("diagnostics"))]
        if diags:
            entry["diagnostics"] = {f: _ci([d.get(f) for d in diags]) for f in _DIAG_FIELDS}
        summary[label] = entry
    return {
        "reference": reference_label,
        "reference_metrics": reference,
        "rows": summary,
        "missing": collected["missing"],
    }


# ------------------------------------------------------------------------------ formatting
def _scale(metric: str) -> float:
    return 100.0 if metric in _PERCENT else 1.0


def _fmt_cell(ci: dict[str, Any] | None, scale: float = 1.0, digits: int = 2) -> str:
    if ci is None:
        return "–"
    mean = _no_negative_zero(ci["mean"] * scale, digits)
    if ci["std"] is None:
        return f"{mean:.{digits}f} (n=1)"
    std, lo, hi = ci["std"] * scale, ci["low"] * scale, ci["high"] * scale
    mark = "†" if ci.get("clipped") else ""
    return f"{mean:.{digits}f} ± {std:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]{mark}"


def _fmt_spread(m: dict[str, Any] | None, digits: int = 1) -> str:
    """``median [q1, q3]`` of a run measure over seeds."""
    if m is None:
        return "–"
    if m["n"] == 1:
        return f"{m['median']:.{digits}f} (n=1)"
    return f"{m['median']:.{digits}f} [{m['q1']:.{digits}f}, {m['q3']:.{digits}f}]"


def _no_negative_zero(x: float, digits: int) -> float:
    return 0.0 if abs(x) < 0.5 * 10.0**-digits else x


def _best(values: dict[str, float], higher: bool, scale: float = 1.0, digits: int = 2) -> set[str]:
    """The labels whose value is the best one at the printed precision (every tied one)."""
    printed = {k: round(_no_negative_zero(v * scale, digits), digits) for k, v in values.items()}
    if not printed:
        return set()
    top = (max if higher else min)(printed.values())
    return {k for k, v in printed.items() if v == top}


def _bold(cell: str, best: bool) -> str:
    return f"**{cell}**" if best else cell


def _markdown(summary: dict[str, Any], spec: BenchmarkSpec, meta: dict[str, Any]) -> str:
    rows: dict[str, Any] = summary["rows"]
    directions = spec.higher_is_better()
    columns = [(t, m) for t, ms in directions.items() for m in ms]
    lines = [f"# Comparison on {spec.name}", ""]
    budget = {
        **meta.get("default_budget", {}),
        **{k: v for k, v in meta.get("budget_overrides", {}).items() if v is not None},
    }
    if "steps" in {k for k, v in meta.get("budget_overrides", {}).items() if v is not None}:
        budget.pop("epochs", None)
    lines += [
        f"- model: `{meta.get('model')}`; budget: "
        + ", ".join(f"{k} {v}" for k, v in budget.items())
        + f"; seeds: {meta.get('seeds')}",
        f"- methods: {', '.join(meta.get('methods', []))}"
        + (f"; method options: {meta['method_kwargs']}" if meta.get("method_kwargs") else ""),
        f"- machine: {meta.get('cores')} cores, {meta.get('jobs')} job(s) × "
        f"{meta.get('threads_per_job')} thread(s), device {meta.get('device')}, torch "
        f"{meta.get('torch')}; load average at start {meta.get('load_average_start')}, end "
        f"{meta.get('load_average_end')}; wall time {meta.get('wall_s')} s "
        f"({meta.get('runs_done', 0)} runs trained, {meta.get('runs_skipped', 0)} already done, "
        f"{meta.get('runs_failed', 0)} failed)",
        "",
    ]
    ref = summary["reference"]
    if ref == SINGLE_TASK:
        delta_head = "Δm% vs single-task ↓"
    elif ref is not None:
        delta_head = f"Δm% vs {ref} (unitary; no single-task baselines) ↓"
    else:
        delta_head = "Δm% (no reference run)"
    header = ["method"]
    for task, metric in columns:
        unit = " (%)" if _scale(metric) == 100.0 else ""
        arrow = "↑" if directions[task][metric] else "↓"
        header.append(f"{task} {metric}{unit} {arrow}")
    measure = next((r.get("memory_measure") for r in rows.values() if r.get("memory_measure")), "")
    header += [
        delta_head,
        "ms/step (median [IQR])",
        f"peak MiB ({measure}; median [IQR])" if measure else "peak MiB (median [IQR])",
    ]

    best = [
        _best(
            {
                label: r["metrics"][task][metric]["mean"]
                for label, r in rows.items()
                if label != SINGLE_TASK and r["metrics"].get(task, {}).get(metric)
            },
            directions[task][metric],
            _scale(metric),
        )
        for task, metric in columns
    ]
    best_delta = _best(
        {
            label: r["delta_m"]["mean"]
            for label, r in rows.items()
            if label != SINGLE_TASK and r["delta_m"]
        },
        higher=False,
    )

    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    clipped = 0
    for label, r in rows.items():
        cells = [f"{label} (n={len(r['seeds'])})"]
        for j, (task, metric) in enumerate(columns):
            ci = r["metrics"].get(task, {}).get(metric)
            clipped += bool(ci and ci.get("clipped"))
            cells.append(_bold(_fmt_cell(ci, _scale(metric)), label in best[j]))
        cells.append(_bold(_fmt_cell(r["delta_m"]), label in best_delta))
        cells.append(_fmt_spread(r["time_per_step_ms"]))
        cells.append(_fmt_spread(r["peak_memory_mib"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", _notes(meta, clipped)]
    if ref == SINGLE_TASK:
        lines.append(
            "Single-task row: one model per task trained alone with the same budget; its time per "
            "step is the sum over the task models, its memory the largest."
        )
    diag_rows = {label: r["diagnostics"] for label, r in rows.items() if r.get("diagnostics")}
    if diag_rows:
        lines += [
            "",
            "## Tragic-triad diagnostics (mean over seeds)",
            "",
            "| method | " + " | ".join(_DIAG_FIELDS) + " |",
            "|---|" + "---:|" * len(_DIAG_FIELDS),
        ]
        for label, d in diag_rows.items():
            vals = [f"{d[f]['mean']:.3f}" if d.get(f) else "–" for f in _DIAG_FIELDS]
            lines.append(f"| {label} | " + " | ".join(vals) + " |")
        lines += [
            "",
            "Fractions over task pairs, averaged over recorded steps: conflicting = cos < 0; "
            "condition (a) of Theorem 2 = cos φ ≤ −Φ (magnitude similarity); both = (a) and ξ ≤ 1. "
            "fraction_steps_any_conflict: share of steps with at least one conflicting pair.",
        ]
    if summary["missing"]:
        lines += ["", f"Missing (failed or not run): {', '.join(summary['missing'])}"]
    lines += [
        "",
        "![learning curves](learning_curves.png)",
        "",
        "![training loss](train_loss.png)",
        "",
    ]
    return "\n".join(lines)


def _notes(meta: dict[str, Any], clipped: int) -> str:
    text = (
        "Cells: mean ± standard deviation over seeds [95 % confidence interval of the mean, "
        "Student t with n − 1 degrees of freedom]; final evaluation of each run on the "
        f"{meta.get('eval_split', 'evaluation')} split. "
    )
    if clipped:
        text += (
            f"† ({clipped} cell{'s' if clipped > 1 else ''}): the interval is cut to the metric's "
            "possible range (accuracies and other fractions in [0, 100] %, angles in [0, 180]°, "
            "errors ≥ 0); the t-interval itself left it. "
        )
    return text + (
        "Bold: best mean per column, every row tied with it at the printed precision "
        "(single-task row excluded). "
        "Δm%: average relative drop over all reported metrics (lower is better; negative = "
        "better than the reference), computed per seed against the reference's mean over seeds. "
        "ms/step (each run's median step time) and peak MiB: median [first quartile, third "
        "quartile] over seeds."
    )


def _csv(summary: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    keys = ("std", "low", "high", "clipped", "median", "q1", "q3")
    head = ("method", "task", "metric", "n", "mean", "std", "ci95_low", "ci95_high")
    w.writerow([*head, "ci_clipped", "median", "q1", "q3"])

    def row(label: str, task: str, metric: str, ci: dict[str, Any] | None) -> None:
        if ci is None:
            w.writerow([label, task, metric, 0] + [""] * (len(keys) + 1))
            return
        cells = ["" if ci.get(k) is None else ci[k] for k in keys]
        w.writerow([label, task, metric, ci["n"], ci["mean"], *cells])

    for label, r in summary["rows"].items():
        for task, metrics in r["metrics"].items():
            for metric, ci in metrics.items():
                row(label, task, metric, ci)
        row(label, "", "delta_m%", r["delta_m"])
        row(label, "", "time_per_step_ms", r["time_per_step_ms"])
        row(label, "", "peak_memory_mib", r["peak_memory_mib"])
    return buf.getvalue()


# ------------------------------------------------------------------------------ figures
def _curves(collected: dict[str, Any], spec: BenchmarkSpec, kind: str) -> dict[str, dict[str, Any]]:
    """``{label: {task: (steps, mean, std)}}`` of the eval metric (``kind="metric"``) or train loss."""
    import numpy as np

    def series(history: list[dict[str, Any]], task: str, metric: str) -> dict[int, float]:
        out = {}
        for h in history or []:
            if kind == "metric":
                v = (h.get("metrics") or {}).get(task, {}).get(metric)
            else:
                v = (h.get("train_loss") or {}).get(task)
            if v is not None:
                out[int(h["step"])] = float(v)
        return out

    curves: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[tuple[str, list[dict[str, Any]]]]] = {}
    for label, by_seed in collected["methods"].items():
        groups[label] = [(t, r["history"]) for t in spec.task_names for r in by_seed.values()]
    for by_task in collected["single"].values():
        for t, r in by_task.items():
            groups.setdefault(SINGLE_TASK, []).append((t, r["history"]))
    for label, items in groups.items():
        for task in spec.task_names:
            metric = spec.task(task).metrics[0].name
            runs = [series(h, task, metric) for t, h in items if t == task]
            runs = [r for r in runs if r]
            if not runs:
                continue
            steps = sorted(set.intersection(*(set(r) for r in runs)))
            if not steps:
                continue
            values = np.array([[r[s] for s in steps] for r in runs])
            scale = _scale(metric) if kind == "metric" else 1.0
            curves.setdefault(label, {})[task] = (
                steps,
                values.mean(axis=0) * scale,
                values.std(axis=0, ddof=1) * scale if len(runs) > 1 else np.zeros(len(steps)),
            )
    return curves


def _band_range(spec: BenchmarkSpec, task: str, kind: str) -> tuple[float | None, float | None]:
    """Where a band may lie: the metric's range in the plotted unit, a loss above 0."""
    if kind != "metric":
        return 1e-12, None  # log axis
    m = spec.task(task).metrics[0]
    lo, hi = metric_range(m.name, m.higher_is_better)
    scale = _scale(m.name)
    return (None if lo is None else lo * scale), (None if hi is None else hi * scale)


def _plot(collected: dict[str, Any], spec: BenchmarkSpec, kind: str, path: Path) -> Path | None:
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    curves = _curves(collected, spec, kind)
    if not curves:
        return None
    m = spec.num_tasks
    ncols = min(4, m)
    nrows = -(-m // ncols)
    legend_in = 0.45
    height = 2.8 * nrows + legend_in
    fig = Figure(figsize=(3.6 * ncols, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    labels = list(curves)
    colors = {label: f"C{i % 10}" for i, label in enumerate(x for x in labels if x != SINGLE_TASK)}
    for k, task in enumerate(spec.task_names):
        ax = axes[k // ncols][k % ncols]
        metric = spec.task(task).metrics[0].name
        lo, hi = _band_range(spec, task, kind)
        for label in labels:
            if task not in curves[label]:
                continue
            steps, mean, std = curves[label][task]
            band_lo, band_hi = mean - std, mean + std
            if lo is not None or hi is not None:
                band_lo, band_hi = np.clip(band_lo, lo, hi), np.clip(band_hi, lo, hi)
            style = (
                {"color": "black", "linestyle": "--"}
                if label == SINGLE_TASK
                else {"color": colors[label]}
            )
            ax.plot(steps, mean, label=label, linewidth=1.2, **style)
            ax.fill_between(steps, band_lo, band_hi, alpha=0.15, color=style["color"], linewidth=0)
        unit = " (%)" if kind == "metric" and _scale(metric) == 100.0 else ""
        ylabel = f"eval {metric}{unit}" if kind == "metric" else "train loss (log scale)"
        ax.set_title(
            f"{task}: {metric}{unit}" if kind == "metric" else f"{task}: train loss", fontsize=9
        )
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        if kind == "loss":
            ax.set_yscale("log")
    for k in range(m, nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    handles, names = axes[0][0].get_legend_handles_labels()
    handles.append(Patch(color="grey", alpha=0.3, linewidth=0))
    names.append(_BAND)
    fig.tight_layout(rect=(0, legend_in / height, 1, 1))
    fig.legend(
        handles, names, loc="lower center", ncol=min(len(names), 6), fontsize=8, frameon=False
    )
    fig.savefig(path, dpi=100)
    return path


def write_report(out: str | Path, runs: Sequence[RunSpec], meta: dict[str, Any]) -> dict[str, Path]:
    """Write ``report.{md,json,csv}`` and the figures into ``out``; returns their paths."""
    out = Path(out)
    benchmark = runs[0].benchmark if runs else meta["benchmark"]
    spec = benchmark_spec(benchmark)
    collected = collect(out, runs)
    summary = summarize(collected, spec)
    paths = {
        "markdown": atomic_write_text(out / "report.md", _markdown(summary, spec, meta)),
        "json": atomic_write_json(out / "report.json", {"meta": meta, **summary}),
        "csv": atomic_write_text(out / "report.csv", _csv(summary)),
    }
    for kind, name in (("metric", "learning_curves.png"), ("loss", "train_loss.png")):
        p = _plot(collected, spec, kind, out / name)
        if p is not None:
            paths[name] = p
    return paths


def format_ci(ci: MeanCI, scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± std [low, high]`` of a :class:`MeanCI`."""
    return _fmt_cell(ci.to_dict(), scale, digits)
