"""The ``gradsurgery`` command line (also ``python -m gradsurgery``).

Subcommands are :class:`Command` objects in :data:`COMMANDS`. A subcommand that lives in its own
module is registered by name → module path (``"compare": "gradsurgery.compare.command"``); the module
must define ``COMMAND = Command(...)``, and is imported only when that subcommand runs (or when the
top-level help lists it).

Examples::

    gradsurgery                                       # the help; exit status 2 (no command ran)
    gradsurgery methods
    gradsurgery toy                                   # Adam vs PCGrad, quick budget, runs/toy/
    gradsurgery toy --preset paper                    # the paper's 500,000 steps at lr 1e-3
    gradsurgery toy --methods sum,pcgrad,mean --method-arg pcgrad.reduction=mean --out /tmp/toy
    gradsurgery toy --landscape cagrad_toy --landscape-arg scale_l1=0.1 --start=-8.5,7.5
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradsurgery.cli_args import UsageError, add_method_arg_option, key_values, method_args

__all__ = ["COMMANDS", "Command", "build_parser", "main"]


@dataclass(frozen=True)
class Command:
    """A subcommand: ``add_arguments(parser)`` declares its options, ``run(args)`` returns the exit
    code."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# ------------------------------------------------------------------------------ `methods`
def _methods_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--names", action="store_true", help="print only the names, one a line")


def _methods_run(args: argparse.Namespace) -> int:
    from gradsurgery.methods import method_info, method_names
    from gradsurgery.methods.registry import composable_methods

    names = method_names()
    if args.names:
        print("\n".join(names))
        return 0
    width = max(len(n) for n in names) + 2
    indent = " " * width
    for name in names:
        info = method_info(name)
        print(f"{name:<{width}}{info.paper}")
        for line in textwrap.wrap(info.rule, width=100 - width) or [""]:
            print(f"{indent}{line}")
    print(f"\n{len(names)} methods. Use a name with MultiTaskBackward(model, NAME) or --methods.")
    weightings, gradients = composable_methods()
    print()
    about = (
        "Composed: WEIGHTING+GRADIENT (e.g. uw+pcgrad): the losses weighted by the first, the "
        "weighted gradients combined by the second (see gradsurgery.methods.composed)."
    )
    print("\n".join(textwrap.wrap(about, width=100)))
    for label, group in (("loss weightings:", weightings), ("gradient methods:", gradients)):
        for k, line in enumerate(textwrap.wrap(", ".join(group), width=80) or [""]):
            print(f"  {label if k == 0 else '':<18}{line}")
    return 0


# ------------------------------------------------------------------------------ `toy`
def _toy_arguments(parser: argparse.ArgumentParser) -> None:
    from gradsurgery.toy.landscapes import landscape_names

    parser.add_argument(
        "--landscape", default="pcgrad_figure1", choices=landscape_names(), help="(%(default)s)"
    )
    parser.add_argument(
        "--methods",
        default="sum,pcgrad",
        help="comma-separated method names (see `gradsurgery methods`); sum = plain Adam "
        "(%(default)s)",
    )
    parser.add_argument(
        "--preset",
        default="quick",
        choices=["quick", "paper"],
        help="step budget and lr: 'paper' = the literature's (PCGrad: 500,000 steps at lr 1e-3, "
        "minutes per method); 'quick' = fewer steps at a larger lr, same outcome (%(default)s)",
    )
    parser.add_argument("--steps", type=int, help="Adam steps (overrides the preset)")
    parser.add_argument("--lr", type=float, help="Adam learning rate (overrides the preset)")
    parser.add_argument(
        "--start", help="start point 'x,y' (write --start=-8.5,7.5 for a negative x)"
    )
    parser.add_argument("--seed", type=int, default=0, help="(%(default)s)")
    parser.add_argument("--record-every", type=int, help="keep every k-th trajectory point")
    parser.add_argument("--out", type=Path, default=Path("runs/toy"), help="(%(default)s)")
    add_method_arg_option(parser)
    parser.add_argument(
        "--landscape-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="landscape option, e.g. base=10 (pcgrad_figure1) or scale_l1=0.1 (cagrad_toy)",
    )


def resolve_method_names(text: str) -> list[str]:
    """Comma-separated method names → registered names (aliases resolved, duplicates dropped), or
    a :class:`UsageError` with a "did you mean" for the unknown ones."""
    from gradsurgery.methods import method_names
    from gradsurgery.methods.registry import resolve_method, suggest_methods

    methods: list[str] = []
    unknown: list[str] = []
    for written in (m.strip() for m in text.split(",")):
        if not written:
            continue
        try:
            name = resolve_method(written)
        except KeyError:
            unknown.append(written)
            continue
        except ValueError as e:  # a composition refused ("pcgrad+mgda"): the registry says why
            raise UsageError(str(e)) from None
        if name not in methods:
            methods.append(name)
    if not methods or unknown:
        close = list(dict.fromkeys(s for u in unknown for s in suggest_methods(u)))
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise UsageError(
            f"unknown method(s) {', '.join(unknown) or '(none given)'}{hint}; known methods: "
            f"{', '.join(method_names())}"
        )
    return methods


