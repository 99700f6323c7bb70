"""`sframe-prof report`: run a recorded capture through unwind -> symbolize -> emit.

The capture carries registers, stack bytes, maps and the vDSO image; the mapped files
are found under --root (a sysroot, a container's root, a copy of the target machine's
files), so a capture made on an arm64 host can be analysed on an x86_64 one.  Kernel
frames are named from the symbols the recorder stored (format 2 captures), or else
from /proc/kallsyms when the capture was made on this very kernel.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from profiler.aggregate import Aggregator
from profiler.app.options import Options
from profiler.app.outputs import check_outputs, write_outputs
from profiler.app.pipeline import REFRESH_REASONS, Pipeline
from profiler.app.summary import summary, tables_of
from profiler.capture.fileformat import MapsSnapshot
from profiler.capture.packed import PackedSamples
from profiler.capture.reader import Capture, read_capture
from profiler.model import Mapping, RawSample
from profiler.symbolize.debugfiles import read_build_id
from profiler.symbolize.resolve import Resolver
from profiler.unwind.objfile import ObjectCache, ObjectFile
from profiler.unwind.space import AddressSpace
from profiler.unwind.unwinder import Unwinder


def report(args: argparse.Namespace) -> int:
    check_outputs(Options(output=args.output, folded=args.folded, flamegraph=args.flamegraph))
    cap = read_capture(args.capture)
    h = cap.header
    same_kernel = (h.hostname == os.uname().nodename
                   and h.kernel_release == os.uname().release)
    objects = ObjectCache(args.root)
    # Kernel names: those the recorder stored (format 2), else this kernel's kallsyms
    # if the capture was made on it.
    resolver = Resolver(debug_dirs=[*args.debug_dir, "/usr/lib/debug"], root=args.root,
                        kallsyms="/proc/kallsyms" if same_kernel else None,
                        perf_maps=args.root is None and same_kernel,
                        kernel_names=cap.kernel_symbols)
    run = _Run(cap, Pipeline(Unwinder(objects), resolver), BuildIdCheck(objects))
    jobs = _jobs(getattr(args, "jobs", 1), cap.sample_count)
    if jobs > 1:
        # The first few thousand samples are unwound before the workers start, so
        # that they all begin with the tables loaded and the common chains in the memo;
        # this process takes a smaller part than the workers, as it loads the symbol
        # tables while they finish.
        _in_parallel(run, cap.parts(jobs, lead=WARM_UP_SAMPLES, lighter=LIGHTER_BY),
                     warm_up=1)
    else:
        _in_parallel(run, cap.parts(1))
    agg = run.agg
    period = h.period_ns or (int(1e9 / h.frequency_hz) if h.frequency_hz else 10_000_000)
    duration = (agg.last_ns - agg.first_ns) if agg.first_ns is not None else 0
    data = run.pipeline.profile(agg, period_ns=period, start_ns=h.start_ns,
                                duration_ns=duration, process_names=run.names)
    opts = Options(output=args.output, folded=args.folded, flamegraph=args.flamegraph)
    written = write_outputs(data, opts)
    if not args.quiet:
        for path, (want, got) in sorted(run.checker.mismatches.items()):
            print(f"sframe-prof: warning: {objects.resolve(path)} is not the recorded file "
                  f"(build ID {got or 'none'}, recorded {want}); its frames are left "
                  "unwound (object-unavailable)", file=sys.stderr)
        if cap.truncated:
            print(f"sframe-prof: {args.capture} ends early (the recorder was stopped); "
                  "using the complete samples", file=sys.stderr)
        summary(agg, cap.lost_samples or 0, duration / 1e9, sys.stderr,
                tables_of(run.spaces.values(), agg))
        for w in written:
            print(f"  wrote {w}", file=sys.stderr)
    return 0


# Samples per worker process below which another one is not worth its start-up.
MIN_SAMPLES_PER_JOB = 8192
WARM_UP_SAMPLES = 512
LIGHTER_BY = 6144        # samples: about what loading the symbol tables costs


def _jobs(asked: int, samples: int) -> int:
    """How many processes unwind: `asked` (0: one per CPU we may run on, at most 4),
    fewer when the capture is small."""
    if asked <= 0:
        asked = min(len(os.sched_getaffinity(0)), 4)
    return max(1, min(asked, samples // MIN_SAMPLES_PER_JOB))


class _Run:
    """Unwinding and counting a capture's samples, in one process or several."""

    def __init__(self, cap: Capture, pipeline: Pipeline, checker: BuildIdCheck) -> None:
        self.cap = cap
        self.pipeline = pipeline
        self.agg = Aggregator()
        self.checker = checker
        self.spaces: dict[tuple[int, int], AddressSpace] = {}   # (pid, id(mappings))
        self.names: dict[int, str] = {}

    def space_for(self, pid: int, snap: MapsSnapshot | None) -> AddressSpace:
        """The address space of `pid` as maps snapshot `snap` shows it (no mappings
        without one), made once per snapshot, its files checked against the build
        IDs the snapshot recorded."""
        mappings = snap.mappings if snap is not None else ()
        key = (pid, id(mappings))
        space = self.spaces.get(key)
        if space is None:
            space = self.spaces[key] = self.checker.space(mappings, snap,
                                                          self.cap.memory_of(pid))
            self.names.setdefault(pid, _exe_name(mappings))
        return space

    def later_space(self, sample: RawSample) -> AddressSpace | None:
        """The address space of the pid's latest maps snapshot, if newer than the
        sample's (a library loaded after the maps were taken: the live run would have
        re-read them)."""
        snaps = self.cap.maps.get(sample.pid)
        if not snaps or snaps[-1].mappings is sample.mappings:
            return None
        return self.space_for(sample.pid, snaps[-1])

    def add(self, sample: RawSample, key: tuple[object, ...] | None = None) -> None:
        space = self.space_for(sample.pid, self.cap.maps_at(sample.pid, sample.time_ns))
        self.pipeline.add(self.agg, sample, space,
                          has_user=bool(sample.regs.get("sp")) and bool(sample.stack),
                          later=functools.partial(self.later_space, sample), memo_key=key)

    def unwind(self, spans: list[tuple[int, int, int, bool]]) -> None:
        """Unwind and count the samples of `spans` (a part of the capture)."""
        counted: dict[tuple[Any, ...], list[Any]] = {}
        for block in self.cap.iter_blocks(spans):
            if isinstance(block, PackedSamples):
                _add_packed(block, self.cap, self.pipeline, self.spaces, self.add, counted)
            else:
                self.add(block)
        agg = self.agg
        for (pid, tid, comm, kernel, _chain, _space), (stack, space, n, first, last) in \
                counted.items():
            agg.add(pid=pid, tid=tid, comm=comm, time_ns=first, kernel=kernel,
                    stack=stack, space=space, count=n)
            agg.seen(first, last)

    def load_symbols(self) -> None:
        """Load the symbols of every object opened so far (the profile needs them)."""
        for space in list(self.spaces.values()):
            for obj in space.opened():
                self.pipeline.resolver.symbols(obj)

    # -- results of another process ----------------------------------------------

    def export(self) -> dict[str, Any]:
        """What unwind() counted, as plain data; address spaces become their keys
        (the same in every process forked from the one that read the capture)."""
        keys = {id(space): key for key, space in self.spaces.items()}
        counts = self.agg.export(
            lambda space: None if space is None else keys[id(space)])
        counts["names"] = self.names
        counts["mismatches"] = self.checker.mismatches
        return counts

    def merge(self, counts: dict[str, Any]) -> None:
        self.agg.merge(counts, self._space_for_key)
        for pid, name in counts["names"].items():
            self.names.setdefault(pid, name)
        self.checker.mismatches.update(counts["mismatches"])

    def _space_for_key(self, key: object) -> AddressSpace | None:
        if not isinstance(key, tuple):
            return None
        space = self.spaces.get(key)
        if space is None:
            pid, mappings_id = key
            space = self.space_for(pid, next((s for s in self.cap.maps.get(pid, ())
                                              if id(s.mappings) == mappings_id), None))
        return space


