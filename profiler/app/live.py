"""A live run: `sframe-prof -p PID` and `sframe-prof record`.

LiveRun owns what both have in common: the targets (given pids, or a command it starts
held before exec), the BPF sampler, the process table and the sampling loop.  What is
done with each sample is the mode's: ProfileMode unwinds (after sampling, for chosen
targets) and writes the profile; RecordMode (profiler.app.record) keeps the raw
samples in a capture file.
"""

from __future__ import annotations

import os
import sys
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from profiler.aggregate import Aggregator
from profiler.app.child import Child, launch
from profiler.app.options import Options, machine_arch
from profiler.app.outputs import check_outputs, write_outputs
from profiler.app.pipeline import Pipeline
from profiler.app.sampling import SamplerSource, SamplingLoop
from profiler.app.summary import summary, tables_of
from profiler.capture.records import raw_sample
from profiler.errors import SframeProfError
from profiler.model import RawSample
from profiler.symbolize.resolve import Resolver
from profiler.unwind.objfile import ObjectCache
from profiler.unwind.process import Process, ProcessTable, pid_alive
from profiler.unwind.space import AddressSpace
from profiler.unwind.unwinder import Unwinder

if TYPE_CHECKING:
    from profiler.capture.bcc_source import BpfRecord, BpfSampler, SamplerStart

POLL_MS = 100
STATUS_EVERY_S = 0.5
# Live runs on chosen targets unwind after sampling, not while the targets run (the
# profiler would compete with them for CPU); the samples wait in memory, and are
# unwound early when their stack bytes pass this bound.
DEFER_MAX_BYTES = 64 << 20


class Mode(Protocol):
    def prepare(self, run: LiveRun, pids: list[int]) -> None: ...

    def start(self, run: LiveRun, pids: list[int]) -> None: ...

    def take(self, run: LiveRun, r: BpfRecord, proc: Process | None) -> None: ...

    def tick(self, run: LiveRun, now: float) -> None: ...

    def status(self) -> str: ...

    def finish(self, run: LiveRun, seconds: float, lost: int, wall0: int) -> None: ...


class LiveRun:
    """Sample processes with BPF until the duration ends, the targets exit or Ctrl-C."""

    def __init__(self, opts: Options, mode: Mode) -> None:
        self.opts = opts
        self.mode = mode
        self.arch = machine_arch()
        self.table = ProcessTable(ObjectCache())
        self.child: Child | None = None
        self.sampler: BpfSampler | None = None
        self.received = 0
        self.internal_errors = 0
        self._status = sys.stderr.isatty() and not opts.quiet
        self._last_status = 0.0

    def run(self) -> int:
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
            self.child, release = launch(opts.command)
            pids.append(self.child.pid)
        # The BPF compile takes most of the start-up and runs outside the GIL: the mode
        # prepares (reads the targets' maps, opens their files) meanwhile.
        start = self._start_sampler(pids)
        try:
            try:
                self.mode.prepare(self, pids)
            finally:
                sampler = self.sampler = start.result()
        except BaseException:
            if self.sampler is not None:
                self.sampler.close()
            if self.child is not None:
                self.child.stop()
            raise
        if opts.pac_mask is None:
            opts.pac_mask = sampler.pac_mask   # arm64: the kernel's NT_ARM_PAC_MASK
        for warning in sampler.warnings:
            print(f"sframe-prof: warning: {warning}", file=sys.stderr)
        self.mode.start(self, pids)
        wall0 = time.time_ns()
        mono0 = time.monotonic_ns()
        if not opts.quiet:
            what = "all processes" if opts.system_wide else \
                "pid " + ",".join(str(p) for p in pids)
            print(f"sframe-prof: sampling {what} at {opts.freq} Hz"
                  + (f" for {opts.duration:g} s" if opts.duration else "; Ctrl-C to stop"),
                  file=sys.stderr, flush=True)
        if release is not None:
            os.write(release, b"g")
            os.close(release)
        loop = SamplingLoop(SamplerSource(sampler), self, poll_ms=POLL_MS,
                            duration=opts.duration)
        try:
            loop.run()
            lost = sampler.counters()["lost"]
        finally:
            try:
                sampler.close()
            finally:
                if self.child is not None and self.child.poll() is None:
                    self.child.stop()
        if self._status:
            sys.stderr.write("\r\033[K")
        seconds = (time.monotonic_ns() - mono0) / 1e9
        self.mode.finish(self, seconds, lost, wall0)
        return 0

    def _start_sampler(self, pids: list[int]) -> SamplerStart:
        from profiler.capture.bcc_source import SamplerStart
        o = self.opts
        return SamplerStart(pids=pids, system_wide=o.system_wide, freq=o.freq,
                            stack_size=o.stack_size, event=o.event, transport=o.transport,
                            follow_children=o.follow_children)

    # -- the sampling loop's consumer ------------------------------------------------

    def consume(self, records: Sequence[BpfRecord]) -> None:
        for r in records:
            self.received += 1
            try:
                self.mode.take(self, r, self.table.get(r.pid))
            except Exception as exc:  # noqa: BLE001 - one bad sample never ends the run
                self.internal_error(exc)

    def note_fork(self, parent: int, child: int) -> None:
        self.table.note_fork(parent, child)

    def tick(self, now: float) -> bool:
        self.mode.tick(self, now)
        if not self._alive():
            return False
        if self._status and now - self._last_status > STATUS_EVERY_S:
            self._last_status = now
            lost = self.sampler.counters()["lost"] if self.sampler is not None else 0
            verdict = self.mode.status()
            sys.stderr.write(f"\r\033[Ksframe-prof: {self.received} samples, {lost} lost"
                             + (f", {verdict}" if verdict else ""))
            sys.stderr.flush()
        return True

    def _alive(self) -> bool:
        if self.opts.system_wide:
            return True
        if self.child is not None:
            return self.child.poll() is None
        return any(pid_alive(p) for p in self.opts.pids)

    # -- shared by the modes ------------------------------------------------------------

    def sample_of(self, r: BpfRecord, proc: Process | None) -> RawSample:
        return raw_sample(r, self.arch, self.opts.pac_mask,
                          proc.mappings if proc else (), proc.memory if proc else ())

    def refresh_if_unmapped(self, r: BpfRecord, proc: Process) -> None:
        """Re-read the maps when the pc is outside them (dlopen, exec): without an
        unwind at hand, no miss would tell."""
        if r.has_user and proc.space is not None and proc.space.find(r.regs["pc"]) is None:
            self.table.refresh(proc)

    def internal_error(self, exc: Exception) -> None:
        self.internal_errors += 1
        if self.internal_errors == 1:
            print(f"sframe-prof: warning: a sample could not be processed "
                  f"({type(exc).__name__}: {exc}); continuing", file=sys.stderr)

    def process_names(self) -> dict[int, str]:
        return {pid: os.path.basename(p.exe) for pid, p in self.table.procs.items() if p.exe}


