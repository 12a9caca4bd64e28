"""``gradsurgery rl``: train multi-task SAC with a method on Meta-World under a protocol preset.

Examples::

    gradsurgery rl --suite MT10 --method pcgrad --preset metaworld-v3-cpu --seed 0
    gradsurgery rl --suite MT10 --method pcgrad --preset metaworld-v3 --device cuda --strategy async
    gradsurgery rl --suite MT1:reach-v3 --preset mtrl-compat-cpu --steps 20000 --threads 1
    gradsurgery rl --suite reach-v3,push-v3 --method cagrad --method-arg c=0.4 --preset smoke
    gradsurgery rl --suite MT10 --method sum --preset mtrl-compat-cpu --diagnose-every 100
    gradsurgery rl --list-presets

Rerunning the same command continues from the newest checkpoint in ``--out`` (``--fresh`` starts
over). Everything goes to ``--out`` (default ``runs/rl/<suite>_<method>_<preset>_seed<seed>``):
``result.json`` (the resolved preset and the final and best-over-series success rates),
``log.jsonl``, ``learning_curves.png``, ``curves/<task>.png``, ``tensorboard/`` (when installed),
``checkpoints/``. Needs ``pip install "gradsurgery[rl]"``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gradsurgery.cli import Command
from gradsurgery.cli_args import UsageError, key_values

__all__ = ["COMMAND", "add_rl_arguments", "add_rl_parser", "run_rl"]

HELP = "multi-task SAC on Meta-World (MT1/MT10/MT50) with a method, under a protocol preset"


def add_rl_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the ``rl`` options on ``parser``."""
    from gradsurgery.rl.presets import preset_names

    parser.add_argument(
        "--suite",
        help="MT10, MT25, MT50, MT1:<task> (e.g. MT1:reach-v3) or comma-separated task names",
    )
    parser.add_argument("--method", default="sum", help="multi-task method (%(default)s = MT-SAC)")
    parser.add_argument(
        "--preset",
        default="metaworld-v3-cpu",
        choices=preset_names(),
        help="protocol + agent + budget (%(default)s); see --list-presets",
    )
    parser.add_argument("--seed", type=int, default=0, help="(%(default)s)")
    parser.add_argument("--steps", type=int, help="steps per task (overrides the preset's budget)")
    parser.add_argument("--out", type=Path, help="output directory (default runs/rl/...)")
    parser.add_argument(
        "--device", default="cpu", help="cpu, cuda, cuda:N or auto (%(default)s); envs run on CPU"
    )
    parser.add_argument(
        "--strategy",
        default="sync",
        choices=["sync", "async"],
        help="step the tasks in this process or one process each (%(default)s)",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--diagnose-every",
        type=int,
        metavar="N",
        help="log gradient conflict, cosines and gradient-norm ratios of the critic's and the "
        "actor's task gradients every N updates (log.jsonl kind=diagnostics, TensorBoard)",
    )
    parser.add_argument(
        "--method-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument of the method, e.g. c=0.4 (repeatable)",
    )
    parser.add_argument(
        "--agent-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="SACConfig field, e.g. architecture=multihead or hidden_sizes=(256,256) (repeatable)",
    )
    parser.add_argument(
        "--budget-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="budget field: warmup_steps, eval_every, eval_episodes, replay_size, "
        "checkpoint_every, log_every (repeatable)",
    )
    parser.add_argument(
        "--protocol-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="protocol field: max_episode_steps, num_goals, goal_seed, reward_function_version, "
        "eval_terminate_on_success, success (repeatable; changes what results compare with)",
    )
    parser.add_argument(
        "--regularized",
        action="store_true",
        help="Kurin et al.'s recipe: shared temperature, reward normalization, actor weight "
        "decay, 4x replay",
    )
    parser.add_argument(
        "--no-save-replay",
        dest="save_replay",
        action="store_false",
        help="leave the replay buffer out of checkpoints (smaller; resume refills it)",
    )
    parser.add_argument(
        "--overlap",
        action="store_true",
        help="update while the environments step (best with --strategy async; each update then "
        "sees the replay as it was one step earlier)",
    )
    parser.add_argument("--fresh", action="store_true", help="start over, deleting checkpoints")
    parser.add_argument(
        "--stop-after",
        type=int,
        metavar="STEPS",
        help="checkpoint and stop at the first episode boundary after STEPS; rerun to continue",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--list-presets", action="store_true", help="describe the presets and exit")


def add_rl_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``rl`` subcommand to an ``argparse`` subparsers object; ``run_rl`` runs it."""
    parser = subparsers.add_parser("rl", help=HELP, description=HELP)
    add_rl_arguments(parser)
    parser.set_defaults(_run=run_rl)
    return parser


def _list_presets() -> int:
    from gradsurgery.rl.presets import PRESETS

    for p in PRESETS.values():
        b, pr = p.budget, p.protocol
        print(f"{p.name}\n  {p.description}")
        print(
            f"  protocol: {pr.max_episode_steps}-step episodes, {pr.num_goals} goal(s)/task, "
            f"reward {pr.reward_function_version}, eval ends at success: "
            f"{pr.eval_terminate_on_success}; report {p.report}"
        )
        print(
            f"  agent: {'x'.join(map(str, p.agent['hidden_sizes']))} MLPs, batch "
            f"{p.agent['batch_size_per_task']}/task; budget: {b.steps:,} steps/task, warm-up "
            f"{b.warmup_steps:,}, eval every {b.eval_every:,} ({b.eval_episodes} ep/task), replay "
            f"{b.replay_size:,}"
        )
    return 0


def run_rl(args: argparse.Namespace) -> int:
    """Run ``gradsurgery rl``; the exit code (0: done or stopped as asked, 1: failure)."""
    if args.list_presets:
        return _list_presets()
    if not args.suite:
        raise UsageError("--suite is required (MT10, MT50, MT1:reach-v3, or task names)")
    try:
        from gradsurgery.rl.envs import EnvCrashedError, require_metaworld, resolve_suite

        require_metaworld()
    except ImportError as e:
        print(f"gradsurgery rl: {e}", file=sys.stderr)
        return 1
    from gradsurgery.methods import create_method
    from gradsurgery.methods.registry import resolve_method
    from gradsurgery.rl.runner import (
        ResumeError,
        RLRunConfig,
        default_out_dir,
        preset_for_run,
        train_rl,
    )
    from gradsurgery.runtime.lock import DirectoryLockedError

    try:
        method = resolve_method(args.method)  # aliases and "did you mean": the method registry's
    except (KeyError, ValueError) as e:  # ValueError: a composition refused (uw+... ; see registry)
        raise UsageError(e.args[0]) from None
    try:
        spec = resolve_suite(args.suite)
    except ValueError as e:
        raise UsageError(str(e)) from None
    cfg = RLRunConfig(
        suite=args.suite,
        method=method,
        preset=args.preset,
        seed=args.seed,
        out_dir=args.out,
        device=args.device,
        steps=args.steps,
        strategy=args.strategy,
        save_replay=args.save_replay,
        method_kwargs=key_values(args.method_arg, "--method-arg"),
        agent=key_values(args.agent_arg, "--agent-arg"),
        budget=key_values(args.budget_arg, "--budget-arg"),
        protocol=key_values(args.protocol_arg, "--protocol-arg"),
        regularized=args.regularized,
        resume=not args.fresh,
        stop_after_steps=args.stop_after,
        progress=False if args.no_progress else None,
        threads=args.threads,
        diagnose_every=args.diagnose_every,
        overlap=args.overlap,
    )
    if cfg.out_dir is None:
        cfg.out_dir = default_out_dir(cfg, spec)
    print(f"{spec.name} ({spec.num_tasks} tasks), {method}, preset {args.preset}, seed {args.seed} "
          f"-> {cfg.out_dir}")  # fmt: skip
    try:  # validate the overrides and the method's arguments before anything is built
        preset_for_run(cfg, spec)
        create_method(method, **cfg.method_kwargs)
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None
    try:
        result = train_rl(cfg)
    except (ResumeError, DirectoryLockedError) as e:
        print(f"gradsurgery rl: {e}", file=sys.stderr)
        return 2
    except EnvCrashedError as e:
        print(f"gradsurgery rl: environment failure: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; rerun the same command to continue from the last checkpoint")
        return 130
    print(_summary_table(result))
    if result.status == "stopped":
        print(f"stopped at step {result.steps:,}; rerun the same command to continue")
    print(f"wrote {result.out_dir / 'result.json'}")
    return 0


def _summary_table(result: Any) -> str:
    s = result.summary
    if not s.get("num_evaluations"):
        return "no evaluation yet"
    width = max(len(t) for t in result.tasks) + 2
    lines = [f"{'task':<{width}}{'final':>8}{'best-mean eval':>16}", "-" * (width + 24)]
    for t in result.tasks:
        lines.append(f"{t:<{width}}{s['final_success'][t]:>8.2f}{s['best_success'][t]:>16.2f}")
    lines.append("-" * (width + 24))
    lines.append(
        f"{'mean':<{width}}{s['final_mean_success']:>8.2f}{s['best_mean_success']:>16.2f}"
        f"   (best at step {s['best_step']:,}; preset {result.preset.name} reports {s['report']})"
    )
    lines.append(
        f"{result.steps:,} steps/task, {result.env_steps:,} env steps, {result.updates:,} updates, "
        f"{result.wall_s / 60:.1f} min"
    )
    for loss, d in (getattr(result, "diagnostics", None) or {}).items():
        if d.get("mean_fraction_conflicting") is None:
            continue
        ratio = d.get("mean_grad_norm_ratio")
        lines.append(
            f"{loss} gradients over {d['updates_diagnosed']:,} diagnosed updates: "
            f"{100 * d['mean_fraction_conflicting']:.0f}% of task pairs conflict, mean cosine "
            f"{d['mean_cosine']:.2f}, min {d['min_cosine']:.2f}"
            + (f", largest/smallest gradient norm {ratio:.1f}" if ratio is not None else "")
        )
    return "\n".join(lines)


COMMAND = Command("rl", HELP, add_rl_arguments, run_rl)
