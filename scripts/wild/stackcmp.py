"""Compare call chains from sframe-prof and from `perf record --call-graph dwarf`.

Shared by scripts/wild/live_panel.py, scripts/wild/bench_stack_size.py and
tests/integration/test_wild_live.py.  Both tools' frames are reduced to the same key by
one symbolizer of our own, so the comparison measures unwinding, not naming:

* a frame is (mapped file, file offset).  sframe-prof's pprof gives the address and its
  mapping (offset = address - start + file offset); `perf script` prints the file
  offset itself (perf's map_ip).  For every frame but the leaf, sframe-prof's address is
  the return address and perf's is the return address - 1, so 1 is taken from ours
  before the lookup and both land inside the calling function;
* the key is the function containing that offset, found with pyelftools in the file's
  .symtab and .dynsym, the separate debug file named by its build ID
  (/usr/lib/debug/.build-id) and, for functions no symbol names, the starts listed in
  .eh_frame_hdr (key ``module@0xSTART``).  Among names at one address the global,
  shortest, fewest-underscores one wins; ``@VERSION`` suffixes are cut; an unnamed
  ELF entry point (a stripped executable's) is ``_start``.  A file given
  a twin (a stripped Go binary and its DWARF build, whose text is byte-identical) is
  named from the twin.  C++ names stay mangled in keys (consistent on both sides) and
  are demangled with c++filt only for display;
* frames we cannot open (`[vdso]`, anonymous memory, perf's `[unknown]` dso) key as
  ``[unknown:MODULE]``; kernel frames and sframe-prof's synthetic ``[unreliable: ...]``
  frame are dropped (the comparison is of user chains).
"""

from __future__ import annotations

import bisect
import os
import re
import statistics
import subprocess
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

# The outermost frame of a complete user chain: the main thread, new threads, Go.
ROOTS = frozenset({
    "_start", "clone3", "__clone3", "clone", "__clone", "start_thread",
    "runtime.goexit", "runtime.goexit.abi0", "runtime.mstart", "runtime.mstart.abi0",
    "runtime.rt0_go", "runtime.rt0_go.abi0", "_rt0_amd64", "_rt0_amd64_linux",
})

Chain = tuple[str, ...]          # function keys, leaf first
K = TypeVar("K")


@dataclass
class Sampled:
    """One tool's samples of one run: chains (leaf first) with their counts."""
    tool: str
    chains: Counter[Chain] = field(default_factory=Counter)
    reliable: int = 0               # sframe-prof only: samples labelled reliable
    reasons: Counter[str] = field(default_factory=Counter)
    root_names: dict[str, frozenset[str]] = field(default_factory=dict)

    @property
    def samples(self) -> int:
        return sum(self.chains.values())


class FileSymbols:
    """Function starts of one ELF file, by virtual address, and its LOAD segments."""

    def __init__(self, path: str, label: str) -> None:
        self.label = label
        self.segments: list[tuple[int, int, int]] = []     # file offset, vaddr, size
        names: dict[int, set[tuple[bool, str]]] = {}
        self.sizes: dict[int, int] = {}
        with open(path, "rb") as f:
            elf = ELFFile(f)
            for seg in elf.iter_segments():
                if seg["p_type"] == "PT_LOAD":
                    self.segments.append((seg["p_offset"], seg["p_vaddr"], seg["p_filesz"]))
            self._symbols(elf, names)
            entry = elf.header["e_entry"]
            debug = _debug_file(elf)
            fde_starts = _eh_frame_hdr_starts(elf)
        if debug:
            with open(debug, "rb") as f:
                self._symbols(ELFFile(f), names)
        if entry and entry not in names:     # a stripped executable's _start
            names[entry] = {(True, "_start")}
        self.names = {a: min(v, key=_rank)[1] for a, v in names.items()}
        self.aliases = {a: frozenset(n for _g, n in v) for a, v in names.items()}
        self.sym_starts = sorted(self.names)
        self.starts = sorted(set(self.names) | set(fde_starts))

    def _symbols(self, elf: ELFFile, names: dict[int, set[tuple[bool, str]]]) -> None:
        for sec in elf.iter_sections():
            if not isinstance(sec, SymbolTableSection):
                continue
            for sym in sec.iter_symbols():
                kind = sym["st_info"]["type"]
                if kind not in ("STT_FUNC", "STT_GNU_IFUNC") or not sym["st_value"]:
                    continue
                if sym["st_shndx"] == "SHN_UNDEF" or not sym.name:
                    continue
                name = sym.name.split("@", 1)[0]
                names.setdefault(sym["st_value"], set()).add(
                    (sym["st_info"]["bind"] != "STB_LOCAL", name))
                self.sizes[sym["st_value"]] = max(self.sizes.get(sym["st_value"], 0),
                                                  sym["st_size"])

    def vaddr(self, file_offset: int) -> int | None:
        for off, va, size in self.segments:
            if off <= file_offset < off + size:
                return file_offset - off + va
        return None

    def function(self, file_offset: int) -> tuple[str, frozenset[str]]:
        """The symbol whose [start, start + size) holds the offset (a sizeless symbol:
        up to the next FDE start); else the FDE start at or below it."""
        va = self.vaddr(file_offset)
        if va is None:
            return f"[unknown:{self.label}]", frozenset()
        i = bisect.bisect_right(self.sym_starts, va) - 1
        j = bisect.bisect_right(self.starts, va) - 1
        if i >= 0:
            start = self.sym_starts[i]
            size = self.sizes.get(start, 0)
            if va < start + size or (size == 0 and self.starts[j] == start):
                return self.names[start], self.aliases[start]
        if j < 0:
            return f"[unknown:{self.label}]", frozenset()
        start = self.starts[j]
        if start in self.names:
            return self.names[start], self.aliases[start]
        return f"{self.label}@{start:#x}", frozenset()


