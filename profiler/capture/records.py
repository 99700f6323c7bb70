"""One BPF record as the rest of the pipeline sees it: a RawSample.

The record holds what the kernel side copied (registers, stack bytes, the kernel
chain); the process's maps and vDSO image come from whoever models the process (the
live run's or the agent's process table), as plain data."""

from __future__ import annotations

from typing import TYPE_CHECKING

from profiler.model import Mapping, RawSample

if TYPE_CHECKING:
    from profiler.capture.bcc_source import BpfRecord


def raw_sample(r: BpfRecord, arch: str, pac_mask: int | None,
               mappings: tuple[Mapping, ...] = (),
               memory: tuple[tuple[int, bytes], ...] = ()) -> RawSample:
    """The RawSample of record `r` in a process mapped as `mappings`."""
    return RawSample(
        arch=arch, regs=r.regs, stack_base=r.regs["sp"], stack=r.stack,
        mappings=mappings, memory=memory, pac_mask=pac_mask, pid=r.pid, tid=r.tid,
        comm=r.comm, time_ns=r.time_ns, cpu=r.cpu, kernel_stack=r.kstack)
