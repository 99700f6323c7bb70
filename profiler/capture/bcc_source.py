"""Live capture: the BPF program in bpf/ loaded with bcc, records read from its buffer.

This is the only module that imports bcc, and it does so lazily: everything else in
the project runs without BPF.  bcc comes from the distribution (python3-bpfcc); the
PyPI package named "bcc" is unrelated.
"""

from __future__ import annotations

import ctypes as ct
import os
import platform
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.capture.bcc_compile import load_program
from profiler.capture.layout import (
    CNT_HITS,
    CNT_KERNEL_MODE,
    CNT_LOST,
    CNT_NO_USER,
    CNT_SHORT_COPY,
    CNT_SUBMITTED,
    SAMPLE_F_NO_USER,
    sample_struct,
)
from profiler.errors import SframeProfError

BPF_DIR_CANDIDATES = (
    Path(__file__).resolve().parents[2] / "bpf",   # source checkout / editable install
    Path(__file__).resolve().parent.parent / "bpf",  # installed package data
)


def bpf_dir() -> Path:
    for d in BPF_DIR_CANDIDATES:
        if (d / "sample.bpf.c").is_file():
            return d
    raise SframeProfError("BPF sources not found (bpf/sample.bpf.c); reinstall sframe-prof")


@dataclass(slots=True)
class BpfRecord:
    """One sample as the kernel side wrote it."""

    pid: int
    tid: int
    time_ns: int        # CLOCK_MONOTONIC
    cpu: int
    comm: str
    flags: int
    regs: dict[str, int]
    stack: bytes
    kstack: tuple[int, ...]

    @property
    def has_user(self) -> bool:
        return not self.flags & SAMPLE_F_NO_USER


TIMINGS_ENV = "SFRAME_PROF_TIMINGS"
FIRST_SAMPLE_POLL_MS = 5
FIRST_SAMPLE_WINDOW_NS = 1_000_000_000


@dataclass(slots=True)
class StartupTimes:
    """When the sampler's start-up steps ended, in CLOCK_MONOTONIC ns (0: not yet).

    With SFRAME_PROF_TIMINGS=1 in the environment the sampler prints them as one
    line on stderr once the first sample is read (scripts/bench_startup.py reads it).
    """

    compile_start: int = 0
    compile_end: int = 0    # bcc compiled the program, created its maps, loaded it
    compile_cpu: int = 0    # CPU time (ns) this process spent in that compile
    attach_end: int = 0     # the perf event is open and enabled on every CPU
    first_sample: int = 0   # the kernel's timestamp of the first record read
    first_read: int = 0     # poll() handed that record out
    cpu_to_first: int = 0   # CPU time (ns) of this process from its start to then

    def line(self) -> str:
        fields = " ".join(f"{k}={getattr(self, k)}" for k in self.__slots__)
        return f"sframe-prof: startup (CLOCK_MONOTONIC ns): {fields}"


def _arch_flag() -> str:
    m = platform.machine()
    if m in ("aarch64", "arm64"):
        return "-DARCH_ARM64"
    if m in ("x86_64", "amd64"):
        return "-DARCH_X86_64"
    raise SframeProfError(f"unsupported architecture {m} (x86_64 and aarch64 only)")


NT_ARM_PAC_MASK = 0x406     # elf.h: struct user_pac_mask { u64 data_mask, insn_mask; }
_PTRACE_TRACEME = 0
_PTRACE_GETREGSET = 0x4204


class _Iovec(ct.Structure):
    _fields_ = [("base", ct.c_void_p), ("len", ct.c_size_t)]


