"""A profiling run: capture -> raw sample -> unwind -> aggregate -> symbolize -> emit.

`LiveSession` samples running processes with BPF; `Pipeline` is the part after
capture, shared by live runs and by `report` on a recorded capture.
"""

from __future__ import annotations

import os
import signal
import struct
import sys
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from profiler.aggregate import Aggregator
from profiler.errors import SframeProfError
from profiler.model import ProfileData, RawSample
from profiler.symbolize.resolve import Resolver
from profiler.unwind.objfile import ObjectCache
from profiler.unwind.process import Process, ProcessTable, pid_alive
from profiler.unwind.unwinder import AddressSpace, Unwinder, struct_for

if TYPE_CHECKING:
    from profiler.capture.bcc_source import BpfRecord, BpfSampler

REFRESH_REASONS = ("pc-not-mapped", "ra-not-executable", "object-unavailable")
MAPS_RECHECK_S = 0.25   # record mode: how often the targets' maps are re-read
# Live runs on chosen targets unwind after sampling, not while the targets run (the
# profiler would compete with them for CPU); the samples wait in memory, and are
# unwound early when their stack bytes pass this bound.
DEFER_MAX_BYTES = 64 << 20


@dataclass
class Options:
    pids: list[int] = field(default_factory=list)
    system_wide: bool = False
    freq: int = 99
    duration: float | None = None
    stack_size: int = 16384
    event: str = "cpu-clock"
    output: str | None = "sframe-prof.pb.gz"
    folded: str | None = None
    flamegraph: str | None = None
    command: list[str] = field(default_factory=list)
    record: str | None = None
    transport: str = "auto"
    quiet: bool = False
    pac_mask: int | None = None
    follow_children: bool = True


def machine_arch() -> str:
    m = os.uname().machine
    return "aarch64" if m in ("aarch64", "arm64") else "x86_64"


_REG_BITS = {"pc": 1, "sp": 2, "fp": 4, "lr": 8}   # as the capture's packed samples
_MEMO_KEYS = 4096       # register sets remembered per address space
_MEMO_PER_KEY = 8       # distinct chains remembered per register set


class UnwindMemo:
    """Unwind once per distinct input: same address space, same registers, same stack
    length and the same values in every stack word the unwind used give the same
    chain (the unwinder is a pure function of those; its step classification is
    cached per address space anyway).

    A profile of a busy program is a few hundred distinct chains repeated thousands of
    times, but no two stack copies are equal byte for byte (locals, loop counters).
    So a new register set is unwound with the unwinder noting the offsets of the
    words it used (Unwinder.unwind's `reads`); the entry keeps those offsets as one
    precompiled struct and the words found there.  A later sample with the same
    registers reuses the chain when one unpack_from of its stack gives the same
    words -- an exact check, not a heuristic.  A chain of several frames for which
    no read was noted turns the memo off.
    """

    def __init__(self, unwinder: Unwinder) -> None:
        self.unwinder = unwinder
        self.enabled = True
        self.hits = 0
        self.misses = 0
        self._memos: weakref.WeakKeyDictionary[AddressSpace, dict[tuple[object, ...], list[
            tuple[struct.Struct, tuple[int, ...], Any]]]] = weakref.WeakKeyDictionary()
        self._last_space: AddressSpace | None = None
        self._last_memo: dict[tuple[object, ...], list[Any]] = {}

    @staticmethod
    def key(stack_base: int, stack_len: int, regs: dict[str, int], pac_mask: int | None,
            arch: str) -> tuple[object, ...]:
        """What besides the stack words an unwind depends on (the space aside)."""
        mask = 0
        extra: tuple[tuple[str, int], ...] | None = None
        for name in regs:
            bit = _REG_BITS.get(name)
            if bit is None:
                extra = tuple(sorted(regs.items()))
                break
            mask |= bit
        return (stack_base, stack_len, mask, regs.get("pc", 0), regs.get("sp", 0),
                regs.get("fp", 0), regs.get("lr", 0), pac_mask, arch, extra)

    def memo_for(self, space: AddressSpace) -> dict[tuple[object, ...], list[Any]]:
        if space is self._last_space:
            return self._last_memo
        memo = self._memos.get(space)
        if memo is None:
            memo = {}
            self._memos[space] = memo
        self._last_space, self._last_memo = space, memo
        return memo

    def lookup(self, space: AddressSpace, key: tuple[object, ...], buf: bytes,
               offset: int = 0) -> Any:
        """The remembered chain for `key` whose stack words match those of the stack
        at buf[offset:], or None."""
        entries = self.memo_for(space).get(key)
        if entries is not None:
            for check, words, result in entries:
                if check.unpack_from(buf, offset) == words:
                    self.hits += 1
                    return result
        return None

    def unwind(self, sample: RawSample, space: AddressSpace,
               key: tuple[object, ...] | None = None) -> Any:
        if not self.enabled:
            return self.unwinder.unwind(sample, space)
        stack = sample.stack
        if key is None:
            key = self.key(sample.stack_base, len(stack), sample.regs, sample.pac_mask,
                           sample.arch)
        found = self.lookup(space, key, stack)
        if found is not None:
            return found
        self.misses += 1
        memo = self.memo_for(space)
        entries = memo.get(key)
        reads: list[int] = []
        result = self.unwinder.unwind(sample, space, reads)
        check = self._check_for(result, reads)
        if check is not None:
            if entries is None:
                if len(memo) >= _MEMO_KEYS:
                    memo.clear()
                entries = memo[key] = []
            if len(entries) < _MEMO_PER_KEY:
                entries.append((check, check.unpack_from(stack), result))
        return result

    def _check_for(self, result: Any, offsets_read: list[int]) -> struct.Struct | None:
        """One struct reading every stack word the unwind used, or None if impossible
        (struct objects are shared by chains that used the same offsets)."""
        offsets = tuple(sorted({off for off in offsets_read if off >= 0}))
        if not offsets and len(result.frames) > 1:
            self.enabled = False   # a chain without stack reads: the reader was bypassed
            return None
        return struct_for(offsets)


