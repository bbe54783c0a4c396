"""The sidecar's caches: one module, three shapes, each with a known way to forget.

- :class:`Memo` — a bounded memo for answers that never go stale (a selector's
  structure, a price parsed from an attribute): at most ``maxsize`` entries, the
  oldest set is forgotten first. A hit is a plain lookup (``memo[key]``).
- :class:`LRU` — at most ``maxsize`` entries, or at most ``maxsize`` units of weight
  when given a ``weigh`` function (bytes of a kept rewrite); the least recently used
  go first.
- :class:`Expiring` — entries live ``ttl`` seconds (profiles, visitors' first hits,
  rate-limit buckets), at most ``maxsize`` of them.

Pure functions are cached with :func:`functools.lru_cache` instead. Keys are values,
never ``id()`` of an object: an id can be reused once its object is freed.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

__all__ = ["LRU", "Expiring", "Memo"]


class Memo(OrderedDict[K, V]):
    """A mapping that holds at most *maxsize* entries: :meth:`put` forgets the oldest
    entry set when it is full. Reads are the mapping's own (``[]``, ``get``, ``in``)
    and do not reorder anything, so a hit costs what a dict lookup costs; only writes
    go through :meth:`put`. (An ordered dict rather than a dict: forgetting a plain
    dict's first entry walks every slot emptied since its last resize.)"""

    __slots__ = ("maxsize",)

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self.maxsize = maxsize

    def put(self, key: K, value: V) -> V:
        """Remember *value* for *key* and return it."""
        if len(self) >= self.maxsize and key not in self:
            if self.maxsize <= 0:
                return value
            self.popitem(last=False)
        self[key] = value
        return value


class LRU(Generic[K, V]):
    """At most *maxsize* entries (or units of weight, with *weigh*), least recently
    used forgotten first. An entry heavier than the whole budget is not kept."""

    def __init__(self, maxsize: int, weigh: Callable[[V], int] | None = None) -> None:
        self.maxsize = maxsize
        self._weigh = weigh
        self._data: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self.weight = 0
        """The entries' total weight (their count without *weigh*)."""

    def get(self, key: K, default: V | None = None) -> V | None:
        try:
            value = self._data[key]
        except KeyError:
            return default
        self._data.move_to_end(key)
        return value[0]

    def __getitem__(self, key: K) -> V:
        value = self._data[key]
        self._data.move_to_end(key)
        return value[0]

    def __setitem__(self, key: K, value: V) -> None:
        weight = self._weigh(value) if self._weigh is not None else 1
        data = self._data
        old = data.pop(key, None)
        if old is not None:
            self.weight -= old[1]
        if weight > self.maxsize:
            return
        data[key] = (value, weight)
        self.weight += weight
        while self.weight > self.maxsize:
            _key, (_value, dropped) = data.popitem(last=False)
            self.weight -= dropped

    def values(self) -> list[V]:
        """The values, least recently used first (their order is left as it is)."""
        return [value for value, _weight in self._data.values()]

    def pop(self, key: K, default: V | None = None) -> V | None:
        item = self._data.pop(key, None)
        if item is None:
            return default
        self.weight -= item[1]
        return item[0]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)


class Expiring(Generic[K, V]):
    """A mapping whose entries expire *ttl* seconds after they were set, at most
    *maxsize* of them (the oldest go first). The request path reads and writes these
    for every request, so it is one ordered dict of ``(deadline, value)``, no more.
    Every entry lives equally long, so the order they were set in is the order they
    expire in: the oldest are swept from the front as new ones arrive."""

    def __init__(
        self, maxsize: int, ttl: float, timer: Callable[[], float] = time.monotonic
    ) -> None:
        self.maxsize = maxsize
        self.ttl = ttl
        self._timer = timer
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __getitem__(self, key: K) -> V:
        deadline, value = self._data[key]
        if deadline <= self._timer():
            del self._data[key]
            raise KeyError(key)
        return value

    def get(self, key: K, default: V | None = None) -> V | None:
        try:
            return self[key]
        except KeyError:
            return default

    def __setitem__(self, key: K, value: V) -> None:
        data = self._data
        now = self._timer()
        data[key] = (now + self.ttl, value)
        data.move_to_end(key)
        # Sweep a little on every write: what expired first is at the front.
        for _ in range(2):
            if not data:  # a ttl of 0 (or less) expires even the entry just set
                break
            oldest = next(iter(data.values()))
            if oldest[0] > now and len(data) <= self.maxsize:
                break
            data.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        try:
            self[key]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def pop(self, key: K, default: V | None = None) -> V | None:
        item = self._data.pop(key, None)
        return default if item is None or item[0] <= self._timer() else item[1]

    def items(self) -> Iterator[tuple[K, V]]:
        now = self._timer()
        return ((key, value) for key, (deadline, value) in self._data.items() if deadline > now)

    def __len__(self) -> int:
        return len(self._data)
