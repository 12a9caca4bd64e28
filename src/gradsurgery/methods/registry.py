"""Short names for methods, so that Python code, the command line and configs can pick one.

Every place that takes a method name (:func:`create_method`, :func:`method_info`, ``gradsurgery
compare``, ``rl`` and ``toy``) resolves it here: any case, ``-`` and ``_`` not significant
(``nashmtl`` and ``nash-mtl`` for ``nash_mtl``), the aliases of :data:`ALIASES`, and an unknown name raises a ``KeyError`` with a
"did you mean" and the registered names.

Composed names: ``"WEIGHTING+GRADIENT"`` (``"uw+pcgrad"``) is a loss weighting composed under a
gradient method (:class:`~gradsurgery.methods.composed.Composed`; its module docstring gives the
semantics and how keyword arguments reach the parts: ``PART.KEY`` to one part, a bare ``KEY`` to
every part that takes it). Each part resolves as a name does; a meaningless pair (two gradient
methods, two weightings, ...) is a ``ValueError`` saying why. Composed names are not among
:func:`method_names` (which lists registered methods); :func:`composable_methods` lists the parts.

Example:
    >>> from gradsurgery.methods import create_method
    >>> create_method("pcgrad", reduction="mean").reduction
    'mean'
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from gradsurgery.methods.base import Method
from gradsurgery.methods.composed import Composed, composition_problem
from gradsurgery.registry import Registry

__all__ = [
    "ALIASES",
    "MethodInfo",
    "composable_methods",
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
    """The registered method ``name`` (any case); a ``KeyError`` naming the known ones otherwise.
    For a composed name, a :class:`MethodInfo` of :class:`~gradsurgery.methods.composed.Composed`
    whose paper and rule are the parts'."""
    if "+" in name:
        a, b = (_REGISTRY.get(part) for part in _composed_parts(name))
        return MethodInfo(
            f"{a.name}+{b.name}",
            Composed,
            f"{a.paper}; {b.paper}",
            f"losses weighted by {a.name} ({a.rule}), then {b.name} on the weighted gradients "
            f"({b.rule})",
        )
    return _REGISTRY.get(name)


def resolve_method(name: str) -> str:
    """The registered name of ``name`` (any case, or an alias); ``KeyError`` with a suggestion.
    A composed name resolves part by part (``"Uncertainty+PC-Grad"`` → ``"uw+pcgrad"``); a
    meaningless pair is a ``ValueError`` saying why."""
    if "+" not in name:
        return _REGISTRY.resolve(name)
    a, b = (_REGISTRY.get(part) for part in _composed_parts(name))
    problem = composition_problem(a.cls, b.cls)
    if problem is not None:
        raise ValueError(f"method {name.strip()!r}: {problem}")
    return f"{a.name}+{b.name}"


def composable_methods() -> tuple[list[str], list[str]]:
    """The registered names that compose as ``WEIGHTING+GRADIENT``: (loss weightings, gradient
    methods), each sorted."""
    infos = [_REGISTRY.get(n) for n in _REGISTRY.names()]
    usable = [i for i in infos if i.cls.not_composable is None]
    return (
        [i.name for i in usable if i.cls.requires == "losses"],
        [i.name for i in usable if i.cls.requires != "losses"],
    )


def suggest_methods(name: str) -> list[str]:
    """Registered method names close to ``name`` (for "did you mean" messages)."""
    if "+" in name:
        return [s for part in name.split("+") for s in _REGISTRY.suggest(part)]
    return _REGISTRY.suggest(name)


def create_method(name: str | Method, **kwargs: Any) -> Method:
    """Instantiate a method by registry name (an instance is returned as it is). A composed name
    gives a :class:`~gradsurgery.methods.composed.Composed` of its parts, ``kwargs`` routed to them
    (``PART.KEY`` to one part, a bare ``KEY`` to every part that takes it)."""
    if isinstance(name, Method):
        if kwargs:
            raise ValueError("keyword arguments are only accepted with a method name")
        return name
    if "+" in name:
        return _create_composed(resolve_method(name), kwargs)
    info = method_info(name)
    try:
        return info.cls(**kwargs)
    except TypeError as e:
        raise TypeError(f"bad arguments for method {info.name!r}: {e}") from e


def _composed_parts(name: str) -> tuple[str, str]:
    parts = [p.strip() for p in name.split("+")]
    if len(parts) != 2 or not all(parts):
        raise ValueError(
            f"method {name.strip()!r}: a composed name is WEIGHTING+GRADIENT, two method names "
            "joined by one '+' (e.g. uw+pcgrad)"
        )
    return parts[0], parts[1]


def _takes(cls: type[Method], key: str) -> bool:
    """Whether ``cls`` names ``key`` in its constructor (``**kwargs`` does not count: give such a
    part its arguments as ``PART.KEY``)."""
    param = inspect.signature(cls.__init__).parameters.get(key)
    return param is not None and param.kind is not inspect.Parameter.VAR_KEYWORD


def _create_composed(name: str, kwargs: dict[str, Any]) -> Method:
    """``Composed`` of the resolved ``name``'s parts, ``kwargs`` routed (see :func:`create_method`)."""
    parts = dict.fromkeys(name.split("+"))
    routed: dict[str, dict[str, Any]] = {part: {} for part in parts}
    for key, value in kwargs.items():
        written, dot, sub = key.partition(".")
        if dot:
            target = _REGISTRY.resolve(written) if written else written
            if target not in routed:
                raise TypeError(
                    f"bad arguments for method {name!r}: {key!r} is for {written!r}, which is "
                    f"not one of its parts ({', '.join(parts)})"
                )
            routed[target][sub] = value
            continue
        takers = [part for part in parts if _takes(_REGISTRY.get(part).cls, key)]
        if not takers:
            raise TypeError(
                f"bad arguments for method {name!r}: neither part ({', '.join(parts)}) takes "
                f"{key!r}"
            )
        for part in takers:
            routed[part][key] = value
    weighting, gradient = (create_method(part, **routed[part]) for part in parts)
    return Composed(weighting, gradient)