def _toy_run(args: argparse.Namespace) -> int:
    from gradsurgery.methods.registry import resolve_method
    from gradsurgery.toy.landscapes import get_landscape
    from gradsurgery.toy.plot import plot_toy
    from gradsurgery.toy.runner import run_toy

    land = get_landscape(args.landscape)
    methods = resolve_method_names(args.methods)
    method_kwargs = method_args(args.method_arg, methods, resolve_method)
    landscape_options = key_values(args.landscape_arg, "--landscape-arg")
    try:
        land.resolve_options(landscape_options)
    except TypeError as e:
        raise UsageError(str(e)) from None
    steps, lr = land.budgets.get(args.preset, (10_000, 1e-3))
    steps = args.steps if args.steps is not None else steps
    lr = args.lr if args.lr is not None else lr
    start = _parse_start(args.start) if args.start is not None else land.start
    if steps < 0 or not lr > 0 or (args.record_every is not None and args.record_every < 1):
        raise UsageError("--steps must be >= 0, --lr > 0 and --record-every >= 1")

    print(f"{land.name}: Adam lr={lr:g}, {steps:,} steps, start {start}, seed {args.seed}")
    results, failures = [], {}
    for name in methods:
        print(f"  {name} ...", end="", flush=True)
        try:
            res = run_toy(
                land,
                name,
                steps=steps,
                lr=lr,
                start=start,
                seed=args.seed,
                record_every=args.record_every,
                method_kwargs=method_kwargs.get(name),
                landscape_options=landscape_options,
            )
        except Exception as e:  # one method failing should not lose the others' results
            failures[name] = f"{type(e).__name__}: {e}"
            print(f" failed: {failures[name]}")
            continue
        results.append(res)
        print(f" {res.wall_time_s:.1f} s")

    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "landscape": land.name,
        "landscape_options": land.resolve_options(landscape_options),
        "preset": args.preset,
        "steps": steps,
        "lr": lr,
        "start": list(start),
        "seed": args.seed,
        "runs": [r.to_dict(trajectory=True) for r in results],
        "failures": failures,
    }
    json_path = args.out / "toy.json"
    json_path.write_text(json.dumps(report, indent=1))
    if results:
        png_path = args.out / "toy.png"
        plot_toy(results, png_path)
        print(_table(results))
        print(f"wrote {png_path} and {json_path}")
    else:
        print(f"wrote {json_path}")
    return 1 if failures else 0


def _table(results: Sequence[Any]) -> str:
    head = f"{'method':<14}{'final θ':>22}{'L1':>10}{'L2':>10}{'L':>10}{'both<thr at':>13}{'wall s':>9}"
    rows = [head, "-" * len(head)]
    for r in results:
        (x, y), (l1, l2) = r.final_theta, r.final_losses
        hit = "-" if r.first_hit_step is None else f"{r.first_hit_step:,}"
        theta = f"({x:.3f}, {y:.3f})"
        rows.append(
            f"{r.method:<14}{theta:>22}{l1:>10.2f}{l2:>10.2f}{l1 + l2:>10.2f}{hit:>13}"
            f"{r.wall_time_s:>9.1f}"
        )
    return "\n".join(rows)


def _parse_start(text: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise UsageError(f"--start expects two numbers 'x,y', got {text!r}") from None


# ------------------------------------------------------------------------------ registry & main
#: Subcommands: a :class:`Command`, or the path of a module defining ``COMMAND``.
COMMANDS: dict[str, Command | str] = {
    "methods": Command(
        "methods",
        "list the registered multi-task methods with their paper and update rule",
        _methods_arguments,
        _methods_run,
    ),
    "toy": Command(
        "toy",
        "PCGrad Figure 1: optimize a 2-D two-task landscape with each method; PNG + JSON",
        _toy_arguments,
        _toy_run,
    ),
    "compare": "gradsurgery.experiments.compare_cli",
    "rl": "gradsurgery.rl.rl_cli",
    "rl-report": "gradsurgery.rl.study_cli",
}


def _resolve(entry: Command | str) -> Command:
    if isinstance(entry, Command):
        return entry
    command = importlib.import_module(entry).COMMAND
    if not isinstance(command, Command):
        raise TypeError(f"{entry}.COMMAND is not a gradsurgery.cli.Command")
    return command


def build_parser() -> argparse.ArgumentParser:
    """The full parser: one subparser per entry of :data:`COMMANDS`."""
    from gradsurgery import __version__

    parser = argparse.ArgumentParser(
        prog="gradsurgery",
        description="Gradient surgery (PCGrad) and the multi-task optimizers it is compared with.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, entry in COMMANDS.items():
        command = _resolve(entry)
        # argparse %-formats help strings (not descriptions): escape a literal %
        p = sub.add_parser(name, help=command.help.replace("%", "%%"), description=command.help)
        command.add_arguments(p)
        p.set_defaults(_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for usage errors).

    ``gradsurgery`` without arguments prints the help (to stdout) and returns 2: no command ran.
    """
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else list(argv)):
        parser.print_help()
        return 2
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits on --help and on errors; report the code instead
        return e.code if isinstance(e.code, int) else 2
    try:
        return int(args._run(args))
    except UsageError as e:
        print(f"gradsurgery {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `gradsurgery methods | head`: stop quietly, as the Python docs advise
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
