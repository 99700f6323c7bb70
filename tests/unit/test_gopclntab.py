"""The Go function table reader (profiler.unwind.golang) against independent oracles.

The Go test programs (tests/wild/src/go) are built by scripts/wild/build_go.sh with
the host's Go 1.19 and the Debian Go 1.23 and 1.24 toolchains (scripts/wild/fetch_go.sh)
for amd64 and arm64, with DWARF and stripped; the builds are cached under
build/go-wild/<hash of sources, scripts and host toolchain>.  Oracles:

* function entries, ends and names: ``go tool nm -size``;
* file:line: ``go tool objdump`` (its file:line column, and the TEXT line's path);
* pcsp: the .debug_frame the Go linker writes for the DWARF build (read by
  profiler.unwind.cfi), at every instruction start ``go tool objdump`` lists;
* goexit's planted return address: goexit's second instruction in the disassembly.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from functools import cache
from pathlib import Path

import pytest
from helpers.marks import quick_few
from helpers.paths import REPO
from helpers.proc import run_ok

from profiler.symbolize.symbols import ElfSymbols
from profiler.unwind import rules as R
from profiler.unwind.golang.frames import FP_BODY, OUTERMOST, GoFrames
from profiler.unwind.golang.locate import find_pclntab
from profiler.unwind.golang.pclntab import FLAG_TOPFRAME, GoPclnError, Pclntab
from profiler.unwind.objfile import ObjectFile
from profiler.unwind.rules import rule_shape

SRC = REPO / "tests" / "wild" / "src" / "go"
SCRIPTS = REPO / "scripts" / "wild"
TOOLCHAINS = ("host", "1.23", "1.24")
ARCHES = ("amd64", "arm64")
PROGRAMS = ("goroutines", "cgo")


def _host_amd64(case: tuple[str, ...]) -> bool:
    """The build the quick loop checks: the host Go's amd64 one (of goroutines)."""
    return case[:2] == ("host", "amd64") and case[2:] in ((), ("goroutines",))


CASES = quick_few([(t, a, p) for t in TOOLCHAINS for a in ARCHES for p in PROGRAMS],
                  _host_amd64)
ARCH_CASES = quick_few([(t, a) for t in TOOLCHAINS for a in ARCHES], _host_amd64)
_Insn = tuple[int, str, int, str]


def _run(cmd: list[str], env: dict[str, str] | None = None) -> str:
    return run_ok(*cmd, env=env, tail=3000)


@cache
def goroots() -> dict[str, str]:
    """{toolchain key: GOROOT}: the host's go, and the fetched Debian toolchains."""
    host = _run(["go", "env", "GOROOT"]).strip()
    fetched = _run([str(SCRIPTS / "fetch_go.sh"), "1.23", "1.24"]).split()
    assert len(fetched) == 2, f"fetch_go.sh printed {fetched}"
    return {"host": host, "1.23": fetched[0], "1.24": fetched[1]}


def _go(key: str) -> str:
    return os.path.join(goroots()[key], "bin", "go")


@cache
def build_dir() -> Path:
    """The cached builds of every program, toolchain, architecture and variant."""
    h = hashlib.sha256()
    for path in sorted(SRC.rglob("*")) + [SCRIPTS / "build_go.sh", SCRIPTS / "fetch_go.sh"]:
        if path.is_file():
            h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    roots = goroots()
    h.update(" ".join(roots[k] for k in TOOLCHAINS).encode())
    h.update(_run(["go", "version"]).encode())
    out = REPO / "build" / "go-wild" / h.hexdigest()[:16]
    if not (out / "DONE").exists():
        _run([str(SCRIPTS / "build_go.sh"), str(out)] + [roots[k] for k in TOOLCHAINS])
        (out / "DONE").write_text("ok\n")
    return out


@cache
def version_of(key: str) -> str:
    return _run([_go(key), "env", "GOVERSION"], env={**os.environ, "GOROOT": goroots()[key],
                                                       "GOTOOLCHAIN": "local"}).strip()