def _in_parallel(run: _Run, parts: list[list[tuple[int, int, int, bool]]],
                 warm_up: int = 0) -> None:
    """Unwind the parts of a capture: the first `warm_up` parts here, then each part
    but the next in a forked process that sends back what it counted through a pipe
    (once it is done, so the work overlaps and only the hand-over is in turn), and
    that next part here.  A part whose process cannot be started or fails for any
    reason is done here afterwards (a corrupt capture then gives the same error as
    without workers)."""
    import pickle
    for part in parts[:warm_up]:
        run.unwind(part)
    parts = parts[warm_up:]
    children: list[tuple[int, int, list[tuple[int, int, int, bool]]]] = []
    here = parts[:1]
    try:
        for part in parts[1:]:
            try:
                r, w = os.pipe()
            except OSError:
                here.append(part)
                continue
            try:
                pid = os.fork()
            except OSError:
                os.close(r)
                os.close(w)
                here.append(part)
                continue
            if pid == 0:   # the child: unwind its part, send the counts, never return
                code = 1
                try:
                    signal.signal(signal.SIGINT, signal.SIG_DFL)
                    os.close(r)
                    run.agg = Aggregator()   # the counts so far are the parent's
                    run.unwind(part)
                    with os.fdopen(w, "wb") as out:
                        pickle.dump(run.export(), out, protocol=pickle.HIGHEST_PROTOCOL)
                    code = 0
                finally:
                    os._exit(code)
            os.close(w)
            children.append((pid, r, part))
        if here:
            run.unwind(here.pop(0))
        if children:
            run.load_symbols()   # while the workers finish: symbolizing needs them later
        while children:
            pid, r, part = children[0]
            try:
                with os.fdopen(r, "rb") as f:
                    counts = pickle.load(f)
            except Exception:  # noqa: BLE001 - the child died or sent garbage: redo
                counts = None
            children.pop(0)
            _pid, status = os.waitpid(pid, 0)
            if counts is None or os.waitstatus_to_exitcode(status) != 0:
                here.append(part)
            else:
                run.merge(counts)
        for part in here:
            run.unwind(part)
    finally:
        for pid, r, _part in children:   # only after an error or Ctrl-C here
            with contextlib.suppress(OSError):
                os.close(r)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)


