"""One small registry type: name -> builder, used for tasks, backbones, context blocks, datasets."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from nas.errors import UserError


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}

    def register(self, name: str | None = None) -> Callable:
        def deco(obj):
            key = name or obj.__name__
            if key in self._items:
                raise KeyError(f"{self.kind} {key!r} registered twice")
            self._items[key] = obj
            return obj

        return deco

    def add(self, name: str, obj: Any) -> None:
        self.register(name)(obj)

    def get(self, name: str) -> Any:
        try:
            return self._items[name]
        except KeyError:
            raise UserError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items))}") from None

    def build(self, name: str, *args, **kwargs) -> Any:
        return self.get(name)(*args, **kwargs)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def names(self) -> list[str]:
        return list(self._items)