def binary(key: str, arch: str, prog: str, stripped: bool = False, pie: bool = False) -> Path:
    suffix = ".stripped" if stripped else ".pie" if pie else ""
    path = build_dir() / version_of(key) / arch / (prog + suffix)
    assert path.is_file(), f"build_go.sh did not produce {path}"
    return path


@cache
def obj(key: str, arch: str, prog: str, stripped: bool = False, pie: bool = False) -> ObjectFile:
    o = ObjectFile.open(str(binary(key, arch, prog, stripped, pie)))
    assert o.gopclntab is not None, f"{o.name}: no .gopclntab found ({o.go_error})"
    return o


@cache
def nm(key: str, arch: str, prog: str, pie: bool = False) -> dict[int, tuple[int, str]]:
    """{address: (size, name without the ABI suffix)} of the sized text symbols."""
    out: dict[int, tuple[int, str]] = {}
    for line in _run([_go(key), "tool", "nm", "-size", "-sort", "address",
                      str(binary(key, arch, prog, pie=pie))]).splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4 and parts[2] in ("T", "t") and int(parts[1]):
            out[int(parts[0], 16)] = (int(parts[1]), parts[3].removesuffix(".abi0"))
    return out


@cache
def objdump(key: str, arch: str, prog: str) -> list[tuple[str, str, list[_Insn]]]:
    """[(function, source path, [(address, file base name, line, assembly)])] of
    every function."""
    funcs: list[tuple[str, str, list[_Insn]]] = []
    text = _run([_go(key), "tool", "objdump", str(binary(key, arch, prog))])
    for line in text.splitlines():
        if line.startswith("TEXT "):
            m = re.match(r"TEXT (.+)\(SB\) ?(.*)$", line)
            assert m, line
            funcs.append((m.group(1), m.group(2), []))
            continue
        m = re.match(r"\s+(\S+):(\d+)\s+0x([0-9a-f]+)\s+[0-9a-f]+\s+(.*)$", line)
        if m and funcs:
            funcs[-1][2].append((int(m.group(3), 16), m.group(1), int(m.group(2)),
                                 m.group(4).strip()))
    assert len(funcs) > 1000, f"objdump listed only {len(funcs)} functions"
    return funcs


def same_name(full: str, table_name: str) -> bool:
    """Whether a .gopclntab name stands for a symbol name: the linker writes the
    type arguments of generic (and some compiler-made) functions as "[...]", and
    `go tool nm` prints the middle dot of some compiler-made names as "."."""
    full, table_name = full.replace("\u00b7", "."), table_name.replace("\u00b7", ".")
    pattern = re.escape(table_name).replace(re.escape("[...]"), r"\[.*\]")
    return re.fullmatch(pattern, full) is not None


# -- the function table -------------------------------------------------------------


@pytest.mark.parametrize("pie", [False, True], ids=["exe", "pie"])
@pytest.mark.parametrize("key,arch,prog", CASES)
def test_functions_match_go_tool_nm(key: str, arch: str, prog: str, pie: bool) -> None:
    """Position-independent builds too: an externally linked one (cgo) has no
    .gopclntab section, its table is found inside .data.rel.ro."""
    o = obj(key, arch, prog, pie=pie)
    table = o.gopclntab
    assert table is not None
    if pie and prog == "cgo":
        assert o.elf.find_section(".gopclntab") is None
    syms = nm(key, arch, prog, pie)
    funcs = table.functions()
    align = 32 if arch == "amd64" else 16
    for fn in funcs:
        assert fn.entry in syms, f"{fn.name} at {fn.entry:#x}: no symbol there"
        size, name = syms[fn.entry]
        assert same_name(name, fn.name), f"{fn.entry:#x}: nm says {name}, table: {fn.name}"
        assert size <= fn.end - fn.entry < size + align, \
            f"{fn.name}: table extent {fn.end - fn.entry}, nm size {size}"
    entries = {fn.entry for fn in funcs}
    inside = [a for a in syms if table.covers(a)]
    missing = [syms[a][1] for a in inside if a not in entries]
    assert not missing, f"text symbols not in the table: {missing[:10]}"
    assert len(funcs) == table.nfunc > 1000
    assert table.quantum == (1 if arch == "amd64" else 4)
    assert table.go120 == (key != "host")     # host go is 1.19: the 1.18 layout


