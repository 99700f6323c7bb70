"""`sframe-prof report`: run a recorded capture through unwind -> symbolize -> emit.

The capture carries registers, stack bytes, maps and the vDSO image; the mapped files
are found under --root (a sysroot, a container's root, a copy of the target machine's
files), so a capture made on an arm64 host can be analysed on an x86_64 one.  Kernel
frames are named from the symbols the recorder stored (format 2 captures), or else
from /proc/kallsyms when the capture was made on this very kernel.
"""

from __future__ import annotations

import argparse
import functools
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

from profiler.capture.recording import Capture, MapsSnapshot, PackedSamples, read_capture
from profiler.model import Mapping, RawSample
from profiler.objfile import ObjectCache, ObjectFile
from profiler.resolve import Resolver
from profiler.session import (
    REFRESH_REASONS,
    Options,
    Pipeline,
    check_outputs,
    summary,
    write_outputs,
)
from profiler.symbolize import read_build_id
from profiler.unwind import AddressSpace, Unwinder


def report(args: argparse.Namespace) -> int:
    check_outputs(Options(output=args.output, folded=args.folded, flamegraph=args.flamegraph))
    cap = read_capture(args.capture)
    h = cap.header
    same_kernel = h.hostname == socket.gethostname() and h.kernel_release == os.uname().release
    objects = ObjectCache(args.root)
    # Kernel names: those the recorder stored (format 2), else this kernel's kallsyms
    # if the capture was made on it.
    resolver = Resolver(debug_dirs=[*args.debug_dir, "/usr/lib/debug"], root=args.root,
                        kallsyms="/proc/kallsyms" if same_kernel else None,
                        perf_maps=args.root is None and same_kernel,
                        kernel_names=cap.kernel_symbols)
    pipeline = Pipeline(Unwinder(objects), resolver)
    spaces: dict[tuple[int, int], AddressSpace] = {}
    names: dict[int, str] = {}
    checker = BuildIdCheck(objects)

    def space_of(sample: RawSample) -> AddressSpace:
        key = (sample.pid, id(sample.mappings))
        space = spaces.get(key)
        if space is None:
            space = checker.space(sample.mappings, cap.maps_at(sample.pid, sample.time_ns),
                                  sample.memory)
            spaces[key] = space
            names.setdefault(sample.pid, _exe_name(sample.mappings))
        return space

    def add(sample: RawSample, key: tuple[object, ...] | None = None) -> None:
        pipeline.add(sample, space_of(sample),
                     has_user=bool(sample.regs.get("sp")) and bool(sample.stack),
                     later=functools.partial(_later_space, cap, sample, spaces, checker),
                     memo_key=key)

    counted: dict[tuple[Any, ...], list[Any]] = {}
    for block in cap.iter_blocks():
        if isinstance(block, PackedSamples):
            _add_packed(block, cap, pipeline, spaces, add, counted)
        else:
            add(block)
    for (pid, tid, comm, kernel, _chain, _space), (stack, space, n, first, last) in \
            counted.items():
        pipeline.agg.add(pid=pid, tid=tid, comm=comm, time_ns=first, kernel=kernel,
                         stack=stack, space=space, count=n)
        pipeline.agg.seen(first, last)
    agg = pipeline.agg
    period = h.period_ns or (int(1e9 / h.frequency_hz) if h.frequency_hz else 10_000_000)
    duration = (agg.last_ns - agg.first_ns) if agg.first_ns is not None else 0
    data = pipeline.profile(period_ns=period, start_ns=h.start_ns, duration_ns=duration,
                            process_names=names)
    opts = Options(output=args.output, folded=args.folded, flamegraph=args.flamegraph)
    written = write_outputs(data, opts)
    if not args.quiet:
        for path, (want, got) in sorted(checker.mismatches.items()):
            print(f"sframe-prof: warning: {objects.resolve(path)} is not the recorded file "
                  f"(build ID {got or 'none'}, recorded {want}); its frames are left "
                  "unwound (object-unavailable)", file=sys.stderr)
        if cap.truncated:
            print(f"sframe-prof: {args.capture} ends early (the recorder was stopped); "
                  "using the complete samples", file=sys.stderr)
        summary(agg, cap.lost_samples or 0, duration / 1e9, sys.stderr)
        for w in written:
            print(f"  wrote {w}", file=sys.stderr)
    return 0


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
            chains = memo.memo_for(space) if space is not None else {}
            last_pid = pid
        key = (base, slen, mask, pc, sp, fp, lr, pac, arch, None)
        entries = chains.get(key)
        if entries is not None:
            for check, words, stack in entries:
                if check.unpack_from(buf, pos) == words:
                    if stack.reliable or stack.reason not in REFRESH_REASONS:
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
                        break
            else:
                entries = None
            if entries is not None:
                continue
        regs = {name: v for name, v, bit in (("pc", pc, 1), ("sp", sp, 2), ("fp", fp, 4),
                                            ("lr", lr, 8)) if mask & bit}
        add(RawSample(arch, regs, base, buf[pos:pos + slen], mappings, cap.memory_of(pid),
                      pac, pid, tid, comm, time_ns, cpu, kernel), key)
        if space is None:
            space = spaces.get((pid, id(mappings)))
            if space is not None:
                chains = memo.memo_for(space)
    memo.hits += hits


def _later_space(cap: Capture, sample: RawSample, spaces: dict[tuple[int, int], AddressSpace],
                 checker: BuildIdCheck) -> AddressSpace | None:
    """The address space of the pid's latest maps snapshot, if newer than the sample's
    (a library loaded after the maps were taken: the live run would have re-read them)."""
    snaps = cap.maps.get(sample.pid)
    if not snaps or snaps[-1].mappings is sample.mappings:
        return None
    snap = snaps[-1]
    key = (sample.pid, id(snap.mappings))
    space = spaces.get(key)
    if space is None:
        space = checker.space(snap.mappings, snap, sample.memory)
        spaces[key] = space
    return space


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