class Pipeline:
    """Unwind and aggregate raw samples; at the end, symbolize and write outputs."""

    def __init__(self, unwinder: Unwinder, resolver: Resolver) -> None:
        self.unwinder = unwinder
        self.memo = UnwindMemo(unwinder)
        self.resolver = resolver
        self.agg = Aggregator()
        self.refreshes = 0

    def add(self, sample: RawSample, space: AddressSpace | None, has_user: bool = True,
            proc: Process | None = None, table: ProcessTable | None = None,
            later: Callable[[], AddressSpace | None] | None = None,
            memo_key: tuple[object, ...] | None = None) -> None:
        """Unwind and count one sample.  When it fails for a reason newer maps could
        fix, the maps are re-read (live: `proc` and `table`) or the next snapshot is
        tried (`later`), and the sample is unwound again."""
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
        self.agg.add(pid=sample.pid, tid=sample.tid, comm=sample.comm, time_ns=sample.time_ns,
                     kernel=sample.kernel_stack, stack=stack, space=space)

    def profile(self, *, period_ns: int, start_ns: int, duration_ns: int,
                process_names: dict[int, str] | None = None) -> ProfileData:
        return self.resolver.profile(self.agg, period_ns=period_ns, start_ns=start_ns,
                                     duration_ns=duration_ns, process_names=process_names)


def check_outputs(opts: Options) -> None:
    """Fail before sampling, not after, when an output cannot be written."""
    for path in (opts.output, opts.folded, opts.flamegraph, opts.record):
        if not path:
            continue
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise SframeProfError(f"cannot write {path}: no such directory {directory}")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise SframeProfError(f"cannot write {path}: {directory} is not writable")
        if os.path.isdir(path):
            raise SframeProfError(f"cannot write {path}: it is a directory")