@pytest.mark.parametrize("key,arch,prog", CASES)
def test_stripped_binary_has_the_same_table(key: str, arch: str, prog: str) -> None:
    full, stripped = obj(key, arch, prog), obj(key, arch, prog, True)
    assert stripped.elf.find_section(".symtab") is None, "not stripped"
    a, b = full.gopclntab, stripped.gopclntab
    assert a is not None and b is not None
    assert [(f.entry, f.end, f.name, f.funcid, f.flags) for f in a.functions()] == \
        [(f.entry, f.end, f.name, f.funcid, f.flags) for f in b.functions()]
    # -s -w does not move code: the rules agree at every function's entry and middle
    for fn in a.functions()[::7]:
        for pc in (fn.entry, (fn.entry + fn.end) // 2):
            assert full.lookup_rule(pc) == stripped.lookup_rule(pc)


@pytest.mark.parametrize("key,arch,prog", CASES)
def test_file_and_line_match_go_tool_objdump(key: str, arch: str, prog: str) -> None:
    o = obj(key, arch, prog, True)
    table = o.gopclntab
    assert table is not None
    checked = 0
    for name, path, insns in objdump(key, arch, prog):
        fn = table.lookup(insns[0][0]) if insns else None
        if fn is None or fn.entry != insns[0][0]:
            continue     # C code of the cgo program
        assert same_name(name.removesuffix(".abi0"), fn.name)
        if path and not path.startswith("<"):
            got = table.file_line(fn, fn.entry)
            assert got is not None and got[0] == path, f"{name}: {got} vs {path}"
        for addr, base, line, _asm in insns:
            got = table.file_line(fn, addr)
            if base.startswith("<") or base == "?":   # <autogenerated>, no position
                continue
            assert got is not None, f"{name} {addr:#x}: no line"
            assert (os.path.basename(got[0]), got[1]) == (base, line), \
                f"{name} {addr:#x}: {got} vs {base}:{line}"
            checked += 1
    assert checked > 50000


@pytest.mark.slow
@pytest.mark.parametrize("key,arch,prog", CASES)
def test_pcsp_matches_debug_frame(key: str, arch: str, prog: str) -> None:
    """At every instruction start of the Go text, the CFA from pcsp is the CFA of the
    linker's .debug_frame, and the rules the object hands the unwinder (method
    "gopclntab") agree with it except where they know more: the saved BP on amd64,
    the outermost functions, and the vDSO callers' bodies, where SP is on another
    stack and the frame pointer finds the frame."""
    o = obj(key, arch, prog)
    table, cfi = o.gopclntab, o.cfi
    assert table is not None and cfi is not None
    a64 = arch == "arm64"
    sp_reg = R.AARCH64_SP if a64 else R.X86_64_RSP
    compared = differ = 0
    for _name, _path, insns in objdump(key, arch, prog):
        for addr, _base, _line, _asm in insns:
            fn = table.lookup(addr)
            if fn is None:
                continue
            pcsp = table.pcsp(fn, addr)
            df = cfi.find(addr)
            assert df is not None, f"{fn.name} {addr:#x}: no .debug_frame row"
            assert pcsp is not None and (df.cfa_reg, df.cfa_off, df.cfa_deref) == \
                (sp_reg, pcsp + (0 if a64 else 8), False), \
                f"{fn.name} {addr:#x}: pcsp {pcsp}, .debug_frame {df}"
            rule, method = o.lookup_rule(addr)
            compared += 1
            if rule is None:
                # SPWRITE functions, and the few pcs where the return address has
                # been popped (pcsp < 0: vfork, the end of debugCallV2)
                assert method == "" and (fn.flags & 2 or pcsp < 0), f"{fn.name}: no rule"
                continue
            assert method == "gopclntab"
            if rule_shape(rule) == rule_shape(df):
                continue
            if fn.name in FP_BODY:    # from the frame pointer: tested on its own below
                assert rule.cfa_reg == (R.AARCH64_FP if a64 else R.X86_64_RBP)
                continue
            differ += 1
            if rule.ra_kind == R.LOC_UNDEFINED:     # goexit, mstart, rt0_go
                assert fn.flags & FLAG_TOPFRAME
                assert table.funcid_name(fn.funcid) in OUTERMOST
                continue
            if df.ra_kind == R.LOC_UNDEFINED:       # arm64: every TOPFRAME function
                assert fn.flags & FLAG_TOPFRAME and fn.name == "runtime.sigtramp"
                continue
            assert not a64, f"{fn.name} {addr:#x}: {rule} vs {df}"
            # amd64: the same but for the BP slot, which Go's .debug_frame leaves out
            assert rule._replace(fp_kind=R.LOC_SAME, fp_off=0) == df._replace(fp_off=0)
            assert (rule.fp_kind, rule.fp_off) == (R.LOC_CFA_DEREF, -16)
    assert compared > 100000
    if not a64:
        assert differ > compared // 2     # most amd64 pcs are past a BP save


@pytest.mark.parametrize("key,arch", ARCH_CASES)
def test_bp_is_saved_where_the_prologue_stores_it(key: str, arch: str) -> None:
    """The frame pointer rule starts right after the instruction that stores the
    caller's frame pointer, found in the disassembly."""
    o = obj(key, arch, "goroutines")
    for name, _path, insns in objdump(key, arch, "goroutines"):
        if not name.startswith("main."):
            continue
        store = next((a for a, _b, _l, asm in insns
                      if re.fullmatch(r"PUSHQ BP|MOVQ BP, 0x[0-9a-f]+\(SP\)", asm)), None)
        for i, (addr, _b, _l, _asm) in enumerate(insns):
            rule, _m = o.lookup_rule(addr)
            assert rule is not None
            if arch == "arm64":
                assert rule.fp_kind == R.LOC_SAME
                continue
            after = store is not None and addr > store and rule.cfa_off > 8
            assert (rule.fp_kind == R.LOC_CFA_DEREF) == after, \
                f"{name} {addr:#x} (insn {i}): {rule}"


@pytest.mark.parametrize("key,arch", ARCH_CASES)
def test_designed_return_is_goexit_plus_quantum(key: str, arch: str) -> None:
    o = obj(key, arch, "goroutines", True)
    goexit = [insns for name, _p, insns in objdump(key, arch, "goroutines")
              if name in ("runtime.goexit", "runtime.goexit.abi0")]
    assert len(goexit) == 1
    second = goexit[0][1][0]
    assert second == goexit[0][0][0] + (1 if arch == "amd64" else 4)
    assert o.designed_return(second)
    rule, _m = o.lookup_rule(second)
    assert rule is not None and rule.ra_kind == R.LOC_UNDEFINED
    others = [i[0] for _n, _p, insns in objdump(key, arch, "goroutines") for i in insns]
    assert sum(o.designed_return(a) for a in others) == 1
    assert not o.designed_return(second - 1) and not o.designed_return(second + 1)


@pytest.mark.parametrize("key,arch,prog", CASES)
def test_stripped_names_and_lines(key: str, arch: str, prog: str) -> None:
    stripped = obj(key, arch, prog, True)
    syms = ElfSymbols.load(stripped)
    assert ".gopclntab" in syms.sources
    table = stripped.gopclntab
    assert table is not None
    for addr, (size, name) in nm(key, arch, prog).items():
        if not table.covers(addr):
            continue
        got, off = syms.lookup(addr) or ("", -1)
        assert same_name(name, got) and off == 0, f"{addr:#x}: {got} for {name}"
        assert syms.lookup(addr + size - 1) == (got, size - 1)
    for name, _path, insns in objdump(key, arch, prog)[::50]:
        for addr, base, line, _asm in insns[::5]:
            if table.covers(addr) and not base.startswith("<"):
                got = syms.source_line(addr)
                assert got is not None and (os.path.basename(got[0]), got[1]) == (base, line)


# -- damaged tables -----------------------------------------------------------------


def _exercise(data: bytes, rng: random.Random) -> None:
    """Every query on a possibly damaged table: GoPclnError or an answer."""
    try:
        table = Pclntab(data, "t")
    except GoPclnError as exc:
        assert "\n" not in str(exc)
        return
    lo, hi = table.text_start, table.text_end
    for _ in range(12):
        pc = rng.randrange(lo - 16, hi + 16)
        try:
            fn = table.lookup(pc)
            if fn is None:
                continue
            table.pcsp(fn, pc)
            table.file_line(fn, pc)
            table.funcid_name(fn.funcid)
        except GoPclnError as exc:
            assert "\n" not in str(exc)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHES)
