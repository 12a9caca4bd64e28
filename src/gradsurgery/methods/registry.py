"""Short names for methods, so that Python code, the command line and configs can pick one.

Every place that takes a method name (:func:`create_method`, :func:`method_info`, ``gradsurgery
compare``, ``rl`` and ``toy``) resolves it here: any case, ``-`` and ``_`` not significant
(``nashmtl`` and ``nash-mtl`` for ``nash_mtl``), the aliases of :data:`ALIASES`, and an unknown name raises a ``KeyError`` with a
"did you mean" and the registered names.

Example:
    >>> from gradsurgery.methods import create_method
    >>> create_method("pcgrad", reduction="mean").reduction
    'mean'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from gradsurgery.methods.base import Method
from gradsurgery.registry import Registry

__all__ = [
    "ALIASES",
    "MethodInfo",
    "create_method",
    "method_info",
    "method_names",
    "register",
    "resolve_method",
    "suggest_methods",
]


@dataclass(frozen=True)
class MethodInfo:
    """A registered method: its class, the paper it comes from and its update rule in one line."""

    name: str
    cls: type[Method]
    paper: str
    rule: str


_REGISTRY: Registry[MethodInfo] = Registry("method")

#: Other spellings accepted for a registered name (alias → name).
ALIASES: dict[str, str] = {
    "nash": "nash_mtl",
    "imtl-grad": "imtl_g",
    "imtl-loss": "imtl_l",
    "unitary": "sum",
    "uncertainty": "uw",
}
for _alias, _name in ALIASES.items():
    _REGISTRY.add_alias(_alias, _name)
M = TypeVar("M", bound=type[Method])


def register(name: str, *, paper: str, rule: str) -> Callable[[M], M]:
    """Class decorator: make ``cls`` reachable as ``create_method(name, **kwargs)``."""

    def deco(cls: M) -> M:
        key = name.lower()
        _REGISTRY.add(MethodInfo(key, cls, paper, rule))
        cls.name = key
        return cls

    return deco


def method_names() -> list[str]:
    """All registered names, sorted."""
    return _REGISTRY.names()


def method_info(name: str) -> MethodInfo:
    """The registered method ``name`` (any case); a ``KeyError`` naming the known ones otherwise."""
    return _REGISTRY.get(name)


def resolve_method(name: str) -> str:
    """The registered name of ``name`` (any case, or an alias); ``KeyError`` with a suggestion."""
    return _REGISTRY.resolve(name)


def suggest_methods(name: str) -> list[str]:
    """Registered method names close to ``name`` (for "did you mean" messages)."""
    return _REGISTRY.suggest(name)


def create_method(name: str | Method, **kwargs: Any) -> Method:
    """Instantiate a method by registry name (an instance is returned as it is)."""
    if isinstance(name, Method):
        if kwargs:
            raise ValueError("keyword arguments are only accepted with a method name")
        return name
    info = method_info(name)
    try:
        return info.cls(**kwargs)
    except TypeError as e:
        raise TypeError(f"bad arguments for method {info.name!r}: {e}") from e
