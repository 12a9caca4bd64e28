"""Small value helpers shared by the run loops: JSON-safe floats, nested-dict differences and
``KEY=VALUE`` command-line pairs.

Example:
    >>> finite_or_none(float("nan")) is None, finite_or_none(2)
    (True, 2.0)
    >>> differences({"a": 1, "b": {"c": [1, 2]}}, {"a": 1, "b": {"c": (1, 3)}})
    ['b.c: [1, 2] vs [1, 3]']
    >>> differences({"lr": 0.1}, {"lr": 0.2}, template="{key}: checkpoint {old!r}, now {new!r}")
    ['lr: checkpoint 0.1, now 0.2']
    >>> parse_key_value("lr=3e-4", "--set"), parse_key_value("name=sac", "--set")
    (('lr', 0.0003), ('name', 'sac'))
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable
from typing import Any

__all__ = ["differences", "finite_or_none", "parse_key_value", "parse_key_values", "parse_value"]


def finite_or_none(x: Any) -> float | None:
    """``float(x)``, or None when it is NaN or infinite (JSON has neither)."""
    x = float(x)
    return x if math.isfinite(x) else None


def differences(
    old: Any, new: Any, *, template: str = "{key}: {old!r} vs {new!r}", _prefix: str = ""
) -> list[str]:
    """One line per leaf where two nested dicts differ (keys sorted; lists and tuples compare by
    their items), each formatted by ``template`` with ``key`` (dotted path), ``old`` and ``new``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new), key=str):
            key = f"{_prefix}.{k}" if _prefix else str(k)
            out += differences(old.get(k), new.get(k), template=template, _prefix=key)
        return out
    if isinstance(old, list | tuple) and isinstance(new, list | tuple):
        old, new = list(old), list(new)
    return [] if old == new else [template.format(key=_prefix, old=old, new=new)]


def parse_value(text: str) -> Any:
    """A Python literal (number, bool, None, string in quotes, list, dict), else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_key_value(text: str, flag: str, form: str = "KEY=VALUE") -> tuple[str, Any]:
    """``KEY=VALUE`` → ``(key, parse_value(value))``; a :class:`ValueError` naming ``flag`` and the
    expected ``form`` otherwise."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"{flag} expects {form}, got {text!r}")
    return key.strip(), parse_value(value.strip())


def parse_key_values(items: Iterable[str], flag: str) -> dict[str, Any]:
    """Several ``KEY=VALUE`` items into a dict (a later key replaces an earlier one)."""
    return dict(parse_key_value(item, flag) for item in items)