def test_damaged_tables_raise_the_error_class(arch: str) -> None:
    o = obj("1.24", arch, "goroutines", True)
    sec = o.elf.find_section(".gopclntab")
    assert sec is not None
    data = o.elf.section_data(sec)
    good = Pclntab(data, "t", o.gopclntab.text_start)  # type: ignore[union-attr]
    functab = good._functab_off
    rng = random.Random(1234)
    for i in range(3000):
        buf = bytearray(data)
        kind = i % 4
        if kind == 0:
            buf = buf[:rng.randrange(len(buf))]
        elif kind == 1:                  # the header
            for _ in range(rng.randrange(1, 4)):
                buf[rng.randrange(64)] ^= 1 << rng.randrange(8)
        elif kind == 2:                  # the functab
            for _ in range(rng.randrange(1, 8)):
                buf[functab + rng.randrange(good.nfunc * 8)] ^= 1 << rng.randrange(8)
        else:                            # function records and pc-value tables
            for _ in range(rng.randrange(1, 32)):
                buf[rng.randrange(functab, len(buf))] = rng.randrange(256)
        _exercise(bytes(buf), rng)


def test_damaged_table_in_an_object_is_a_reason_not_a_crash() -> None:
    """A .gopclntab damaged inside the ELF file: the object reports it (go_error)
    or answers rule lookups with a rule or none, never an exception."""
    path = binary("1.24", "amd64", "goroutines", True)
    raw = path.read_bytes()
    o = obj("1.24", "amd64", "goroutines", True)
    sec = o.elf.find_section(".gopclntab")
    assert sec is not None and o.gopclntab is not None
    funcs = o.gopclntab.functions()
    rng = random.Random(99)
    for i in range(60):
        buf = bytearray(raw)
        start = sec.sh_offset + (0 if i % 2 else o.gopclntab._functab_off)
        span = 256 if i % 2 else sec.sh_offset + sec.sh_size - start
        for _ in range(20):
            buf[start + rng.randrange(span)] = rng.randrange(256)
        damaged = ObjectFile.from_bytes(bytes(buf), "damaged")
        for fn in rng.sample(funcs, 20):
            rule, method = damaged.lookup_rule(fn.entry + 1)
            assert method in ("gopclntab", "", "eh_frame")
            damaged.function_range(fn.entry)
            damaged.designed_return(fn.entry)
        assert damaged.go_error is None or "\n" not in damaged.go_error


