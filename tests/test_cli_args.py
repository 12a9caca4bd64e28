"""Shared command-line parsing: KEY=VALUE options and METHOD.KEY=VALUE method arguments."""

from __future__ import annotations

import pytest

from gradsurgery.cli_args import UsageError, key_value, key_values, method_args


def test_key_values_and_usage_error() -> None:
    assert key_values(["steps=10", "device=cpu"], "--budget-arg") == {
        "steps": 10,
        "device": "cpu",
    }
    with pytest.raises(UsageError, match="--budget-arg expects KEY=VALUE, got 'steps'"):
        key_value("steps", "--budget-arg")


def test_method_args_group_by_method_and_refuse_others() -> None:
    got = method_args(
        ["PCGrad.reduction=mean", "cagrad.c=0.4", "pcgrad.seed=1"], ["pcgrad", "cagrad"]
    )
    assert got == {"pcgrad": {"reduction": "mean", "seed": 1}, "cagrad": {"c": 0.4}}
    with pytest.raises(UsageError, match="not among --methods"):
        method_args(["mgda.x=1"], ["pcgrad"])
    for bad in ("pcgrad=1", "pcgrad.=1", ".c=1", "pcgrad.c"):
        with pytest.raises(UsageError, match=r"METHOD\.KEY=VALUE"):
            method_args([bad], ["pcgrad"])


def test_method_args_resolve_aliases_and_report_unknown_names() -> None:
    aliases = {"unitary": "sum", "sum": "sum"}

    def resolve(name: str) -> str:
        if name.lower() not in aliases:
            raise KeyError(f"unknown method {name!r}")
        return aliases[name.lower()]

    assert method_args(["unitary.x=1"], ["sum"], resolve) == {"sum": {"x": 1}}
    with pytest.raises(UsageError, match="unknown method 'nope'"):
        method_args(["nope.x=1"], ["sum"], resolve)
