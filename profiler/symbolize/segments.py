"""Address segment tables: disjoint [start, next start) segments, each naming an
entry, painted from possibly overlapping intervals (the highest priority wins).

The symbol tables (ELF symbols, perf maps) look addresses up in one with bisect:
O(log n) per lookup.
"""

from __future__ import annotations

import heapq
from array import array
from bisect import bisect_right

__all__ = ["Segments", "paint"]


class Segments:
    """Disjoint [start, next start) segments, each naming an entry index or -1 (none)."""

    __slots__ = ("idx", "starts")

    def __init__(self) -> None:
        self.starts = array("Q")
        self.idx = array("l")

    def emit(self, pos: int, idx: int) -> None:
        starts, ids = self.starts, self.idx
        if starts and starts[-1] == pos:
            ids[-1] = idx
            if len(ids) >= 2 and ids[-2] == idx:
                starts.pop()
                ids.pop()
        elif not ids or ids[-1] != idx:
            starts.append(pos)
            ids.append(idx)

    def find(self, addr: int) -> int:
        i = bisect_right(self.starts, addr) - 1
        return self.idx[i] if i >= 0 else -1


def paint(items: list[tuple[int, int, int, int]]) -> Segments:
    """Segments for (start, end, priority, index) intervals; the highest priority wins.

    Without overlaps this is one pass over the sorted intervals; with them a sweep over
    the interval boundaries keeps the live intervals in a heap (O(n log n)).
    """
    items.sort()
    segs = Segments()
    overlap = any(items[k][1] > items[k + 1][0] for k in range(len(items) - 1))
    if not overlap:
        for start, end, _prio, idx in items:
            segs.emit(start, idx)
            segs.emit(end, -1)
        return segs
    points = sorted({p for s, e, _, _ in items for p in (s, e)})
    heap: list[tuple[int, int, int]] = []
    j, n = 0, len(items)
    for p in points:
        while j < n and items[j][0] <= p:
            s, e, prio, idx = items[j]
            heapq.heappush(heap, (-prio, e, idx))
            j += 1
        while heap and heap[0][1] <= p:
            heapq.heappop(heap)
        segs.emit(p, heap[0][2] if heap else -1)
    return segs