def test_a_table_without_section_headers_is_found_in_the_segments() -> None:
    """With the section headers gone (e_shnum = 0), the table is found by its magic
    in the read-only segment and decodes to the same functions."""
    path = binary("host", "amd64", "goroutines", True)
    raw = bytearray(path.read_bytes())
    raw[0x3C:0x3E] = b"\0\0"           # e_shnum
    raw[0x3E:0x40] = b"\0\0"           # e_shstrndx
    o = ObjectFile.from_bytes(bytes(raw), "noshdr")
    table = find_pclntab(o.elf, "noshdr")
    ref = obj("host", "amd64", "goroutines", True).gopclntab
    assert table is not None and ref is not None
    assert [f[:3] for f in table.functions()] == [f[:3] for f in ref.functions()]
    frames = GoFrames(table, "x86_64", o.read_code)
    fn = ref.by_name("main.level1")
    assert fn is not None and frames.rule(fn.entry + 20)[0] is not None


@pytest.mark.parametrize("key,arch", ARCH_CASES)
def test_cgo_switch_return_is_the_switching_call(key: str, arch: str) -> None:
    """asmcgocall calls C twice: after switching to the system stack (then its frame
    is the top of that stack) and on the `nosave` path, already on it.  By go tool
    objdump: the first call through a register or to asmcgocall_landingpad after
    `CALL gosave_systemstack_switch` is the switching one; only its return address
    ends a chain ("end"), every other pc of asmcgocall is "stop"."""
    o = obj(key, arch, "cgo")
    funcs = {name: i for name, _p, i in objdump(key, arch, "cgo")}
    # the assembly function (an ABIInternal wrapper of the same name may call it)
    insns = [funcs.get("runtime.asmcgocall.abi0") or funcs["runtime.asmcgocall"]]
    calls = [(n, asm) for n, (_a, _f, _l, asm) in enumerate(insns[0]) if asm.startswith("CALL")]
    save = next(k for k, (_n, asm) in enumerate(calls) if "gosave_systemstack_switch" in asm)
    into_c = [n for n, asm in calls[save + 1:]
              if "(R" in asm or asm.split()[1] in ("AX",) or "landingpad" in asm]
    assert len(into_c) == 2, calls
    want = insns[0][into_c[0] + 1][0]            # the return address of the first
    got = [a for a, _f, _l, _asm in insns[0] if o.go_stack_switch(a - 1) == "end"]
    assert got == [want], (hex(want), [hex(a) for a in got])
    assert o.go_stack_switch(insns[0][into_c[1] + 1][0] - 1) == "stop"


