"""The command line: `gradsurgery toy`, `gradsurgery methods`, errors, registry of subcommands."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from gradsurgery import cli
from gradsurgery.methods import method_info, method_names

TINY = ["--steps", "30", "--lr", "0.05", "--record-every", "5"]


def test_toy_writes_png_and_json(tmp_path, capsys):
    out = tmp_path / "toy"
    assert cli.main(["toy", *TINY, "--out", str(out)]) == 0
    png = (out / "toy.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    report = json.loads((out / "toy.json").read_text())
    assert report["landscape"] == "pcgrad_figure1" and report["steps"] == 30
    assert report["lr"] == 0.05 and report["start"] == [0.5, -3.0] and report["failures"] == {}
    runs = {r["method"]: r for r in report["runs"]}
    assert set(runs) == {"sum", "pcgrad"}  # the default methods
    for r in runs.values():
        assert r["steps"] == 30 and len(r["final_theta"]) == 2
        assert r["final_L"] == pytest.approx(r["final_L1"] + r["final_L2"])
        assert r["trajectory_length"] == len(r["trajectory"]) == 7  # 0, 5, ..., 25, 30
        assert r["wall_time_s"] > 0 and "fraction_conflicting" in r["diagnostics"]
    printed = capsys.readouterr().out
    assert "pcgrad" in printed and "final θ" in printed and "toy.png" in printed


def test_toy_options_reach_the_run(tmp_path):
    out = tmp_path / "o"
    code = cli.main(
        [
            "toy",
            *TINY,
            "--out",
            str(out),
            "--methods",
            "pcgrad,mean",
            "--method-arg",
            "pcgrad.reduction=mean",
            "--landscape-arg",
            "base=10",
            "--start=-1.5,2",
            "--seed",
            "7",
        ]
    )
    assert code == 0
    report = json.loads((out / "toy.json").read_text())
    runs = {r["method"]: r for r in report["runs"]}
    assert runs["pcgrad"]["method_kwargs"] == {"reduction": "mean"}
    assert runs["mean"]["method_kwargs"] == {}
    assert report["landscape_options"] == {"base": 10} and report["seed"] == 7
    assert runs["mean"]["start"] == [-1.5, 2.0]


def test_toy_cagrad_landscape(tmp_path):
    out = tmp_path / "c"
    args = ["toy", "--landscape", "cagrad_toy", "--methods", "sum", *TINY, "--out", str(out)]
    assert cli.main([*args, "--landscape-arg", "scale_l1=0.1"]) == 0
    report = json.loads((out / "toy.json").read_text())
    assert report["start"] == [-8.5, 7.5] and report["landscape_options"] == {"scale_l1": 0.1}


def test_unknown_method_exits_2_and_lists_known(tmp_path, capsys):
    code = cli.main(["toy", "--methods", "sum,nope", "--out", str(tmp_path), *TINY])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown method(s) nope" in err and "pcgrad" in err and "sum" in err
    assert not (tmp_path / "toy.json").exists()


def test_method_names_are_resolved_by_the_registry_everywhere(tmp_path, capsys):
    """Aliases and "did you mean" come from the method registry: toy, rl, compare, Python."""
    from gradsurgery.experiments.compare import DEFAULT_METHODS, resolve_methods
    from gradsurgery.methods import create_method, method_names

    assert cli.main(["toy", "--methods", "pcgard", "--out", str(tmp_path), *TINY]) == 2
    assert "did you mean pcgrad" in capsys.readouterr().err
    with pytest.raises(KeyError, match="did you mean pcgrad"):
        create_method("pcgard")
    with pytest.raises(KeyError, match="did you mean pcgrad"):
        resolve_methods(["pcgard"])
    assert create_method("NashMTL").name == "nash_mtl"
    assert cli.resolve_method_names("nashmtl,nash-mtl,PC-Grad") == ["nash_mtl", "pcgrad"]
    assert resolve_methods(["nashmtl"]) == ["nash_mtl"]
    assert set(DEFAULT_METHODS) <= set(method_names())  # the compare help shows registry names


def test_unknown_suite_lists_the_known_ones():
    from gradsurgery.rl.envs.suites import resolve_suite

    pytest.importorskip("metaworld")
    with pytest.raises(ValueError, match=r"unknown suite 'MT11'; known suites: MT10, MT25, MT50"):
        resolve_suite("MT11")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method-arg", "pcgrad.reduction"], "METHOD.KEY=VALUE"),
        (["--method-arg", "uw.lr=1"], "not among --methods"),
        (["--start", "1,2,3"], "two numbers"),
        (["--landscape-arg", "scale_l1=0.1"], "no option"),
        (["--lr", "0"], "--lr > 0"),
    ],
)
def test_usage_errors_exit_2(tmp_path, capsys, extra, message):
    assert cli.main(["toy", *TINY, "--out", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err


def test_argparse_errors_and_help_return_codes(capsys):
    assert cli.main(["toy", "--landscape", "nowhere"]) == 2
    capsys.readouterr()
    assert cli.main([]) == 2  # no command: the help, and no command ran
    assert "usage: gradsurgery" in capsys.readouterr().out
    assert cli.main(["--help"]) == 0
    assert "toy" in capsys.readouterr().out


def test_methods_lists_every_registered_method(capsys):
    assert cli.main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in method_names():
        assert name in out
        assert method_info(name).paper in out
    assert "Gradient Surgery for Multi-Task Learning" in out  # PCGrad's paper
    assert cli.main(["methods", "--names"]) == 0
    assert capsys.readouterr().out.split() == method_names()


def test_failing_method_is_reported_and_others_kept(tmp_path, capsys, monkeypatch):
    import gradsurgery.toy.runner as runner

    real = runner.run_toy

    def flaky(landscape, method, **kw):
        if method == "pcgrad":
            raise RuntimeError("boom")
        return real(landscape, method, **kw)

    monkeypatch.setattr(runner, "run_toy", flaky)
    assert cli.main(["toy", *TINY, "--out", str(tmp_path)]) == 1
    report = json.loads((tmp_path / "toy.json").read_text())
    assert report["failures"] == {"pcgrad": "RuntimeError: boom"}
    assert [r["method"] for r in report["runs"]] == ["sum"]


def test_subcommands_can_be_added_from_other_modules(monkeypatch, capsys):
    def add(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--n", type=int, default=1)

    def run(args: argparse.Namespace) -> int:
        print(f"hello {args.n}")
        return 0

    monkeypatch.setitem(cli.COMMANDS, "hello", cli.Command("hello", "say hello", add, run))
    assert cli.main(["hello", "--n", "3"]) == 0
    assert capsys.readouterr().out.strip() == "hello 3"
    # A module path is resolved lazily to its COMMAND.
    monkeypatch.setitem(cli.COMMANDS, "hello", "tests_cli_fake_module")
    fake = type(sys)("tests_cli_fake_module")
    fake.COMMAND = cli.Command("hello", "say hello", add, run)
    monkeypatch.setitem(sys.modules, "tests_cli_fake_module", fake)
    assert cli.main(["hello"]) == 0
    assert capsys.readouterr().out.strip() == "hello 1"


def test_python_dash_m_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "gradsurgery", "methods", "--names"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "pcgrad" in proc.stdout.split() and "sum" in proc.stdout.split()