def write_outputs(data: ProfileData, opts: Options) -> list[str]:
    """Write every requested output; returns what was written (for the summary)."""
    from profiler.atomic import atomic_path
    written = []
    try:
        if opts.output:
            from profiler.emit.pprof import write_pprof
            with atomic_path(opts.output) as tmp:
                write_pprof(data, tmp)
            written.append(f"pprof {opts.output}")
        if opts.folded:
            from profiler.emit.folded import write_folded
            with atomic_path(opts.folded) as tmp:
                write_folded(data, tmp)
            written.append(f"folded {opts.folded}")
        if opts.flamegraph:
            from profiler.emit.flamegraph import write_flamegraph
            with atomic_path(opts.flamegraph) as tmp:
                write_flamegraph(data, tmp, fmt="svg" if opts.flamegraph.endswith(".svg")
                                 else "html")
            written.append(f"flame graph {opts.flamegraph}")
    except OSError as exc:
        raise SframeProfError(f"cannot write {exc.filename or 'output'}: {exc.strerror}") from None
    return written


# What would make a binary's chains reliable, by the unwind tables it has
# (ObjectFile.unwind_tables), for a hot binary whose chains often are not.
ADVICE = {
    "none": "has no unwind tables (.eh_frame, .sframe or Go's .gopclntab): its frames "
            "are walked with frame pointers, unreliable; rebuild it with "
            "-fasynchronous-unwind-tables, or -Wa,--gsframe (GNU as >= 2.40) for .sframe",
    "eh_frame": "has CFI (.eh_frame) but chains through it are often unreliable; see the "
                "reasons above (code without CFI, hand-written assembly, a truncated "
                "copy: raise --stack-size)",
    "sframe": "has .sframe but chains through it are often unreliable; see the reasons "
              "above",
    "gopclntab": "is Go, unwound from .gopclntab: chains end unreliable where the runtime "
                 "switches stacks (systemstack, mcall, morestack, calls into C), since "
                 "only the thread's current stack is copied; no rebuild helps",
}
HINT_BELOW = 90.0     # % reliable under which a hot binary gets advice


def summary(agg: Aggregator, lost: int, seconds: float, out: TextIO,
            tables_of: dict[str, str] | None = None) -> None:
    """The end-of-run report: totals, then per binary samples, reliable % and the
    share of its frames each unwind source stepped, and advice for hot binaries
    whose chains are often unreliable (by `tables_of`: path -> unwind tables)."""
    n = agg.samples
    print(f"sframe-prof: {n} samples in {seconds:.1f} s, {lost} lost, "
          f"{agg.reliable_pct():.1f}% of user stacks reliable"
          + (f", {agg.kernel_only} kernel-only" if agg.kernel_only else ""), file=out)
    if lost:
        print("  samples were lost: the buffer filled up; lower -F or the --stack-size",
              file=out)
    if agg.reasons:
        reasons = ", ".join(f"{r} {c}" for r, c in agg.reasons.most_common())
        print(f"  unreliable: {reasons}", file=out)
    rows = sorted(agg.binaries.items(), key=lambda kv: -kv[1].samples)
    hot = [(b, s) for b, s in rows if s.samples]
    if hot:
        print(f"  {'binary':<48} {'samples':>8} {'reliable':>9}  methods", file=out)
    for path, st in hot[:12]:
        total = sum(st.methods.values()) or 1
        methods = ", ".join(f"{m} {100 * c / total:.0f}%" for m, c in st.methods.most_common())
        pct = 100.0 * st.reliable / st.samples if st.samples else 0.0
        print(f"  {path[-48:]:<48} {st.samples:>8} {pct:>8.1f}%  {methods}", file=out)
    for path, st in hot[:12]:
        pct = 100.0 * st.reliable / st.samples if st.samples else 100.0
        kind = (tables_of or {}).get(path)
        if kind in ADVICE and st.samples >= max(1, n // 20) and (
                kind == "none" or pct < HINT_BELOW):
            print(f"  hint: {path} {ADVICE[kind]}", file=out)


