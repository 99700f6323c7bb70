"""profiler.symbolize (symbols, debugfiles, kallsyms, perfmap) against binutils on real
binaries.

Oracles: `readelf -sW` lists the symbols (value, size, type, binding, section) and
`addr2line -f` names addresses in files that have a .symtab.  addr2line runs on a
copy with the DWARF, .gnu_debuglink, build-ID note and .gnu_debugdata removed, so BFD
answers from the symbol table alone and cannot find a debug file by itself (it would
otherwise report inlined callees or use /usr/lib/debug).  BFD does not read .dynsym
when there is no .symtab, so dynsym-only files are checked against readelf.

Two documented differences from BFD, checked explicitly below: an address past the
end of every sized symbol (alignment padding, or a local function only a full symbol
table would name) has no name here, where BFD names the nearest symbol before it; and
where a sized symbol nests inside another, the address after the inner one's end
belongs to the outer one again, where BFD keeps the inner name.
"""

from __future__ import annotations

import bisect
import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from helpers.marks import quick_few
from helpers.paths import TARGETS
from helpers.proc import run_ok as run
from helpers.symprogs import BUILDS

from profiler.symbolize.debugfiles import read_build_id
from profiler.symbolize.demangle import demangle
from profiler.symbolize.kallsyms import KernelSymbols
from profiler.symbolize.perfmap import PerfMap
from profiler.symbolize.symbols import ElfSymbols
from profiler.unwind.objfile import ObjectFile

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"

TARGET_FILES = sorted(
    str(p) for p in TARGETS.glob("*/*") if p.name == "prog" or p.name.endswith(".so"))


# -- binutils helpers -----------------------------------------------------------------

def arch_of(path: str) -> str:
    with open(path, "rb") as f:
        return "aarch64" if ELFFile(f)["e_machine"] == "EM_AARCH64" else "x86_64"


def tool(name: str, arch: str = "x86_64") -> str:
    return name if arch == "x86_64" else f"aarch64-linux-gnu-{name}"


@dataclass(frozen=True)
class Sym:
    value: int
    size: int
    type: str
    bind: str
    ndx: str
    name: str      # without @VERSION


_READELF_SYM = re.compile(
    r"^\s*\d+:\s+([0-9a-f]+)\s+(0x[0-9a-f]+|\d+)\s+(\w+)\s+(\w+)\s+(\w+)"
    r"(?:\s+\[[^\]]*\])?\s+(\w+)\s+(\S+)")


def readelf_symbols(path: str, dynamic_only: bool = False) -> list[Sym]:
    out = run(tool("readelf", arch_of(path)), "-W", "--dyn-syms" if dynamic_only else "-s",
              path)
    syms = []
    for line in out.splitlines():
        m = _READELF_SYM.match(line)
        if m is None:
            continue
        value, size, stype, bind, _vis, ndx, name = m.groups()
        syms.append(Sym(int(value, 16), int(size, 0), stype, bind, ndx, name.split("@")[0]))
    return syms


def exec_sections(path: str) -> set[int]:
    with open(path, "rb") as f:
        return {i for i, s in enumerate(ELFFile(f).iter_sections()) if s["sh_flags"] & 4}


def function_symbols(path: str, dynamic_only: bool = False) -> list[Sym]:
    """The symbols a profiler should name pcs with, by readelf: FUNC, IFUNC and sized
    NOTYPE in executable sections, defined, nonzero, not ARM mapping symbols."""
    execs = exec_sections(path)
    out = []
    for s in readelf_symbols(path, dynamic_only):
        if s.ndx in ("UND", "COM") or s.value == 0 or not s.name or s.name.startswith("$"):
            continue
        in_exec = s.ndx.isdigit() and int(s.ndx) in execs
        if s.type in ("FUNC", "IFUNC") or (s.type == "NOTYPE" and s.size > 0 and in_exec):
            out.append(s)
    return out


def symtab_oracle(src: str, dst: str) -> str:
    """A copy of `src` from which BFD can only use the symbol table."""
    run(tool("objcopy", arch_of(src)), "--strip-debug", "--remove-section=.gnu_debuglink",
        "--remove-section=.note.gnu.build-id", "--remove-section=.gnu_debugdata", src, dst)
    return dst


