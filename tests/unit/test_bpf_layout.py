"""The record the BPF C writes (bpf/sample.h) has the layout Python reads.

sample.h is compiled with the host C compiler (same ABI as the BPF target for these
plain fixed-width fields) into a program that prints every field's offset and the
struct size; those must equal the ctypes mirror in profiler/capture/layout.py.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from helpers.paths import REPO

from profiler.capture import layout

FIELDS = [name for name, _ in layout.HEADER_FIELDS] + ["kstack", "stack"]


def c_layout(tmp_path: Path, stack_bytes: int) -> dict[str, int]:
    prints = "\n".join(
        f'    printf("{f} %zu\\n", offsetof(struct sframe_sample, {f}));' for f in FIELDS)
    src = tmp_path / "layout.c"
    src.write_text(f"""#include <stddef.h>
#include <stdio.h>
#include <linux/types.h>
#include "sample.h"
int main(void) {{
{prints}
    printf("sizeof %zu\\n", sizeof(struct sframe_sample));
    printf("CHUNK %d\\nMAX_KSTACK %d\\nNUM_COUNTERS %d\\n", CHUNK, MAX_KSTACK, NUM_COUNTERS);
    printf("CNT_LOST %d\\nCNT_KERNEL_MODE %d\\n", CNT_LOST, CNT_KERNEL_MODE);
    printf("SAMPLE_F_KERNEL_MODE %d\\nSAMPLE_F_NO_USER %d\\n", SAMPLE_F_KERNEL_MODE,
           SAMPLE_F_NO_USER);
    return 0;
}}
""")
    exe = tmp_path / "layout"
    subprocess.run(["gcc", f"-DSTACK_BYTES={stack_bytes}", f"-I{REPO / 'bpf'}", "-o", str(exe),
                    str(src)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    return {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", out)}


@pytest.mark.parametrize("stack_bytes", [512, 16384, 65536])
def test_layout_matches(tmp_path: Path, stack_bytes: int) -> None:
    c = c_layout(tmp_path, stack_bytes)
    py = layout.sample_struct(stack_bytes)
    for f in FIELDS:
        assert getattr(py, f).offset == c[f], f
    assert __import__("ctypes").sizeof(py) == c["sizeof"]
    assert c["CHUNK"] == layout.CHUNK and c["MAX_KSTACK"] == layout.MAX_KSTACK
    assert c["NUM_COUNTERS"] == layout.NUM_COUNTERS
    assert c["CNT_LOST"] == layout.CNT_LOST and c["CNT_KERNEL_MODE"] == layout.CNT_KERNEL_MODE
    assert c["SAMPLE_F_KERNEL_MODE"] == layout.SAMPLE_F_KERNEL_MODE
    assert c["SAMPLE_F_NO_USER"] == layout.SAMPLE_F_NO_USER


def test_stack_size_must_be_chunked() -> None:
    with pytest.raises(ValueError):
        layout.sample_struct(1000)