class ProfileMode:
    """Unwind and count the samples, then write the profile and the summary."""

    def __init__(self, defer: bool) -> None:
        self.agg = Aggregator()
        self.pipeline: Pipeline | None = None
        # -p / -- CMD: defer unwinding (see DEFER_MAX_BYTES); -a: unwind as samples come
        self.defer = defer
        self._pending: list[tuple[RawSample, Process | None, AddressSpace | None, bool]] = []
        self._pending_bytes = 0
        self._opened: weakref.WeakSet[AddressSpace] = weakref.WeakSet()

    def prepare(self, run: LiveRun, pids: list[int]) -> None:
        self.pipeline = Pipeline(Unwinder(run.table.objects), Resolver())
        if self.defer:
            for pid in run.opts.pids:
                proc = run.table.get(pid)
                if proc is not None and proc.space is not None:
                    self._open_objects(run, proc.space)   # before the targets are sampled

    def start(self, run: LiveRun, pids: list[int]) -> None:
        pass

    def take(self, run: LiveRun, r: BpfRecord, proc: Process | None) -> None:
        assert self.pipeline is not None
        if self.defer and proc is not None:
            # Unwinding waits; only what cannot wait is done now: new maps when the pc
            # is outside the known ones (dlopen, exec), and the files they map.
            run.refresh_if_unmapped(r, proc)
            if proc.space is not None:
                self._open_objects(run, proc.space)
        sample = run.sample_of(r, proc)
        space = proc.space if proc else None
        if self.defer:
            self._pending.append((sample, proc, space, r.has_user))
            self._pending_bytes += len(r.stack)
            if self._pending_bytes > DEFER_MAX_BYTES:
                self.unwind_pending(run)
            return
        self.pipeline.add(self.agg, sample, space, r.has_user, proc, run.table)

    def tick(self, run: LiveRun, now: float) -> None:
        pass

    def status(self) -> str:
        # Deferred unwinding: the reliable share is known once the samples are unwound.
        return (f"{self.agg.reliable_pct():.1f}% reliable" if self.agg.samples else
                "unwound when sampling ends" if self._pending else "")

    def unwind_pending(self, run: LiveRun) -> None:
        assert self.pipeline is not None
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        for sample, proc, space, has_user in pending:
            try:
                self.pipeline.add(self.agg, sample, space, has_user, proc, run.table)
            except Exception as exc:  # noqa: BLE001
                run.internal_error(exc)

    def _open_objects(self, run: LiveRun, space: AddressSpace) -> None:
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
                    run.internal_error(exc)

    def finish(self, run: LiveRun, seconds: float, lost: int, wall0: int) -> None:
        assert self.pipeline is not None
        self.unwind_pending(run)
        opts = run.opts
        data = self.pipeline.profile(self.agg, period_ns=int(1e9 / opts.freq), start_ns=wall0,
                                     duration_ns=int(seconds * 1e9),
                                     process_names=run.process_names())
        written = write_outputs(data, opts)
        if opts.quiet:
            return
        spaces = (p.space for p in run.table.procs.values() if p.space is not None)
        summary(self.agg, lost, seconds, sys.stderr, tables_of(spaces, self.agg))
        if run.internal_errors:
            print(f"  {run.internal_errors} samples could not be processed (internal "
                  "errors; see the first warning)", file=sys.stderr)
        for w in written:
            print(f"  wrote {w}", file=sys.stderr)
