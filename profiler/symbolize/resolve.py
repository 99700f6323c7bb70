"""Symbolize: turn aggregated stacks into ProfileData for the output formats.

Each unique stack is resolved once.  A user pc maps to its mapping and object; the
symbol is looked up at the link-time address (minus one for return addresses, so a
call that ends a function is charged to the caller); the Location keeps the pc as
captured.  Frames without a symbol keep module and offset.  Kernel pcs use
/proc/kallsyms, JIT code /tmp/perf-PID.map.  An unreliable chain ends with a synthetic
frame naming its reason, placed where the doubt begins: the frames past it, toward
the root, were found by going past a failed check or without unwind data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from profiler.aggregate import Aggregator, Entry
from profiler.model import Location, MappingInfo, ProfileData, StackSample
from profiler.unwind.objfile import ObjectFile

if TYPE_CHECKING:
    from profiler.symbolize.symbols import ElfSymbols, KernelSymbols, PerfMap

KERNEL_MAPPING = MappingInfo(0xFFFF000000000000, 0xFFFFFFFFFFFFFFFF, 0, "[kernel.kallsyms]")
UNKNOWN_MAPPING_PATH = "[unknown]"


class Resolver:
    def __init__(self, *, debug_dirs: Sequence[str] = ("/usr/lib/debug",),
                 root: str | None = None, kallsyms: str | None = "/proc/kallsyms",
                 perf_maps: bool = True,
                 kernel_names: dict[int, tuple[str, int]] | None = None) -> None:
        """`kernel_names` ({pc: (symbol, offset)}, from a capture) names kernel pcs
        instead of `kallsyms`, which is then never read."""
        self.debug_dirs = tuple(debug_dirs)
        self.root = root
        self._symbols: dict[ObjectFile, ElfSymbols | None] = {}
        self._kernel: KernelSymbols | None = None
        self._kallsyms = kallsyms if kernel_names is None else None
        self._kernel_names = kernel_names
        self._perf_maps: dict[int, PerfMap | None] = {}
        self.use_perf_maps = perf_maps
        self._mapping_info: dict[tuple[int, int, str], MappingInfo] = {}
        self._locations: dict[tuple[object, ...], Location] = {}

    # -- symbol sources ---------------------------------------------------------

    def symbols(self, obj: ObjectFile) -> ElfSymbols | None:
        key = obj   # the object itself: an id() could be reused by a later object
        if key not in self._symbols:
            from profiler.symbolize.symbols import ElfSymbols
            try:
                self._symbols[key] = ElfSymbols.load(obj, self.debug_dirs, self.root)
            except Exception:  # noqa: BLE001 - a damaged file costs its names, not the run
                self._symbols[key] = None
        return self._symbols[key]

    def kernel(self) -> KernelSymbols | None:
        if self._kernel is None and self._kallsyms:
            from profiler.symbolize.symbols import KernelSymbols
            try:
                self._kernel = KernelSymbols.load(self._kallsyms)
            except OSError:
                self._kallsyms = None
        return self._kernel

    def perf_map(self, pid: int) -> PerfMap | None:
        if not self.use_perf_maps:
            return None
        if pid not in self._perf_maps:
            from profiler.symbolize.symbols import PerfMap
            try:
                self._perf_maps[pid] = PerfMap.load(pid, self.root)
            except OSError:
                self._perf_maps[pid] = None
        return self._perf_maps[pid]

    # -- frames -----------------------------------------------------------------

    def user_location(self, e: Entry, pc: int, exact: bool) -> Location:
        """The Location of user pc `pc` of entry `e` (once per space, pid and pc)."""
        key = (e.space, e.key.pid, pc, exact)
        loc = self._locations.get(key)
        if loc is None:
            loc = self._locations[key] = self._user_location(e, pc, exact)
        return loc

    def _user_location(self, e: Entry, pc: int, exact: bool) -> Location:
        space = e.space
        m = space.find(pc) if space is not None else None
        if m is None or space is None:
            pm = self.perf_map(e.key.pid)
            hit = pm.lookup(pc if exact else pc - 1) if pm is not None else None
            info = MappingInfo(pc & ~0xFFF, (pc & ~0xFFF) + 0x1000, 0, UNKNOWN_MAPPING_PATH)
            return Location(pc, info, hit[0] if hit else "")
        obj, bias = space.object_for(m)
        build_id = ""
        name = ""
        if obj is not None:
            syms = self.symbols(obj)
            if syms is not None:
                build_id = syms.build_id
                hit = syms.lookup((pc if exact else pc - 1) - bias)
                if hit is not None:
                    name = hit[0]
        elif not m.path.startswith("/") or m.path == "":
            pm = self.perf_map(e.key.pid)
            hit2 = pm.lookup(pc if exact else pc - 1) if pm is not None else None
            if hit2 is not None:
                name = hit2[0]
        key = (m.start, m.end, m.path)
        cached = self._mapping_info.get(key)
        if cached is None:
            cached = MappingInfo(m.start, m.end, m.offset, m.path or "[anon]", build_id, True)
            self._mapping_info[key] = cached
        return Location(pc, cached, name)

    def kernel_location(self, addr: int) -> Location:
        if self._kernel_names is not None:
            hit = self._kernel_names.get(addr)
        else:
            ks = self.kernel()
            hit = ks.lookup(addr) if ks is not None else None
        return Location(addr, KERNEL_MAPPING, hit[0] if hit else "", is_kernel=True)

    def stack_sample(self, e: Entry, period_ns: int) -> StackSample:
        k = e.key
        locs = [self.kernel_location(a) for a in k.kernel]
        user = [self.user_location(e, pc, exact) for pc, exact in k.user]
        doubt = len(user) if k.reliable or not 0 <= k.doubt <= len(user) else k.doubt
        if not k.reliable:
            # where the doubt begins: the frames past it (toward the root) may be wrong
            user.insert(doubt, Location(0, None, f"[unreliable: {k.reason}]", synthetic=True))
        return StackSample(tuple(locs + user), k.pid, k.tid, k.comm, k.reliable, k.reason,
                           e.count, e.count * period_ns)

    def profile(self, agg: Aggregator, *, period_ns: int, start_ns: int, duration_ns: int,
                process_names: dict[int, str] | None = None) -> ProfileData:
        samples = [self.stack_sample(e, period_ns) for e in agg.entries.values()]
        if process_names:
            for s in samples:
                s.process_name = process_names.get(s.pid, "")
        return ProfileData(samples, period_ns, start_ns, duration_ns)
