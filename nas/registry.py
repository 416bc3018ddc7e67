"""One small registry type: name -> builder (+ the entry's metadata), used for tasks, backbones, context blocks,
datasets, palette rules and model types. Users add entries from their own modules (see ``trcnas.nas.plugins``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from trcnas.nas.errors import UserError


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}
        self._info: dict[str, Any] = {}
        self._prefixes: dict[str, Callable[[str], Any]] = {}

    def register(self, name: str | None = None, info: Any = None) -> Callable:
        """Decorator; ``info`` is the entry's metadata (e.g. a context type's label, colour and genotype code)."""

        def deco(obj):
            key = name or obj.__name__
            if key in self._items:
                raise KeyError(f"{self.kind} {key!r} registered twice")
            self._items[key] = obj
            self._info[key] = info
            return obj

        return deco

    def add(self, name: str, obj: Any, info: Any = None) -> None:
        self.register(name, info)(obj)

    def add_prefix(self, prefix: str, resolve: Callable[[str], Any]) -> None:
        """Names ``<prefix><rest>`` are entries too: ``resolve(rest)`` gives the builder (e.g. ``timm:<model>``
        for any timm model); ``resolve`` raises ``UserError`` for a ``rest`` it has no entry for."""
        self._prefixes[prefix] = resolve

    def get(self, name: str) -> Any:
        if name in self._items:
            return self._items[name]
        for prefix, resolve in self._prefixes.items():
            if isinstance(name, str) and name.startswith(prefix):
                return resolve(name[len(prefix):])
        also = "".join(f", or {p}<name>" for p in self._prefixes)
        raise UserError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items))}{also}")

    def info(self, name: str) -> Any:
        """The metadata registered with ``name`` (None if it has none, or if it is a prefixed name)."""
        self.get(name)
        return self._info.get(name)

    def build(self, name: str, *args, **kwargs) -> Any:
        return self.get(name)(*args, **kwargs)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def names(self) -> list[str]:
        return list(self._items)
