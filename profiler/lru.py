"""A dict bounded in entries and bytes that forgets its least recently used entries:
the caches of a long-running profiler (the agent runs for months) are built on it."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Lru(OrderedDict[K, V], Generic[K, V]):
    """A dict that forgets its least recently used entries beyond a count and a byte budget.

    Reads through ``[]`` and ``get`` refresh an entry; ``in`` does not.  ``size_of``
    gives an entry's bytes (0 without a byte budget)."""

    def __init__(self, max_items: int, max_bytes: int = 0,
                 size_of: Callable[[V], int] | None = None,
                 on_evict: Callable[[K, V], None] | None = None) -> None:
        super().__init__()
        self.max_items = max(1, max_items)
        self.max_bytes = max_bytes
        self.size_of = size_of
        self.on_evict = on_evict
        self.bytes = 0
        self.evictions = 0
        self._sizes: dict[K, int] = {}

    def __getitem__(self, key: K) -> V:
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def get(self, key: K, default: Any = None) -> Any:
        if key in self:
            return self[key]
        return default

    def __setitem__(self, key: K, value: V) -> None:
        if key in self:
            self.bytes -= self._sizes.pop(key, 0)
        super().__setitem__(key, value)
        self.move_to_end(key)
        size = self.size_of(value) if self.size_of is not None else 0
        self._sizes[key] = size
        self.bytes += size
        while len(self) > 1 and (len(self) > self.max_items
                                 or (self.max_bytes and self.bytes > self.max_bytes)):
            old_key, old_value = self.popitem(last=False)
            self.evictions += 1
            if self.on_evict is not None:
                self.on_evict(old_key, old_value)

    def popitem(self, last: bool = True) -> tuple[K, V]:
        key, value = super().popitem(last=last)
        self.bytes -= self._sizes.pop(key, 0)
        return key, value

    def __delitem__(self, key: K) -> None:
        super().__delitem__(key)
        self.bytes -= self._sizes.pop(key, 0)

    def clear(self) -> None:
        super().clear()
        self._sizes.clear()
        self.bytes = 0