def addr2line(path: str, addrs: list[int], demangled: bool = False) -> list[str | None]:
    """addr2line's function name for each address, each looked up afresh.

    BFD caches the range of the last function it found and answers the next query
    from it when it falls inside, so the answer for an address nested in a larger
    symbol depends on what was asked before.  A query far away (the lowest or highest
    address asked for) goes between every two real ones to reset that cache.
    """
    args = [tool("addr2line", arch_of(path)), "-f", "-e", path] + (["-C"] if demangled else [])
    if not addrs:
        return []
    lo, hi = min(addrs), max(addrs)
    query = []
    for a in addrs:
        query += [hi if a - lo < hi - a else lo, a]
    out = run(*args, stdin="".join(f"{a:#x}\n" for a in query)).splitlines()
    assert len(out) == 2 * len(query)
    names = out[2::4]
    return [None if n == "??" else (n if demangled else n.split("@")[0]) for n in names]


def probe_addresses(syms: Iterable[Sym]) -> list[int]:
    """Start, middle, last byte and one past the end of every sized function; the start
    of every unsized one."""
    addrs: set[int] = set()
    for s in syms:
        if s.size:
            addrs.update((s.value, s.value + s.size // 2, s.value + s.size - 1,
                          s.value + s.size))
        else:
            addrs.add(s.value)
    return sorted(addrs)


class Oracle:
    """What the symbol table says about an address (see the module docstring)."""

    def __init__(self, syms: list[Sym]) -> None:
        self.names_at: dict[int, set[str]] = {}
        self.by_name: dict[str, list[Sym]] = {}
        for s in syms:
            self.names_at.setdefault(s.value, set()).add(s.name)
            self.by_name.setdefault(s.name, []).append(s)
        self.sized = sorted((s.value, s.value + s.size) for s in syms if s.size)
        self.starts = sorted(self.names_at)
        self.unsized = {s.value for s in syms if s.size == 0} - {s.value for s in syms if s.size}

    def innermost(self, addr: int) -> int | None:
        """Start of the sized symbol with the latest start that contains `addr`."""
        i = bisect.bisect_right(self.sized, (addr, 1 << 65))
        best = None
        for lo, hi in reversed(self.sized[max(0, i - 64):i]):
            if lo <= addr < hi and (best is None or lo > best):
                best = lo
        return best

    def expected_start(self, addr: int, bfd_name: str | None) -> int | None:
        if bfd_name is not None:
            before = [s for s in self.by_name.get(bfd_name, ()) if s.value <= addr]
            if before:
                s = max(before, key=lambda s: (s.value, s.size))
                if s.size == 0 or addr < s.value + s.size:
                    return s.value
        # A symbol without a size runs to the next symbol.
        i = bisect.bisect_right(self.starts, addr) - 1
        if i >= 0 and self.starts[i] in self.unsized:
            return self.starts[i]
        return self.innermost(addr)


def check_table(es: ElfSymbols, oracle_syms: list[Sym], addrs: list[int],
                bfd_names: list[str | None] | None = None) -> int:
    """Compare every lookup with the oracle; returns how many addresses had a name."""
    oracle = Oracle(oracle_syms)
    bad = []
    named = 0
    for k, addr in enumerate(addrs):
        want = oracle.expected_start(addr, bfd_names[k] if bfd_names else None)
        got = es.lookup_raw(addr)
        if want is None:
            if got is not None:
                bad.append(f"{addr:#x}: expected no symbol, got {got[0]}@{got[1]:#x}")
            continue
        named += 1
        if got is None:
            bad.append(f"{addr:#x}: expected {sorted(oracle.names_at[want])}, got nothing")
            continue
        name, start, size = got
        if start != want or name.split("@")[0] not in oracle.names_at[want]:
            bad.append(f"{addr:#x}: expected {sorted(oracle.names_at[want])}@{want:#x}, "
                       f"got {name}@{start:#x}")
        elif not start <= addr < start + size:
            bad.append(f"{addr:#x}: outside {name} [{start:#x}, +{size:#x})")
        hit = es.lookup(addr)
        if hit != (demangle(name), addr - start):
            bad.append(f"{addr:#x}: lookup {hit} != lookup_raw {got}")
    assert not bad, f"{len(bad)} of {len(addrs)} addresses wrong:\n" + "\n".join(bad[:30])
    return named


