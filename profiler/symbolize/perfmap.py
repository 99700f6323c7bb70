"""JIT code symbols: /tmp/perf-PID.map, written by JIT compilers (``START SIZE name``
per line, in hex), read under ``root`` when one is given."""

from __future__ import annotations

import os
from array import array

from profiler.symbolize.demangle import demangle
from profiler.symbolize.segments import paint

__all__ = ["PerfMap"]


class PerfMap:
    """/tmp/perf-PID.map: "START SIZE name" lines (hex) written by JIT compilers.

    Where entries overlap (a JIT reusing memory) the later line wins.
    """

    def __init__(self, entries: list[tuple[int, int, str]], path: str = "") -> None:
        self.path = path
        self._starts = array("Q")
        self._names: list[str] = []
        items: list[tuple[int, int, int, int]] = []
        for seq, (start, size, name) in enumerate(entries):
            self._starts.append(start)
            self._names.append(name)
            items.append((start, start + size, seq, seq))
        self._segs = paint(items)

    @classmethod
    def load(cls, pid: int, root: str | None = None) -> PerfMap | None:
        path = f"/tmp/perf-{pid}.map"
        if root:
            path = os.path.join(root, path.lstrip("/"))
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            return None
        return cls(cls.parse(text), path)

    @staticmethod
    def parse(text: str) -> list[tuple[int, int, str]]:
        out: list[tuple[int, int, str]] = []
        for line in text.splitlines():
            parts = line.strip().split(None, 2)
            if len(parts) < 2:
                continue
            try:
                start = int(parts[0], 16)
                size = int(parts[1], 16)
            except ValueError:
                continue
            if size <= 0 or start < 0 or start + size >= 1 << 64:
                continue
            out.append((start, size, parts[2].strip() if len(parts) > 2 else ""))
        return out

    def lookup(self, addr: int) -> tuple[str, int] | None:
        i = self._segs.find(addr)
        if i < 0:
            return None
        return demangle(self._names[i]), addr - self._starts[i]

    def __len__(self) -> int:
        return len(self._names)
