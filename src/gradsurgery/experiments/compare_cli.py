"""``gradsurgery compare``: run methods on a supervised benchmark and write a comparison report.

Examples::

    gradsurgery compare                                   # README comparison on multidigits
    gradsurgery compare --benchmark multidigits --methods sum,pcgrad,mgda --seeds 3 \\
        --single-task-baselines --out runs/compare/mine
    gradsurgery compare --methods sum,pcgrad --steps 200 --method-arg pcgrad.reduction=mean
    gradsurgery compare --benchmark cifar100 --data-root ~/data --model task-conditioned
    gradsurgery compare --benchmark digit-attributes --diagnostics --jobs 2

Running the same command again resumes: finished runs are kept, unfinished ones continue from their
last checkpoint (each such run's line says "resumed from step N"). Ctrl-C stops every run (the
message says so) with exit status 130; rerun the same command to continue. Exit status: 0 when every
run finished, 1 when some failed (the report covers the others), 2 for usage errors (unknown method
or benchmark, bad option), for data that cannot be loaded (checked once before any run starts;
nothing is written), and when another ``compare`` is running in the same ``--out`` (its PID named).
A run whose checkpoints are all unreadable fails with a message naming them, on every rerun, until
its directory is deleted: it is never silently started over.

Wiring: :data:`COMMAND` is a :class:`gradsurgery.cli.Command` (register the module path
``"gradsurgery.experiments.compare_cli"`` in ``gradsurgery.cli.COMMANDS``), or call
:func:`add_compare_parser` on an argparse subparsers object and :func:`run_compare` with the parsed
arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gradsurgery.cli_args import UsageError, add_method_arg_option, method_args

__all__ = ["COMMAND", "add_compare_arguments", "add_compare_parser", "parse_seeds", "run_compare"]

HELP = "compare multi-task methods on a supervised benchmark: table (mean ± CI, Δm%), curves"


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``compare`` on ``parser``."""
    from gradsurgery.experiments.benchmarks import ALIASES, setup_names
    from gradsurgery.experiments.compare import DEFAULT_METHODS

    parser.add_argument(
        "--benchmark",
        default="multidigits",
        metavar="NAME",
        help=f"one of {', '.join(setup_names())} (aliases: {', '.join(sorted(ALIASES))}) "
        "(%(default)s)",
    )
    parser.add_argument(
        "--methods",
        default=None,
        help="comma-separated registered method names (see `gradsurgery methods`); default: "
        f"{','.join(DEFAULT_METHODS)} (those registered)",
    )
    parser.add_argument(
        "--seeds",
        default="3",
        help="a count N (seeds 0..N-1) or a comma-separated list (%(default)s)",
    )
    parser.add_argument(
        "--single-task-baselines",
        action="store_true",
        help="also train one model per task alone: the reference of Δm%% (default reference: sum)",
    )
    parser.add_argument("--model", help="the benchmark's model (default: its first)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, help="epochs per run (default: the benchmark's)")
    budget.add_argument("--steps", type=int, help="optimizer steps per run (replaces epochs)")
    parser.add_argument("--batch-size", type=int, help="(default: the benchmark's)")
    parser.add_argument("--lr", type=float, help="Adam learning rate (default: the benchmark's)")
    parser.add_argument(
        "--eval-every", type=int, help="evaluate every N steps (default: per epoch)"
    )
    parser.add_argument(
        "--out", type=Path, help="output directory (default: runs/compare/<benchmark>)"
    )
    parser.add_argument("--jobs", type=int, help="parallel processes (default: min(cores, runs))")
    parser.add_argument(
        "--threads", type=int, help="torch threads per job (default: max(1, cores // jobs))"
    )
    add_method_arg_option(parser)
    parser.add_argument(
        "--data-root", type=Path, help="folder with the benchmark's files (file-based benchmarks)"
    )
    parser.add_argument(
        "--diagnostics",
        action="store_true",
        help="record tragic-triad statistics (conflicting pairs, cosines) in every run",
    )
    parser.add_argument(
        "--representation",
        action="store_true",
        help="MGDA-UB style: per-task gradients of the shared representation (one trunk pass)",
    )
    parser.add_argument("--device", default="cpu", help="torch device (%(default)s)")
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a module first (e.g. one that registers your own method; repeatable)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no per-run progress bar (shown with --jobs 1)"
    )


def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``compare`` subcommand to an argparse ``subparsers`` object; returns its parser."""
    parser = subparsers.add_parser("compare", help=HELP.replace("%", "%%"), description=HELP)
    add_compare_arguments(parser)
    parser.set_defaults(_run=run_compare)
    return parser


def parse_seeds(text: str) -> list[int]:
    """``"3"`` → ``[0, 1, 2]``; ``"0,4,7"`` → ``[0, 4, 7]``."""
    text = str(text).strip()
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            n = int(text)
            if n < 1:
                raise ValueError
            seeds = list(range(n))
    except ValueError:
        raise UsageError(
            f"--seeds expects a positive count or a comma-separated list, got {text!r}"
        ) from None
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds lists a seed twice: {text!r}")
    return seeds


def _resolve_method(name: str) -> str:
    from gradsurgery.methods.registry import resolve_method

    return resolve_method(name)


def run_compare(args: argparse.Namespace) -> int:
    """Run the comparison described by parsed arguments; returns the exit status."""
    from gradsurgery.experiments.benchmarks import benchmark_setup
    from gradsurgery.experiments.compare import (
        DEFAULT_METHODS,
        CompareConfig,
        import_plugins,
        resolve_methods,
        run_comparison,
    )

    try:
        import_plugins(args.imports)
    except ImportError as e:
        raise UsageError(f"--import: {e}") from None
    try:
        setup = benchmark_setup(args.benchmark)
    except KeyError as e:
        raise UsageError(e.args[0]) from None
    if args.model is not None and args.model not in setup.models:
        raise UsageError(
            f"{setup.name} has no model {args.model!r}; models: {', '.join(setup.models)}"
        )
    if setup.needs_root and args.data_root is None:
        raise UsageError(f"{setup.name} reads your local files: pass --data-root")
    defaulted = args.methods is None
    requested = list(DEFAULT_METHODS) if defaulted else args.methods.split(",")
    try:
        methods = resolve_methods(requested, skip_unregistered=defaulted)
    except (KeyError, ValueError) as e:  # ValueError: a composition refused (uw+... ; see registry)
        raise UsageError(e.args[0]) from None
    if defaulted:
        skipped = [m for m in DEFAULT_METHODS if m not in methods]
        if skipped:
            print(f"note: not registered here, skipped: {', '.join(skipped)}", file=sys.stderr)
    positive = {
        "--epochs": args.epochs,
        "--steps": args.steps,
        "--batch-size": args.batch_size,
        "--eval-every": args.eval_every,
        "--jobs": args.jobs,
        "--threads": args.threads,
    }
    for name, value in positive.items():
        if value is not None and value < 1:
            raise UsageError(f"{name} must be a positive integer, got {value}")
    config = CompareConfig(
        benchmark=setup.name,
        methods=methods,
        seeds=parse_seeds(args.seeds),
        single_task_baselines=args.single_task_baselines,
        model=args.model,
        epochs=args.epochs,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        eval_every=args.eval_every,
        method_kwargs=method_args(args.method_arg, methods, _resolve_method),
        diagnostics=args.diagnostics,
        representation=args.representation,
        device=args.device,
        data_root=str(args.data_root.expanduser()) if args.data_root is not None else None,
        out=args.out if args.out is not None else Path("runs/compare") / setup.name,
        jobs=args.jobs,
        threads=args.threads,
        imports=tuple(args.imports),
        progress=False if args.no_progress else None,
    )
    from gradsurgery.runtime.lock import DirectoryLockedError

    try:
        outcome = run_comparison(config)
    except (KeyError, ValueError) as e:  # DataError included
        raise UsageError(str(e.args[0]) if e.args else str(e)) from None
    except DirectoryLockedError as e:
        raise UsageError(str(e)) from None
    except KeyboardInterrupt:
        print("\ninterrupted; rerun the same command to continue", flush=True)
        return 130
    markdown = Path(outcome.report["markdown"])
    table = [line for line in markdown.read_text().splitlines() if line.startswith("|")]
    print("\n".join(["", *table, ""]))
    print(f"report: {markdown}")
    return 1 if outcome.failed else 0


def _command() -> Any:
    try:
        from gradsurgery.cli import Command
    except ImportError:  # pragma: no cover
        return None
    return Command("compare", HELP, add_compare_arguments, run_compare)


COMMAND = _command()
"""The subcommand for ``gradsurgery.cli.COMMANDS["compare"] = "gradsurgery.experiments.compare_cli"``."""
