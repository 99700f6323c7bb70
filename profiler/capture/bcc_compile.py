"""Compile and load the BPF program with bcc, in a thread set up to make that fast.

bcc 0.26 (Debian 12's) reads all of /proc/kallsyms at every compile (about 120,000
symbols on a distribution kernel), only to learn whether the kernel has the helpers
bpf_probe_read_kernel and bpf_probe_read_user.  That is two thirds of the compile of
bpf/sample.bpf.c: 0.45 s of CPU against 0.15 s without it, and 11 MB of peak RSS.  The
program needs bpf_task_pt_regs (Linux 5.15), so any kernel that can load it has both
helpers (5.5).  The compile therefore runs in a thread of its own that unshares its
mount namespace (private propagation: nothing leaks out to the host's) and sees a
/proc/kallsyms listing just those two names.  The namespace goes with the thread;
every other thread keeps the real file.  Where that cannot be set up (no
CAP_SYS_ADMIN, a kernel without mount namespaces) the compile reads the real file,
only slower.

The thread also keeps bcc's chdir() into the kernel headers' directory (it runs clang
there) from moving the working directory of the caller's other threads.

After the compile, release_compiler_memory() gives back what clang and LLVM leave
behind in a long run: the heap they freed (malloc_trim) and the pages of their code
that the process touched (about 75 MB of RSS, clean file pages that would only come
back from the page cache if LLVM ran again).
"""

from __future__ import annotations

import ctypes as ct
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

_CLONE_FS = 0x200
_CLONE_NEWNS = 0x20000
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_PRIVATE = 1 << 18
_MADV_DONTNEED = 4
# Shared libraries only the compile runs (bcc links them; Debian: libLLVM-14.so.1,
# libclang-cpp.so.14).
COMPILER_LIBS = ("libLLVM", "libclang")

# What bcc looks up; any kernel address is accepted (bcc skips user-range addresses).
KALLSYMS_STUB = (b"ffffffffff000000 T bpf_probe_read_kernel\n"
                 b"ffffffffff000000 T bpf_probe_read_user\n")


def _libc() -> Any:
    libc = ct.CDLL(None, use_errno=True)
    libc.unshare.argtypes = [ct.c_int]
    libc.mount.argtypes = [ct.c_char_p, ct.c_char_p, ct.c_char_p, ct.c_ulong, ct.c_void_p]
    libc.madvise.argtypes = [ct.c_void_p, ct.c_size_t, ct.c_int]
    return libc


def _stub_kallsyms(libc: Any) -> bool:
    """In the calling thread only: a mount namespace where /proc/kallsyms is the stub.
    False (and nothing changed outside this thread) where that is not possible."""
    if libc.unshare(_CLONE_NEWNS) != 0:
        libc.unshare(_CLONE_FS)   # at least a working directory of its own
        return False
    # After unshare the mounts are still peers of the host's: a mount made now would
    # propagate there.  Private first, or no mount at all.
    if libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        return False
    fd, path = tempfile.mkstemp(prefix="sframe-prof-kallsyms-")
    try:
        os.write(fd, KALLSYMS_STUB)
        return bool(libc.mount(path.encode(), b"/proc/kallsyms", None, _MS_BIND, None) == 0)
    finally:
        os.close(fd)
        os.unlink(path)   # the bind mount keeps the file while the thread lives


def load_program(bcc: Any, src: Path, cflags: list[str]) -> Any:
    """bcc.BPF(src_file=src, cflags=cflags), compiled in a thread that sees the stub
    /proc/kallsyms, the compiler's memory released before and after.  Blocks until
    the program is loaded; raises what bcc raises."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            try:
                _stub_kallsyms(_libc())
            except (OSError, AttributeError):
                pass
            result["bpf"] = bcc.BPF(src_file=str(src).encode(), cflags=cflags)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            result["error"] = exc

    # Importing bcc relocated libLLVM and libclang-cpp: the dynamic linker read their
    # relocation tables, 30 MB that the compile does not read again.  Dropped here,
    # they stay out of the peak RSS.
    release_compiler_memory()
    thread = threading.Thread(target=run, name="sframe-prof-bpf-compile", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    release_compiler_memory()
    return result["bpf"]


def clean_compiler_mappings(smaps: str) -> list[tuple[int, int]]:
    """(start, end) of the mappings of COMPILER_LIBS in /proc/self/smaps text that are
    read-only and hold no private copy of a page: only their page-cache pages are
    mapped, which can be dropped and would fault back in unchanged.  (A relocated
    RELRO page is a private copy: dropping it would lose the relocation.)"""
    out: list[tuple[int, int]] = []
    span: tuple[int, int] | None = None
    for line in smaps.splitlines():
        head = line.split(maxsplit=5)
        if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):
            name = head[5].rsplit("/", 1)[-1] if len(head) == 6 else ""
            span = None
            if "w" not in head[1] and name.startswith(COMPILER_LIBS):
                lo, hi = head[0].split("-")
                span = (int(lo, 16), int(hi, 16))
        elif span is not None and head[:1] == ["Anonymous:"]:
            if head[1] == "0":
                out.append(span)
            span = None
    return out


def release_compiler_memory() -> None:
    """Once the program is loaded: return the heap clang and LLVM freed to the system,
    and drop their code pages from this process.  Best effort, never raises."""
    try:
        libc = _libc()
        libc.malloc_trim(0)
        with open("/proc/self/smaps", encoding="ascii", errors="replace") as f:
            spans = clean_compiler_mappings(f.read())
        for lo, hi in spans:
            libc.madvise(ct.c_void_p(lo), hi - lo, _MADV_DONTNEED)
    except (OSError, AttributeError):
        pass
