"""The architecture registry: names, lookup, self-registration, config validation, no import cycle."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import gradsurgery.rl as rl
from gradsurgery.rl import SACConfig
from gradsurgery.rl.architectures import (
    _REGISTRY,
    TaskNetwork,
    architecture_info,
    architecture_names,
    build_task_network,
    register_architecture,
)
from gradsurgery.rl.networks import build_actor

RL = Path(rl.__file__).parent
BUILT_IN = {
    "mlp": "networks",
    "multihead": "networks",
    "softmod": "soft_modularization",
    "care": "care",
    "film": "film",
}


def test_every_built_in_architecture_registers_itself_in_its_own_module() -> None:
    assert architecture_names() == sorted(BUILT_IN)
    for name, module in BUILT_IN.items():
        info = architecture_info(name)
        assert info.name == name and info.cls.architecture == name
        assert info.cls.__module__ == f"gradsurgery.rl.{module}"
        assert info.paper and info.summary
    assert architecture_info("FiLM").name == "film"


def test_unknown_names_are_rejected_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown architecture 'resnet'.*care, film, mlp"):
        architecture_info("resnet")
    with pytest.raises(ValueError, match=r"unknown architecture 'transformer'.*multihead"):
        SACConfig(architecture="transformer")


@pytest.fixture
def tiny() -> Iterator[type[TaskNetwork]]:
    @register_architecture("tiny-test", paper="none", summary="one linear layer")
    class Tiny(TaskNetwork):
        def __init__(
            self, in_features: int, out_features: int, num_tasks: int, *, hidden: tuple[int, ...]
        ) -> None:
            super().__init__(in_features, out_features, num_tasks)
            self.hidden = tuple(hidden)
            self.lin = nn.Linear(in_features, out_features)

        def forward(self, x: Tensor, task_ids: Tensor) -> Tensor:
            return self.lin(x)

    try:
        yield Tiny
    finally:
        _REGISTRY.remove("tiny-test")


def test_a_registered_architecture_is_built_by_name_and_accepted_by_the_config(
    tiny: type[TaskNetwork],
) -> None:
    net = build_task_network("tiny-test", 5, 3, num_tasks=2, hidden_sizes=(7,))
    assert isinstance(net, tiny) and net.hidden == (7,)  # the default build passes hidden=
    assert list(net.shared_parameters()) == list(net.parameters())  # shared unless overridden
    assert list(net.task_specific_parameters(1)) == []
    actor = build_actor("tiny-test", 5, 2, 2, (7,))
    assert actor(torch.randn(4, 5), torch.tensor([0, 1, 0, 1]))[0].shape == (4, 2)
    assert SACConfig(architecture="tiny-test").architecture == "tiny-test"
    with pytest.raises(ValueError, match="already registered"):
        register_architecture("tiny-test", paper="", summary="")(type("Other", (TaskNetwork,), {}))


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any level (module top or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_import_cycle_between_the_networks_and_the_architectures() -> None:
    """The architectures import the registry, never the networks module that builds actors from
    them; the registry imports no architecture; nothing imports the private layers module."""
    registry = _imports(RL / "architectures.py")
    assert not any(m.startswith("gradsurgery.rl") for m in registry)
    for module in ("care", "film", "soft_modularization"):
        imported = _imports(RL / f"{module}.py")
        assert "gradsurgery.rl.networks" not in imported, module
        assert "gradsurgery.rl.architectures" in imported, module
    for path in RL.rglob("*.py"):
        assert "gradsurgery.models._layers" not in _imports(path), path
