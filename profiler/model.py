"""Plain typed data passed between the pipeline stages.

capture -> RawSample -> unwind -> UnwoundStack -> symbolize -> aggregate -> emit.
Nothing in here knows about BPF, ELF or output formats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class Mapping(NamedTuple):
    """One line of /proc/PID/maps."""

    start: int
    end: int
    offset: int
    perms: str
    path: str

    @property
    def executable(self) -> bool:
        return "x" in self.perms


@dataclass(slots=True)
class RawSample:
    """What the sampler saw at one interrupt of one thread (or one snapshot line)."""

    arch: str                     # "x86_64" or "aarch64"
    regs: dict[str, int]          # pc, sp, fp, lr (aarch64); other names optional
    stack_base: int               # address of stack[0]; equals regs["sp"]
    stack: bytes                  # raw user-stack bytes copied upward from stack_base
    mappings: tuple[Mapping, ...]
    memory: tuple[tuple[int, bytes], ...] = ()  # extra readable memory, e.g. the vDSO
    pac_mask: int | None = None   # aarch64 pointer-authentication bits of code addresses
    pid: int = 0
    tid: int = 0
    comm: str = ""
    time_ns: int = 0
    cpu: int = 0
    kernel_stack: tuple[int, ...] = ()
    meta: dict[str, object] = field(default_factory=dict)


class Frame(NamedTuple):
    """One unwound frame.  `method` says how this frame's caller was found."""

    pc: int
    cfa: int | None
    method: str
    object: str
    exact: bool = False  # pc is an interrupted pc (frame 0, or above a signal frame)


class UnwoundStack(NamedTuple):
    """A call chain, innermost first, with its verdict."""

    frames: tuple[Frame, ...]
    reliable: bool
    reason: str  # "" when reliable, else a code of profiler.reasons
    # Index of the first frame in doubt: the walk went past a failed check (or
    # stepped without unwind data) to find it, so it and every frame after it may
    # be wrong.  len(frames) when every frame shown is right (a reliable chain, or
    # one that stops early); -1 when not known (older callers).
    doubt: int = -1


# -- after symbolization: what the aggregate and emit stages see ------------------


class MappingInfo(NamedTuple):
    """A mapped object as output formats describe it (pprof's Mapping)."""

    start: int           # runtime start address
    limit: int           # runtime end address (exclusive)
    offset: int          # file offset of `start`
    path: str            # file path or pseudo name ("[vdso]"); "[kernel.kallsyms]" for the kernel
    build_id: str = ""   # hex GNU build ID, "" if unknown
    # Whether every address in it got a function name: the pprof writer works this
    # out from the locations itself (resolve leaves it True).
    has_functions: bool = False


class Location(NamedTuple):
    """One symbolized frame."""

    address: int                 # runtime pc as captured (return address for callers)
    mapping: MappingInfo | None  # None for synthetic frames
    function: str                # demangled name; "" when unknown (emit module+offset)
    is_kernel: bool = False
    synthetic: bool = False      # e.g. "[unreliable: stack-truncated]", not a real pc


@dataclass(slots=True)
class StackSample:
    """Identical stacks aggregated: leaf first, kernel frames before user frames."""

    locations: tuple[Location, ...]
    pid: int
    tid: int
    thread_name: str
    reliable: bool
    reason: str          # "" when reliable
    count: int           # number of samples
    cpu_ns: int          # count * sampling period
    process_name: str = ""


@dataclass(slots=True)
class ProfileData:
    """Everything an output format needs for one profile."""

    samples: list[StackSample]
    period_ns: int       # sampling period (1e9 / Hz)
    start_ns: int        # wall-clock start, ns since the epoch
    duration_ns: int
    comments: list[str] = field(default_factory=list)
    # Labels of the whole profile (the agent's host, service, ...): the pprof writer
    # puts each one on every sample, as a string label, unless the sample has that key
    # already; empty values and "pid" (a sample's own number) are left out.
    labels: dict[str, str] = field(default_factory=dict)