_SETS_FP = r"LEAQ 0x[0-9a-f]+\(SP\), BP|MOVQ SP, BP|SUB \$8, RSP, R29"
_RESTORES_FP = r"MOVQ 0x[0-9a-f]+\(SP\), BP|POPQ BP|LDP -8\(RSP\), \(R29, R30\)|MOVD -8\(RSP\), R29"


@pytest.mark.parametrize("key,arch", ARCH_CASES)
def test_vdso_callers_unwind_from_the_frame_pointer(key: str, arch: str) -> None:
    """runtime.nanotime1 switches SP to the system stack to call the vDSO: between the
    instruction that sets its frame pointer and the one that restores it (both found
    in go tool objdump's listing), its frame comes from the frame pointer, with the
    frame size pcsp gives; elsewhere in it (prologue, epilogue) SPWRITE gives no rule
    but at the entry."""
    o = obj(key, arch, "goroutines")
    insns = next(i for name, _p, i in objdump(key, arch, "goroutines")
                 if name == "runtime.nanotime1.abi0")
    sets = [a for a, _b, _l, asm in insns if re.fullmatch(_SETS_FP, asm)]
    restores = [a for a, _b, _l, asm in insns if re.fullmatch(_RESTORES_FP, asm)]
    assert len(sets) == 1 and len(restores) == 1, (sets, restores)
    after_set = next(a for a, _b, _l, _asm in insns if a > sets[0])
    # and nothing in between writes the frame pointer (the rule's premise)
    writes = [asm for a, _b, _l, asm in insns if sets[0] < a < restores[0]
              and re.search(r", BP$|, R29$|\(R29, |, R29\)", asm)]
    assert not writes, writes
    size = max(v for _lo, _hi, v in o.go_frames.table.pcsp_rows(  # type: ignore[union-attr]
        o.go_frames.table.lookup(insns[0][0])))  # type: ignore[union-attr]
    inside = 0
    for addr, _b, _l, asm in insns[1:]:
        rule, _m = o.lookup_rule(addr)
        if after_set <= addr < restores[0]:
            inside += 1
            assert rule is not None, f"{addr:#x} {asm}"
            if arch == "amd64":
                assert (rule.cfa_reg, rule.cfa_off, rule.ra_off, rule.fp_off) == \
                    (R.X86_64_RBP, 16, -8, -16), (hex(addr), rule)
            else:
                assert (rule.cfa_reg, rule.cfa_off, rule.ra_off, rule.fp_off) == \
                    (R.AARCH64_FP, size + 8, -size, -size - 8), (hex(addr), rule)
        else:
            assert rule is None, f"{addr:#x} {asm}: {rule}"
    assert inside > 20