def read_pac_mask() -> int | None:
    """The bits of a user code address that hold its pointer-authentication code.

    The kernel tells a tracer with PTRACE_GETREGSET NT_ARM_PAC_MASK: GENMASK(54,
    VA bits), 0x007f000000000000 with the usual 48-bit user VA.  The value is the same
    for every process, so it is read from a child of our own that stops itself under
    ptrace; the targets are never traced.  None off aarch64, without pointer
    authentication (the kernel refuses the regset), or where ptrace is not allowed.
    """
    if platform.machine() not in ("aarch64", "arm64"):
        return None
    try:
        libc = ct.CDLL(None, use_errno=True)
        ptrace = libc.ptrace
    except (OSError, AttributeError):
        return None
    ptrace.restype = ct.c_long
    ptrace.argtypes = [ct.c_long, ct.c_int, ct.c_void_p, ct.c_void_p]
    pid = os.fork()
    if pid == 0:  # child: become traced and stop; the parent reads the regset and kills us
        try:
            if ptrace(_PTRACE_TRACEME, 0, None, None) == 0:
                os.kill(os.getpid(), signal.SIGSTOP)
        finally:
            os._exit(0)
    mask = None
    try:
        _, status = os.waitpid(pid, 0)
        if os.WIFSTOPPED(status):
            regs = (ct.c_uint64 * 2)()
            iov = _Iovec(ct.cast(regs, ct.c_void_p), ct.sizeof(regs))
            if ptrace(_PTRACE_GETREGSET, pid, ct.c_void_p(NT_ARM_PAC_MASK),
                      ct.byref(iov)) == 0 and iov.len == ct.sizeof(regs):
                mask = int(regs[1]) or None
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    return mask


def import_bcc() -> Any:
    try:
        import bcc
    except ImportError:
        raise SframeProfError(
            "bcc is not importable: install the distribution's python3-bpfcc and run "
            "sframe-prof with the system python (or a venv made with "
            "--system-site-packages); scripts/setup.sh does both") from None
    return bcc


