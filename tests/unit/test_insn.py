"""The x86_64 length decoder (profiler.unwind.insn) against objdump, function by function.

Every function (FDE) of the committed libc and ld.so and of every x86_64 test binary
is decoded from its first byte; the instruction starts, the direct call and jump
targets and the kinds of call must be exactly the ones objdump lists.  (objdump
prints ``fwait`` followed by an x87 instruction as one instruction; the decoder
counts two, as the CPU does, so an instruction start right after a 9B byte that
objdump lacks is not a difference.)  System libraries with AVX-512, XOP and x87
code (libm, libcrypto, python3) are checked too when the machine has them.
"""

from __future__ import annotations

import bisect
from pathlib import Path

import pytest
from helpers.disasm import listing
from helpers.marks import quick_few
from helpers.paths import SNAPSHOTS, TARGETS

from profiler.unwind import insn
from profiler.unwind.objfile import ObjectFile

LIBS = SNAPSHOTS / "root" / "usr" / "lib" / "x86_64-linux-gnu"
FILES = [LIBS / "libc.so.6", LIBS / "ld-linux-x86-64.so.2",
         *sorted(p for p in TARGETS.glob("*x86_64*/*")
                 if p.name == "prog" or p.suffix == ".so")]
# the quick loop's files: ld.so and the plain -O2 builds
QUICK = quick_few(FILES, lambda p: p.name.startswith("ld-") or p.parent.name.endswith("-O2"))
SYSTEM = [Path("/usr/lib/x86_64-linux-gnu/libm.so.6"),
          Path("/usr/lib/x86_64-linux-gnu/libcrypto.so.3"), Path("/usr/bin/python3.11")]


def check_file(path: Path) -> int:
    obj = ObjectFile.open(str(path))
    starts, branches = listing(path)
    ranges = ([(f.func_start, f.func_start + f.func_size) for f in obj.sframe.fdes]
              if obj.sframe is not None else obj.cfi.fde_ranges() if obj.cfi else [])
    checked = 0
    for lo, hi in ranges:
        i = bisect.bisect_left(starts, lo)
        if i == len(starts) or starts[i] != lo:
            continue    # objdump is not in step at the FDE start (e.g. __restore_rt - 1)
        want = starts[i:bisect.bisect_left(starts, hi)]
        code = obj.read_code(lo, hi - lo)
        fn = insn.X86Function(lo, code)
        assert fn.complete, f"{path.name}: 0x{lo:x} not decodable"
        got = [lo + off for off in fn.offsets]
        got = [a for a in got if a in set(want) or code[a - lo - 1] != 0x9B]
        assert got == want, (f"{path.name}: function 0x{lo:x}: first difference at "
                             f"0x{min(set(got) ^ set(want)):x}")
        # Calls and jumps: kind and target as objdump reads them.
        for k, start in enumerate(want):
            end = want[k + 1] if k + 1 < len(want) else hi
            mnem, target = branches.get(start, ("", None))
            call = fn.calls.get(end)
            if mnem.startswith("call"):
                assert call is not None, f"{path.name}: 0x{start:x} call not seen"
                if target is not None and "*" not in mnem:
                    assert call == (insn.X86_CALL, target), (hex(start), call)
            else:
                assert call is None, f"{path.name}: 0x{start:x} {mnem} taken for a call"
            if mnem.startswith("j") and target is not None and not lo <= target < hi:
                assert target in fn.jumps, f"{path.name}: 0x{start:x} jump missed"
        checked += 1
    return checked


@pytest.mark.parametrize("path", QUICK, ids=lambda p: p.name if "snapshots" in str(p)
                         else f"{p.parent.name}/{p.name}")
def test_decoder_matches_objdump(path: Path) -> None:
    assert check_file(path) >= (3 if path.suffix == ".so" and "targets" in str(path) else 10)


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in SYSTEM if p.exists()], ids=lambda p: p.name)
def test_decoder_matches_objdump_on_system_code(path: Path) -> None:
    assert check_file(path) >= 500
