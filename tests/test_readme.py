"""Every code block of README.md runs as written.

How the blocks are run:

* ```` ```python ```` blocks run with ``exec``, in a temporary working directory. The blocks of one
  ``##`` section are chained: they run in order in one namespace, so a later block of a section
  may use what an earlier one defined (the README says "continuing the block above" where it
  does); every section starts from an empty namespace.
* ```` ```bash ```` blocks are checked, not run (they install packages or start long jobs): each
  ``&&``-separated command must name something that exists: ``gradsurgery ...`` must parse with
  the real command-line parser (subcommand and every option), ``pip install -e '.[extras]'`` must
  name extras of ``pyproject.toml``, a pinned ``torch==V`` must satisfy the package's own
  requirement, and ``ruff``/``mypy``/``python -m MODULE`` must be installed.
* ```` ```text ```` blocks are prose (the layout tree) and are not checked.
* A block preceded by the line ``<!-- not run: REASON -->`` (a GPU, a download, a long job) is
  skipped, with the reason shown by pytest; keep those few.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from packaging.version import Version

from gradsurgery.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LANGUAGES = {"python", "bash", "text"}
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(?P<reason>.*\S)\s*-->$")


@dataclass(frozen=True)
class Block:
    section: str
    language: str
    line: int  # of the opening fence, 1-based
    code: str
    not_run: str | None  # the reason, when marked


def readme_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    section = "(top)"
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("```"):
            language = line[3:].strip()
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            marker = NOT_RUN.match(before.strip())
            code = "\n".join(lines[i + 1 : end]) + "\n"
            blocks.append(Block(section, language, i + 1, code, marker and marker["reason"]))
            i = end
        i += 1
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))
PYTHON_SECTIONS = list(dict.fromkeys(b.section for b in BLOCKS if b.language == "python"))
BASH = [b for b in BLOCKS if b.language == "bash"]


def test_every_block_is_python_bash_or_text() -> None:
    bad = [(b.line, b.language) for b in BLOCKS if b.language not in LANGUAGES]
    assert not bad, f"README blocks with no or another language (line, language): {bad}"
    assert PYTHON_SECTIONS and BASH


def test_few_blocks_are_not_run() -> None:
    marked = [(b.line, b.not_run) for b in BLOCKS if b.not_run]
    assert len(marked) <= 3, f"too many README blocks marked not run: {marked}"


@pytest.mark.parametrize("section", PYTHON_SECTIONS)
def test_python_blocks_run(
    section: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    namespace: dict[str, object] = {"__name__": "__readme__"}
    blocks = [b for b in BLOCKS if b.section == section and b.language == "python"]
    ran = 0
    for block in blocks:
        if block.not_run:
            continue
        exec(compile(block.code, f"README.md:{block.line}", "exec"), namespace)
        ran += 1
    if not ran:
        pytest.skip(f"every block of {section!r} is marked not run")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _check_pip(args: list[str]) -> None:
    assert args[:1] == ["install"], args
    project = _pyproject()["project"]
    for arg in args[1:]:
        if arg == "-e":
            continue
        if arg.startswith("."):  # the project itself, with extras: .[dev,rl]
            extras = re.fullmatch(r"\.(?:\[(?P<extras>[^\]]*)\])?", arg)
            assert extras, arg
            wanted = (extras["extras"] or "").split(",") if extras["extras"] else []
            missing = set(wanted) - set(project["optional-dependencies"])
            assert not missing, f"pyproject.toml has no extras {missing}"
            continue
        pin = Requirement(arg)
        for dep in project["dependencies"]:
            req = Requirement(dep)
            if req.name == pin.name:
                (spec,) = pin.specifier
                assert Version(spec.version) in req.specifier, f"{arg} does not satisfy {dep}"


def check_command(argv: list[str]) -> None:
    """Assert that one shell command of a README block names things that exist."""
    name, args = argv[0], argv[1:]
    if name in (".", "source"):
        assert (ROOT / args[0]).parent.name == "bin", argv  # .venv/bin/activate
    elif name == "gradsurgery":
        try:
            build_parser().parse_args(args)
        except SystemExit as e:
            pytest.fail(f"`{shlex.join(argv)}` does not parse (exit {e.code})")
    elif name == "pip":
        _check_pip(args)
    elif name in ("python", "python3"):
        if args[:1] == ["-m"]:
            module = args[1]
            assert importlib.util.find_spec(module) is not None, f"no module {module}"
    else:
        assert shutil.which(name), f"`{name}` is not installed"


@pytest.mark.parametrize("block", BASH, ids=[f"line{b.line}" for b in BASH])
def test_bash_commands_exist(block: Block) -> None:
    if block.not_run:
        pytest.skip(block.not_run)
    lines = [ln for ln in block.code.splitlines() if ln.strip() and not ln.startswith("#")]
    for line in lines:
        for command in line.split("&&"):
            check_command(shlex.split(command))


def test_the_methods_table_lists_every_registered_method() -> None:
    """The README's "Methods" table has one row per registered name, no more, no fewer."""
    import re

    from gradsurgery.methods import method_names

    text = README.read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `([a-z_0-9]+)` \|", text, re.M))
    assert rows == set(method_names())
