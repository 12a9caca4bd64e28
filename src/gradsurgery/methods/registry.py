"""Short names for methods, so that Python code, the command line and configs can pick one.

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

__all__ = ["MethodInfo", "create_method", "method_info", "method_names", "register"]


@dataclass(frozen=True)
class MethodInfo:
    """A registered method: its class, the paper it comes from and its update rule in one line."""

    name: str
    cls: type[Method]
    paper: str
    rule: str


_REGISTRY: Registry[MethodInfo] = Registry("method")
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
