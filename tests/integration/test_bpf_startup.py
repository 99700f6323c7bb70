"""The fast start-up of the live sampler (profiler/capture/bcc_compile.py), on this kernel.

The compile runs in a thread whose /proc/kallsyms is a two-line stub: the thread must
see the stub, and nothing else (this process's other threads, the host) may.  The
program built that way must still call bpf_probe_read_kernel and bpf_probe_read_user,
with the helper numbers taken from the host's <linux/bpf.h>, not bcc's fallback
bpf_probe_read.  After the build the compiler's code pages are out of the RSS, the
working directory is where it was, and a sampler built in the background samples.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers import live

from profiler.capture import bcc_compile
from profiler.capture.bcc_source import BpfRecord, BpfSampler, SamplerStart

pytestmark = pytest.mark.bpf

BUSY = ["/usr/bin/python3", "-c", "while 1: pass"]
BPF_CALL = 0x85   # BPF_JMP | BPF_CALL: imm is the helper number


def _mounts_on_kallsyms(pid: str) -> list[str]:
    with open(f"/proc/{pid}/mountinfo", encoding="utf-8") as f:
        return [line for line in f if line.split()[4] == "/proc/kallsyms"]


def test_stub_kallsyms_is_seen_by_its_thread_only() -> None:
    live.require_live()
    seen: dict[str, object] = {}

    def run() -> None:
        seen["ok"] = bcc_compile._stub_kallsyms(bcc_compile._libc())
        with open("/proc/kallsyms", "rb") as f:
            seen["text"] = f.read()
        with open("/proc/thread-self/mountinfo", encoding="utf-8") as f:
            seen["mounted"] = [x for x in f if x.split()[4] == "/proc/kallsyms"]

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen["ok"] is True
    assert seen["text"] == bcc_compile.KALLSYMS_STUB
    assert len(seen["mounted"]) == 1        # type: ignore[arg-type]
    # Everyone else: the real table, no mount over it (private propagation).
    assert _mounts_on_kallsyms("self") == [] and _mounts_on_kallsyms("1") == []
    with open("/proc/kallsyms", encoding="utf-8") as f:
        names = {line.split()[2] for line in f}
    assert len(names) > 1000 and "bpf_probe_read_kernel" in names


def _helper_numbers(tmp_path: Path) -> dict[str, int]:
    """BPF_FUNC_* numbers from the host's uapi header, compiled by gcc."""
    src = tmp_path / "ids.c"
    src.write_text('#include <stdio.h>\n#include <linux/bpf.h>\nint main(void) {\n'
                   '  printf("probe_read %d\\n", BPF_FUNC_probe_read);\n'
                   '  printf("probe_read_kernel %d\\n", BPF_FUNC_probe_read_kernel);\n'
                   '  printf("probe_read_user %d\\n", BPF_FUNC_probe_read_user);\n'
                   '  return 0;\n}\n')
    exe = tmp_path / "ids"
    subprocess.run(["gcc", "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    return {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", out)}


def _compiler_rss_kb() -> int:
    """Rss of the compiler libraries' read-only mappings without private pages."""
    total = 0
    with open("/proc/self/smaps", encoding="ascii", errors="replace") as f:
        text = f.read()
    spans = set(bcc_compile.clean_compiler_mappings(text))
    current = None
    for line in text.splitlines():
        head = line.split()
        if head and "-" in head[0] and not head[0].endswith(":"):
            lo, hi = head[0].split("-")
            current = (int(lo, 16), int(hi, 16))
        elif head[:1] == ["Rss:"] and current in spans:
            total += int(head[1])
    return total


def test_sampler_program_uses_the_kernel_and_user_read_helpers(tmp_path: Path) -> None:
    live.require_live()
    ids = _helper_numbers(tmp_path)
    cwd = os.getcwd()
    sampler = BpfSampler(pids=[os.getpid()], system_wide=False, freq=99)
    try:
        raw = sampler.bpf.dump_func(b"on_sample")
        calls = {struct.unpack_from("<i", raw, i + 4)[0]
                 for i in range(0, len(raw), 8) if raw[i] == BPF_CALL}
        assert ids["probe_read_kernel"] in calls and ids["probe_read_user"] in calls, calls
        assert ids["probe_read"] not in calls, calls
        assert os.getcwd() == cwd     # bcc's chdir stayed in the compile thread
        assert bcc_compile.clean_compiler_mappings(Path("/proc/self/smaps").read_text())
        assert _compiler_rss_kb() < 1024, "the compiler's code pages are still mapped"
    finally:
        sampler.close()


def test_sampler_started_in_the_background_samples_a_busy_process() -> None:
    live.require_live()
    target = subprocess.Popen(BUSY)
    try:
        start = SamplerStart(pids=[target.pid], system_wide=False, freq=99)
        sampler = start.result()
        try:
            got: list[BpfRecord] = []
            deadline = time.monotonic() + 5
            while not got and time.monotonic() < deadline:
                got = [r for r in sampler.poll(100) if r.pid == target.pid]
            assert got, "no sample of the busy target within 5 s"
            t = sampler.times
            assert 0 < t.compile_start < t.compile_end <= t.attach_end <= t.first_read
            assert t.compile_end <= t.first_sample <= t.first_read
            assert 0 < t.compile_cpu
        finally:
            sampler.close()
    finally:
        target.kill()
        target.wait()


def test_sampler_start_hands_its_error_over() -> None:
    live.require_live()
    start = SamplerStart(pids=[], system_wide=False, freq=99, event="no-such-event")
    with pytest.raises(Exception, match="unknown event"):
        start.result()
