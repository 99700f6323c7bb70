"""The call-edge check and the SFrame/.eh_frame cross-check, against binutils.

``call_ok(space, child, ra)`` (profiler.unwind.calls) decides whether the call ending at
return address `ra` can lead to the function holding `child`.  Every direct call site
objdump lists in the committed test binaries is an edge it must accept (child = the
callee), and a function the callee neither is nor jumps to (per objdump's own jump
targets) is a child it must refuse.  ``ObjectFile.lookup_rule`` refuses a pc whose
.sframe row and .eh_frame row differ; binutils' own dumps show where that happens (ld's
.plt.got rows) and every other row of every binary must pass.
"""

from __future__ import annotations

import bisect
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from helpers.marks import quick_few
from helpers.paths import SNAPSHOTS, TARGETS

from profiler.model import Mapping
from profiler.unwind.calls import TAIL_BUDGET, TAIL_DEPTH, call_ok
from profiler.unwind.objfile import ObjectCache, ObjectFile
from profiler.unwind.rules import rule_shape
from profiler.unwind.space import AddressSpace

LIBC_ROOT = SNAPSHOTS / "root" / "usr" / "lib" / "x86_64-linux-gnu"
BINARIES = sorted(p for p in TARGETS.glob("*/*")
                  if p.is_file() and (p.name == "prog" or p.suffix == ".so"))
OBJDUMP = {"x86_64": "objdump", "aarch64": "aarch64-linux-gnu-objdump"}

_HEADER = re.compile(r"^([0-9a-f]+) <([^>]+)>:$")
_INSN = re.compile(r"^\s*([0-9a-f]+):\s+((?:[0-9a-f]{2} )+|[0-9a-f]{8} )\s*(\S+)\s*(.*)$")
_TARGET = re.compile(r"^([0-9a-f]+) <([^>+]+)(\+0x[0-9a-f]+)?>$")
_A64_JUMPS = ("b", "cbz", "cbnz", "tbz", "tbnz")


class Listing:
    """objdump -d of one binary: direct calls and, per function, jump targets."""

    def __init__(self, path: Path, arch: str) -> None:
        tool = OBJDUMP[arch]
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing (scripts/setup.sh installs it)")
        out = subprocess.run([tool, "-d", "-w", str(path)],
                             capture_output=True, text=True, check=True).stdout
        self.functions: dict[str, int] = {}
        self.calls: list[tuple[int, str, int]] = []        # (ra, callee, callee address)
        self.jumps: dict[str, set[str]] = {}               # function -> functions jumped to
        self.jump_addrs: dict[str, set[int]] = {}          # ... and the addresses
        self.indirect: set[str] = set()                    # functions with jmp *X / br Xn
        self._starts: list[tuple[int, str]] | None = None
        self._addrs: list[int] = []
        current = ""
        for line in out.splitlines():
            m = _HEADER.match(line)
            if m:
                current = m.group(2)
                self.functions[current] = int(m.group(1), 16)
                continue
            m = _INSN.match(line)
            if not m or not current:
                continue
            addr, raw, mnem, ops = int(m.group(1), 16), m.group(2), m.group(3), m.group(4)
            size = 4 if arch == "aarch64" else len(raw.split())
            if (mnem in ("br", "braa", "brab", "braaz", "brabz") if arch == "aarch64"
                    else mnem in ("jmp", "notrack") and "*" in ops):
                self.indirect.add(current)
            t = _TARGET.match(ops.split("//")[0].split("#")[0].strip().split(",")[-1].strip())
            if t is None:
                continue
            name = t.group(2)
            if mnem in ("call", "bl"):
                if t.group(3) is None:
                    self.calls.append((addr + size, name, int(t.group(1), 16)))
            elif (mnem.startswith("j") if arch == "x86_64"
                  else mnem in _A64_JUMPS or mnem.startswith("b.")):
                if name != current:
                    self.jumps.setdefault(current, set()).add(name)
                    self.jump_addrs.setdefault(current, set()).add(int(t.group(1), 16))


    def reach(self, name: str, depth: int = TAIL_DEPTH) -> set[str]:
        """The functions `name` reaches by direct jumps, up to `depth` hops (jump
        targets are placed by address: objdump may print another alias there)."""
        if self._starts is None:
            self._starts = sorted((a, n) for n, a in self.functions.items())
        starts = self._starts
        addrs = self._addrs = self._addrs or [a for a, _ in starts]

        def holder(addr: int) -> str:
            return starts[max(0, bisect.bisect_right(addrs, addr) - 1)][1]
        out: set[str] = set()
        todo = {name}
        for _ in range(depth):
            todo = {holder(t) for f in todo for t in self.jump_addrs.get(f, ())} - out
            out |= todo
        return out


