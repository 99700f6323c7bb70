"""The BPF sample record (bpf/sample.h) as a ctypes structure.

tests/unit/test_bpf_layout.py compiles sample.h with the host C compiler and checks
every offset and the size against this definition.
"""

from __future__ import annotations

import ctypes as ct

CHUNK = 512
MAX_KSTACK = 127
DEFAULT_STACK_BYTES = 16384

SAMPLE_F_KERNEL_MODE = 0x1
SAMPLE_F_NO_USER = 0x2

# counters[] indexes, as in sample.h
CNT_HITS, CNT_SUBMITTED, CNT_LOST, CNT_SHORT_COPY, CNT_NO_USER, CNT_KERNEL_MODE = range(6)
NUM_COUNTERS = 8

HEADER_FIELDS: list[tuple[str, type]] = [
    ("pid", ct.c_uint32),
    ("tid", ct.c_uint32),
    ("time_ns", ct.c_uint64),
    ("cpu", ct.c_uint32),
    ("flags", ct.c_uint32),
    ("comm", ct.c_char * 16),
    ("pc", ct.c_uint64),
    ("sp", ct.c_uint64),
    ("fp", ct.c_uint64),
    ("lr", ct.c_uint64),
    ("kstack_bytes", ct.c_int32),
    ("stack_len", ct.c_uint32),
]


def sample_struct(stack_bytes: int = DEFAULT_STACK_BYTES,
                  max_kstack: int = MAX_KSTACK) -> type[ct.Structure]:
    """The record type for a given --stack-size (a multiple of CHUNK)."""
    if stack_bytes <= 0 or stack_bytes % CHUNK:
        raise ValueError(f"stack size must be a positive multiple of {CHUNK}")

    class SframeSample(ct.Structure):
        _fields_ = HEADER_FIELDS + [
            ("kstack", ct.c_uint64 * max_kstack),
            ("stack", ct.c_uint8 * (stack_bytes + CHUNK)),
        ]

    return SframeSample