def _add_packed(batch: PackedSamples, cap: Capture, pipeline: Pipeline,
                spaces: dict[tuple[int, int], AddressSpace],
                add: Callable[[RawSample, tuple[object, ...] | None], None],
                counted: dict[tuple[Any, ...], list[Any]]) -> None:
    """Add a batch of packed samples.  A sample whose chain the unwind memo already
    has is counted straight from the batch's bytes into `counted` ((pid, tid, comm,
    kernel pcs, id of the chain, id of the space) -> [chain, space, count, first
    time, last time]), for the caller to hand to the aggregator at the end: no
    RawSample, no stack copy.  Any other sample (a memo miss, a chain that newer maps
    might fix, no user stack) takes the general path, `add`."""
    memo = pipeline.memo
    packed_key, match = memo.packed_key, memo.match
    pac, arch = cap.header.pac_mask, cap.header.arch
    buf = batch.buf
    mappings_at = cap.mappings_at
    several = {pid for pid, snaps in cap.maps.items() if len(snaps) > 1}
    last_pid = -1
    mappings: tuple[Mapping, ...] = ()
    space: AddressSpace | None = None
    chains: dict[tuple[object, ...], list[Any]] = {}
    hits = 0
    for (pid, tid, cpu, mask, comm, kernel, time_ns, base, pc, sp, fp, lr, pos,
         slen) in batch:
        if pid != last_pid or pid in several:
            mappings = mappings_at(pid, time_ns)
            space = spaces.get((pid, id(mappings)))
            chains = memo.chains_for(space) if space is not None else {}
            last_pid = pid
        key = packed_key(base, slen, mask, pc, sp, fp, lr, pac, arch)
        stack = match(chains, key, buf, pos) if chains else None
        if stack is not None and (stack.reliable or stack.reason not in REFRESH_REASONS):
            hits += 1
            t = (pid, tid, comm, kernel, id(stack), id(space))
            c = counted.get(t)
            if c is None:
                counted[t] = [stack, space, 1, time_ns, time_ns]
            else:
                c[2] += 1
                if time_ns < c[3]:
                    c[3] = time_ns
                elif time_ns > c[4]:
                    c[4] = time_ns
            continue
        regs = {name: v for name, v, bit in (("pc", pc, 1), ("sp", sp, 2), ("fp", fp, 4),
                                            ("lr", lr, 8)) if mask & bit}
        add(RawSample(arch, regs, base, buf[pos:pos + slen], mappings, cap.memory_of(pid),
                      pac, pid, tid, comm, time_ns, cpu, kernel), key)
        if space is None:
            space = spaces.get((pid, id(mappings)))
            if space is not None:
                chains = memo.chains_for(space)
    memo.note_hits(hits)


class BuildIdCheck:
    """Use a file from --root only if it is the one recorded (same build ID).

    Unwinding with another build of a library gives wrong chains that look right;
    a mismatched file is treated as unavailable instead, and reported once.
    """

    def __init__(self, objects: ObjectCache) -> None:
        self.objects = objects
        self.mismatches: dict[str, tuple[str, str]] = {}
        self._ids: dict[str, str] = {}

    def space(self, mappings: tuple[Mapping, ...], snap: MapsSnapshot | None,
              memory: tuple[tuple[int, bytes], ...]) -> AddressSpace:
        """An AddressSpace over `mappings` whose files must have the build IDs that
        maps snapshot `snap` recorded (none checked when `snap` is None)."""
        expected = {} if snap is None else {
            m.start: ident.build_id for m, ident in zip(snap.mappings, snap.identities)
            if ident and ident.build_id}
        return AddressSpace(mappings, memory, self.objects, opener=self.opener(expected))

    def opener(self, expected: dict[int, str]) -> Callable[[Mapping], ObjectFile | None]:
        def open_checked(m: Mapping) -> ObjectFile | None:
            obj = self.objects.get(m.path)
            want = expected.get(m.start)
            if obj is None or not want:
                return obj
            got = self._ids.get(m.path)
            if got is None:
                got = read_build_id(obj)
                self._ids[m.path] = got
            if got != want:
                self.mismatches[m.path] = (want, got)
                return None
            return obj
        return open_checked


def _exe_name(mappings: tuple[Mapping, ...]) -> str:
    for m in mappings:
        if m.executable and m.path.startswith("/"):
            return os.path.basename(m.path)
    return ""
