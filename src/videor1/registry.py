"""The one `Registry`: named variants that users plug in (rewards, advantage estimators, loss aggregations,
benchmarks, synthetic tasks).

A registry maps a name to an object (a function or a class). `register(name)` is a decorator; registering a
name twice is refused unless `overwrite=True` (or the very same object is registered again, which makes
re-importing a module harmless). `get(name)` on an unknown name raises `KeyError` listing the known names, so
a typo in a config fails with the fix in the message. A registry is also a read-only mapping
(`name in registry`, `registry[name]`, iteration over names in registration order).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Named variants of one kind (`kind` names it in error messages, e.g. "reward")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, *, overwrite: bool = False) -> Callable[[T], T]:
        """Decorator adding the object under `name`; re-using a name needs `overwrite=True`."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def add(obj: T) -> T:
            if name in self._items and not overwrite and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered (pass overwrite=True to replace it)")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:  # type: ignore[override]  # unknown names raise instead of returning None
        """The object registered as `name`; KeyError listing the known names otherwise."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._items)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