def check_against_addr2line(es: ElfSymbols, full: str, workdir: Path) -> int:
    """`full` is an unstripped file with the same addresses as the one `es` came from."""
    oracle_file = symtab_oracle(full, str(workdir / (Path(full).name + ".oracle")))
    syms = function_symbols(full)
    addrs = probe_addresses(syms)
    return check_table(es, syms, addrs, addr2line(oracle_file, addrs))


def load(path: str | Path, name: str | None = None, **kw: object) -> ElfSymbols:
    return ElfSymbols.load(ObjectFile.open(str(path), name), **kw)  # type: ignore[arg-type]


# -- test programs --------------------------------------------------------------------

@pytest.fixture
def builds(symprogs: dict[str, Path]) -> dict[str, Path]:
    """helpers.symprogs.BUILDS, built once a session (tests/unit/conftest.py)."""
    return symprogs


def copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def split_debug(src: Path, exe: Path, debug: Path, link: bool = True) -> None:
    """Debian/Fedora style: `exe` stripped, its symbols and DWARF in `debug`."""
    copy(src, exe)
    debug.parent.mkdir(parents=True, exist_ok=True)
    run("objcopy", "--only-keep-debug", str(exe), str(debug))
    run("strip", str(exe))
    if link:
        run("objcopy", f"--add-gnu-debuglink={debug}", str(exe))


# -- libc -----------------------------------------------------------------------------

def test_libc_dynsym_matches_readelf() -> None:
    es = load(LIBC, debug_dirs=())
    assert es.sources == [".dynsym"]
    syms = function_symbols(LIBC, dynamic_only=True)
    assert len(syms) > 2000
    addrs = probe_addresses(syms)
    named = check_table(es, syms, addrs)
    assert named > 0.7 * len(addrs)
    # Alias choice: the plain public name over __libc_/_IO_/__ aliases.
    starts = {s.name: s.value for s in syms}
    for public, alias in (("malloc", "__libc_malloc"), ("puts", "_IO_puts"),
                          ("free", "__libc_free"), ("fork", "__libc_fork")):
        if alias in starts:
            assert starts[alias] == starts[public]
        assert es.lookup(starts[public]) == (public, 0)
        assert es.lookup(starts[public] + 3) == (public, 3)


def test_libc_build_id_debug_file(tmp_path: Path) -> None:
    bid = read_build_id(ObjectFile.open(LIBC))
    debug = f"/usr/lib/debug/.build-id/{bid[:2]}/{bid[2:]}.debug"
    if not os.path.exists(debug):
        pytest.fail(f"libc6-dbg is not installed ({debug} missing): run scripts/setup.sh")
    es = load(LIBC)
    assert es.debug_file == debug
    assert es.sources == [".dynsym", f"build-id:{debug}"]
    named = check_against_addr2line(es, debug, tmp_path)
    assert named > 5000
    # A static function only the full table names.
    syms = {s.name: s for s in function_symbols(debug) if s.bind == "LOCAL"}
    assert "_IO_new_file_xsputn" in syms or "check_stdfiles_vtables" in syms
    s = syms.get("check_stdfiles_vtables") or syms["_IO_new_file_xsputn"]
    assert es.lookup(s.value + 1) == (s.name, 1)
    assert load(LIBC, debug_dirs=()).lookup_raw(s.value + 1) is None


def test_read_build_id_matches_readelf(builds: dict[str, Path]) -> None:
    for path in [LIBC, *map(str, builds.values()), *TARGET_FILES[:6]]:
        out = run(tool("readelf", arch_of(path)), "-n", path)
        m = re.search(r"Build ID: ([0-9a-f]+)", out)
        assert read_build_id(ObjectFile.open(path)) == (m.group(1) if m else ""), path


# -- compiled C and C++ programs ------------------------------------------------------

@pytest.mark.parametrize("key", list(BUILDS))
def test_unstripped_matches_addr2line(builds: dict[str, Path], key: str,
                                      tmp_path: Path) -> None:
    es = load(builds[key], debug_dirs=())
    assert es.sources == [".symtab", ".dynsym"] or es.sources == [".symtab"]
    assert es.build_id and es.has_symbols
    named = check_against_addr2line(es, str(builds[key]), tmp_path)
    assert named >= 20


