"""``gradsurgery rl-report``: compare finished ``gradsurgery rl`` runs over methods and seeds.

Examples::

    gradsurgery rl-report runs/rl/mt10_study --out runs/rl/mt10_study/report
    gradsurgery rl-report runs/rl/MT10_sum_* runs/rl/MT10_pcgrad_* --out /tmp/report

Every directory at or below the given paths that holds a ``result.json`` is one run; the runs must
share the suite and the resolved preset (they may differ in method and seed). Writes
``report.md``, ``report.json`` and ``mean_success.png`` (:mod:`gradsurgery.rl.study`).
"""

from __future__ import annotations

import argparse
import sys

from gradsurgery.cli import Command

__all__ = ["COMMAND"]

HELP = "compare finished rl runs (methods x seeds of one preset): table over seeds and curves"


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", help="run directories, or folders holding them")
    parser.add_argument(
        "--out", default=None, help="output directory (default: <first path>/report)"
    )


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gradsurgery.rl.study import StudyError, write_study_report

    out = Path(args.out) if args.out else Path(args.runs[0]) / "report"
    try:
        paths = write_study_report(args.runs, out)
    except StudyError as e:
        print(f"gradsurgery rl-report: {e}", file=sys.stderr)
        return 2
    print(paths["markdown"].read_text(), end="")
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


COMMAND = Command("rl-report", HELP, _arguments, _run)
