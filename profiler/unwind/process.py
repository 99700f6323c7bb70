"""Live processes: their memory maps, the files behind them, the vDSO image.

Maps are read when a process is first seen and again when a pc or return address
falls outside the known mappings (dlopen, exec).  Mapped files are opened through
/proc/PID/map_files/<start>-<end>, which names the right file even for targets in
containers and chroots and for deleted files, and cached by file identity (device and
inode), so every ELF, SFrame and CFI table is loaded once per run.  A process that
exits keeps its last maps, so its samples still unwind and symbolize.

A one-shot run keeps every object it opens, read whole into memory.  A profiler that
runs for months bounds what it keeps (ProcessTable's settings): objects are cached
in an LRU limited in count and bytes, read as streams instead of whole, processes
whose samples keep asking for new maps are re-read less and less often, and it
forgets processes, objects and memos on request (forget, drop_objects, trim).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from profiler.lru import Lru
from profiler.model import Mapping
from profiler.unwind.objfile import ObjectCache, ObjectError, ObjectFile
from profiler.unwind.space import AddressSpace

REFRESH_INTERVAL_S = 0.005


@dataclass(frozen=True, slots=True)
class MapsInode:
    """A mapped file as /proc/PID/maps names it: device and inode (the capture
    format's FileIdentity adds the build ID)."""

    dev: str      # "fd:01" as /proc/PID/maps prints it
    inode: int


def parse_maps(text: str) -> list[tuple[Mapping, MapsInode | None]]:
    """Parse /proc/PID/maps text; each mapping with its file identity (None if anonymous)."""
    out: list[tuple[Mapping, MapsInode | None]] = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        try:
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            offset = int(parts[2], 16)
            inode = int(parts[4])
        except ValueError:
            continue
        path = parts[5].strip() if len(parts) > 5 else ""
        if path.endswith(" (deleted)"):
            path = path[: -len(" (deleted)")]
        ident = MapsInode(parts[3], inode) if inode else None
        out.append((Mapping(lo, hi, offset, parts[1], path), ident))
    return out


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (also one we may not signal)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Snapshot:
    """What /proc said about a process at one moment, kept so that the process can be
    modelled later even if it has exited by then: its maps, start time, executable,
    vDSO bytes, and open descriptors of the files behind its executable mappings
    (an open descriptor keeps the file reachable after the process is gone)."""

    pid: int
    maps: str | None          # None: the process was already gone
    stat: bytes = b""         # /proc/PID/stat
    exe: str = ""
    memory: tuple[tuple[int, bytes], ...] = ()
    fds: dict[int, int] = field(default_factory=dict)    # mapping start -> fd
    taken: float = 0.0        # CLOCK_MONOTONIC seconds
    extra: dict[str, str] = field(default_factory=dict)   # a caller's own files

    def close(self) -> None:
        _close_all(self.fds)
        self.fds = {}


def _close_all(fds: dict[int, int]) -> None:
    """Close every descriptor in `fds` (mapping start -> fd), ignoring errors."""
    for fd in fds.values():
        try:
            os.close(fd)
        except OSError:
            pass


def stat_fields(text: bytes) -> tuple[int, int]:
    """(starttime, flags) from /proc/PID/stat text: fields 22 and 9; (0, 0) if unusable."""
    fields = text[text.rfind(b")") + 2:].split()
    try:
        return int(fields[19]), int(fields[6])
    except (IndexError, ValueError):
        return 0, 0


class ProcessGone(Exception):
    """The process exited before we could read its maps."""


@dataclass
class Process:
    pid: int
    mappings: tuple[Mapping, ...] = ()
    identities: dict[int, MapsInode] = field(default_factory=dict)
    memory: tuple[tuple[int, bytes], ...] = ()
    space: AddressSpace | None = None
    refreshed_at: float = 0.0
    generation: int = 0
    exited: bool = False
    exe: str = ""
    start_time: int = 0   # /proc/PID/stat field 22: tells a reused PID from the old one
    fds: dict[int, int] = field(default_factory=dict)   # from a Snapshot, until closed


class ProcessTable:
    """Every process seen during a run.

    By default every object opened is kept, read whole.  The settings bound that:
    with `max_objects` set, objects are kept in an LRU of that many (at least one)
    and of at most `max_object_bytes` (ObjectFile.nbytes; 0: no byte budget); an
    object evicted from it is let go by the processes too, so the budget bounds
    memory (a process that samples it again opens it again).  `streaming` opens
    objects as streams (ObjectFile.open_streamed).  `refresh_backoff` re-reads the
    maps of a process whose samples keep asking for new ones (JIT code, a pc in
    memory no map names, an exiting process) after 5 ms, 50 ms, 0.5 s, then every
    5 s, until they change.
    """

    def __init__(self, objects: ObjectCache | None = None, proc: str = "/proc",
                 use_map_files: bool = True, *, max_objects: int | None = None,
                 max_object_bytes: int = 0, streaming: bool = False,
                 refresh_backoff: bool = False) -> None:
        self.objects = objects or ObjectCache()
        self.proc = proc
        self.use_map_files = use_map_files
        self.streaming = streaming
        self.refresh_backoff = refresh_backoff
        self.procs: dict[int, Process] = {}
        # The object behind each file identity (None: it could not be opened).
        self.object_cache: dict[MapsInode, ObjectFile | None] = \
            {} if max_objects is None \
            else Lru(max_objects, max_object_bytes, _nbytes, self._evicted)
        self._refresh_fails: dict[int, tuple[int, float]] = {}   # pid -> (fails, when)
        self.parents: dict[int, int] = {}
        self.open_errors: dict[str, str] = {}

    def get(self, pid: int, snap: Snapshot | None = None) -> Process | None:
        """The process, its maps read on first sight; None if it is already gone.
        With `snap` (taken earlier by snapshot()), the process is built from it instead
        of from /proc, so it may have exited since.

        A child that exited before its maps could be read gets its parent's (a fork
        copies the address space; an exec would have replaced it, but a child that
        execs lives long enough to be read)."""
        p = self.procs.get(pid)
        if p is None:
            p = Process(pid)
            try:
                self._load(p, snap)
            except ProcessGone:
                parent = self.procs.get(self.parents.get(pid, -1))
                if parent is None or parent.space is None:
                    return None
                p = self._inherit(pid, parent)
            self.procs[pid] = p
        return p

    def note_fork(self, parent: int, child: int) -> None:
        """A target forked: read the child's maps now, while it surely lives."""
        self.parents[child] = parent
        if child not in self.procs and parent in self.procs:
            self.get(child)

    def _inherit(self, pid: int, parent: Process) -> Process:
        p = Process(pid, parent.mappings, dict(parent.identities), parent.memory,
                    refreshed_at=time.monotonic(), exited=True, exe=parent.exe,
                    start_time=0)
        p.space = AddressSpace(p.mappings, p.memory, self.objects,
                               opener=lambda m: self.open_mapping(parent.pid, m))
        return p

    def refresh(self, p: Process, force: bool = False, snap: Snapshot | None = None) -> bool:
        """Re-read the maps (rate limited, with the backoff if set), or take them
        from `snap`; True if they changed.  A PID that came back as a new process
        (PID reuse) gets the new process's maps."""
        if not self.refresh_backoff:
            return self._refresh(p, force, snap)
        now = time.monotonic()
        fails, last = self._refresh_fails.get(p.pid, (0, 0.0))
        if not force and snap is None and \
                now - max(last, p.refreshed_at) < REFRESH_INTERVAL_S * 10 ** min(fails, 3):
            return False
        changed = self._refresh(p, force, snap)
        if changed:
            self._refresh_fails.pop(p.pid, None)
        else:
            self._refresh_fails[p.pid] = (fails + 1, now)
        return changed

    def _refresh(self, p: Process, force: bool, snap: Snapshot | None) -> bool:
        now = time.monotonic()
        if not force and snap is None and now - p.refreshed_at < REFRESH_INTERVAL_S:
            return False
        old = p.mappings
        try:
            self._load(p, snap)
        except ProcessGone:
            p.exited = True
            return False
        return p.mappings != old

    def snapshot(self, pid: int, files: tuple[str, ...] = ()) -> Snapshot:
        """Read what get() needs now, and open the files of executable mappings that
        are not cached yet; get(pid, snap) builds the process from it later.  `files`
        are other /proc/PID files to keep (by name, in snap.extra)."""
        snap = Snapshot(pid, None, taken=time.monotonic())
        base = f"{self.proc}/{pid}"
        try:
            with open(f"{base}/maps", encoding="utf-8", errors="replace") as f:
                snap.maps = f.read()
        except OSError:
            return snap
        try:
            with open(f"{base}/stat", "rb") as f:
                snap.stat = f.read()
            snap.exe = os.readlink(f"{base}/exe")
        except OSError:
            pass
        for name in files:
            try:
                with open(f"{base}/{name}", encoding="utf-8", errors="replace") as f:
                    snap.extra[name] = f.read()
            except OSError:
                pass
        if not self.use_map_files:
            return snap
        vdso = None
        for m, ident in parse_maps(snap.maps):
            if m.path == "[vdso]":
                vdso = m
            if ident is None or not m.executable or ident in self.object_cache:
                continue
            try:
                snap.fds[m.start] = os.open(f"{base}/map_files/{m.start:x}-{m.end:x}",
                                            os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                pass
        if vdso is not None:
            snap.memory = self._read_memory(pid, vdso)
        return snap

    def close_fds(self, p: Process) -> None:
        """Close the descriptors a snapshot left on `p` (its files are open by now)."""
        _close_all(p.fds)
        p.fds = {}

    def _load(self, p: Process, snap: Snapshot | None = None) -> None:
        if snap is not None and snap.pid == p.pid:
            if snap.maps is None or not snap.maps and p.mappings:
                raise ProcessGone(p.pid)
            self._build(p, snap.maps, stat_fields(snap.stat)[0], snap.exe, snap.memory)
            p.fds, snap.fds = snap.fds, {}
            p.refreshed_at = snap.taken
            return
        try:
            with open(f"{self.proc}/{p.pid}/maps", encoding="utf-8", errors="replace") as f:
                text = f.read()
        except (FileNotFoundError, ProcessLookupError):
            raise ProcessGone(p.pid) from None
        except PermissionError:
            raise ProcessGone(p.pid) from None
        if not text and p.mappings:
            raise ProcessGone(p.pid)
        self._build(p, text, read_stat(f"{self.proc}/{p.pid}/stat")[0], None, None)

    def _build(self, p: Process, text: str, start_time: int, exe: str | None,
               memory: tuple[tuple[int, bytes], ...] | None) -> None:
        """Model `p` from its maps text (and, from a snapshot, exe and vDSO bytes)."""
        if p.start_time and start_time and start_time != p.start_time:
            p.identities = {}      # the PID was reused: a different process
        p.start_time = start_time or p.start_time
        p.exited = False
        parsed = parse_maps(text)
        p.refreshed_at = time.monotonic()
        mappings = tuple(m for m, _ in parsed)
        if mappings == p.mappings and p.space is not None:
            return   # unchanged: keep the address space and its caches
        p.mappings = mappings
        p.identities = {m.start: ident for m, ident in parsed if ident is not None}
        if exe is not None:
            p.exe = exe or p.exe
        else:
            try:
                p.exe = os.readlink(f"{self.proc}/{p.pid}/exe")
            except OSError:
                pass
        p.memory = self._read_vdso(p) if memory is None else memory
        p.generation += 1
        pid = p.pid
        p.space = AddressSpace(p.mappings, p.memory, self.objects,
                               opener=lambda m: self.open_mapping(pid, m))

    def _read_vdso(self, p: Process) -> tuple[tuple[int, bytes], ...]:
        for m in p.mappings:
            if m.path == "[vdso]":
                return self._read_memory(p.pid, m)
        return ()

    def _read_memory(self, pid: int, m: Mapping) -> tuple[tuple[int, bytes], ...]:
        try:
            with open(f"{self.proc}/{pid}/mem", "rb", buffering=0) as f:
                f.seek(m.start)
                return ((m.start, f.read(m.end - m.start)),)
        except (OSError, ValueError, OverflowError):
            return ()

    def open_mapping(self, pid: int, m: Mapping) -> ObjectFile | None:
        """The ELF object behind a file mapping, cached by device and inode."""
        p = self.procs.get(pid)
        ident = p.identities.get(m.start) if p else None
        if ident is not None and ident in self.object_cache:
            return self.object_cache[ident]
        obj = None
        map_file = f"{self.proc}/{pid}/map_files/{m.start:x}-{m.end:x}"
        candidates = ([map_file] if self.use_map_files else []) + [
            f"{self.proc}/{pid}/root{m.path}", m.path]
        fd = p.fds.get(m.start) if p else None
        if fd is not None:
            # the file as the snapshot opened it through map_files, while p lived
            map_file = f"/proc/self/fd/{fd}"
            candidates.insert(0, map_file)
        for path in candidates:
            if path != map_file and not path.startswith(f"{self.proc}/{pid}/map_files/") \
                    and (ident is None or not _same_inode(path, ident)):
                continue  # not provably the file the process mapped: never follow it
            try:
                obj = self.open_file(path, m.path)
                break
            except ObjectError as exc:
                self.open_errors[m.path] = str(exc)
        if ident is not None:
            self.object_cache[ident] = obj
        return obj

    def open_file(self, path: str, name: str) -> ObjectFile:
        """Open one candidate file: read whole, or as a stream (`streaming`)."""
        if self.streaming:
            return ObjectFile.open_streamed(path, name)
        return ObjectFile.open(path, name)

    # -- bounds -------------------------------------------------------------------

    def forget(self, pid: int) -> None:
        """Forget a process (it exited, and its samples are done with)."""
        p = self.procs.pop(pid, None)
        if p is not None:
            self.close_fds(p)
        self._refresh_fails.pop(pid, None)
        self.parents.pop(pid, None)

    def drop_objects(self) -> None:
        """Forget every ELF object (memory pressure): they are opened again on demand."""
        self.object_cache.clear()
        for p in self.procs.values():
            if p.space is not None:
                p.space.drop_objects()

    def trim(self, max_memo: int = 4096) -> None:
        """Housekeeping between batches of samples: bound the memos of every known
        address space and object to `max_memo` entries."""
        if len(self.open_errors) > 1000:
            self.open_errors.clear()
        seen: set[int] = set()
        objs = [o for o in self.object_cache.values() if o is not None]
        for p in self.procs.values():
            if p.space is not None:
                p.space.clear_memos(max_memo)
                objs.extend(p.space.opened())
        for obj in objs:
            if id(obj) not in seen:
                seen.add(id(obj))
                obj.trim_memos(max_memo)

    def _evicted(self, _ident: MapsInode, obj: ObjectFile | None) -> None:
        """An object left the cache: known processes let go of it too."""
        if obj is None:
            return
        for p in self.procs.values():
            if p.space is not None:
                p.space.drop_object(obj)

    def identity_of(self, pid: int, m: Mapping) -> MapsInode | None:
        p = self.procs.get(pid)
        return p.identities.get(m.start) if p else None


def _nbytes(obj: ObjectFile | None) -> int:
    return 0 if obj is None else obj.nbytes()


def _same_inode(path: str, ident: MapsInode) -> bool:
    try:
        return os.stat(path).st_ino == ident.inode
    except OSError:
        return False


def read_stat(stat_path: str) -> tuple[int, int]:
    """(starttime, flags) of a /proc/PID/stat file; (0, 0) if it cannot be read."""
    try:
        with open(stat_path, "rb") as f:
            return stat_fields(f.read())
    except OSError:
        return 0, 0