@pytest.mark.parametrize("key", ["cxx-O0", "cxx-O2"])
def test_cxx_demangled_like_addr2line(builds: dict[str, Path], key: str,
                                      tmp_path: Path) -> None:
    es = load(builds[key], debug_dirs=())
    oracle = symtab_oracle(str(builds[key]), str(tmp_path / "oracle"))
    syms = [s for s in function_symbols(str(builds[key])) if s.size]
    addrs = [s.value for s in syms]
    raw = addr2line(oracle, addrs)
    shown = addr2line(oracle, addrs, demangled=True)
    compared = 0
    for addr, r, d in zip(addrs, raw, shown, strict=True):
        got = es.lookup_raw(addr)
        assert got is not None
        if got[0] == r:          # same alias chosen: the demangled text must agree
            assert es.lookup(addr) == (d, 0)
            compared += 1
    assert compared >= 15
    names = {es.lookup(s.value)[0] for s in syms}  # type: ignore[index]
    for want in ("geo::Circle::area() const", "c_linkage", "geo::Shape::~Shape()",
                 "geo::operator+(geo::Vec<int> const&, geo::Vec<int> const&)",
                 "geo::Vec<double>::dot(geo::Vec<double> const&) const"):
        assert want in names


def test_symbol_shapes(builds: dict[str, Path]) -> None:
    """The choices readelf alone cannot decide, on symprog.c."""
    path = str(builds["c-O2"])
    es = load(path, debug_dirs=())
    at = {s.name: s for s in function_symbols(path)}
    # A global alias of a static function wins; so does FUNC over IFUNC.
    assert at["public_alias"].value == at["aliased_impl"].value
    assert es.lookup(at["aliased_impl"].value + 2) == ("public_alias", 2)
    assert at["ifn"].type == "IFUNC" and at["ifn"].value == at["resolve_ifn"].value
    assert es.lookup(at["ifn"].value) == ("resolve_ifn", 0)
    assert es.lookup(at["weak_fn"].value) == ("weak_fn", 0)
    assert es.lookup(at["static_helper"].value + 1) == ("static_helper", 1)
    # A zero-size FUNC reaches the next symbol; a sized NOTYPE in .text is a function.
    nosize, notype = at["asm_nosize"], at["asm_notype"]
    assert nosize.size == 0 and notype.type == "NOTYPE" and notype.size > 0
    gap = notype.value - nosize.value
    assert es.lookup(nosize.value + gap - 1) == ("asm_nosize", gap - 1)
    assert es.lookup(notype.value + 1) == ("asm_notype", 1)
    assert es.lookup(notype.value + notype.size) is None          # padding
    # Nesting: after the inner symbol ends, the outer one names the pc (BFD says inner).
    outer, inner = at["asm_outer"], at["asm_inner"]
    assert outer.value < inner.value < inner.value + inner.size < outer.value + outer.size
    after = inner.value + inner.size
    assert es.lookup(inner.value) == ("asm_inner", 0)
    assert es.lookup(after) == ("asm_outer", after - outer.value)
    oracle = symtab_oracle(path, path + ".oracle")
    assert addr2line(oracle, [after]) == ["asm_inner"]
    # Cold split of main.
    cold = [s for s in at.values() if s.name.endswith(".cold")]
    for s in cold:
        assert es.lookup(s.value) == (s.name, 0)
    # Outside every function.
    assert es.lookup(0) is None and es.lookup(1 << 60) is None
    # _init has no size: it runs to the end of .init, not on into .plt (BFD agrees).
    with open(path, "rb") as f:
        secs = {s.name: (s["sh_addr"], s["sh_size"]) for s in ELFFile(f).iter_sections()}
    init, plt = secs[".init"], secs[".plt"]
    assert at["_init"].size == 0 and at["_init"].value == init[0] < plt[0]
    assert es.lookup(init[0] + init[1] - 1) == ("_init", init[1] - 1)
    assert es.lookup(plt[0]) is None
    assert addr2line(oracle, [plt[0]]) == [None]