class LiveSession:
    """Sample processes with BPF until the duration ends, the targets exit or Ctrl-C."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.arch = machine_arch()
        self.table = ProcessTable(ObjectCache())
        self.pipeline = Pipeline(Unwinder(self.table.objects), Resolver())
        self.child: Child | None = None
        self.stop = False
        self.writer: Any = None
        self.recorded_maps: dict[int, int] = {}
        self.kernel_pcs: set[int] = set()     # record mode: named at the end
        self.received = 0
        self.internal_errors = 0
        # -p / -- CMD: defer unwinding (see DEFER_MAX_BYTES); -a: unwind as samples come
        self.defer = not opts.system_wide
        self._pending: list[tuple[RawSample, Process | None, AddressSpace | None, bool]] = []
        self._pending_bytes = 0
        self._opened: weakref.WeakSet[AddressSpace] = weakref.WeakSet()

    # -- target processes --------------------------------------------------------

    def _launch(self) -> tuple[int, int]:
        """Fork the command, held before exec until sampling runs; (pid, release fd)."""
        import shutil
        exe = shutil.which(self.opts.command[0])
        if exe is None:
            raise SframeProfError(f"cannot run {self.opts.command[0]}: command not found")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            try:
                os.close(w)
                os.read(r, 1)
                os.close(r)
                os.execv(exe, self.opts.command)
            except BaseException as exc:  # noqa: BLE001
                os.write(2, f"sframe-prof: cannot run {exe}: {exc}\n".encode())
            finally:
                os._exit(127)
        os.close(r)
        self.child = Child(pid)
        return pid, w

    def _alive(self) -> bool:
        if self.opts.system_wide:
            return True
        if self.child is not None:
            return self.child.poll() is None
        return any(pid_alive(p) for p in self.opts.pids)

    # -- the run ----------------------------------------------------------------

    def run(self) -> int:
        from profiler.capture.bcc_source import BpfSampler
        opts = self.opts
        if os.geteuid() != 0:
            raise SframeProfError("live profiling needs root (BPF and perf events): "
                                  "run with sudo")
        check_outputs(opts)
        for pid in opts.pids:
            if not pid_alive(pid):
                raise SframeProfError(f"no process with pid {pid}")
        release = None
        pids = list(opts.pids)
        if opts.command:
            pid, release = self._launch()
            pids.append(pid)
        try:
            sampler = BpfSampler(pids=pids, system_wide=opts.system_wide, freq=opts.freq,
                                 stack_size=opts.stack_size, event=opts.event,
                                 transport=opts.transport,
                                 follow_children=opts.follow_children)
        except BaseException:
            if self.child is not None:
                self.child.stop()
            raise
        if opts.pac_mask is None:
            opts.pac_mask = sampler.pac_mask   # arm64: the kernel's NT_ARM_PAC_MASK
        for warning in sampler.warnings:
            print(f"sframe-prof: warning: {warning}", file=sys.stderr)
        for pid in opts.pids:
            proc = self.table.get(pid)
            if self.defer and not opts.record and proc is not None and proc.space is not None:
                self._open_objects(proc.space)   # set-up, before the targets are sampled
        if opts.record:
            self._open_record(pids)
        old_int = signal.signal(signal.SIGINT, self._on_signal)
        old_term = signal.signal(signal.SIGTERM, self._on_signal)
        mono0, wall0 = time.monotonic_ns(), time.time_ns()
        if not opts.quiet:
            what = "all processes" if opts.system_wide else \
                "pid " + ",".join(str(p) for p in pids)
            print(f"sframe-prof: sampling {what} at {opts.freq} Hz"
                  + (f" for {opts.duration:g} s" if opts.duration else "; Ctrl-C to stop"),
                  file=sys.stderr, flush=True)
        if release is not None:
            os.write(release, b"g")
            os.close(release)
        deadline = time.monotonic() + opts.duration if opts.duration else None
        status = sys.stderr.isatty() and not opts.quiet
        last_status = last_maps = 0.0
        try:
            while not self.stop:
                records = sampler.poll(100)
                for parent, child in sampler.take_forks():
                    self.table.note_fork(parent, child)
                self._consume(records)
                now = time.monotonic()
                if self.writer is not None and now - last_maps > MAPS_RECHECK_S:
                    # No unwinding while recording, so no miss tells us that a library
                    # was loaded: re-read the maps now and then (ld.so at start, dlopen).
                    last_maps = now
                    self.writer.flush()   # a killed recorder loses at most this long
                    for proc in list(self.table.procs.values()):
                        if not proc.exited and self.table.refresh(proc):
                            self._record_maps(proc)
                if deadline is not None and now >= deadline:
                    break
                if not self._alive():
                    break
                if status and now - last_status > 0.5:
                    last_status = now
                    self._status(sampler)
            for _ in range(3):   # drain what is still in the buffer
                records = sampler.poll(20)
                for parent, child in sampler.take_forks():
                    self.table.note_fork(parent, child)
                self._consume(records)
            counters = sampler.counters()
        finally:
            try:
                self._unwind_pending()
            except BaseException:
                self._pending = []
                raise
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
            sampler.close()
            if self.child is not None and self.child.poll() is None:
                self.child.stop()
        if status:
            sys.stderr.write("\r\033[K")
        seconds = (time.monotonic_ns() - mono0) / 1e9
        lost = counters["lost"]
        if self.writer is not None:
            self._record_kernel_symbols()
            self.writer.close(lost=lost, samples=self.received)
            print(f"sframe-prof: {self.received} samples recorded to {opts.record}, "
                  f"{lost} lost", file=sys.stderr)
            return 0
        period_ns = int(1e9 / opts.freq)
        start_ns = wall0
        data = self.pipeline.profile(period_ns=period_ns, start_ns=start_ns,
                                     duration_ns=int(seconds * 1e9),
                                     process_names=self._process_names())
        written = write_outputs(data, opts)
        if not opts.quiet:
            summary(self.pipeline.agg, lost, seconds, sys.stderr, self._tables_of())
            if self.internal_errors:
                print(f"  {self.internal_errors} samples could not be processed (internal "
                      "errors; see the first warning)", file=sys.stderr)
            for w in written:
                print(f"  wrote {w}", file=sys.stderr)
        return 0

    def _on_signal(self, _sig: int, _frame: object) -> None:
        self.stop = True

    def _status(self, sampler: BpfSampler) -> None:
        agg = self.pipeline.agg
        c = sampler.counters()
        # Deferred unwinding: the reliable share is known once the samples are unwound.
        verdict = (f"{agg.reliable_pct():.1f}% reliable" if agg.samples else
                   "unwound when sampling ends" if self._pending else "")
        sys.stderr.write(f"\r\033[Ksframe-prof: {self.received} samples, {c['lost']} lost"
                         + (f", {verdict}" if verdict else ""))
        sys.stderr.flush()

    def _consume(self, records: Sequence[BpfRecord]) -> None:
        for r in records:
            self.received += 1
            try:
                self._consume_one(r)
            except Exception as exc:  # noqa: BLE001 - one bad sample never ends the run
                self._internal_error(exc)
        if self._pending_bytes > DEFER_MAX_BYTES:
            self._unwind_pending()

    def _internal_error(self, exc: Exception) -> None:
        self.internal_errors += 1
        if self.internal_errors == 1:
            print(f"sframe-prof: warning: a sample could not be processed "
                  f"({type(exc).__name__}: {exc}); continuing", file=sys.stderr)

    def _unwind_pending(self) -> None:
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        for sample, proc, space, has_user in pending:
            try:
                self.pipeline.add(sample, space, has_user, proc, self.table)
            except Exception as exc:  # noqa: BLE001
                self._internal_error(exc)

    def _open_objects(self, space: AddressSpace) -> None:
        """Open the files behind a new address space's executable mappings now, while
        the process lives (through /proc/PID/map_files), so that unwinding it later
        needs neither the process nor the paths.  Parsing their tables waits."""
        if space in self._opened:
            return
        self._opened.add(space)
        for m in space.maps:
            if m.executable and (m.path.startswith("/") or m.path == "[vdso]"):
                try:
                    space.object_for(m)
                except Exception as exc:  # noqa: BLE001 - unwinding will say why
                    self._internal_error(exc)

    def _consume_one(self, r: BpfRecord) -> None:
        proc = self.table.get(r.pid)
        if self.writer is not None and proc is not None:
            # No unwinding while recording: refresh the maps when the pc is outside them.
            if r.has_user and proc.space is not None and proc.space.find(r.regs["pc"]) is None:
                self.table.refresh(proc)
            self._record_maps(proc)
        elif self.defer and proc is not None:
            # Unwinding waits; only what cannot wait is done now: new maps when the pc
            # is outside the known ones (dlopen, exec), and the files they map.
            if r.has_user and proc.space is not None and proc.space.find(r.regs["pc"]) is None:
                self.table.refresh(proc)
            if proc.space is not None:
                self._open_objects(proc.space)
        sample = RawSample(
            arch=self.arch, regs=r.regs, stack_base=r.regs["sp"], stack=r.stack,
            mappings=proc.mappings if proc else (), memory=proc.memory if proc else (),
            pac_mask=self.opts.pac_mask, pid=r.pid, tid=r.tid, comm=r.comm,
            time_ns=r.time_ns, cpu=r.cpu, kernel_stack=r.kstack)
        if self.defer and self.writer is None:
            self._pending.append((sample, proc, proc.space if proc else None, r.has_user))
            self._pending_bytes += len(r.stack)
            return
        if self.writer is not None:
            self.writer.add_sample(sample)
            if r.kstack:
                self.kernel_pcs.update(r.kstack)
            return
        self.pipeline.add(sample, proc.space if proc else None, r.has_user, proc,
                          self.table)

    # -- record mode ----------------------------------------------------------------

    def _open_record(self, pids: list[int]) -> None:
        from profiler.capture.recording import CaptureHeader, CaptureWriter
        assert self.opts.record is not None
        header = CaptureHeader.here(
            self.arch, frequency_hz=self.opts.freq, period_ns=int(1e9 / self.opts.freq),
            pids=tuple(pids), command=tuple(self.opts.command), pac_mask=self.opts.pac_mask,
            stack_bytes=self.opts.stack_size)
        try:
            self.writer = CaptureWriter(self.opts.record, header)
        except OSError as exc:
            raise SframeProfError(f"cannot write {self.opts.record}: {exc.strerror}") from None

    def _record_kernel_symbols(self) -> None:
        """Store the names of the kernel pcs seen (after sampling, so the run does not
        pay for reading kallsyms): `report` then needs no kallsyms of this machine."""
        if not self.kernel_pcs:
            return
        from profiler.symbolize.symbols import KernelSymbols
        ks = KernelSymbols.load()
        if not ks.available:
            return
        names = {}
        for pc in self.kernel_pcs:
            hit = ks.lookup(pc)
            if hit is not None:
                names[pc] = hit
        self.writer.add_kernel_symbols(names)

    def _record_maps(self, proc: Process) -> None:
        """Record a process's maps (once per version) with the monotonic time samples use."""
        from profiler.capture.recording import FileIdentity
        if self.recorded_maps.get(proc.pid) == proc.generation:
            return
        self.recorded_maps[proc.pid] = proc.generation
        from profiler.symbolize.symbols import read_build_id
        idents: list[FileIdentity | None] = []
        for m in proc.mappings:
            ident = proc.identities.get(m.start)
            if ident is None:
                idents.append(None)
                continue
            major, _, minor = ident.dev.partition(":")
            try:
                dev = os.makedev(int(major, 16), int(minor, 16))
            except ValueError:
                dev = 0
            build_id = ""
            if m.executable:
                # `report` checks the files it is given against this.
                obj = self.table.open_mapping(proc.pid, m)
                build_id = read_build_id(obj) if obj is not None else ""
            idents.append(FileIdentity(build_id, dev, ident.inode, 0))
        self.writer.add_maps(proc.pid, proc.mappings, idents,
                             time_ns=int(proc.refreshed_at * 1e9))
        for start, data in proc.memory:
            self.writer.add_memory(proc.pid, start, data, "[vdso]")

    # -- summary helpers ---------------------------------------------------------------

    def _process_names(self) -> dict[int, str]:
        return {pid: os.path.basename(p.exe) for pid, p in self.table.procs.items() if p.exe}

    def _tables_of(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for p in self.table.procs.values():
            for m in p.mappings:
                if m.executable and m.path.startswith("/") and m.path not in out:
                    obj = self.table.open_mapping(p.pid, m)
                    if obj is not None:
                        out[m.path] = obj.unwind_tables()
        return out



class Child:
    """The command started with `-- CMD`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def stop(self) -> None:
        """Terminate the command (it outlived -d or the run failed) and reap it."""
        for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
            if self.poll() is not None:
                return
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            end = time.monotonic() + wait
            while time.monotonic() < end and self.poll() is None:
                time.sleep(0.02)
