"""A registry of named classes, as the methods (:mod:`gradsurgery.methods.registry`) and the RL
architectures (:mod:`gradsurgery.rl.architectures`) use it: names are case-insensitive, a name is
registered to one class only, and an unknown name raises an error that lists the known ones.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Info:
    ...     name: str
    ...     cls: type
    >>> shapes: Registry[Info] = Registry("shape")
    >>> class Square: ...
    >>> shapes.add(Info("square", Square))
    >>> shapes.names(), shapes.get("SQUARE").cls is Square
    (['square'], True)
    >>> shapes.get("circle")
    Traceback (most recent call last):
    ...
    KeyError: "unknown shape 'circle'; known shapes: square"
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

__all__ = ["Registry"]


class _Entry(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def cls(self) -> type: ...


E = TypeVar("E", bound=_Entry)


class Registry(Generic[E]):
    """Entries (each with a lower-case ``name`` and a ``cls``) by name.

    Args:
        kind: what is registered, for messages ("method", "architecture").
        error: the exception type of an unknown name (``KeyError`` or ``ValueError``).
    """

    def __init__(self, kind: str, error: type[LookupError | ValueError] = KeyError) -> None:
        self.kind = kind
        self.error = error
        self._entries: dict[str, E] = {}

    def add(self, entry: E) -> None:
        """Register ``entry`` (again for the same class is allowed: a module reloaded)."""
        key = entry.name.lower()
        known = self._entries.get(key)
        if known is not None and known.cls is not entry.cls:
            raise ValueError(
                f"{self.kind} name {entry.name!r} is already registered to {known.cls}"
            )
        self._entries[key] = entry

    def remove(self, name: str) -> None:
        """Forget ``name`` if registered (for tests that register a throwaway class)."""
        self._entries.pop(name.lower(), None)

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def get(self, name: str) -> E:
        """The entry registered as ``name`` (any case); ``error`` listing the known names if none."""
        entry = self._entries.get(name.lower())
        if entry is None:
            raise self.error(
                f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(self.names())}"
            )
        return entry