@pytest.mark.parametrize("key", ["c-O2-rdynamic", "cxx-O2-rdynamic", "c-O2", "cxx-O0"])
def test_stripped_uses_dynsym(builds: dict[str, Path], key: str, tmp_path: Path) -> None:
    exe = copy(builds[key], tmp_path / key)
    run("strip", str(exe))
    es = load(exe, debug_dirs=())
    syms = function_symbols(str(exe), dynamic_only=True)
    main = next(s for s in function_symbols(str(builds[key])) if s.name == "main")
    if "rdynamic" in key:
        assert es.sources == [".dynsym"] and len(syms) > 5
        check_table(es, syms, probe_addresses(syms))
        assert es.lookup(main.value) == ("main", 0)
        # ifn is only an IFUNC in .dynsym: it names its resolver's code.
        if key.startswith("c-"):
            ifn = next(s for s in syms if s.name == "ifn")
            assert es.lookup(ifn.value) == ("ifn", 0)
    else:
        # Only what the dynamic linker needs (vague-linkage C++ templates, say).
        check_table(es, syms, probe_addresses(syms))
        assert es.sources == ([".dynsym"] if syms else []) and len(syms) < 5
        assert es.lookup(main.value) is None


@pytest.mark.parametrize("layout", ["same-dir", "dot-debug", "debug-dir", "build-id"])
@pytest.mark.parametrize("key", ["c-O2-g", "cxx-O2"])
def test_separate_debug_file(builds: dict[str, Path], key: str, layout: str,
                             tmp_path: Path) -> None:
    exe = tmp_path / "app" / key
    debugdir = tmp_path / "debugroot"
    bid = read_build_id(ObjectFile.open(str(builds[key])))
    debug = {
        "same-dir": exe.parent / f"{key}.debug",
        "dot-debug": exe.parent / ".debug" / f"{key}.debug",
        "debug-dir": debugdir / str(exe.parent).lstrip("/") / f"{key}.debug",
        "build-id": debugdir / ".build-id" / bid[:2] / f"{bid[2:]}.debug",
    }[layout]
    staging = tmp_path / "staging" / f"{key}.debug"
    split_debug(builds[key], exe, staging, link=layout != "build-id")
    debug.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, debug)
    without = load(exe, debug_dirs=())
    assert without.has_symbols == (layout in ("same-dir", "dot-debug"))
    es = load(exe, debug_dirs=(str(debugdir),))
    how = "build-id" if layout == "build-id" else "debuglink"
    assert es.sources == [f"{how}:{debug}"] and es.debug_file == str(debug)
    assert es.build_id == bid
    check_against_addr2line(es, str(builds[key]), tmp_path)


def test_debuglink_crc_mismatch_rejected(builds: dict[str, Path], tmp_path: Path) -> None:
    exe, debug = tmp_path / "prog", tmp_path / "prog.debug"
    split_debug(builds["c-O2"], exe, debug)
    main = next(s for s in function_symbols(str(builds["c-O2"])) if s.name == "main")
    assert load(exe, debug_dirs=()).lookup(main.value) == ("main", 0)
    data = bytearray(debug.read_bytes())
    data[-1] ^= 0xFF                      # still a valid ELF file, different CRC
    debug.write_bytes(bytes(data))
    es = load(exe, debug_dirs=())
    assert es.debug_file is None and es.lookup(main.value) is None
    assert any("CRC32" in e for e in es.errors)


def test_build_id_mismatch_rejected(builds: dict[str, Path], tmp_path: Path) -> None:
    exe = tmp_path / "prog"
    split_debug(builds["c-O2"], exe, tmp_path / "unused.debug", link=False)
    bid = read_build_id(ObjectFile.open(str(exe)))
    wrong = tmp_path / "dbg" / ".build-id" / bid[:2] / f"{bid[2:]}.debug"
    wrong.parent.mkdir(parents=True)
    run("objcopy", "--only-keep-debug", str(builds["c-O0"]), str(wrong))
    es = load(exe, debug_dirs=(str(tmp_path / "dbg"),))
    assert es.debug_file is None and not es.has_symbols
    assert any("build ID does not match" in e for e in es.errors)


def test_root_prefix(builds: dict[str, Path], tmp_path: Path) -> None:
    """A container's file system under `root`: the object and its debug file both there."""
    for layout in ("build-id", "debuglink"):
        root = tmp_path / f"rootfs-{layout}"
        exe = root / "opt" / "app" / f"prog-{layout}"
        staging = tmp_path / f"prog-{layout}.debug"
        split_debug(builds["cxx-O2"], exe, staging, link=layout == "debuglink")
        bid = read_build_id(ObjectFile.open(str(exe)))
        if layout == "build-id":
            debug = root / "usr/lib/debug/.build-id" / bid[:2] / f"{bid[2:]}.debug"
        else:
            debug = root / "usr/lib/debug/opt/app" / staging.name
        debug.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, debug)
        name = f"/opt/app/prog-{layout}"
        es = load(exe, name=name, root=str(root))
        assert es.debug_file == str(debug), (layout, es.errors)
        assert load(exe, name=name).debug_file is None     # not looked for on the host
        check_against_addr2line(es, str(builds["cxx-O2"]), tmp_path)


