"""Short names for the MT-SAC network architectures, so that configs and the command line pick one.

Every architecture is a :class:`TaskNetwork` subclass that registers itself in its own module with
:func:`register_architecture` (as methods do with :func:`gradsurgery.methods.register`);
``SACConfig.architecture`` must be one of :func:`architecture_names`, and
:func:`build_task_network` builds one from the sizes every architecture understands. Importing
:mod:`gradsurgery.rl` registers the built-in ones: ``"mlp"`` and ``"multihead"``
(:mod:`gradsurgery.rl.networks`), ``"softmod"`` (:mod:`gradsurgery.rl.soft_modularization`),
``"care"`` (:mod:`gradsurgery.rl.care`) and ``"film"`` (:mod:`gradsurgery.rl.film`).

A new architecture subclasses :class:`TaskNetwork` (``forward(x, task_ids) -> (n, out)``, vmap-safe),
calls ``super().__init__(in_features, out_features, num_tasks)``, overrides
:meth:`TaskNetwork._task_members` when some parameters belong to one task (by default every
parameter is shared), and sets :attr:`TaskNetwork.hidden_argument` /
:attr:`TaskNetwork.uses_task_names` when its constructor names the hidden widths otherwise or
reads the task names.

Example:
    >>> from gradsurgery.rl.architectures import architecture_info, architecture_names
    >>> architecture_names()
    ['care', 'film', 'mlp', 'multihead', 'softmod']
    >>> architecture_info("care").paper
    'Sodhani, Zhang, Pineau, ICML 2021'
    >>> build_task_network("multihead", 5, 2, num_tasks=3, hidden_sizes=(8,)).num_tasks
    3
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, cast

from torch import Tensor, nn

from gradsurgery.models.base import MultiTaskModel, Owned
from gradsurgery.registry import Registry

__all__ = [
    "ArchitectureInfo",
    "TaskNetwork",
    "architecture_info",
    "architecture_names",
    "build_task_network",
    "orthogonal_init",
    "register_architecture",
]


def orthogonal_init(module: nn.Module) -> None:
    """Orthogonal weights and zero biases for every ``nn.Linear`` inside ``module``."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.orthogonal_(sub.weight)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)


class TaskNetwork(MultiTaskModel):
    """Base class of task networks: ``forward(x, task_ids) -> (n, out_features)``.

    Every parameter is shared by all tasks unless a subclass overrides :meth:`_task_members`.

    Args:
        in_features: width of ``x``.
        out_features: output width.
        num_tasks: ``m``.
    """

    task_conditioned = True
    #: The registry name (set by :func:`register_architecture`).
    architecture: ClassVar[str] = ""
    #: The constructor's argument for ``build_task_network``'s ``hidden_sizes`` (None: none).
    hidden_argument: ClassVar[str | None] = "hidden"
    #: The constructor takes ``task_names=``.
    uses_task_names: ClassVar[bool] = False

    def __init__(self, in_features: int, out_features: int, num_tasks: int) -> None:
        super().__init__()
        self.in_features, self.out_features, self.num_tasks = in_features, out_features, num_tasks

    @classmethod
    def build(
        cls,
        in_features: int,
        out_features: int,
        num_tasks: int,
        hidden_sizes: Sequence[int],
        *,
        task_names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> TaskNetwork:
        """The network for :func:`build_task_network`'s arguments:
        ``cls(in_features, out_features, num_tasks, hidden=hidden_sizes, **kwargs)`` (``hidden``:
        :attr:`hidden_argument`), with ``task_names=`` when :attr:`uses_task_names`. A keyword
        the constructor does not take is a ``TypeError`` naming the ones it takes."""
        fixed: dict[str, Any] = {}
        if cls.hidden_argument is not None:
            fixed[cls.hidden_argument] = hidden_sizes
        if cls.uses_task_names:
            fixed["task_names"] = task_names
        params = inspect.signature(cls).parameters
        extra = sorted(set(params) - {"in_features", "out_features", "num_tasks", *fixed})
        unknown = sorted(set(kwargs) - set(extra))
        if unknown:
            takes = f"takes {', '.join(extra)}" if extra else "takes no extra arguments"
            raise TypeError(f"architecture {cls.architecture!r} {takes}, got {unknown}")
        factory = cast(Callable[..., TaskNetwork], cls)
        return factory(in_features, out_features, num_tasks, **fixed, **kwargs)

    def _shared_members(self) -> Iterable[Owned]:
        return [self]

    def _task_members(self, task: int) -> Iterable[Owned]:
        return []

    def forward(self, x: Tensor, task_ids: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class ArchitectureInfo:
    """A registered architecture: its class, the paper it comes from and one line about it."""

    name: str
    cls: type[TaskNetwork]
    paper: str
    summary: str


_REGISTRY: Registry[ArchitectureInfo] = Registry("architecture", ValueError)
N = TypeVar("N", bound=type[TaskNetwork])


def register_architecture(name: str, *, paper: str, summary: str) -> Callable[[N], N]:
    """Class decorator: make ``cls`` reachable as ``build_task_network(name, ...)``."""

    def deco(cls: N) -> N:
        key = name.lower()
        _REGISTRY.add(ArchitectureInfo(key, cls, paper, summary))
        cls.architecture = key
        return cls

    return deco


def architecture_names() -> list[str]:
    """All registered names, sorted."""
    return _REGISTRY.names()


def architecture_info(name: str) -> ArchitectureInfo:
    """The registered architecture ``name``; a ``ValueError`` naming the known ones otherwise."""
    return _REGISTRY.get(name)


def build_task_network(
    architecture: str,
    in_features: int,
    out_features: int,
    num_tasks: int,
    hidden_sizes: Sequence[int] = (400, 400, 400),
    *,
    task_names: Sequence[str] | None = None,
    **kwargs: Any,
) -> TaskNetwork:
    """A task network of the named architecture.

    ``kwargs`` go to the architecture's class; ``task_names`` is read by CARE only (it looks up
    their description embeddings; None: one-hot context inputs).
    """
    info = architecture_info(architecture)
    return info.cls.build(
        in_features, out_features, num_tasks, hidden_sizes, task_names=task_names, **kwargs
    )
