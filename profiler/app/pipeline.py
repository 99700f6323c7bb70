"""The part of a run after capture, shared by the live run, `report` and the agent:
unwind a raw sample (through the memo), re-read the maps when newer ones could help,
and count the chain into the aggregator the caller names; at the end, symbolize."""

from __future__ import annotations

from collections.abc import Callable

from profiler.aggregate import Aggregator
from profiler.model import ProfileData, RawSample
from profiler.reasons import (
    OBJECT_UNAVAILABLE,
    PC_NOT_MAPPED,
    RA_NOT_EXECUTABLE,
)
from profiler.symbolize.resolve import Resolver
from profiler.unwind.memo import UnwindMemo
from profiler.unwind.process import Process, ProcessTable
from profiler.unwind.space import AddressSpace
from profiler.unwind.unwinder import Unwinder

# Chain failures that newer maps could fix (a library loaded after the maps were read).
REFRESH_REASONS = (PC_NOT_MAPPED, RA_NOT_EXECUTABLE, OBJECT_UNAVAILABLE)


class Pipeline:
    """Unwind and aggregate raw samples; at the end, symbolize and write outputs."""

    def __init__(self, unwinder: Unwinder, resolver: Resolver) -> None:
        self.unwinder = unwinder
        self.memo = UnwindMemo(unwinder)
        self.resolver = resolver
        self.refreshes = 0

    def add(self, agg: Aggregator, sample: RawSample, space: AddressSpace | None,
            has_user: bool = True, proc: Process | None = None, table: ProcessTable | None = None,
            later: Callable[[], AddressSpace | None] | None = None,
            memo_key: tuple[object, ...] | None = None) -> None:
        """Unwind one sample and count it into `agg`.  When it fails for a reason newer
        maps could fix, the maps are re-read (live: `proc` and `table`) or the next
        snapshot is tried (`later`), and the sample is unwound again."""
        stack = None
        if has_user and space is not None:
            stack = self.memo.unwind(sample, space, memo_key)
            if not stack.reliable and stack.reason in REFRESH_REASONS:
                newer = None
                if proc is not None and table is not None and table.refresh(proc):
                    newer = proc.space
                elif later is not None:
                    newer = later()
                if newer is not None and newer is not space:
                    self.refreshes += 1
                    space = newer
                    stack = self.memo.unwind(sample, space)
        elif has_user:
            stack = self.unwinder.unwind(sample, AddressSpace((), (), self.unwinder.objects))
        agg.add(pid=sample.pid, tid=sample.tid, comm=sample.comm, time_ns=sample.time_ns,
                kernel=sample.kernel_stack, stack=stack, space=space)

    def profile(self, agg: Aggregator, *, period_ns: int, start_ns: int, duration_ns: int,
                process_names: dict[int, str] | None = None) -> ProfileData:
        return self.resolver.profile(agg, period_ns=period_ns, start_ns=start_ns,
                                     duration_ns=duration_ns, process_names=process_names)