def test_minidebuginfo(builds: dict[str, Path], tmp_path: Path) -> None:
    """Fedora's recipe (gdb manual, "MiniDebugInfo"): the function symbols missing from
    .dynsym go into an xz-compressed ELF file in .gnu_debugdata of the stripped file."""
    if shutil.which("xz") is None:
        pytest.fail("xz is not installed: run scripts/setup.sh (xz-utils)")
    src = builds["c-O2-rdynamic"]
    exe = copy(src, tmp_path / "prog")
    dynsyms = {line.split()[0] for line in run(
        "nm", "-D", "--format=posix", "--defined-only", str(exe)).splitlines()}
    funcsyms = {p[0] for p in (line.split() for line in run(
        "nm", "--format=posix", "--defined-only", str(exe)).splitlines())
        if p[1] in ("T", "t", "D")}
    keep = tmp_path / "keep_symbols"
    keep.write_text("".join(f"{n}\n" for n in sorted(funcsyms - dynsyms)))
    debug, mini = tmp_path / "debug", tmp_path / "mini_debuginfo"
    run("objcopy", "--only-keep-debug", str(exe), str(debug))
    run("objcopy", "-S", "--remove-section", ".gdb_index", "--remove-section", ".comment",
        f"--keep-symbols={keep}", str(debug), str(mini))
    run("strip", "--strip-all", "-R", ".comment", str(exe))
    run("xz", str(mini))
    run("objcopy", f"--add-section=.gnu_debugdata={mini}.xz", str(exe))
    es = load(exe, debug_dirs=())
    assert es.sources == [".dynsym", ".gnu_debugdata"]
    assert "static_helper" in keep.read_text() and "main" not in keep.read_text()
    # Every function that was in .symtab is named again.
    check_against_addr2line(es, str(src), tmp_path)
    # A corrupt section costs only its own symbols.
    blob = bytearray(exe.read_bytes())
    with open(exe, "rb") as f:
        sec = ELFFile(f).get_section_by_name(".gnu_debugdata")
        off = sec["sh_offset"]
    blob[off + 40:off + 60] = bytes(20)
    bad = tmp_path / "bad"
    bad.write_bytes(bytes(blob))
    es2 = load(bad, debug_dirs=())
    assert es2.sources == [".dynsym"] and es2.errors
    main = next(s for s in function_symbols(str(src)) if s.name == "main")
    assert es2.lookup(main.value) == ("main", 0)


def test_damaged_symtab_costs_only_itself(builds: dict[str, Path], tmp_path: Path) -> None:
    src = str(builds["c-O2-rdynamic"])
    with open(src, "rb") as f:
        elf = ELFFile(f)
        shoff, shentsize = elf["e_shoff"], elf["e_shentsize"]
        index = next(i for i, s in enumerate(elf.iter_sections()) if s.name == ".symtab")
    blob = bytearray(Path(src).read_bytes())
    offset_at = shoff + index * shentsize + 24        # Elf64_Shdr.sh_offset
    blob[offset_at:offset_at + 8] = (1 << 40).to_bytes(8, "little")
    bad = tmp_path / "bad"
    bad.write_bytes(bytes(blob))
    es = load(bad, debug_dirs=())
    assert es.sources == [".dynsym"]
    main = next(s for s in function_symbols(src) if s.name == "main")
    assert es.lookup(main.value + 1) == ("main", 1)


def test_live_vdso() -> None:
    """The vDSO of this process, read from memory like the capture side does."""
    with open("/proc/self/maps") as f:
        line = next(x for x in f if x.rstrip().endswith("[vdso]"))
    lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
    with open("/proc/self/mem", "rb") as f:
        f.seek(lo)
        image = f.read(hi - lo)
    es = ElfSymbols.load(ObjectFile.from_bytes(image, "[vdso]"))
    assert es.sources == [".dynsym"] and es.build_id
    syms = {s.name: s for s in function_symbols_from_image(image)}
    assert "__vdso_clock_gettime" in syms
    s = syms["__vdso_clock_gettime"]
    assert es.lookup(s.value + 2) == ("clock_gettime", 2)    # the weak public alias


