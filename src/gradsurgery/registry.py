"""A registry of named classes, as the methods (:mod:`gradsurgery.methods.registry`) and the RL
architectures (:mod:`gradsurgery.rl.architectures`) use it: names are case-insensitive, a name is
registered to one class only, a name may have aliases (other names resolved to it), ``-`` and ``_``
are not significant (``nashmtl`` and ``nash-mtl`` find ``nash_mtl``), and an unknown name raises an error that lists the known ones, with a "did you
mean" for close misspellings.

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
    >>> shapes.add_alias("sq", "square")
    >>> shapes.get("SQ").name
    'square'
    >>> shapes.get("sqare")
    Traceback (most recent call last):
    ...
    KeyError: "unknown shape 'sqare'; did you mean square? known shapes: square"
"""

from __future__ import annotations

import difflib
from typing import Generic, Protocol, TypeVar

__all__ = ["Registry"]


class _Entry(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def cls(self) -> type: ...


E = TypeVar("E", bound=_Entry)


def _bare(name: str) -> str:
    return name.replace("-", "").replace("_", "")


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
        self._aliases: dict[str, str] = {}

    def add_alias(self, alias: str, name: str) -> None:
        """Accept ``alias`` (any case) for ``name`` (which may be registered later)."""
        self._aliases[alias.lower()] = name.lower()

    def resolve(self, name: str) -> str:
        """The registered name for ``name`` or one of its aliases (any case); ``error`` if none."""
        return self.get(name).name

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
        key = name.strip().lower()
        entry = self._entries.get(self._aliases.get(key, key))
        if entry is None:  # separators are not significant: pc-grad, nashmtl, imtl-g
            bare = _bare(key)
            entry = next((e for k, e in self._entries.items() if _bare(k) == bare), None)
        if entry is None:
            raise self.error(self.unknown_message(name))
        return entry

    def suggest(self, name: str) -> list[str]:
        """Registered names close to ``name`` (difflib), closest first."""
        spellings = {**{k: k for k in self._entries}, **self._aliases}
        close = difflib.get_close_matches(name.strip().lower(), list(spellings), n=3)
        return list(dict.fromkeys(spellings[c] for c in close if spellings[c] in self._entries))

    def unknown_message(self, name: str) -> str:
        """``unknown <kind> 'name'; did you mean ...? known <kind>s: ...``."""
        hits = self.suggest(name)
        hint = f"did you mean {' or '.join(hits)}? " if hits else ""
        return f"unknown {self.kind} {name!r}; {hint}known {self.kind}s: {', '.join(self.names())}"
