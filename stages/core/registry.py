"""A name -> object registry: one per method axis (smoothing kinds, student variants, evaluators).

A new variant is one decorated definition in the module that owns the registry; the config schema,
the Snakemake wildcard constraints and the CLIs' choices all read the names from here.
(detectron2 and fvcore have the same idea; core stays free of both.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Objects by name, in registration order. ``what`` names the axis (and its config key) in errors."""

    def __init__(self, what: str):
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.what}: {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def remove(self, name: str) -> T:
        """Take ``name`` out again (a test's own registration); raises KeyError when absent."""
        return self._items.pop(name)

    def get(self, name: str) -> T:
        if name not in self._items:
            raise ValueError(f"config key {self.what!r}: unknown name {name!r}; registered: {', '.join(self._items)}")
        return self._items[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)
