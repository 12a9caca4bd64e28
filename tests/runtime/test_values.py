"""The shared value helpers: JSON-safe floats, nested differences, KEY=VALUE parsing."""

from __future__ import annotations

import math

import pytest

from gradsurgery.runtime.values import (
    differences,
    finite_or_none,
    parse_key_value,
    parse_key_values,
    parse_value,
)


def test_finite_or_none_maps_non_finite_to_none() -> None:
    assert finite_or_none(math.inf) is None and finite_or_none(-math.inf) is None
    assert finite_or_none(float("nan")) is None
    assert finite_or_none(3) == 3.0 and isinstance(finite_or_none(3), float)


def test_differences_walk_nested_dicts_and_missing_keys() -> None:
    old = {"agent": {"lr": 1e-3, "layers": [400, 400]}, "seed": 0}
    new = {"agent": {"lr": 3e-4, "layers": (400, 400)}, "tasks": ["reach"]}
    assert differences(old, new) == [
        "agent.lr: 0.001 vs 0.0003",
        "seed: 0 vs None",
        "tasks: None vs ['reach']",
    ]
    assert differences(old, old) == []
    assert differences({"a": 1}, {"a": 2}, template="{key}: checkpoint {old}, now {new}") == [
        "a: checkpoint 1, now 2"
    ]


def test_parse_value_reads_literals_else_keeps_text() -> None:
    assert parse_value("1e-3") == 1e-3 and parse_value("[1, 2]") == [1, 2]
    assert parse_value("True") is True and parse_value("None") is None
    assert parse_value("mean") == "mean" and parse_value("'7'") == "7"


def test_parse_key_value_errors_name_the_flag() -> None:
    assert parse_key_value(" lr = 0.5 ", "--x") == ("lr", 0.5)
    assert parse_key_value("expr=a=b", "--x") == ("expr", "a=b")
    for bad in ("lr", "=3", "  =3"):
        with pytest.raises(ValueError, match=r"--agent-arg expects KEY=VALUE"):
            parse_key_value(bad, "--agent-arg")
    assert parse_key_values(["a=1", "b=x", "a=2"], "--x") == {"a": 2, "b": "x"}
