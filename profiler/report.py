"""`sframe-prof report`: run a recorded capture through unwind -> symbolize -> emit.

The capture carries registers, stack bytes, maps and the vDSO image; the mapped files
are found under --root (a sysroot, a container's root, a copy of the target machine's
files), so a capture made on an arm64 host can be analysed on an x86_64 one.  Kernel
frames are symbolized only when the capture was made on this very kernel.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from profiler.capture.recording import read_capture
from profiler.model import Mapping
from profiler.objfile import ObjectCache
from profiler.resolve import Resolver
from profiler.session import Options, Pipeline, check_outputs, summary, write_outputs
from profiler.unwind import AddressSpace, Unwinder


def report(args: argparse.Namespace) -> int:
    check_outputs(Options(output=args.output, folded=args.folded, flamegraph=args.flamegraph))
    cap = read_capture(args.capture)
    h = cap.header
    same_kernel = h.hostname == socket.gethostname() and h.kernel_release == os.uname().release
    objects = ObjectCache(args.root)
    resolver = Resolver(debug_dirs=[*args.debug_dir, "/usr/lib/debug"], root=args.root,
                        kallsyms="/proc/kallsyms" if same_kernel else None,
                        perf_maps=args.root is None and same_kernel)
    pipeline = Pipeline(Unwinder(objects), resolver)
    spaces: dict[tuple[int, int], AddressSpace] = {}
    names: dict[int, str] = {}
    for sample in cap.iter_samples():
        key = (sample.pid, id(sample.mappings))
        space = spaces.get(key)
        if space is None:
            space = AddressSpace(sample.mappings, sample.memory, objects)
            spaces[key] = space
            names.setdefault(sample.pid, _exe_name(sample.mappings))
        pipeline.add(sample, space, has_user=bool(sample.regs.get("sp")) and bool(sample.stack))
    agg = pipeline.agg
    period = h.period_ns or (int(1e9 / h.frequency_hz) if h.frequency_hz else 10_000_000)
    duration = (agg.last_ns - agg.first_ns) if agg.first_ns is not None else 0
    data = pipeline.profile(period_ns=period, start_ns=h.start_ns, duration_ns=duration,
                            process_names=names)
    opts = Options(output=args.output, folded=args.folded, flamegraph=args.flamegraph)
    written = write_outputs(data, opts)
    if not args.quiet:
        if cap.truncated:
            print(f"sframe-prof: {args.capture} ends early (the recorder was stopped); "
                  "using the complete samples", file=sys.stderr)
        summary(agg, cap.lost_samples or 0, duration / 1e9, sys.stderr)
        for w in written:
            print(f"  wrote {w}", file=sys.stderr)
    return 0


def _exe_name(mappings: tuple[Mapping, ...]) -> str:
    for m in mappings:
        if m.executable and m.path.startswith("/"):
            return os.path.basename(m.path)
    return ""