def space_of(path: Path, obj: ObjectFile) -> AddressSpace:
    """The binary mapped at its link-time addresses (load bias 0)."""
    maps = tuple(Mapping(vaddr & ~0xFFF, vaddr + memsz, off & ~0xFFF,
                         "r-xp" if flags & 1 else "r--p", str(path))
                 for vaddr, off, _filesz, memsz, flags in obj.loads)
    return AddressSpace(maps, (), ObjectCache())


# Binaries nobody here built (Debian's), every STRIDE-th call site of each.
HOST_BINARIES = [Path(p) for p in ("/usr/bin/python3.11",
                                   "/usr/lib/x86_64-linux-gnu/libc.so.6")]
HOST_STRIDE = 19


@pytest.mark.parametrize("path", quick_few(BINARIES + HOST_BINARIES,
                                          lambda p: p.parent.name.endswith("-O2")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_call_edges_match_objdump(path: Path) -> None:
    if not path.exists():
        pytest.fail(f"{path} is missing (a Debian package of the test machine)")
    stride = HOST_STRIDE if path in HOST_BINARIES else 1
    obj = ObjectFile.open(str(path))
    listing = Listing(path, obj.arch)
    space = space_of(path, obj)
    with path.open("rb") as f:
        stubs = [(sec["sh_addr"], sec["sh_addr"] + sec["sh_size"])
                 for sec in ELFFile(f).iter_sections() if sec.name.startswith((".plt", ".iplt"))]
    with_fde = {n: a for n, a in listing.functions.items()
                if "@plt" not in n and obj.function_range(a) is not None
                and obj.function_range(a)[0] == a}         # type: ignore[index]
    accepted = refused = 0
    names = sorted(with_fde)
    for i, (ra, callee, addr) in enumerate(listing.calls):
        if callee not in with_fde or i % stride:
            continue
        assert call_ok(space, addr, ra), f"0x{ra:x}: call to {callee} refused"
        accepted += 1
        reach = listing.reach(callee)
        if reach != listing.reach(callee, TAIL_DEPTH + 1) or len(reach) >= TAIL_BUDGET:
            continue    # tail calls go on past the check's bounds: not judged
        if any(lo <= a < hi for f in reach | {callee} for a in listing.jump_addrs.get(f, ())
               for lo, hi in stubs):
            continue    # a tail call through a PLT stub: judged by symbol, not here
        if listing.indirect & (reach | {callee}):
            continue    # an indirect jump (a tail call through a register): not judged
        if len(space.read_code(ra - 5, 5)) != 5:
            continue    # the call's bytes are not in a loaded segment: not judged
        # A function the callee neither is nor jumps to (cold parts included).
        for other in names[i % len(names):] + names[:i % len(names)]:
            if other != callee and other not in reach and other.split(".")[0] != callee.split(
                    ".")[0]:
                assert not call_ok(space, with_fde[other], ra), \
                    f"0x{ra:x}: call to {callee} accepted for {other}"
                refused += 1
                break
    assert accepted >= 1 and refused >= 1, (accepted, refused)


@pytest.mark.slow
def test_indirect_tail_call_is_not_judged() -> None:
    """Debian's CPython: `_Py_Dealloc` is ``mov 0x8(%rdi),%rax; jmp *0x30(%rax)``, a
    tail call to the type's deallocator, which no table names.  Every call to it that
    objdump lists is accepted whatever function lies below, while a call to a function
    that ends in a plain `ret` and jumps nowhere is still refused for that function."""
    path = Path("/usr/bin/python3.11")
    obj = ObjectFile.open(str(path))
    listing = Listing(path, obj.arch)
    space = space_of(path, obj)
    assert "_Py_Dealloc@@Base" in listing.indirect
    dealloc = [(ra, addr) for ra, callee, addr in listing.calls if callee == "_Py_Dealloc@@Base"]
    assert len(dealloc) > 100, len(dealloc)
    others = sorted(listing.functions.values())
    for n, (ra, _addr) in enumerate(dealloc[::10]):
        child = others[n * 37 % len(others)]
        assert call_ok(space, child, ra), f"0x{ra:x}: call to _Py_Dealloc refused for 0x{child:x}"
    plain = [(ra, callee, addr) for ra, callee, addr in listing.calls
             if callee not in listing.indirect and not listing.jumps.get(callee)
             and obj.function_range(addr) is not None and obj.function_range(addr)[0] == addr]
    assert len(plain) > 100
    for ra, _callee, addr in plain[::50]:
        assert call_ok(space, addr, ra)
        assert not call_ok(space, dealloc[0][1], ra), f"0x{ra:x}: accepted for _Py_Dealloc"


def test_tables_disagree_only_where_binutils_shows_it() -> None:
    """ld 2.44+ gives .plt.got entries CFA = SP+16 in .sframe (objdump --sframe shows
    it) where .eh_frame says SP+8: those pcs, and no other row, are refused."""
    refused_plt_got = 0
    for path in BINARIES:
        obj = ObjectFile.open(str(path))
        sf, cfi = obj.sframe, obj.cfi
        if sf is None or cfi is None:
            continue
        plt_got = [(sec.sh_addr, sec.sh_addr + sec.sh_size) for sec in obj.elf.sections
                   if sec.name == ".plt.got"]
        for fde in sf.fdes:
            pcs = {fde.func_start + fre.start for fre in sf.get_fres(fde)
                   if fre.start < fde.func_size} | {fde.func_start + fde.func_size - 1}
            for pc in sorted(pcs):
                rule, method = obj.lookup_rule(pc)
                if any(lo <= pc < hi for lo, hi in plt_got):
                    assert method == "tables-disagree", (path, hex(pc), method)
                    sfr, cfr = sf.find_rule(pc), cfi.find(pc)
                    assert sfr is not None and cfr is not None
                    assert (sfr.cfa_off, cfr.cfa_off) == (16, 8)
                    refused_plt_got += 1
                else:
                    assert method == "sframe", (path, hex(pc), method)
                    other = cfi.find(pc)
                    assert other is None or rule_shape(other) == rule_shape(rule)  # type: ignore[arg-type]
        if plt_got and sf.find_fde(plt_got[0][0]) is not None:
            dump = (path.parent / f"{path.name + '.' if path.name != 'prog' else ''}"
                    "sframe.objdump.txt").read_text()
            assert re.search(rf"pc = 0x{plt_got[0][0]:x}, size = \d+ bytes\n.*\n\s+0+\s+sp\+16",
                             dump), path
    assert refused_plt_got >= 10, refused_plt_got


def _slots_by_pyelftools(elf: ELFFile, irelative: int) -> dict[int, str]:
    """ObjectFile.slot_symbol's table, read with pyelftools (the reference)."""
    out: dict[int, str] = {}
    for sec in elf.iter_sections():
        if sec["sh_type"] not in ("SHT_RELA", "SHT_REL") or not sec["sh_flags"] & 2:
            continue
        symtab = elf.get_section(sec["sh_link"])
        for rel in sec.iter_relocations():
            if rel["r_info_type"] == irelative:
                out[rel["r_offset"]] = ""
            elif rel["r_info_sym"]:
                out[rel["r_offset"]] = symtab.get_symbol(rel["r_info_sym"]).name
    return out


def _exports_by_pyelftools(elf: ELFFile) -> dict[str, list[tuple[int, bool]]]:
    out: dict[str, list[tuple[int, bool]]] = {}
    dynsym = elf.get_section_by_name(".dynsym")
    for sym in dynsym.iter_symbols() if dynsym is not None else ():
        if sym["st_shndx"] != "SHN_UNDEF" and sym["st_value"]:
            out.setdefault(sym.name, []).append(
                (sym["st_value"], sym["st_info"]["type"] == "STT_LOOS"))
    return out


@pytest.mark.slow
def test_struct_readers_match_pyelftools() -> None:
    """The GOT-slot and .dynsym readers (struct) give what pyelftools gives, on real
    files: libc, ld.so, libstdc++, python3 and libLLVM when present (1.8 s with
    pyelftools, 50 ms with struct)."""
    import glob
    files = [str(LIBC_ROOT / "libc.so.6"), str(LIBC_ROOT / "ld-linux-x86-64.so.2"),
             *sorted(glob.glob("/usr/lib/x86_64-linux-gnu/libstdc++.so.6"))[:1],
             *sorted(glob.glob("/usr/lib/x86_64-linux-gnu/libLLVM*.so.1"))[:1],
             *(str(p) for p in BINARIES[::6])]
    slots = names = 0
    for path in files:
        obj = ObjectFile.open(path)
        irelative = {"EM_X86_64": 37, "EM_AARCH64": 1032}[obj.machine]
        with open(path, "rb") as f:
            elf = ELFFile(f)
            want = _slots_by_pyelftools(elf, irelative)
            exports = _exports_by_pyelftools(elf)
        for slot, name in want.items():
            assert obj.slot_symbol(slot) == name, (path, hex(slot))
        for slot in list(want)[:50]:
            for near in (slot - 4, slot + 4, slot + 1):
                if near not in want:
                    assert obj.slot_symbol(near) is None, (path, hex(near))
        slots += len(want)
        # through .gnu.hash (each name, and names that are not there) ...
        assert obj.elf.find_section(".gnu.hash") is not None, path
        assert obj.exports("") == []
        for name, defs in exports.items():
            assert obj.exports(name) == (defs if name else []), (path, name)
            assert obj.exports(name + "_not") == [], (path, name)
        names += len(exports)
        # ... and by the whole-table scan used without one
        from profiler.unwind.elfsyms import dynamic_exports
        assert dynamic_exports(obj.elf, 1 << 20) == exports, path
    assert slots >= 1000 and names >= 5000


@pytest.mark.parametrize("damage", ["no buckets", "endless chains", "buckets past the end",
                                    "cut short"])
def test_a_damaged_gnu_hash_falls_back_to_the_whole_table(damage: str) -> None:
    """exports() through a damaged .gnu.hash gives what the whole-table scan gives
    (never an exception, never a wrong answer from the hash)."""
    data = bytearray((LIBC_ROOT / "libc.so.6").read_bytes())
    sec = ObjectFile.from_bytes(bytes(data), "libc").elf.find_section(".gnu.hash")
    assert sec is not None
    at, size = sec.sh_offset, sec.sh_size
    nbuckets, _symoffset, bloom = struct.unpack_from("<III", data, at)
    chains_at = at + 16 + 8 * bloom + 4 * nbuckets
    if damage == "no buckets":
        struct.pack_into("<I", data, at, 0)
    elif damage == "endless chains":
        for p in range(chains_at, at + size - 3, 4):
            data[p] &= 0xFE
    elif damage == "buckets past the end":
        for p in range(at + 16 + 8 * bloom, chains_at, 4):
            struct.pack_into("<I", data, p, 0x7FFFFFFF)
    else:
        struct.pack_into("<III", data, at, 1 << 30, 0, 0)
    obj = ObjectFile.from_bytes(bytes(data), "libc")
    with open(LIBC_ROOT / "libc.so.6", "rb") as f:
        want = _exports_by_pyelftools(ELFFile(f))
    for name in ("malloc", "memcpy", "_rtld_global", "printf", "no_such_symbol"):
        assert obj.exports(name) == want.get(name, []), (damage, name)