def function_symbols_from_image(image: bytes) -> list[Sym]:
    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".so") as f:
        f.write(image)
        f.flush()
        return function_symbols(f.name, dynamic_only=True)


# -- committed targets (x86_64 and aarch64, three toolchains) ------------------------

@pytest.mark.parametrize("path", quick_few(TARGET_FILES,
                                          lambda p: Path(p).parent.name.endswith("-O2")),
                         ids=lambda p: str(Path(p).relative_to(TARGETS)))
def test_targets_match_addr2line(path: str, tmp_path: Path) -> None:
    es = load(path, debug_dirs=())
    assert es.has_symbols
    named = check_against_addr2line(es, path, tmp_path)
    assert named >= 10
    if path.endswith("prog"):
        main = next(s for s in function_symbols(path) if s.name == "main")
        assert es.lookup(main.value + 4) == ("main", 4)


# -- kernel ---------------------------------------------------------------------------

def test_kallsyms_live() -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root to see /proc/kallsyms addresses (CI runs as root)")
    ks = KernelSymbols.load()
    assert ks.available, ks.reason
    rows = []
    with open("/proc/kallsyms") as f:
        for line in f:
            p = line.split()
            rows.append((int(p[0], 16), p[1], p[2], p[3].strip("[]") if len(p) > 3 else ""))
    assert any(r[0] for r in rows)
    starts = sorted({r[0] for r in rows if r[1] not in "aA"})
    names_at: dict[int, list[tuple[str, str, str]]] = {}
    for addr, t, name, mod in rows:
        names_at.setdefault(addr, []).append((t, name, mod))
    text = [a for a in starts[:-1] if all(t in "tTwW" for t, _, _ in names_at[a])]
    assert len(text) > 10000
    step = max(1, len(text) // 3000)
    checked = 0
    for addr in text[::step]:
        end = starts[bisect.bisect_right(starts, addr)]
        names = {n for _, n, _ in names_at[addr]}
        hit = ks.lookup(addr)
        assert hit is not None and hit[0] in names and hit[1] == 0, (hex(addr), hit, names)
        last = ks.lookup(end - 1)
        assert last == (hit[0], end - 1 - addr), (hex(addr), last)
        assert ks.module(addr) == names_at[addr][0][2]
        checked += 1
    assert checked > 1000
    # Core kernel entry points by name.
    by_name = {name: addr for addr, t, name, _ in rows if t in "tT"}
    for fn in ("schedule", "do_syscall_64", "vfs_read"):
        if fn in by_name:
            got = ks.lookup(by_name[fn] + 1)
            assert got is not None and got[1] == 1


def test_kallsyms_hidden_addresses(tmp_path: Path) -> None:
    path = tmp_path / "kallsyms"
    path.write_text("0000000000000000 T _text\n0000000000000000 T schedule\n"
                    "0000000000000000 t ext4_read [ext4]\n")
    ks = KernelSymbols.load(str(path))
    assert not ks.available and "hidden" in ks.reason
    assert ks.lookup(0) is None and ks.lookup(0xFFFFFFFF81000000) is None
    missing = KernelSymbols.load(str(tmp_path / "nope"))
    assert not missing.available and "cannot read" in missing.reason


def test_kallsyms_synthetic(tmp_path: Path) -> None:
    path = tmp_path / "kallsyms"
    path.write_text(
        "0000000000000000 A fixed_percpu_data\n"
        "ffffffff81000000 T _text\n"
        "ffffffff81000000 T startup_64\n"
        "ffffffff81000100 t __pfx_helper\n"
        "ffffffff81000110 t helper\n"
        "ffffffff81000200 D some_data\n"
        "ffffffff81000300 W weak_fn\n"
        "ffffffffc0000000 t mod_init\t[mymod]\n"
        "ffffffffc0000040 T mod_exit\t[mymod]\n"
        "ffffffffa0000000 t bpf_prog_0123456789abcdef_handler\t[bpf]\n"
        "garbage line\n")
    ks = KernelSymbols.load(str(path))
    assert ks.available
    assert ks.lookup(0xFFFFFFFF81000000) == ("startup_64", 0)     # fewer underscores
    assert ks.lookup(0xFFFFFFFF810000FF) == ("startup_64", 0xFF)
    assert ks.lookup(0xFFFFFFFF81000105) == ("__pfx_helper", 5)
    assert ks.lookup(0xFFFFFFFF81000150) == ("helper", 0x40)
    assert ks.lookup(0xFFFFFFFF81000250) is None                  # in data
    assert ks.lookup(0xFFFFFFFF81000301) == ("weak_fn", 1)
    assert ks.lookup(0xFFFFFFFFA0000010) == ("bpf_prog_0123456789abcdef_handler", 0x10)
    assert ks.module(0xFFFFFFFFA0000010) == "bpf"
    assert ks.lookup(0xFFFFFFFFC0000041) == ("mod_exit", 1)
    assert ks.module(0xFFFFFFFFC0000041) == "mymod"
    assert ks.module(0xFFFFFFFF81000001) == ""
    assert ks.lookup(0xFFFFFFFFC0000040 + 4096) is None            # past the last symbol
    assert ks.lookup(0x1000) is None


# -- perf maps --------------------------------------------------------------------------

def test_perf_map(tmp_path: Path) -> None:
    pid = 424242
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / f"perf-{pid}.map").write_text(
        "7f0000001000 40 LazyCompile:*foo /app/x.js:3\n"
        "0x7f0000001040 0x20 Builtin:ArgumentsAdaptorTrampoline\n"
        "7f0000002000 100 old_code\n"
        "7f0000002080 10 recompiled\n"          # later line wins where they overlap
        "7f0000003000 0 empty\n"
        "not a line\n"
        "7f0000004000 10 _ZN3foo3barEv\n")
    pm = PerfMap.load(pid, root=str(tmp_path))
    assert pm is not None and len(pm) == 5
    assert pm.lookup(0x7F0000001000) == ("LazyCompile:*foo /app/x.js:3", 0)
    assert pm.lookup(0x7F000000103F) == ("LazyCompile:*foo /app/x.js:3", 0x3F)
    assert pm.lookup(0x7F0000001050) == ("Builtin:ArgumentsAdaptorTrampoline", 0x10)
    assert pm.lookup(0x7F0000001060) is None
    assert pm.lookup(0x7F000000207F) == ("old_code", 0x7F)
    assert pm.lookup(0x7F0000002085) == ("recompiled", 5)
    assert pm.lookup(0x7F0000002090) == ("old_code", 0x90)
    assert pm.lookup(0x7F0000003000) is None
    assert pm.lookup(0x7F0000004001) == ("foo::bar()", 1)
    assert PerfMap.load(pid + 1, root=str(tmp_path)) is None


