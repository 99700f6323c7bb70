"""`sframe-prof record`: the live run's mode that keeps raw samples in a capture file.

No unwinding happens while recording.  The capture gets every sample's registers and
stack bytes, each process's maps (once per version, re-read now and then since no
unwind miss tells that a library was loaded) with the files' identities and build
IDs, the vDSO image, and at the end the names of the kernel pcs seen, so that
`sframe-prof report` needs neither this machine nor its kallsyms.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from profiler.capture.fileformat import CaptureHeader, FileIdentity
from profiler.capture.writer import CaptureWriter
from profiler.errors import SframeProfError
from profiler.unwind.process import Process

if TYPE_CHECKING:
    from profiler.app.live import LiveRun
    from profiler.capture.bcc_source import BpfRecord

MAPS_RECHECK_S = 0.25   # how often the targets' maps are re-read


class RecordMode:
    def __init__(self, path: str) -> None:
        self.path = path
        self.writer: CaptureWriter | None = None
        self.recorded_maps: dict[int, int] = {}    # pid -> maps generation recorded
        self.kernel_pcs: set[int] = set()          # named at the end
        self._last_maps = 0.0

    def prepare(self, run: LiveRun, pids: list[int]) -> None:
        pass   # the capture's header needs the sampler's PAC mask: start() writes it

    def start(self, run: LiveRun, pids: list[int]) -> None:
        o = run.opts
        header = CaptureHeader.here(
            run.arch, frequency_hz=o.freq, period_ns=int(1e9 / o.freq), pids=tuple(pids),
            command=tuple(o.command), pac_mask=o.pac_mask, stack_bytes=o.stack_size)
        try:
            self.writer = CaptureWriter(self.path, header)
        except OSError as exc:
            raise SframeProfError(f"cannot write {self.path}: {exc.strerror}") from None

    def take(self, run: LiveRun, r: BpfRecord, proc: Process | None) -> None:
        assert self.writer is not None
        if proc is not None:
            run.refresh_if_unmapped(r, proc)
            self._record_maps(run, proc)
        self.writer.add_sample(run.sample_of(r, proc))
        if r.kstack:
            self.kernel_pcs.update(r.kstack)

    def tick(self, run: LiveRun, now: float) -> None:
        if self.writer is None or now - self._last_maps <= MAPS_RECHECK_S:
            return
        # No unwinding while recording, so no miss tells us that a library was loaded:
        # re-read the maps now and then (ld.so at start, dlopen).
        self._last_maps = now
        self.writer.flush()   # a killed recorder loses at most this long
        for proc in list(run.table.procs.values()):
            if not proc.exited and run.table.refresh(proc):
                self._record_maps(run, proc)

    def status(self) -> str:
        return ""

    def finish(self, run: LiveRun, seconds: float, lost: int, wall0: int) -> None:
        assert self.writer is not None
        self._record_kernel_symbols()
        self.writer.close(lost=lost, samples=run.received)
        print(f"sframe-prof: {run.received} samples recorded to {self.path}, "
              f"{lost} lost", file=sys.stderr)

    def _record_kernel_symbols(self) -> None:
        """Store the names of the kernel pcs seen (after sampling, so the run does not
        pay for reading kallsyms): `report` then needs no kallsyms of this machine."""
        if not self.kernel_pcs or self.writer is None:
            return
        from profiler.symbolize.kallsyms import KernelSymbols
        ks = KernelSymbols.load()
        if not ks.available:
            return
        names = {}
        for pc in self.kernel_pcs:
            hit = ks.lookup(pc)
            if hit is not None:
                names[pc] = hit
        self.writer.add_kernel_symbols(names)

    def _record_maps(self, run: LiveRun, proc: Process) -> None:
        """Record a process's maps (once per version) with the monotonic time samples use."""
        assert self.writer is not None
        if self.recorded_maps.get(proc.pid) == proc.generation:
            return
        self.recorded_maps[proc.pid] = proc.generation
        from profiler.symbolize.debugfiles import read_build_id
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
                obj = run.table.open_mapping(proc.pid, m)
                build_id = read_build_id(obj) if obj is not None else ""
            idents.append(FileIdentity(build_id, dev, ident.inode, 0))
        self.writer.add_maps(proc.pid, proc.mappings, idents,
                             time_ns=int(proc.refreshed_at * 1e9))
        for start, data in proc.memory:
            self.writer.add_memory(proc.pid, start, data, "[vdso]")
