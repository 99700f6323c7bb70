"""Processes as the agent sees them: identity (service, container), filters, bounded caches.

A process's identity -- executable, cgroup, container id, service name, start time --
and its memory maps are read the first time one of its samples is consumed, which is
within milliseconds of the sample, so a process that exits a moment later keeps its
samples attributed to it.  Its ELF objects are opened at the same time, through
/proc/PID/map_files, while that still works.

The agent runs for months, so nothing here may grow without bound:

* :class:`BoundedProcessTable` keeps the project's ProcessTable but caches ELF objects
  in an LRU limited in count and bytes, and forgets processes on request;
* :class:`ProcessBook` forgets a process once it has exited and the window holding its
  last sample has been shipped; it notices PID reuse by the start time in
  /proc/PID/stat;
* :class:`BoundedResolver` keeps symbol tables in an LRU, and per-window state
  (perf maps, mapping info) only for one window.
"""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from profiler.lru import Lru
from profiler.symbolize.resolve import Resolver
from profiler.unwind.objfile import ObjectCache, ObjectError, ObjectFile
from profiler.unwind.process import Process, ProcessTable, Snapshot, stat_fields
from profiler.unwind.process import read_stat as read_stat_file

K = TypeVar("K", bound=Hashable)
_MISS = object()
V = TypeVar("V")

# A 64-hex-digit id in a cgroup path: docker, containerd (cri-containerd-ID.scope),
# CRI-O (crio-ID.scope), podman (libpod-ID.scope), Kubernetes pods' containers.
_CONTAINER_ID = re.compile(r"(?:^|[/-])([0-9a-f]{64})(?:\.scope)?(?:/|$)")
KERNEL_SERVICE = "kernel"


class FileStream(io.BufferedReader):
    """A read-only file opened once, as the seekable stream ObjectFile reads.

    ObjectFile.open reads the whole file into memory; here only what the unwinder
    and symbolizer read (headers, .sframe, .eh_frame, symbol tables) is read, through
    a 64 KiB buffer.  Not a memory mapping: a target can truncate a file it has
    mapped, and touching a mapped page past the new end raises SIGBUS, which kills
    the agent; a read past the end of a file only comes back short, a damaged-file
    error for that one object (tests/unit/test_agent_procs.py truncates one)."""


