"""Processes as the agent sees them: identity (service, container), filters, bounded caches.

A process's identity -- executable, cgroup, container id, service name, start time --
and its memory maps are read the first time one of its samples is consumed, which is
within milliseconds of the sample, so a process that exits a moment later keeps its
samples attributed to it.  Its ELF objects are opened at the same time, through
/proc/PID/map_files, while that still works.

The agent runs for months, so nothing here may grow without bound:

* the ProcessTable (profiler.unwind.process) is made with bounds: ELF objects in an
  LRU limited in count and bytes, read as streams, and processes forgotten on request;
* :class:`ProcessBook` forgets a process once it has exited and the window holding its
  last sample has been shipped; it notices PID reuse by the start time in
  /proc/PID/stat.

(Symbol tables are bounded by the Resolver's own settings, profiler.symbolize.resolve.)
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from profiler.unwind.process import Process, ProcessTable, Snapshot, stat_fields
from profiler.unwind.process import read_stat as read_stat_file

# A 64-hex-digit id in a cgroup path: docker, containerd (cri-containerd-ID.scope),
# CRI-O (crio-ID.scope), podman (libpod-ID.scope), Kubernetes pods' containers.
_CONTAINER_ID = re.compile(r"(?:^|[/-])([0-9a-f]{64})(?:\.scope)?(?:/|$)")
KERNEL_SERVICE = "kernel"


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
    """ProcInfo per live (or recently exited) process, on top of a bounded ProcessTable."""

    def __init__(self, table: ProcessTable, matcher: Matcher, proc: str = "/proc") -> None:
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
