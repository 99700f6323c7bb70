"""Aggregate: count identical unwound stacks, keep per-binary unwind statistics.

Only unique stacks are symbolized later (profiler/symbolize/resolve.py), once each.

A profile has many samples and few distinct chains, and the unwinder's memo
(profiler.unwind.memo.UnwindMemo) hands back the very same UnwoundStack object for a
repeated chain; what a sample adds to the statistics is derived once per such object
and the per-binary tallies are folded in when they are read.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from profiler.model import UnwoundStack
from profiler.unwind.space import AddressSpace


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
    doubt: int = -1      # index into `user` of the first frame in doubt (UnwoundStack.doubt)

    def as_tuple(self) -> tuple[object, ...]:
        return (self.pid, self.tid, self.comm, self.kernel, self.user, self.reliable,
                self.reason, self.doubt)


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


class _Derived:
    """What one UnwoundStack contributes, computed once per stack object."""

    __slots__ = ("stack", "user", "objects", "count", "token")

    def __init__(self, stack: UnwoundStack, tokens: dict[tuple[object, ...], int]) -> None:
        self.stack = stack           # keeps id(stack) from being reused while cached
        self.user = tuple((f.pc, f.exact) for f in stack.frames)
        self.objects = tuple(f.object for f in stack.frames)
        self.count = 0               # samples not yet folded into the binary stats
        # equal chains (from different stack objects) share one small token, so an
        # entry's key hashes a few ints instead of the whole chain
        self.token = tokens.setdefault((self.user, stack.reliable, stack.reason,
                                        stack.doubt), len(tokens))


_MAX_DERIVED = 1 << 16


class Aggregator:
    def __init__(self) -> None:
        self.entries: dict[tuple[object, ...], Entry] = {}
        self.samples = 0
        self.reliable = 0
        self.kernel_only = 0
        self.reasons: collections.Counter[str] = collections.Counter()
        self._binaries: dict[str, BinaryStats] = collections.defaultdict(BinaryStats)
        self._derived: dict[int, _Derived] = {}
        self._tokens: dict[tuple[object, ...], int] = {((), True, "", -1): 0}
        self.first_ns: int | None = None
        self.last_ns: int = 0

    def add(self, *, pid: int, tid: int, comm: str, time_ns: int, kernel: tuple[int, ...],
            stack: UnwoundStack | None, space: AddressSpace | None, count: int = 1) -> None:
        """Count `count` samples with the same stack, the first at `time_ns`; `stack`
        is None for samples without user state."""
        self.samples += count
        self.seen(time_ns, time_ns)
        if stack is None:
            self.kernel_only += count
            t: tuple[object, ...] = (pid, tid, comm, kernel, 0)
            e = self.entries.get(t)
            if e is None:
                e = Entry(StackKey(pid, tid, comm, kernel, (), True, ""), space, ())
                self.entries[t] = e
            e.count += count
            return
        d = self._derived.get(id(stack))
        if d is None or d.stack is not stack:
            if len(self._derived) >= _MAX_DERIVED:
                self._fold()
                self._derived.clear()
            d = _Derived(stack, self._tokens)
            self._derived[id(stack)] = d
        d.count += count
        if stack.reliable:
            self.reliable += count
        else:
            self.reasons[stack.reason] += count
        t = (pid, tid, comm, kernel, d.token)
        e = self.entries.get(t)
        if e is None:
            e = Entry(StackKey(pid, tid, comm, kernel, d.user, stack.reliable, stack.reason,
                               stack.doubt), space, d.objects)
            self.entries[t] = e
        e.count += count

    def seen(self, first_ns: int, last_ns: int) -> None:
        """Widen the profile's time span to cover [first_ns, last_ns]."""
        if self.first_ns is None or first_ns < self.first_ns:
            self.first_ns = first_ns
        if last_ns > self.last_ns:
            self.last_ns = last_ns

    def export(self, space_key: Callable[[AddressSpace | None], object]) -> dict[str, Any]:
        """Everything counted, as plain data (for another process's merge()); each
        entry's address space is replaced by `space_key` of it."""
        return {
            "entries": [(e.key.as_tuple(), space_key(e.space), e.objects, e.count)
                        for e in self.entries.values()],
            "binaries": {path: (b.samples, b.reliable, dict(b.methods))
                         for path, b in self.binaries.items()},
            "totals": (self.samples, self.reliable, self.kernel_only, dict(self.reasons),
                       self.first_ns, self.last_ns),
        }

    def merge(self, counts: dict[str, Any],
              space_of: Callable[[object], AddressSpace | None]) -> None:
        """Add what export() gave; `space_of` turns a space key back into a space."""
        for (pid, tid, comm, kernel, user, reliable, reason, doubt), skey, objects, n in \
                counts["entries"]:
            token = self._tokens.setdefault((user, reliable, reason, doubt),
                                            len(self._tokens))
            t = (pid, tid, comm, kernel, token)
            e = self.entries.get(t)
            if e is None:
                e = self.entries[t] = Entry(
                    StackKey(pid, tid, comm, kernel, user, reliable, reason, doubt),
                    space_of(skey), objects)
            e.count += n
        for path, (samples, reliable, methods) in counts["binaries"].items():
            b = self._binaries[path]
            b.samples += samples
            b.reliable += reliable
            b.methods.update(methods)
        samples, reliable, kernel_only, reasons, first, last = counts["totals"]
        self.samples += samples
        self.reliable += reliable
        self.kernel_only += kernel_only
        self.reasons.update(reasons)
        if first is not None:
            self.seen(first, last)

    def _fold(self) -> None:
        """Move the pending per-stack counts into the per-binary statistics."""
        for d in self._derived.values():
            n = d.count
            if not n:
                continue
            d.count = 0
            frames = d.stack.frames
            if frames:
                b = self._binaries[frames[0].object or "[unknown]"]
                b.samples += n
                if d.stack.reliable:
                    b.reliable += n
            for f in frames:
                if f.method:
                    self._binaries[f.object or "[unknown]"].methods[f.method] += n

    @property
    def binaries(self) -> dict[str, BinaryStats]:
        """Per binary (of the innermost user frame): samples, reliable, unwind methods."""
        self._fold()
        return self._binaries

    @property
    def user_samples(self) -> int:
        return self.samples - self.kernel_only

    def reliable_pct(self) -> float:
        n = self.user_samples
        return 100.0 * self.reliable / n if n else 0.0
