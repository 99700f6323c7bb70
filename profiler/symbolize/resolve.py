"""Symbolize: turn aggregated stacks into ProfileData for the output formats.

Each unique stack is resolved once.  A user pc maps to its mapping and object; the
symbol is looked up at the link-time address (minus one for return addresses, so a
call that ends a function is charged to the caller); the Location keeps the pc as
captured.  Frames without a symbol keep module and offset.  Kernel pcs use
/proc/kallsyms, JIT code /tmp/perf-PID.map.  An unreliable chain ends with a synthetic
frame naming its reason, placed where the doubt begins: the frames past it, toward
the root, were found by going past a failed check or without unwind data.

What a Resolver keeps is bounded by its settings.  By default (a run of the CLI) every
symbol table is kept for the life of the Resolver.  A long-running caller (the agent)
sets ``max_symbols``/``max_symbol_bytes`` (symbol tables in an LRU), and
``max_kernel_locations``, and calls :meth:`Resolver.end_window` after each profile it
builds (perf maps, mapping info and Locations are only valid for one window) and
:meth:`Resolver.drop_caches` under memory pressure.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from profiler.aggregate import Aggregator, Entry
from profiler.lru import Lru
from profiler.model import Location, MappingInfo, ProfileData, StackSample
from profiler.unwind.objfile import ObjectFile

if TYPE_CHECKING:
    from profiler.symbolize.kallsyms import KernelSymbols
    from profiler.symbolize.perfmap import PerfMap
    from profiler.symbolize.symbols import ElfSymbols

KERNEL_MAPPING = MappingInfo(0xFFFF000000000000, 0xFFFFFFFFFFFFFFFF, 0, "[kernel.kallsyms]")
UNKNOWN_MAPPING_PATH = "[unknown]"
# With a byte budget, one symbol table may take at most 1/TABLE_SHARE of it (estimated
# before it is built, ElfSymbols.estimate).
TABLE_SHARE = 8
_MISS = object()


def _table_bytes(syms: ElfSymbols | None) -> int:
    return syms.nbytes() if syms is not None else 16


class Resolver:
    def __init__(self, *, debug_dirs: Sequence[str] = ("/usr/lib/debug",),
                 root: str | None = None, kallsyms: str | None = "/proc/kallsyms",
                 perf_maps: bool = True,
                 kernel_names: dict[int, tuple[str, int]] | None = None,
                 max_symbols: int = 0, max_symbol_bytes: int = 0,
                 max_kernel_locations: int = 0) -> None:
        """`kernel_names` ({pc: (symbol, offset)}, from a capture) names kernel pcs
        instead of `kallsyms`, which is then never read.

        Bounds (0: none): `max_symbols` symbol tables are kept, least recently used
        first out; `max_symbol_bytes` bounds their size (ElfSymbols.nbytes), and a
        file whose table is estimated at more than 1/TABLE_SHARE of it is not loaded
        at all (its name goes in `too_big`); `max_kernel_locations` kernel Locations
        are kept by address (none without it), all forgotten when it is reached."""
        self.debug_dirs = tuple(debug_dirs)
        self.root = root
        # Symbol tables keyed by the object itself: an id() could be reused by a later
        # object, a strong reference cannot.
        self._tables: Lru[ObjectFile, ElfSymbols | None] = Lru(
            max_symbols or sys.maxsize, max_symbol_bytes,
            _table_bytes if max_symbol_bytes else None)
        self._window_tables: dict[ObjectFile, ElfSymbols | None] = {}
        self.too_big: set[str] = set()      # files whose symbol table exceeds the budget
        self._kernel: KernelSymbols | None = None
        self._kallsyms = kallsyms if kernel_names is None else None
        self._kernel_names = kernel_names
        self._max_kernel_locations = max_kernel_locations
        self._kernel_locations: dict[int, Location] = {}
        self._perf_maps: dict[int, PerfMap | None] = {}
        self.use_perf_maps = perf_maps
        self._mapping_info: dict[tuple[int, int, str], MappingInfo] = {}
        self._locations: dict[tuple[object, ...], Location] = {}

    # -- cache control ----------------------------------------------------------

    @property
    def symbol_cache(self) -> Lru[ObjectFile, ElfSymbols | None]:
        """The symbol tables kept (None for a file without a usable one); read only."""
        return self._tables

    def end_window(self) -> None:
        """Forget what is only valid for one window: perf maps (JIT code changes),
        mapping info and Locations (pids come and go).  Symbol tables stay cached."""
        self._perf_maps.clear()
        self._mapping_info.clear()
        self._window_tables.clear()
        self._locations.clear()

    def drop_caches(self) -> None:
        """Forget every symbol table and kernel Location (memory pressure): they are
        loaded again on demand."""
        self._tables.clear()
        self._window_tables.clear()
        self._kernel_locations.clear()

    # -- symbol sources ---------------------------------------------------------

    def symbols(self, obj: ObjectFile) -> ElfSymbols | None:
        hit = self._window_tables.get(obj, _MISS)
        if hit is not _MISS:
            return hit  # type: ignore[return-value]
        if obj in self._tables:
            syms = self._tables[obj]
        else:
            syms = self._tables[obj] = self._load(obj)
        self._window_tables[obj] = syms
        return syms

    def _load(self, obj: ObjectFile) -> ElfSymbols | None:
        from profiler.symbolize.symbols import ElfSymbols
        budget = self._tables.max_bytes
        if budget and ElfSymbols.estimate(obj) > budget // TABLE_SHARE:
            # e.g. a compiler's 150 MB shared library (libLLVM, libclang-cpp: 40k-60k
            # long C++ names): its table would take a large part of the budget, several
            # times that in resident heap while it is built, and up to seconds of CPU.
            # Its frames keep module and offset, and the mapping its build ID, for
            # symbolization later.
            self.too_big.add(obj.name)
            return None
        try:
            return ElfSymbols.load(obj, self.debug_dirs, self.root)
        except Exception:  # noqa: BLE001 - a damaged file costs its names, not the run
            return None

    def kernel(self) -> KernelSymbols | None:
        if self._kernel is None and self._kallsyms:
            from profiler.symbolize.kallsyms import KernelSymbols
            try:
                self._kernel = KernelSymbols.load(self._kallsyms)
            except OSError:
                self._kallsyms = None
        return self._kernel

    def perf_map(self, pid: int) -> PerfMap | None:
        if not self.use_perf_maps:
            return None
        if pid not in self._perf_maps:
            from profiler.symbolize.perfmap import PerfMap
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
        if not self._max_kernel_locations:
            return self._kernel_location(addr)
        loc = self._kernel_locations.get(addr)
        if loc is None:
            if len(self._kernel_locations) >= self._max_kernel_locations:
                self._kernel_locations.clear()
            loc = self._kernel_locations[addr] = self._kernel_location(addr)
        return loc

    def _kernel_location(self, addr: int) -> Location:
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