def open_object(path: str, name: str) -> ObjectFile:
    """ObjectFile over an open file stream of `path` (see FileStream)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ObjectError(f"{name}: cannot read ({exc.strerror})") from None
    except ValueError:
        raise ObjectError(f"{name!r}: cannot read (not a valid path)") from None
    stream = FileStream(io.FileIO(fd, "rb"), 1 << 16)
    try:
        if os.fstat(fd).st_size == 0:
            raise ObjectError(f"{name}: not a usable ELF file (empty)")
        return ObjectFile(stream, name)
    except BaseException:
        stream.close()
        raise


_TABLE_SECTIONS = {".eh_frame", ".eh_frame_hdr", ".debug_frame", ".sframe"}


def object_bytes(obj: ObjectFile | None) -> int:
    """Memory an ObjectFile will hold: the unwind tables it copies out of a file it
    reads as a stream (.eh_frame, .debug_frame, .sframe), or the whole image it read
    into memory."""
    if obj is None:
        return 0
    stream = getattr(obj, "_stream", None)
    if isinstance(stream, FileStream):
        return 4096 + sum(sec.sh_size for sec in obj.elf.sections
                          if sec.name in _TABLE_SECTIONS)
    getbuffer = getattr(stream, "getbuffer", None)
    if getbuffer is not None:
        try:
            return int(getbuffer().nbytes)
        except (ValueError, BufferError):
            return 0
    return 0


class BoundedProcessTable(ProcessTable):
    """ProcessTable whose ELF-object cache is an LRU (count and bytes) and that forgets.

    An evicted object stays alive while a known process's address space still uses
    it; it is dropped once those processes are forgotten."""

    def __init__(self, objects: ObjectCache | None = None, proc: str = "/proc", *,
                 max_objects: int = 256, max_object_bytes: int = 256 << 20) -> None:
        super().__init__(objects, proc)
        self._refresh_fails: dict[int, tuple[int, float]] = {}   # pid -> (fails, when)
        self._by_identity = Lru(max_objects, max_object_bytes, object_bytes,
                                self._evicted)

    def _evicted(self, _key: Any, obj: ObjectFile | None) -> None:
        """An object left the cache: known processes let go of it too, so the budget
        bounds memory (a process that samples it again opens it again)."""
        if obj is None:
            return
        for p in self.procs.values():
            resolved = getattr(p.space, "_resolved", None)
            if isinstance(resolved, dict):
                for start in [k for k, (o, _b) in resolved.items() if o is obj]:
                    del resolved[start]

    @property
    def object_cache(self) -> Lru[Any, ObjectFile | None]:
        return self._by_identity  # type: ignore[return-value]

    def refresh(self, p: Process, force: bool = False, snap: Snapshot | None = None) -> bool:
        """ProcessTable.refresh with a per-process backoff: a process whose samples keep
        asking for new maps (JIT code, a pc in memory no map names, an exiting process)
        is re-read after 5 ms, 50 ms, 0.5 s, then every 5 s, until its maps change."""
        now = time.monotonic()
        fails, last = self._refresh_fails.get(p.pid, (0, 0.0))
        if not force and snap is None and \
                now - max(last, p.refreshed_at) < 0.005 * 10 ** min(fails, 3):
            return False
        changed = super().refresh(p, force, snap)
        if changed:
            self._refresh_fails.pop(p.pid, None)
        else:
            self._refresh_fails[p.pid] = (fails + 1, now)
        return changed

    def forget(self, pid: int) -> None:
        p = self.procs.pop(pid, None)
        if p is not None:
            self.close_fds(p)
        self._refresh_fails.pop(pid, None)
        parents = getattr(self, "parents", None)
        if isinstance(parents, dict):
            parents.pop(pid, None)

    def open_file(self, path: str, name: str) -> ObjectFile:
        """Candidates are opened as streams, not read whole (open_object)."""
        return open_object(path, name)

    def drop_objects(self) -> None:
        """Forget every ELF object (memory pressure): they are opened again on demand."""
        self._by_identity.clear()
        for p in self.procs.values():
            if p.space is not None:
                for name in ("_resolved", "steps", "ra_ok"):
                    table = getattr(p.space, name, None)
                    if isinstance(table, dict):
                        table.clear()

    def trim(self, max_memo: int = 4096) -> None:
        """Per-window housekeeping: bound the per-object and per-space memo tables."""
        if len(self.open_errors) > 1000:
            self.open_errors.clear()
        seen: set[int] = set()
        objs = [o for o in self._by_identity.values() if o is not None]
        for p in self.procs.values():
            if p.space is not None:
                _clear_if_big(p.space, ("steps", "ra_ok"), max_memo)
                objs.extend(o for o, _bias in getattr(p.space, "_resolved", {}).values()
                            if o is not None)
        for obj in objs:
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            _clear_if_big(obj, ("_rule_memo", "_sig_memo"), max_memo)


def _same_inode(path: str, ident: Any) -> bool:
    try:
        return bool(os.stat(path).st_ino == ident.inode)
    except OSError:
        return False


def _clear_if_big(owner: object, names: tuple[str, ...], limit: int) -> None:
    for name in names:
        table = getattr(owner, name, None)
        if isinstance(table, dict) and len(table) > limit:
            table.clear()


class BoundedResolver(Resolver):
    """Resolver with an LRU of symbol tables, keyed by the object itself (a strong
    reference, so an id() is never reused for another file while cached)."""

    def __init__(self, max_symbols: int = 128, max_symbol_bytes: int = 96 << 20,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lru: Lru[ObjectFile, Any] = Lru(max_symbols, max_symbol_bytes, symbols_bytes)
        self._window_symbols: dict[ObjectFile, Any] = {}
        self.too_big: set[str] = set()      # files whose symbol table exceeds the budget
        self._kernel_locations: dict[int, Any] = {}

    def symbols(self, obj: ObjectFile) -> Any:
        hit = self._window_symbols.get(obj, _MISS)
        if hit is not _MISS:
            return hit
        if obj in self._lru:
            cached = self._window_symbols[obj] = self._lru[obj]
            return cached
        from profiler.symbolize.symbols import ElfSymbols
        syms: Any
        if symbols_estimate(obj) > self._lru.max_bytes // TABLE_SHARE:
            # e.g. a compiler's 150 MB shared library (libLLVM, libclang-cpp: 40k-60k
            # long C++ names): its table would take a large part of the budget, several
            # times that in resident heap while it is built, and up to seconds of CPU.
            # Its frames keep module and offset, and the mapping its build ID, for
            # symbolization later.
            self.too_big.add(obj.name)
            syms = None
        else:
            try:
                syms = ElfSymbols.load(obj, self.debug_dirs, self.root)
            except Exception:  # noqa: BLE001 - a damaged file costs its names, not the run
                syms = None
        self._lru[obj] = syms
        self._window_symbols[obj] = syms
        return syms

    def kernel_location(self, addr: int) -> Any:
        loc = self._kernel_locations.get(addr)
        if loc is None:
            if len(self._kernel_locations) > 50000:
                self._kernel_locations.clear()
            loc = self._kernel_locations[addr] = super().kernel_location(addr)
        return loc

    def drop_symbols(self) -> None:
        self._lru.clear()
        self._symbols.clear()
        self._window_symbols.clear()
        self._kernel_locations.clear()

    def end_window(self) -> None:
        """Forget what is only valid for one window (JIT maps change, pids come and go)."""
        self._perf_maps.clear()
        self._mapping_info.clear()
        self._window_symbols.clear()
        self._locations.clear()


_SYMBOL_TABLES = {".symtab", ".dynsym"}
TABLE_SHARE = 8     # one symbol table may take at most 1/8 of the symbol budget (estimated)


def symbols_estimate(obj: ObjectFile) -> int:
    """What an object's symbol table would cost in memory, from its section sizes
    (24-byte ELF symbols, about 110 bytes each once loaded)."""
    entries = sum(sec.sh_size for sec in obj.elf.sections
                  if sec.name in _SYMBOL_TABLES) // 24
    return 16 + 110 * entries


def symbols_bytes(syms: Any) -> int:
    """The size of a loaded ElfSymbols table: its address arrays and its names (a str
    object is 49 bytes plus its characters, and a list slot 8)."""
    names = getattr(syms, "_names", None)
    if not isinstance(names, list):
        return 16
    size = 57 * len(names) + sum(map(len, filter(None, names)))
    for arr in ("_starts", "_sizes", "_segs"):
        table = getattr(syms, arr, None)
        if table is not None and hasattr(table, "__len__"):
            size += 8 * len(table)
    return size


# -- identity ---------------------------------------------------------------------------


@dataclass(slots=True)
class ProcInfo:
    """Who a process is, taken while it lives."""

    pid: int
    start_time: int = 0      # /proc/PID/stat starttime (clock ticks since boot); 0 unknown
    exe: str = ""            # "" for kernel threads and processes seen too late
    comm: str = ""
    cgroup: str = ""
    container_id: str = ""
    service: str = ""
    matched: bool = True     # passes the exe/cgroup filters
    kernel_thread: bool = False
    identified: bool = True  # False: the process was gone before we could read it
    last_sample_window: int = -1
    gone_at_ns: int = 0      # CLOCK_MONOTONIC when found exited, 0 while alive
    comms: set[str] = field(default_factory=set)   # thread names seen (exec detection)


PF_KTHREAD = 0x00200000


def read_stat(proc: str, pid: int) -> tuple[int, int]:
    """(starttime, flags): fields 22 and 9 of /proc/PID/stat; (0, 0) if it is gone."""
    return read_stat_file(f"{proc}/{pid}/stat")


def read_start_time(proc: str, pid: int) -> int:
    """Field 22 (starttime) of /proc/PID/stat; 0 if the process is gone."""
    return read_stat(proc, pid)[0]


def read_cgroup(proc: str, pid: int) -> str:
    """The process's cgroup path: the v2 ("0::") one, else the first v1 path."""
    try:
        with open(f"{proc}/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return ""
    return parse_cgroup(text)


def parse_cgroup(text: str) -> str:
    """The cgroup path in /proc/PID/cgroup text (see read_cgroup)."""
    first = ""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            return parts[2]
        if not first and parts[2] not in ("", "/"):
            first = parts[2]
    return first


def container_id(cgroup: str) -> str:
    """The container id in a cgroup path, "" if there is none."""
    hits = _CONTAINER_ID.findall(cgroup)
    return hits[-1] if hits else ""


class Matcher:
    """The exe/cgroup filters and the service-name rules of the configuration."""

    def __init__(self, exe: list[str], cgroup: list[str], services: dict[str, str]) -> None:
        self.exe_paths = {e for e in exe if "/" in e}
        self.exe_names = {e for e in exe if "/" not in e}
        self.cgroups = list(cgroup)
        self.filtering = bool(exe or cgroup)
        self.service_cgroups = [(k[len("cgroup:"):], v) for k, v in services.items()
                                if k.startswith("cgroup:")]
        self.service_exes = {k: v for k, v in services.items() if not k.startswith("cgroup:")}
        self.needs_cgroup = bool(self.cgroups or self.service_cgroups)

    def matches(self, exe: str, cgroup: str, cid: str) -> bool:
        if not self.filtering:
            return True
        if exe and (exe in self.exe_paths or os.path.basename(exe) in self.exe_names):
            return True
        return any(pat in cgroup or (cid and cid.startswith(pat)) for pat in self.cgroups)

    def service(self, exe: str, cgroup: str, fallback: str) -> str:
        for pat, name in self.service_cgroups:
            if pat in cgroup:
                return name
        base = os.path.basename(exe) if exe else ""
        for key in (exe, base):
            if key and key in self.service_exes:
                return self.service_exes[key]
        return base or fallback


def _main_file(proc: Process) -> str:
    """The executable when /proc/PID/exe is unreadable (an exiting process): the
    file mapped first, which is the main program for ELF executables."""
    for m in proc.mappings:
        if m.path.startswith("/"):
            return m.path
    return ""


class ProcessBook:
    """ProcInfo per live (or recently exited) process, on top of a BoundedProcessTable."""

    def __init__(self, table: BoundedProcessTable, matcher: Matcher, proc: str = "/proc") -> None:
        self.table = table
        self.matcher = matcher
        self.proc = proc
        self.infos: dict[int, ProcInfo] = {}
        # Snapshots taken by the reader thread as soon as a sample arrived (see
        # profiler.app.agent.reader): identity and maps as they were then.
        self.snapshot_source: Callable[[int], Snapshot | None] | None = None
        self.on_drop: Callable[[int], None] | None = None
        self.unidentified = 0
        self.from_snapshot = 0
        self.forgotten = 0
        self.reused = 0
        self.execs = 0

    def lookup(self, pid: int, comm: str, time_ns: int) -> tuple[ProcInfo, Process | None]:
        """The process a sample came from; its maps and identity are read on first sight."""
        info = self.infos.get(pid)
        if info is not None and info.gone_at_ns and time_ns > info.gone_at_ns:
            # sampled after we saw it exit: the PID belongs to a new process now
            self.reused += 1
            self._drop(pid)
            info = None
        if info is None:
            info = self._identify(pid, comm)
            self.infos[pid] = info
        elif comm not in info.comms and not info.gone_at_ns:
            self._check_exec(info, comm)
        return info, self.table.procs.get(pid)

    def _check_exec(self, info: ProcInfo, comm: str) -> None:
        """A thread name not seen before: a new thread, or an exec (a forked child that
        was sampled before it exec'd).  On exec, maps and identity are read again."""
        if len(info.comms) < 64:
            info.comms.add(comm)
        if not info.identified or info.kernel_thread:
            return
        # the reader thread snapshots a PID again when a new thread name shows up
        snap = self.snapshot_source(info.pid) if self.snapshot_source is not None else None
        try:
            if snap is not None and snap.maps is not None:
                exe = snap.exe
            else:
                exe = os.readlink(f"{self.proc}/{info.pid}/exe")
        except OSError:
            exe = ""
        if not exe or exe == info.exe:
            if snap is not None:
                snap.close()
            return
        self.execs += 1
        proc = self.table.procs.get(info.pid)
        if proc is not None:
            self.table.refresh(proc, force=True, snap=snap)
            self._open_objects(info.pid, proc)
            self.table.close_fds(proc)
        info.exe = exe
        if snap is not None:
            snap.close()
            info.cgroup = parse_cgroup(snap.extra.get("cgroup", "")) or info.cgroup
        else:
            info.cgroup = read_cgroup(self.proc, info.pid) or info.cgroup
        info.container_id = container_id(info.cgroup)
        info.service = self.matcher.service(exe, info.cgroup, comm or "unknown")
        info.matched = self.matcher.matches(exe, info.cgroup, info.container_id)

    def _identify(self, pid: int, comm: str) -> ProcInfo:
        info = ProcInfo(pid, comm=comm)
        info.comms.add(comm)
        snap = self.snapshot_source(pid) if self.snapshot_source is not None else None
        if snap is not None and snap.maps is not None:
            self.from_snapshot += 1
            info.start_time, flags = stat_fields(snap.stat)
        else:
            if snap is not None:
                snap.close()
                snap = None
            info.start_time, flags = read_stat(self.proc, pid)
        info.kernel_thread = bool(flags & PF_KTHREAD)
        proc = self.table.get(pid, snap)     # maps (and exe) read now, while it lives
        if proc is None or not info.start_time or (not proc.mappings
                                                   and not info.kernel_thread):
            info.identified = False          # gone, or its memory already torn down
            self.unidentified += 1
        else:
            info.exe = proc.exe or _main_file(proc)
            self._open_objects(pid, proc)
        if proc is not None:
            self.table.close_fds(proc)
        if snap is not None:
            snap.close()
        info.cgroup = (parse_cgroup(snap.extra.get("cgroup", "")) if snap is not None
                       else read_cgroup(self.proc, pid))
        info.container_id = container_id(info.cgroup)
        if info.kernel_thread:
            info.service = KERNEL_SERVICE
        else:
            info.service = self.matcher.service(info.exe, info.cgroup, comm or "unknown")
        info.matched = self.matcher.matches(info.exe, info.cgroup, info.container_id)
        return info

    def _open_objects(self, pid: int, proc: Process) -> None:
        """Open the executable file mappings now: /proc/PID/map_files goes with the process."""
        space = proc.space
        if space is None:
            return
        for m in proc.mappings:
            if m.executable and m.path.startswith("/"):
                space.object_for(m)

    def note_sample(self, pid: int, window_index: int) -> None:
        info = self.infos.get(pid)
        if info is not None:
            info.last_sample_window = window_index

    def reap(self, shipped_window_index: int) -> int:
        """Mark exited processes; forget those whose samples are all in shipped windows.
        Returns how many were forgotten."""
        now = time.monotonic_ns()
        gone = 0
        for pid, info in list(self.infos.items()):
            if not info.gone_at_ns:
                st = read_start_time(self.proc, pid)
                if st == 0 or (info.start_time and st != info.start_time):
                    info.gone_at_ns = now
            if info.gone_at_ns and info.last_sample_window <= shipped_window_index:
                self._drop(pid)
                gone += 1
        self.forgotten += gone
        return gone

    def _drop(self, pid: int) -> None:
        self.infos.pop(pid, None)
        self.table.forget(pid)
        if self.on_drop is not None:
            self.on_drop(pid)


def scan_pids(proc: str = "/proc") -> list[int]:
    try:
        names = os.listdir(proc)
    except OSError:
        return []
    return [int(name) for name in names if name.isdigit()]


class TargetScanner:
    """Finds processes matching the exe/cgroup filters so the kernel samples them."""

    def __init__(self, matcher: Matcher, add: Callable[[int], None], proc: str = "/proc",
                 remove: Callable[[int], None] | None = None) -> None:
        self.matcher = matcher
        self.add = add
        self.remove = remove
        self.proc = proc
        self.targets: dict[int, int] = {}    # pid -> start time
        self.full = 0                        # matches the kernel's target map had no room for
        self._cgroups: dict[int, tuple[int, str]] = {}

    def scan(self) -> int:
        """One pass over /proc; returns how many new targets were added."""
        added = 0
        live = scan_pids(self.proc)
        alive = set(live)
        for pid in [p for p in self.targets if p not in alive]:
            del self.targets[pid]
            if self.remove is not None:
                self.remove(pid)       # keep the kernel's target map from filling up
        for pid in [p for p in self._cgroups if p not in alive]:
            del self._cgroups[pid]
        for pid in live:
            if pid in self.targets:
                continue
            try:
                exe = os.readlink(f"{self.proc}/{pid}/exe")
            except OSError:
                exe = ""
            cg = ""
            if self.matcher.cgroups:
                cached = self._cgroups.get(pid)
                st = read_start_time(self.proc, pid)
                if cached is None or cached[0] != st:
                    cached = (st, read_cgroup(self.proc, pid))
                    self._cgroups[pid] = cached
                cg = cached[1]
            if self.matcher.matches(exe, cg, container_id(cg)):
                try:
                    self.add(pid)
                except Exception:  # noqa: BLE001 - bcc raises bare Exception (map full)
                    self.full += 1
                    continue
                self.targets[pid] = read_start_time(self.proc, pid)
                added += 1
        return added
