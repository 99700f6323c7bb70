"""The agent loop: sample, unwind as samples arrive, close windows, feed the sinks.

One thread reads the BPF buffer (``poll`` wakes up as soon as a sample is there),
identifies the process on first sight (its maps, files and cgroup are read while it
lives), unwinds the sample at once and counts it into its window's group.  When a
window's end has passed (plus a short grace for samples still in the buffer), the
window's groups become profiles, go to every sink, and the process book forgets what
exited.  Each network sink has its own sender thread draining its spool.

SIGTERM and SIGINT end the loop: the current window is closed at that moment and
shipped (or spooled), the senders get ``flush_timeout`` seconds to drain, and what
they could not send stays in the spool for the next start.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from profiler.app.agent.config import AgentConfig, build, secret
from profiler.app.agent.metrics import (
    ResourceMeter,
    Totals,
    WindowMetrics,
    format_status,
    read_status,
    status_doc,
    write_status,
)
from profiler.app.agent.procs import (
    Matcher,
    ProcessBook,
    TargetScanner,
)
from profiler.app.agent.reader import Reader
from profiler.app.agent.sinks import DirectorySink, HttpSink, OtlpSink, PyroscopeSink
from profiler.app.agent.spool import Spool
from profiler.app.agent.windows import Clock, Window, build_shipments, group_key
from profiler.app.options import machine_arch
from profiler.app.pipeline import Pipeline
from profiler.app.sampling import SamplingLoop
from profiler.capture.bcc_compile import release_compiler_memory
from profiler.capture.records import raw_sample
from profiler.symbolize.resolve import Resolver
from profiler.unwind.objfile import ObjectCache
from profiler.unwind.process import ProcessTable
from profiler.unwind.unwinder import Unwinder

log = logging.getLogger("sframe-prof.agent")

GRACE_NS = 300_000_000          # wait this long after a window's end for its last samples
POLL_MS = 100                   # the reader thread's wait on the BPF buffer
CONSUME_MS = 250                # the main loop's: it unwinds what the reader read, in batches
KERNEL_LOCATIONS = 50_000       # kernel frames kept symbolized (by address)


def agent_version() -> str:
    """The agent's version: the installed sframe-prof distribution's."""
    try:
        from importlib.metadata import version
        return version("sframe-prof")
    except Exception:  # noqa: BLE001 - a source tree without metadata
        return "0.1.0"


def limit_arenas() -> None:
    """At most two malloc arenas: glibc gives each thread (the senders) its own, and
    memory freed in one is not reused by another, which shows up as RSS growth.

    And a fixed mmap threshold: every block of 256 KB or more (a big file's unwind
    table copy, a symbol table's arrays) gets its own mapping and goes back to the
    kernel when freed.  glibc otherwise raises the threshold to the largest block freed
    so far (up to 32 MB), after which such blocks come from the heap and leave holes
    in it that RSS keeps."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, 2)                  # M_ARENA_MAX
        libc.mallopt(-3, 256 << 10)          # M_MMAP_THRESHOLD (also stops its drift)
        libc.mallopt(-1, 1 << 20)            # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def run(argv: list[str]) -> int:
    cfg, args = build(argv)
    if args.status:
        doc = read_status(cfg.spool)
        if doc is None:
            print(f"sframe-prof agent: no status in {cfg.spool} (not started yet?)",
                  file=sys.stderr)
            return 3
        print(format_status(doc))
        return 0 if doc.get("state") == "running" else 3
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="sframe-prof agent: %(message)s")
    prof_path = os.environ.get("SFRAME_AGENT_PROFILE")
    if not prof_path:
        return Agent(cfg).run()
    # A developer's switch: cProfile the whole run and write pstats to this file
    # (`python -m pstats FILE`), to find where the agent's own CPU goes.
    import cProfile
    prof = cProfile.Profile()
    try:
        return prof.runcall(Agent(cfg).run)
    finally:
        prof.dump_stats(prof_path)
        log.info("cProfile statistics written to %s", prof_path)


_LIBC: Any = None