def test_perf_map_many_overlaps_match_brute_force(tmp_path: Path) -> None:
    import random
    rng = random.Random(7)
    entries = [(rng.randrange(0, 4000), rng.randrange(1, 300), f"f{i}") for i in range(400)]
    pid = 777
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / f"perf-{pid}.map").write_text(
        "".join(f"{s:x} {n:x} {name}\n" for s, n, name in entries))
    pm = PerfMap.load(pid, root=str(tmp_path))
    assert pm is not None
    for addr in range(0, 4400):
        want = None
        for s, n, name in entries:          # the last line covering addr
            if s <= addr < s + n:
                want = (name, addr - s)
        assert pm.lookup(addr) == want, addr


# -- performance ----------------------------------------------------------------------

def test_libc_load_and_lookup_speed(capsys: pytest.CaptureFixture[str]) -> None:
    t0 = time.perf_counter()
    obj = ObjectFile.open(LIBC)
    t1 = time.perf_counter()
    es = ElfSymbols.load(obj, debug_dirs=())
    t2 = time.perf_counter()
    syms = function_symbols(LIBC, dynamic_only=True)
    addrs = [s.value + s.size // 2 for s in syms] * 20
    t3 = time.perf_counter()
    for a in addrs:
        es.lookup(a)
    t4 = time.perf_counter()
    per = (t4 - t3) / len(addrs)
    with capsys.disabled():
        print(f"\nlibc: open {1e3 * (t1 - t0):.1f} ms, symbols {1e3 * (t2 - t1):.1f} ms "
              f"({len(es)} functions), lookup {1e6 * per:.2f} us ({len(addrs)} lookups)")
    assert t2 - t1 < 1.0 and per < 50e-6
