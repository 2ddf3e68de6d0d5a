"""Registries: the one list of names of each technique family users type.

A family (post-processing methods, models, ...) keeps one :class:`Registry`; a variant is added by
decorating one function (or class) with ``@REGISTRY.register("name", ...)``. The command line's
choices, config validation, the tuner's sweeps and the report's labels all read the registry, so a
new variant needs nothing else (see ``docs/architecture.md``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from detopt.errors import DetoptInputError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names → entries of one family, in registration order.

    Args:
        family: what the names are (used in error messages: ``"post-processing method"``).
    """

    def __init__(self, family: str) -> None:
        self.family = family
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name`` (a name may be registered once)."""
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.family}: a name must be a non-empty string, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.family} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def deco(entry: T) -> T:
            return self.add(name, entry)

        return deco

    def remove(self, name: str) -> T:
        """Unregister ``name`` (tests and plug-ins that replace a variant)."""
        return self._entries.pop(name)

    def check(self, name: object, key: str | None = None) -> str:
        """``name`` when it is registered.

        Raises:
            DetoptInputError: one line naming ``key`` (or the family), the value, the close
                matches and every registered name.
        """
        if isinstance(name, str) and name in self._entries:
            return name
        close = difflib.get_close_matches(str(name), list(self._entries), n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        where = f"{key}: " if key else ""
        raise DetoptInputError(
            f"{where}unknown {self.family} {name!r}{hint}; registered: {', '.join(self._entries)}"
        )

    def get(self, name: object, key: str | None = None) -> T:
        """The entry of ``name`` (see :meth:`check` for the error)."""
        return self._entries[self.check(name, key)]

    def names(self) -> tuple[str, ...]:
        """Every registered name, in registration order."""
        return tuple(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(list(self._entries.items()))

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.family!r}: {', '.join(self._entries)})"
