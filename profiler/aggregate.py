"""Aggregate: count identical unwound stacks, keep per-binary unwind statistics.

Only unique stacks are symbolized later (profiler/resolve.py), once each.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from profiler.model import UnwoundStack
from profiler.unwind import AddressSpace


@dataclass(slots=True)
class StackKey:
    """Everything that makes two samples the same stack."""

    pid: int
    tid: int
    comm: str
    kernel: tuple[int, ...]
    user: tuple[tuple[int, bool], ...]   # (pc, exact) innermost first
    reliable: bool
    reason: str

    def as_tuple(self) -> tuple[object, ...]:
        return (self.pid, self.tid, self.comm, self.kernel, self.user, self.reliable,
                self.reason)


@dataclass(slots=True)
class Entry:
    key: StackKey
    space: AddressSpace | None   # the address space the pcs belong to
    objects: tuple[str, ...]     # object path of each user frame
    count: int = 0


@dataclass
class BinaryStats:
    samples: int = 0             # samples whose innermost user frame is in this binary
    reliable: int = 0
    methods: collections.Counter[str] = field(default_factory=collections.Counter)
    has_sframe: bool | None = None


class Aggregator:
    def __init__(self) -> None:
        self.entries: dict[tuple[object, ...], Entry] = {}
        self.samples = 0
        self.reliable = 0
        self.kernel_only = 0
        self.reasons: collections.Counter[str] = collections.Counter()
        self.binaries: dict[str, BinaryStats] = collections.defaultdict(BinaryStats)
        self.first_ns: int | None = None
        self.last_ns: int = 0

    def add(self, *, pid: int, tid: int, comm: str, time_ns: int, kernel: tuple[int, ...],
            stack: UnwoundStack | None, space: AddressSpace | None) -> None:
        """Count one sample; `stack` is None for a sample without user state."""
        self.samples += 1
        if self.first_ns is None:
            self.first_ns = time_ns
        self.last_ns = max(self.last_ns, time_ns)
        if stack is None:
            self.kernel_only += 1
            key = StackKey(pid, tid, comm, kernel, (), True, "")
            objects: tuple[str, ...] = ()
        else:
            user = tuple((f.pc, f.exact) for f in stack.frames)
            key = StackKey(pid, tid, comm, kernel, user, stack.reliable, stack.reason)
            objects = tuple(f.object for f in stack.frames)
            if stack.reliable:
                self.reliable += 1
            else:
                self.reasons[stack.reason] += 1
            if stack.frames:
                b = self.binaries[stack.frames[0].object or "[unknown]"]
                b.samples += 1
                b.reliable += stack.reliable
            for f in stack.frames:
                if f.method:
                    self.binaries[f.object or "[unknown]"].methods[f.method] += 1
        t = key.as_tuple()
        e = self.entries.get(t)
        if e is None:
            e = Entry(key, space, objects)
            self.entries[t] = e
        e.count += 1

    @property
    def user_samples(self) -> int:
        return self.samples - self.kernel_only

    def reliable_pct(self) -> float:
        n = self.user_samples
        return 100.0 * self.reliable / n if n else 0.0