def _rank(item: tuple[bool, str]) -> tuple[bool, int, int, str]:
    is_global, name = item
    return (not is_global, len(name) - len(name.lstrip("_")), len(name), name)


def _debug_file(elf: ELFFile) -> str | None:
    sec = elf.get_section_by_name(".note.gnu.build-id")
    if sec is None:
        return None
    for note in sec.iter_notes():  # type: ignore[attr-defined]
        if note["n_type"] == "NT_GNU_BUILD_ID":
            bid = str(note["n_desc"])
            path = f"/usr/lib/debug/.build-id/{bid[:2]}/{bid[2:]}.debug"
            return path if os.path.exists(path) else None
    return None


def _eh_frame_hdr_starts(elf: ELFFile) -> list[int]:
    """Initial locations of every FDE, from .eh_frame_hdr's binary-search table (only
    the usual encoding: datarel sdata4, 0x3b)."""
    sec = elf.get_section_by_name(".eh_frame_hdr")
    if sec is None:
        return []
    data = sec.data()
    if len(data) < 12 or data[0] != 1 or data[3] != 0x3B or data[2] != 0x03:
        return []
    count = int.from_bytes(data[8:12], "little")
    count = min(count, (len(data) - 12) // 8)
    base = sec["sh_addr"]
    return [base + int.from_bytes(data[12 + 8 * i:16 + 8 * i], "little", signed=True)
            for i in range(count)]


class Symbolizer:
    """Function keys for (path, file offset), one FileSymbols per file."""

    def __init__(self, twins: dict[str, str] | None = None) -> None:
        self.twins = twins or {}
        self._files: dict[str, FileSymbols | None] = {}
        self.aliases: dict[str, frozenset[str]] = {}

    def key(self, path: str, file_offset: int) -> str:
        label = os.path.basename(path) or path
        if path not in self._files:
            real = self.twins.get(path, path)
            try:
                self._files[path] = (FileSymbols(real, label)
                                     if path.startswith("/") else None)
            except Exception:   # noqa: BLE001 -- any unreadable file keys as unknown
                self._files[path] = None
        syms = self._files[path]
        if syms is None:
            return f"[unknown:{label}]"
        name, aliases = syms.function(file_offset)
        if aliases:
            self.aliases[name] = aliases
        return name


def read_sframe_prof(pprof: Path, sym: Symbolizer, pid: int | None = None) -> Sampled:
    """sframe-prof's pprof as user chains (kernel and synthetic frames dropped)."""
    from profiler.emit.pprof_read import read_pprof
    prof = read_pprof(str(pprof))
    out = Sampled("sframe-prof")
    for s in prof.samples:
        if pid is not None and s.labels.get("pid") != pid:
            continue
        n = s.values[0]
        keys: list[str] = []
        for f in s.frames:
            if f.is_kernel or f.synthetic:
                continue
            if f.mapping is None:
                keys.append("[unknown:?]")
                continue
            off = f.address - f.mapping.start + f.mapping.offset - (1 if keys else 0)
            keys.append(sym.key(f.mapping.path, off))
        out.chains[tuple(keys)] += n
        if s.labels.get("unwind") == "reliable":
            out.reliable += n
        else:
            out.reasons[str(s.labels.get("unwind_reason", "?"))] += n
    out.root_names = dict(sym.aliases)
    return out


_PERF_HEAD = re.compile(r"^\s*(\d+)/(\d+)\s*$")
_PERF_FRAME = re.compile(r"^\s+([0-9a-f]+)\s+\((.*)\)$")


def read_perf(data: Path, sym: Symbolizer, pid: int) -> Sampled:
    """`perf script` (no inlined frames, no debuginfod) as user chains of `pid`."""
    env = dict(os.environ, DEBUGINFOD_URLS="")
    run = subprocess.run(["perf", "script", "-i", str(data), "--no-inline",
                          "-F", "pid,tid,ip,dso"], capture_output=True, text=True,
                         env=env, timeout=600)
    if run.returncode != 0:
        raise RuntimeError(f"perf script failed: {run.stderr.strip()[:300]}")
    out = Sampled("perf")
    cur: list[str] | None = None
    for line in run.stdout.splitlines() + [""]:
        head = _PERF_HEAD.match(line)
        if head:
            cur = [] if int(head.group(1)) == pid else None
            continue
        frame = _PERF_FRAME.match(line)
        if frame and cur is not None:
            dso = frame.group(2)
            if dso.startswith("[kernel") or dso.endswith(".ko"):
                continue
            if dso.startswith("/"):
                cur.append(sym.key(dso, int(frame.group(1), 16)))
            else:
                cur.append(f"[unknown:{os.path.basename(dso)}]")
            continue
        if not line.strip() and cur is not None:
            out.chains[tuple(cur)] += 1
            cur = None
    out.root_names = dict(sym.aliases)
    return out


def reaches_root(chain: Chain, aliases: dict[str, frozenset[str]]) -> bool:
    if not chain:
        return False
    root = chain[-1]
    return root in ROOTS or bool(aliases.get(root, frozenset()) & ROOTS)


def root_share(s: Sampled) -> float:
    total = s.samples
    good = sum(n for c, n in s.chains.items() if reaches_root(c, s.root_names))
    return good / total if total else 0.0


def lengths(s: Sampled) -> tuple[float, float]:
    """Mean and median user chain length."""
    values = [len(c) for c, n in s.chains.items() for _ in range(n)]
    if not values:
        return 0.0, 0.0
    return statistics.fmean(values), float(statistics.median(values))


def tvd(a: Counter[K], b: Counter[K]) -> float:
    """Total variation distance between two count distributions (0 = same, 1 = disjoint)."""
    ta, tb = sum(a.values()), sum(b.values())
    if not ta or not tb:
        return 1.0
    keys = set(a) | set(b)
    return 0.5 * sum(abs(a.get(k, 0) / ta - b.get(k, 0) / tb) for k in keys)


def leaves(s: Sampled) -> Counter[str]:
    out: Counter[str] = Counter()
    for c, n in s.chains.items():
        out[c[0] if c else "[no user frame]"] += n
    return out


def relation(s: Sampled, ref: Sampled) -> Counter[str]:
    """For each chain of `s`: equal to one of `ref`'s, shorter (a proper leaf-first
    prefix of one, i.e. the same stack cut before the root), longer (one of `ref`'s is
    a proper prefix of it), or unmatched.  Counts in samples; "stops in F" counts the
    shorter ones by their outermost function."""
    full = set(ref.chains)
    prefixes = {c[:i] for c in full for i in range(1, len(c))}
    out: Counter[str] = Counter()
    for c, n in s.chains.items():
        if c in full:
            out["equal"] += n
        elif c in prefixes:
            out["shorter"] += n
            out["stops in " + (c[-1] if c else "?")] += n
        elif any(c[:i] in full for i in range(1, len(c))):
            out["longer"] += n
        else:
            out["unmatched"] += n
    return out


def top(counter: Counter[str], n: int) -> list[str]:
    return [k for k, _ in counter.most_common(n)]


def demangle(names: Iterable[str]) -> dict[str, str]:
    """Display names: C++ symbols demangled by c++filt (one run for all)."""
    names = list(dict.fromkeys(names))
    mangled = [n for n in names if n.startswith("_Z")]
    if not mangled:
        return {n: n for n in names}
    run = subprocess.run(["c++filt"], input="\n".join(mangled) + "\n", capture_output=True,
                         text=True, timeout=60)
    out = {n: n for n in names}
    if run.returncode == 0:
        out.update(zip(mangled, run.stdout.splitlines(), strict=False))
    return out


def summarize(sf: Sampled, pa: Sampled, pb: Sampled) -> dict[str, object]:
    """The panel's figures for one program (see live_panel.py for the columns)."""
    rel_sf, rel_b = relation(sf, pa), relation(pb, pa)
    sf_mean, sf_med = lengths(sf)
    pa_mean, pa_med = lengths(pa)
    return {
        "samples": sf.samples, "perf_a": pa.samples, "perf_b": pb.samples,
        "reliable": sf.reliable / sf.samples if sf.samples else 0.0,
        "root_sf": root_share(sf), "root_perf": root_share(pa), "root_perf_b": root_share(pb),
        "len_sf": (sf_mean, sf_med), "len_perf": (pa_mean, pa_med),
        "shorter_sf": rel_sf["shorter"] / sf.samples if sf.samples else 0.0,
        "shorter_b": rel_b["shorter"] / pb.samples if pb.samples else 0.0,
        "leaf_tvd": tvd(leaves(sf), leaves(pa)), "leaf_tvd_noise": tvd(leaves(pb), leaves(pa)),
        "stack_tvd": tvd(sf.chains, pa.chains), "stack_tvd_noise": tvd(pb.chains, pa.chains),
        "reasons": sf.reasons.most_common(4),
        "short_stops": [(k.removeprefix("stops in "), n) for k, n in rel_sf.most_common()
                        if k.startswith("stops in ")][:3],
    }


def format_pct(x: float) -> str:
    return f"{100 * x:5.1f}"


def rows_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)
