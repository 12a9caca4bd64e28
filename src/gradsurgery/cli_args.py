"""What every subcommand parses the same way: ``KEY=VALUE`` options, ``METHOD.KEY=VALUE`` method
arguments, and the :class:`UsageError` that ``gradsurgery`` turns into exit status 2.

Example:
    >>> key_values(["lr=0.1", "name=x"], "--agent-arg")
    {'lr': 0.1, 'name': 'x'}
    >>> method_args(["pcgrad.reduction=mean"], ["pcgrad", "sum"])
    {'pcgrad': {'reduction': 'mean'}}
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from gradsurgery.runtime.values import parse_key_value

__all__ = ["UsageError", "add_method_arg_option", "key_value", "key_values", "method_args"]


class UsageError(Exception):
    """A user error found after parsing (unknown method, bad ``--method-arg``): exit code 2."""


def key_value(text: str, flag: str, form: str = "KEY=VALUE") -> tuple[str, Any]:
    """``KEY=VALUE`` → ``(key, literal value)``, or a :class:`UsageError` naming ``flag``."""
    try:
        return parse_key_value(text, flag, form)
    except ValueError as e:
        raise UsageError(str(e)) from None


def key_values(items: Iterable[str], flag: str) -> dict[str, Any]:
    """Repeated ``KEY=VALUE`` options into a dict (a later key replaces an earlier one)."""
    return dict(key_value(item, flag) for item in items)


def add_method_arg_option(parser: argparse.ArgumentParser) -> None:
    """Declare the repeatable ``--method-arg METHOD.KEY=VALUE`` option (read by :func:`method_args`)."""
    parser.add_argument(
        "--method-arg",
        action="append",
        default=[],
        metavar="METHOD.KEY=VALUE",
        help="keyword argument of one method, e.g. pcgrad.reduction=mean (repeatable)",
    )


def method_args(
    items: Iterable[str],
    methods: Sequence[str],
    resolve: Callable[[str], str] = str.lower,
) -> dict[str, dict[str, Any]]:
    """``--method-arg METHOD.KEY=VALUE`` items grouped by method. ``resolve`` maps the written
    method name to its registered name (raising :class:`KeyError` with a message if unknown); the
    method must be among ``methods`` (the ones the command runs)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, value = key_value(item, "--method-arg", "METHOD.KEY=VALUE")
        written, dot, key = target.partition(".")
        if not dot or not written or not key:
            raise UsageError(f"--method-arg expects METHOD.KEY=VALUE, got {item!r}")
        try:
            method = resolve(written)
        except (KeyError, ValueError) as e:
            raise UsageError(f"--method-arg {item!r}: {e.args[0]}") from None
        if method not in methods:
            raise UsageError(
                f"--method-arg {item!r} is for {method!r}, which is not among --methods "
                f"({', '.join(methods)})"
            )
        out.setdefault(method, {})[key] = value
    return out