def release_memory() -> None:
    """Hand freed heap back to the kernel (glibc keeps it otherwise): RSS stays flat."""
    global _LIBC
    try:
        if _LIBC is None:
            _LIBC = ctypes.CDLL("libc.so.6")
        _LIBC.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def ringbuf_pages(freq: int, stack_size: int) -> int:
    """Room for about four seconds of samples from every CPU, a power of two: the loop
    reads the buffer between the groups of a window it builds, so only one long step
    (the first symbol table of a big binary) keeps it away that long."""
    cpus = os.cpu_count() or 1
    need = cpus * freq * (stack_size + 1536) * 4 // 4096
    pages = 256
    while pages < need and pages < 8192:
        pages *= 2
    return pages


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.version = agent_version()
        self.host = cfg.hostname()
        self.window_ns = int(cfg.window * 1e9)
        self.period_ns = int(1e9 / cfg.freq)
        self.arch = machine_arch()
        self.table = ProcessTable(ObjectCache(), max_objects=cfg.cache_objects,
                                  max_object_bytes=cfg.cache_object_bytes, streaming=True,
                                  refresh_backoff=True)
        self.resolver = Resolver(max_symbols=cfg.cache_symbols,
                                 max_symbol_bytes=cfg.cache_symbol_bytes,
                                 max_kernel_locations=KERNEL_LOCATIONS)
        self.pipeline = Pipeline(Unwinder(self.table.objects), self.resolver)
        self.matcher = Matcher(cfg.exe, cfg.cgroup, cfg.services)
        self.post_filter = self.matcher.filtering and not cfg.pids
        self.book = ProcessBook(self.table, self.matcher)
        self.clock = Clock()
        self.windows: dict[int, Window] = {}
        self.closed_index = -1
        self.start_wall = 0
        self.totals = Totals()
        self.last_lost = 0
        self.run_id = f"{int(time.time() * 1000):013d}"
        self.started = time.time()
        self.sinks: list[Any] = []
        self.meter: ResourceMeter | None = None
        self.last_metrics = WindowMetrics()
        self.sampler: Any = None
        self.loop: SamplingLoop | None = None
        self.scanner: TargetScanner | None = None
        self.next_scan = 0.0
        self.reader: Reader | None = None
        self.last_shrink = 0.0
        self.pac_mask: int | None = None

    # -- set-up ---------------------------------------------------------------------

    def _make_sinks(self) -> None:
        cfg = self.cfg
        os.makedirs(cfg.spool, mode=0o700, exist_ok=True)
        common = {"timeout": cfg.timeout, "retry_min": cfg.retry_min,
                  "retry_max": cfg.retry_max, "run_id": self.run_id}
        if cfg.pyroscope:
            spool = Spool(os.path.join(cfg.spool, "pyroscope"), cfg.spool_max_bytes)
            self.sinks.append(PyroscopeSink(
                cfg.pyroscope, spool, freq=cfg.freq, token=secret(cfg.pyroscope_token),
                user=cfg.pyroscope_user, password=secret(cfg.pyroscope_password),
                tenant=cfg.tenant, **common))
        if cfg.otlp:
            spool = Spool(os.path.join(cfg.spool, "otlp"), cfg.spool_max_bytes)
            self.sinks.append(OtlpSink(cfg.otlp, spool, version=self.version,
                                       headers=cfg.otlp_headers, tenant=cfg.tenant, **common))
        if cfg.output_dir:
            # last: a window in the directory has been spooled for every network sink
            self.sinks.append(DirectorySink(cfg.output_dir, cfg.output_max_bytes))
        for s in self.sinks:
            if isinstance(s, HttpSink):
                if s.spool.resumed:
                    log.info("%s: resuming %d spooled profile(s) from %s", s.name,
                             s.spool.resumed, s.spool.dir)
                s.start()

    def _make_sampler(self) -> Any:
        from profiler.capture.bcc_source import BpfSampler
        cfg = self.cfg
        kwargs: dict[str, Any] = {
            "pids": list(cfg.pids), "system_wide": not (cfg.pids or self.matcher.filtering),
            "freq": cfg.freq, "stack_size": cfg.stack_size, "event": cfg.event,
            "ringbuf_pages": ringbuf_pages(cfg.freq, cfg.stack_size)}
        # A new process must be read within milliseconds of its first sample, before
        # it can exit: the ring buffer wakes the reader at every sample (the CLI, which
        # unwinds after the run, lets it wake every few).
        return BpfSampler(**kwargs, follow_children=bool(cfg.pids), wakeup_every=1)

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> int:
        cfg = self.cfg
        limit_arenas()                  # before the sender threads start
        self._make_sinks()
        try:
            self.sampler = self._make_sampler()
        except BaseException:
            self._stop_sinks()
            raise
        # aarch64: the PAC bits of code addresses, as the sampler read them (else None)
        self.pac_mask = getattr(self.sampler, "pac_mask", None)
        if cfg.trim_llvm:
            release_compiler_memory()   # again: the sinks and caches are set up now
        # What exists now (modules, bcc, kernel symbols soon) lives for the whole run:
        # keep it out of the cyclic collector's scans, and collect young objects less
        # often (the pipeline's garbage is mostly acyclic tuples and bytes, freed by
        # reference counting anyway).
        gc.collect()
        gc.freeze()
        gc.set_threshold(20000, 20, 20)
        self.meter = ResourceMeter()
        self.scanner = TargetScanner(self.matcher, self.sampler.add_pid,
                                     remove=self._untarget) if self.matcher.filtering else None
        self.clock.update()
        self.start_wall = time.time_ns()
        self.closed_index = self.start_wall // self.window_ns - 1
        what = "every process" if not (cfg.pids or self.matcher.filtering) else "matching processes"
        log.info("sampling %s at %d Hz, %g s windows, sinks: %s; version %s, host %s",
                 what, cfg.freq, cfg.window, ", ".join(s.name for s in self.sinks),
                 self.version, self.host)
        # The reader thread polls the buffer and snapshots new processes at once.  Each
        # of its system calls gives up the GIL and must get it back; while this thread
        # runs Python code that takes up to the switch interval (5 ms by default), and a
        # snapshot makes a dozen calls.  At 0.5 ms a snapshot is done in a few ms.
        sys.setswitchinterval(0.0005)
        self.reader = reader = Reader(self.sampler, self.table, poll_ms=POLL_MS).start()
        self.book.snapshot_source = reader.snapshot
        self.book.on_drop = reader.forget
        # New processes are snapshotted by the reader as their samples arrive; this
        # loop needs no low latency and wakes up four times a second.
        self.loop = SamplingLoop(reader, self, poll_ms=CONSUME_MS, duration=cfg.duration)
        try:
            self.loop.run()
            self.book.snapshot_source = None
            now = time.time_ns()
            while self.closed_index + 1 < now // self.window_ns:
                self._close(self.closed_index + 1, end_ns=None)
            self._close(self.closed_index + 1, end_ns=now)     # the current, partial window
        finally:
            reader.stop()
            try:
                self.sampler.close()
            except Exception:  # noqa: BLE001
                pass
            self._stop_sinks()
            self._write_status("stopped")
        pending = sum(s.pending() for s in self.sinks)
        log.info("stopped: %d samples, %d profiles in %d windows%s", self.totals.samples,
                 self.totals.profiles, self.totals.windows,
                 f"; {pending} profile(s) left in the spool for the next start" if pending else "")
        return 0

    # -- the sampling loop's consumer ---------------------------------------------------

    def note_fork(self, parent: int, child: int) -> None:
        pass

    def tick(self, mono: float) -> bool:
        """Scan for new targets, ship every window whose end (and grace) has passed."""
        if self.scanner is not None and mono >= self.next_scan:
            self.scanner.scan()
            self.next_scan = mono + self.cfg.scan_interval
        now = time.time_ns()
        while (self.closed_index + 2) * self.window_ns + GRACE_NS <= now:
            self._close(self.closed_index + 1, end_ns=None)
        return True

    def _untarget(self, pid: int) -> None:
        """Take an exited process out of the kernel's target map."""
        self.sampler.remove_pid(pid)

    def _stop_sinks(self) -> None:
        deadline = time.monotonic() + max(0.0, self.cfg.flush_timeout)
        senders = [s for s in self.sinks if isinstance(s, HttpSink) and s.thread.is_alive()]
        for s in senders:
            s.stop(deadline)
        for s in senders:
            s.join(max(0.0, deadline - time.monotonic()) + 2.0)

    # -- samples ----------------------------------------------------------------------

    def consume(self, records: Sequence[Any]) -> None:
        t = self.totals
        # First every new process of the batch is identified (its maps and files read),
        # then the batch is unwound: a short-lived process is read as early as possible.
        found = [self.book.lookup(r.pid, r.comm, r.time_ns) for r in records]
        for r, (info, proc) in zip(records, found):
            t.samples += 1
            if self.post_filter and not info.matched:
                t.filtered += 1
                continue
            t.kept += 1
            idx = self.clock.wall(r.time_ns) // self.window_ns
            if idx <= self.closed_index:
                t.late += 1
                idx = self.closed_index + 1
            win = self.windows.get(idx)
            if win is None:
                win = self.windows[idx] = Window(
                    idx, max(idx * self.window_ns, self.start_wall), (idx + 1) * self.window_ns)
            g = win.group(group_key(info, self.cfg.group_by))
            win.samples += 1
            if r.pid not in g.exe:
                # the process label: its executable, or (gone before it could be
                # read) the name the kernel gave with the sample
                g.exe[r.pid] = os.path.basename(info.exe) if info.exe else info.service
            sample = raw_sample(r, self.arch, self.pac_mask, proc.mappings if proc else (),
                                proc.memory if proc else ())
            self.pipeline.add(g.agg, sample, proc.space if proc else None, r.has_user, proc,
                              self.table)
            self.book.note_sample(r.pid, idx)

    # -- windows ----------------------------------------------------------------------

    def _close(self, idx: int, end_ns: int | None) -> None:
        """Ship window `idx` (ending at `end_ns` if the run stops inside it)."""
        t0 = time.perf_counter()
        win = self.windows.pop(idx, None)
        if win is None:
            win = Window(idx, max(idx * self.window_ns, self.start_wall),
                         (idx + 1) * self.window_ns)
        if end_ns is not None:
            win.end_ns = min(win.end_ns, end_ns)
        self.closed_index = idx
        self.clock.update()
        t = self.totals
        lost = int(self.sampler.counters().get("lost", 0)) if self.sampler else 0
        user = sum(g.agg.user_samples for g in win.groups.values())
        reliable = sum(g.agg.reliable for g in win.groups.values())
        t.user_samples += user
        t.reliable += reliable
        t.windows += 1
        assert self.meter is not None
        cpu, rss = self.meter.sample()
        m = WindowMetrics(
            window_start=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(win.start_ns / 1e9)),
            samples=win.samples, lost=lost - self.last_lost,
            reliable_pct=round(100.0 * reliable / user, 2) if user else 0.0,
            groups=len(win.groups), processes=len(self.book.infos), cpu_pct=round(cpu, 3),
            rss_mb=round(rss, 1), sinks={s.name: s.stats() for s in self.sinks})
        t.lost = lost
        self.last_lost = lost
        shipments = build_shipments(win, self.resolver, period_ns=self.period_ns,
                                    host=self.host, version=self.version,
                                    extra_labels=self.cfg.labels, comments=[m.comment()],
                                    between=self._drain)
        for s in shipments:
            for sink in self.sinks:
                try:
                    sink.submit(s)
                except OSError as exc:
                    log.warning("%s: cannot keep window %s: %s", sink.name, s.window_id,
                                exc.strerror or exc)
        for sink in self.sinks:
            if isinstance(sink, HttpSink):
                sink.window_done()
        t.profiles += len(shipments)
        self.resolver.end_window()
        self.book.reap(idx)
        if self.reader is not None:
            self.reader.expire(10.0, time.monotonic())
        self.table.trim()
        release_memory()
        self._check_memory()
        m.build_ms = round((time.perf_counter() - t0) * 1000, 1)
        m.sinks = {s.name: s.stats() for s in self.sinks}
        self.last_metrics = m
        if self.cfg.output_dir:
            self._write_metrics_file(win, m)
        self._write_status("running")
        if not self.cfg.quiet:
            log.info("%s, %d profile(s), %.0f ms", m.log_line(), len(shipments), m.build_ms)

    def _check_memory(self) -> None:
        """Above the memory target, empty the caches (ELF objects, symbol tables): they
        fill again with what is sampled now.  At most once a minute, so a target set
        below the agent's floor costs a reload per minute, not per window."""
        assert self.meter is not None
        now = time.monotonic()
        if now - self.last_shrink < 60 or self.meter.rss_mb() * (1 << 20) <= self.cfg.memory_target:
            return
        before = self.meter.rss_mb()
        self.resolver.drop_caches()
        self.table.drop_objects()
        gc.collect()
        release_memory()
        self.last_shrink = now
        self.totals.shrinks += 1
        log.info("rss %.0f MB over the %.0f MB target: caches emptied, rss now %.0f MB",
                 before, self.cfg.memory_target / (1 << 20), self.meter.rss_mb())

    def _drain(self) -> None:
        """Consume what the reader has while a window is being built, so new processes
        are modelled from fresh snapshots and the queue stays short."""
        if self.reader is not None and self.reader.thread.is_alive():
            self.consume(self.reader.get(0))
        elif self.sampler is not None:
            self.consume(self.sampler.poll(0))

    def _write_metrics_file(self, win: Window, m: WindowMetrics) -> None:
        import json
        from dataclasses import asdict

        from profiler.app.agent.windows import iso_name
        for sink in self.sinks:
            if isinstance(sink, DirectorySink):
                doc = {"window_start_ns": win.start_ns, "window_end_ns": win.end_ns,
                       "host": self.host, "version": self.version, **asdict(m)}
                sink.write(f"{iso_name(win.start_ns)}-agent.json",
                           json.dumps(doc, sort_keys=True).encode())

    def _write_status(self, state: str) -> None:
        cpu_total = self.meter.total_pct() if self.meter else 0.0
        m = self.last_metrics
        m.sinks = {s.name: s.stats() for s in self.sinks}
        write_status(self.cfg.spool, status_doc(
            pid=os.getpid(), version=self.version, started=self.started, totals=self.totals,
            window=m, cpu_total_pct=cpu_total, state=state))
