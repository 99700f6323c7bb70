"""The address space of one process as the unwinder sees it: its mappings, the ELF
object behind each executable one, its code bytes, and the memos of the unwinder's
decisions, which stay valid as long as the mappings do.

Every memo is bounded (MEMO_LIMIT entries, then it starts again), and a long-running
profiler can trim them further or let go of the objects it opened (clear_memos,
drop_object, drop_objects).
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable

from profiler.model import Frame, Mapping
from profiler.unwind.objfile import ObjectCache, ObjectFile
from profiler.unwind.rules import Rule

# Entries per memo of unwind decisions (per pc, per return address, per call edge):
# a memo that reaches it starts again, so memory stays bounded on any workload.
MEMO_LIMIT = 1 << 17

# How to step at a pc, memoized per (pc, exact, topmost): (kind, rule, method or
# reason, path, fast form) -- see profiler.unwind.unwinder.
Step = tuple[int, "Rule | None", str, str, "tuple[bool, int, int, int | None] | None"]
# The end of a chain walked from some state: (address of the first stack word it
# used, struct reading the words it used from there, those words, the FP value it
# needs or None, the chain, index in it where this end starts, the chain's reason,
# the words' offsets from the first, the chain's first frame in doubt) -- see
# profiler.unwind.suffixes.
Suffix = tuple[int, struct.Struct, tuple[int, ...], "int | None", "tuple[Frame, ...]", int,
               str, tuple[int, ...], int]


class AddressSpace:
    """The mappings of one process, with the object behind each executable one."""

    def __init__(self, mappings: tuple[Mapping, ...], memory: tuple[tuple[int, bytes], ...],
                 objects: ObjectCache,
                 opener: Callable[[Mapping], ObjectFile | None] | None = None) -> None:
        self.maps = sorted(mappings, key=lambda m: m.start)
        self._starts = [m.start for m in self.maps]
        self.memory = memory
        self.objects = objects
        # How a file-backed mapping becomes an object: by default its path (under the
        # cache's root); live profiling opens /proc/PID/map_files/... instead.
        self.opener = opener or (lambda m: objects.get(m.path))
        self._resolved: dict[int, tuple[ObjectFile | None, int]] = {}
        # Caches of the unwinder's decisions, valid as long as the mappings are.
        self.steps: dict[tuple[int, bool, bool], Step] = {}
        self.ra_ok: dict[int, bool] = {}
        self.edges: dict[tuple[int, int], bool] = {}
        # The ends of chains already walked, by the state a walk was in when it
        # stepped into a frame (see profiler.unwind.suffixes).
        self.suffixes: dict[tuple[int, int, int, int], list[Suffix]] = {}

    def find(self, addr: int) -> Mapping | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and addr < self.maps[i].end:
            return self.maps[i]
        return None

    def objects_defining_first(self, obj: ObjectFile, bias: int
                               ) -> list[tuple[ObjectFile | None, int]]:
        """`obj` (at `bias`), then the object of every other executable file
        mapping, each once (None for one that cannot be opened): where a dynamic
        symbol may be defined."""
        out: list[tuple[ObjectFile | None, int]] = [(obj, bias)]
        seen = {id(obj)}
        for m in self.maps:
            if m.executable and m.path.startswith("/"):
                other, obias = self.object_for(m)
                if id(other) not in seen:
                    seen.add(id(other))
                    out.append((other, obias))
        return out

    def opened(self) -> list[ObjectFile]:
        """The objects object_for() has opened so far."""
        return [obj for obj, _bias in self._resolved.values() if obj is not None]

    def object_for(self, m: Mapping) -> tuple[ObjectFile | None, int]:
        """(object, load bias) for an executable mapping; object None if unavailable."""
        hit = self._resolved.get(m.start)
        if hit is not None:
            return hit
        obj: ObjectFile | None = None
        bias = 0
        if m.path.startswith("/"):
            obj = self.opener(m)
            if obj is not None:
                bias = obj.load_bias(m.start, m.offset)
        elif m.path == "[vdso]":
            image = self._image_at(m.start, m.end)
            if image is not None:
                obj = self.objects.get_image(f"[vdso]@{hash(image):x}", image)
                if obj is not None:
                    obj.name = "[vdso]"
                    bias = obj.load_bias(m.start, 0)
        self._resolved[m.start] = (obj, bias)
        return obj, bias

    def _image_at(self, start: int, end: int) -> bytes | None:
        for mstart, data in self.memory:
            if mstart <= start and end <= mstart + len(data):
                return data[start - mstart:end - mstart]
        return None

    def read_code(self, addr: int, size: int) -> bytes:
        for mstart, data in self.memory:
            if mstart <= addr and addr + size <= mstart + len(data):
                return data[addr - mstart:addr - mstart + size]
        m = self.find(addr)
        if m is None:
            return b""
        obj, bias = self.object_for(m)
        return obj.read_code(addr - bias, size) if obj is not None else b""

    def drop_object(self, obj: ObjectFile) -> None:
        """Let go of `obj`: the mappings it was opened for open their file again
        (through the opener) when next asked."""
        for start in [k for k, (o, _b) in self._resolved.items() if o is obj]:
            del self._resolved[start]

    def drop_objects(self) -> None:
        """Let go of every object opened so far, and of the step decisions taken from
        their tables; both are made again on demand."""
        self._resolved.clear()
        self.steps.clear()
        self.ra_ok.clear()

    def clear_memos(self, limit: int) -> None:
        """Forget the step and return-address memos that hold more than `limit`
        entries (they fill again on demand)."""
        for memo in (self.steps, self.ra_ok):
            if len(memo) > limit:
                memo.clear()