class BpfSampler:
    """Attach the sampling program to every CPU and hand out BpfRecords."""

    def __init__(self, *, pids: list[int], system_wide: bool, freq: int,
                 stack_size: int = 16384, event: str = "cpu-clock",
                 transport: str = "auto", ringbuf_pages: int = 2048,
                 follow_children: bool = True, wakeup_every: int | None = None) -> None:
        """`wakeup_every`: ring buffer only, wake the reader every this many samples of
        a CPU (1: every sample, for a reader that must see a process at once); by
        default as rarely as the buffer's size allows, the reader draining it at each
        poll anyway."""
        if os.geteuid() != 0:
            raise SframeProfError("live profiling needs root (BPF and perf events): "
                                  "run with sudo")
        self.times = StartupTimes()
        bcc = import_bcc()
        # aarch64: the PAC bits of return addresses on this kernel (None elsewhere, and
        # where it cannot be read: the unwinder then strips bits 48-63).
        self.pac_mask = read_pac_mask()
        self.stack_size = stack_size
        self.struct = sample_struct(stack_size)
        self.stack_offset = self.struct.stack.offset
        use_ringbuf = transport == "ringbuf" or (transport == "auto" and _has_ringbuf(bcc))
        self.transport = "ringbuf" if use_ringbuf else "perf"
        d = bpf_dir()
        self.follow_children = follow_children and ensure_tracefs()
        self.warnings: list[str] = []
        if follow_children and not self.follow_children:
            self.warnings.append("child processes are not followed: tracefs is not "
                                 "mounted and could not be mounted")
        # Ring buffer wakeups: a quarter of its records, shared by the CPUs, may wait
        # for the reader's timed drain (poll) before one sample wakes it.
        records = ringbuf_pages * 4096 // ct.sizeof(self.struct)
        if wakeup_every is None:
            wakeup_every = max(1, records // (4 * (os.cpu_count() or 1)))
        wakeup_every = max(1, int(wakeup_every))
        cflags = [f"-I{d}", _arch_flag(), f"-DSTACK_BYTES={stack_size}", "-DMAX_KSTACK=127",
                  f"-DUSE_RINGBUF={int(use_ringbuf)}", f"-DRINGBUF_PAGES={ringbuf_pages}",
                  f"-DWAKEUP_EVERY={wakeup_every}",
                  f"-DFOLLOW_CHILDREN={int(self.follow_children)}"]
        self.times.compile_start = time.monotonic_ns()
        cpu0 = time.process_time_ns()
        try:
            self.bpf = load_program(bcc, d / "sample.bpf.c", cflags)
        except Exception as exc:  # noqa: BLE001 - bcc raises bare Exception
            raise SframeProfError(f"cannot load the BPF program: {str(exc).splitlines()[0]} "
                                  "(kernel headers installed? see scripts/setup.sh)") from None
        self.times.compile_end = time.monotonic_ns()
        self.times.compile_cpu = time.process_time_ns() - cpu0
        targets = self.bpf[b"targets"]
        for pid in pids:
            targets[ct.c_uint32(pid)] = ct.c_uint8(1)
        config = self.bpf[b"config"]
        config[ct.c_int(0)] = ct.c_uint32(1 if system_wide else 0)
        config[ct.c_int(1)] = ct.c_uint32(os.getpid())
        config[ct.c_int(2)] = ct.c_uint32(1 if self.follow_children else 0)
        self._pending: list[BpfRecord] = []
        self.forks: list[tuple[int, int]] = []   # (parent tgid, child pid), oldest first
        self.lost_reported = 0
        if use_ringbuf:
            self.bpf[b"events"].open_ring_buffer(self._on_ringbuf)
            if self.follow_children:
                self.bpf[b"forks"].open_ring_buffer(self._on_fork_rb)
        else:
            self.bpf[b"events"].open_perf_buffer(self._on_perf, page_cnt=256,
                                                lost_cb=self._on_lost)
            if self.follow_children:
                self.bpf[b"forks"].open_perf_buffer(self._on_fork_perf, page_cnt=8)
        ev_type, ev_config = _event(bcc, event)
        try:
            self.bpf.attach_perf_event(ev_type=ev_type, ev_config=ev_config,
                                       fn_name=b"on_sample", sample_freq=freq, cpu=-1)
        except Exception as exc:  # noqa: BLE001
            raise SframeProfError(f"cannot open the {event} perf event: "
                                  f"{str(exc).splitlines()[0]}") from None
        self.times.attach_end = time.monotonic_ns()

    def add_pid(self, pid: int) -> None:
        self.bpf[b"targets"][ct.c_uint32(pid)] = ct.c_uint8(1)

    def remove_pid(self, pid: int) -> None:
        """Stop sampling `pid` (it exited); nothing when it was not a target."""
        try:
            del self.bpf[b"targets"][ct.c_uint32(pid)]
        except Exception:  # noqa: BLE001 - bcc raises KeyError or a bare Exception
            pass

    # -- buffer callbacks -------------------------------------------------------

    def _decode(self, data: int) -> BpfRecord:
        s = ct.cast(data, ct.POINTER(self.struct)).contents
        n = min(s.stack_len, self.stack_size)
        stack = ct.string_at(data + self.stack_offset, n)
        kbytes = s.kstack_bytes
        kstack = tuple(s.kstack[: kbytes // 8]) if kbytes > 0 else ()
        regs = {"pc": s.pc, "sp": s.sp, "fp": s.fp}
        if s.lr:
            regs["lr"] = s.lr
        return BpfRecord(s.pid, s.tid, s.time_ns, s.cpu,
                         s.comm.decode("utf-8", "replace"), s.flags, regs, stack, kstack)

    def _on_ringbuf(self, _ctx: Any, data: int, _size: int) -> int:
        self._pending.append(self._decode(data))
        return 0

    def _on_perf(self, _cpu: int, data: int, _size: int) -> None:
        self._pending.append(self._decode(data))

    def _on_fork_rb(self, _ctx: Any, data: int, _size: int) -> int:
        ev = ct.cast(data, ct.POINTER(ct.c_uint32 * 2)).contents
        self.forks.append((int(ev[0]), int(ev[1])))
        return 0

    def _on_fork_perf(self, _cpu: int, data: int, _size: int) -> None:
        ev = ct.cast(data, ct.POINTER(ct.c_uint32 * 2)).contents
        self.forks.append((int(ev[0]), int(ev[1])))

    def take_forks(self) -> list[tuple[int, int]]:
        out, self.forks = self.forks, []
        return out

    def _on_lost(self, count: int) -> None:
        self.lost_reported += count

    def poll(self, timeout_ms: int = 100) -> list[BpfRecord]:
        if self.transport == "ringbuf":
            # Returns on a wakeup (every WAKEUP_EVERY samples of a CPU) or at the
            # timeout; then take whatever is in the buffer, woken or not.  In the
            # first second, until the first sample arrives, look every few ms: that
            # sample, not a wakeup, ends the start-up.  (An idle target may send
            # none for long: no fast polling then.)
            step = timeout_ms
            if not self.times.first_read and \
                    time.monotonic_ns() - self.times.attach_end < FIRST_SAMPLE_WINDOW_NS:
                step = min(timeout_ms, FIRST_SAMPLE_POLL_MS)
            waited = 0
            while True:
                self.bpf.ring_buffer_poll(step)
                self.bpf.ring_buffer_consume()
                waited += step
                if self._pending or self.forks or waited >= timeout_ms:
                    break
        else:
            self.bpf.perf_buffer_poll(timeout_ms)
        out, self._pending = self._pending, []
        if out and not self.times.first_read:
            self._first_read(out[0])
        return out

    def _first_read(self, first: BpfRecord) -> None:
        self.times.first_read = time.monotonic_ns()
        self.times.first_sample = first.time_ns
        self.times.cpu_to_first = time.process_time_ns()
        if os.environ.get(TIMINGS_ENV):
            print(self.times.line(), file=sys.stderr, flush=True)

    def counters(self) -> dict[str, int]:
        c = self.bpf[b"counters"]
        names = {CNT_HITS: "hits", CNT_SUBMITTED: "submitted", CNT_LOST: "lost",
                 CNT_SHORT_COPY: "short_copy", CNT_NO_USER: "no_user",
                 CNT_KERNEL_MODE: "kernel_mode"}
        out = {name: int(c[ct.c_int(i)].value) for i, name in names.items()}
        out["lost"] += self.lost_reported
        return out

    def close(self) -> None:
        self.bpf.cleanup()


class SamplerStart:
    """BpfSampler(**kwargs) built in a thread of its own.

    The compile takes most of the start-up and runs outside the GIL, so the caller
    can do its own set-up meanwhile (read the targets' maps, open their files), then
    take the sampler with result().  The sampler samples from the end of its build;
    its buffer holds what comes before the first poll.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._sampler: BpfSampler | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._build, args=(kwargs,),
                                        name="sframe-prof-sampler-start", daemon=True)
        self._thread.start()

    def _build(self, kwargs: dict[str, Any]) -> None:
        try:
            self._sampler = BpfSampler(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - raised again by result()
            self._error = exc

    def result(self) -> BpfSampler:
        """The sampler, once built; raises what BpfSampler() raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._sampler is not None
        return self._sampler


TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


def ensure_tracefs() -> bool:
    """bcc reads tracepoint formats from tracefs: mount it if the system has not."""
    if any(os.path.isdir(f"{d}/events") for d in TRACEFS_DIRS):
        return True
    import subprocess
    try:
        subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS_DIRS[0]],
                       capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return os.path.isdir(f"{TRACEFS_DIRS[0]}/events")


def _has_ringbuf(bcc: Any) -> bool:
    return hasattr(bcc.BPF, "ring_buffer_poll") and tuple(
        int(x) for x in platform.release().split(".")[:2] if x.isdigit()) >= (5, 8)


def _event(bcc: Any, event: str) -> tuple[int, int]:
    if event == "cpu-clock":
        return bcc.PerfType.SOFTWARE, bcc.PerfSWConfig.CPU_CLOCK
    if event == "task-clock":
        return bcc.PerfType.SOFTWARE, bcc.PerfSWConfig.TASK_CLOCK
    if event == "cycles":
        if not os.path.exists("/sys/bus/event_source/devices/cpu") and not os.path.exists(
                "/sys/bus/event_source/devices/armv8_pmuv3_0"):
            raise SframeProfError("no hardware PMU on this machine: use -e cpu-clock")
        return bcc.PerfType.HARDWARE, bcc.PerfHWConfig.CPU_CYCLES
    raise SframeProfError(f"unknown event {event!r} (cpu-clock, task-clock, cycles)")

