"""The layers of docs/architecture.md, checked by reading every module's imports (function-level
imports included): the core imports nothing above it, the runtime nothing of the loops, RL nothing
of the supervised experiments, and no module imports a private module of another package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "gradsurgery"
CORE = (
    "jacobian",
    "engines",
    "methods",
    "backward",
    "diagnostics",
    "finite",
    "profiling",
    "errors",
    "registry",
    "distributed",
)
ABOVE_CORE = ("runtime", "experiments", "rl", "toy", "models", "data", "metrics", "cli", "cli_args")
LOOPS = ("experiments", "rl", "toy", "models", "data", "metrics", "cli", "cli_args")


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        out.append((".".join(p for p in parts if p != "__init__"), path))
    return out


def _imports(path: Path, module: str) -> set[str]:
    """Absolute names of the gradsurgery modules ``path`` imports (relative imports resolved)."""
    found: set[str] = set()
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(["gradsurgery", *base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            found.add(name)
    return {n.removeprefix("gradsurgery.") for n in found if n.startswith("gradsurgery.")}


def _top(name: str) -> str:
    return name.split(".")[0]


MODULES = _modules()


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m or "gradsurgery" for m, _ in MODULES])
def test_imports_respect_the_layers(module: str, path: Path) -> None:
    imported = _imports(path, module)
    layer = _top(module)
    if layer in CORE:
        forbidden = ABOVE_CORE
    elif layer == "runtime":
        forbidden = LOOPS
    elif layer == "rl":
        forbidden = ("experiments", "toy", "data", "metrics")
    else:
        forbidden = ()
    bad = sorted(n for n in imported if _top(n) in forbidden)
    assert not bad, f"{module or 'gradsurgery'} ({layer}) imports {bad}"
    private = sorted(
        n for n in imported if any(p.startswith("_") for p in n.split(".")) and _top(n) != layer
    )
    assert not private, f"{module} imports private modules of other packages: {private}"
