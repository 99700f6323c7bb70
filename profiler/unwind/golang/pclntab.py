"""Reader of the Go runtime's function table, `.gopclntab` (Go 1.18 and later).

The Go linker writes this table for the runtime's own tracebacks, so it is present
in every Go executable, also in ones stripped with ``-ldflags='-s -w'``.  It maps
each pc of the Go text to its function (entry, end, name, funcID, flags) and, through
compact "pc-value" tables, to the function's stack-pointer delta (pcsp), source file
(pcfile) and line (pcln).

Layout (little-endian; "word" is the pointer size from the header):

* header: magic (0xfffffff0: Go 1.18-1.19, 0xfffffff1: Go 1.20+), two zero bytes,
  pc quantum (1 on amd64, 4 on arm64), pointer size; then words: nfunc, nfiles,
  textStart, and the offsets (from the header) of funcnametab, cutab, filetab,
  pctab and functab;
* functab: nfunc (entryoff, funcoff) pairs of uint32 plus one final entryoff (the
  end of the text); entryoff is relative to textStart, funcoff to functab;
* _func at functab+funcoff: entryoff, nameoff, args, deferreturn, pcsp, pcfile,
  pcln, npcdata, cuOffset (uint32 each), [startLine int32, Go 1.20+], funcID,
  flag, pad, nfuncdata (one byte each);
* a pc-value table is a sequence of (zig-zag value delta, pc delta / quantum)
  varint pairs starting from value -1 at the entry, ended by a zero value delta.

Everything read is bounded by the table's size; a damaged table raises GoPclnError
with a one-line message (or a query returns None).
"""

from __future__ import annotations

import bisect
import struct
from array import array
from typing import NamedTuple

MAGIC_118 = 0xFFFFFFF0
MAGIC_120 = 0xFFFFFFF1

FLAG_TOPFRAME = 1
FLAG_SPWRITE = 2
FLAG_ASM = 4

MAX_FUNCS = 1 << 22          # functions accepted in one table
MAX_NAME = 1 << 16           # bytes of one function or file name
MAX_STEPS = 1 << 20          # pc-value pairs decoded for one query
MAX_ROWS_KEPT = 1024         # decoded pc-value tables kept per file
MAX_FUNCS_KEPT = 1 << 16     # decoded function records kept per file

# funcID numbering (runtime/symtab.go, later internal/abi/symtab.go).  Go 1.23 added
# corostart after cgocallback; which list a binary uses shows in runtime.goexit's id.
_FUNCIDS = ("normal", "abort", "asmcgocall", "asyncPreempt", "cgocallback",
            "debugCallV2", "gcBgMarkWorker", "goexit", "gogo", "gopanic",
            "handleAsyncEvent", "mcall", "morestack", "mstart", "panicwrap", "rt0_go",
            "runfinq", "runtime_main", "sigpanic", "systemstack", "systemstack_switch",
            "wrapper")
_FUNCIDS_123 = _FUNCIDS[:5] + ("corostart",) + _FUNCIDS[5:]


class GoPclnError(Exception):
    """The .gopclntab is damaged or of a layout this reader does not know."""


class GoFunc(NamedTuple):
    """One function of the table (link-time addresses)."""

    entry: int
    end: int
    name: str
    funcid: int
    flags: int
    slot: int      # position in the functab
    offset: int    # of its _func record in the table


def _err(name: str, msg: str) -> GoPclnError:
    """The error, on one line whatever a damaged name read from the table holds."""
    text = f"{name}: bad .gopclntab: {msg}"
    return GoPclnError("".join(c if c.isprintable() else "?" for c in text))


class Pclntab:
    """A decoded .gopclntab; `data` is the table from its header on."""

    def __init__(self, data: bytes, name: str = "", text_start: int | None = None) -> None:
        self.name = name
        self.data = data
        if len(data) < 8:
            raise _err(name, "truncated header")
        magic, pad1, pad2, quantum, ptrsize = struct.unpack_from("<IBBBB", data, 0)
        if magic not in (MAGIC_118, MAGIC_120):
            raise _err(name, f"unknown magic {magic:#x} (not Go 1.18 or later)")
        if pad1 or pad2 or quantum not in (1, 2, 4) or ptrsize not in (4, 8):
            raise _err(name, "malformed header")
        self.go120 = magic == MAGIC_120
        self.quantum = quantum
        self.ptrsize = ptrsize
        words = self._words(8, 8)
        nfunc, self.nfiles, hdr_text = words[0], words[1], words[2]
        self.header_text_start = hdr_text
        self.text_start = hdr_text if text_start is None else text_start
        size = len(data)
        for off in words[3:]:
            if off > size:
                raise _err(name, "a table offset points past its end")
        self._names_off, self._cutab_off, self._filetab_off, self._pctab_off = words[3:7]
        self._functab_off = words[7]
        if nfunc > MAX_FUNCS or self._functab_off + (2 * nfunc + 1) * 4 > size:
            raise _err(name, f"function table of {nfunc} entries runs past the end")
        if nfunc == 0:
            raise _err(name, "no functions")
        self.nfunc = nfunc
        ft = array("I")
        ft.frombytes(data[self._functab_off:self._functab_off + (2 * nfunc + 1) * 4])
        self._entries = ft[0::2]    # nfunc entry offsets plus the end of the text
        self._funcoffs = ft[1::2]
        prev = -1
        for e in self._entries:
            if e < prev:
                raise _err(name, "function entries out of order")
            prev = e
        self._func_size = 44 if self.go120 else 40
        self._funcid_names: tuple[str, ...] | None = None
        self._by_name: dict[str, int] | None = None
        self._rows: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
        self._funcs: dict[int, GoFunc] = {}

    def _words(self, pos: int, count: int) -> tuple[int, ...]:
        fmt = f"<{count}{'Q' if self.ptrsize == 8 else 'I'}"
        try:
            return struct.unpack_from(fmt, self.data, pos)
        except struct.error:
            raise _err(self.name, "truncated header") from None

    # -- functions ------------------------------------------------------------

    @property
    def text_end(self) -> int:
        return self.text_start + self._entries[-1]

    def covers(self, pc: int) -> bool:
        """Whether link-time `pc` is inside the Go text this table describes."""
        return self.text_start + self._entries[0] <= pc < self.text_end

    def find_index(self, pc: int) -> int | None:
        off = pc - self.text_start
        if off < self._entries[0] or off >= self._entries[-1]:
            return None
        i = bisect.bisect_right(self._entries, off, 0, self.nfunc) - 1
        return i if i >= 0 else None

    def func_at(self, index: int) -> GoFunc:
        """The function at functab position `index` (GoPclnError if its record is bad)."""
        fn = self._funcs.get(index)
        if fn is None:
            fn = self._read_func(index)
            if len(self._funcs) >= MAX_FUNCS_KEPT:
                self._funcs.clear()
            self._funcs[index] = fn
        return fn

    def _read_func(self, index: int) -> GoFunc:
        data = self.data
        off = self._functab_off + self._funcoffs[index]
        if off + self._func_size > len(data):
            raise _err(self.name, f"function record {index} runs past the end")
        entryoff, nameoff = struct.unpack_from("<Ii", data, off)
        if entryoff != self._entries[index]:
            raise _err(self.name, f"function record {index} disagrees with the functab")
        funcid, flags = struct.unpack_from("<BB", data, off + self._func_size - 4)
        start = self.text_start + entryoff
        end = self.text_start + self._entries[index + 1]
        return GoFunc(start, end, self._string(self._names_off, nameoff), funcid, flags,
                      index, off)

    def lookup(self, pc: int) -> GoFunc | None:
        """The function holding link-time `pc`, or None outside the Go text."""
        i = self.find_index(pc)
        return None if i is None else self.func_at(i)

    def functions(self) -> list[GoFunc]:
        return [self.func_at(i) for i in range(self.nfunc)]

    def by_name(self, name: str) -> GoFunc | None:
        """The first function called `name` (the table of names is built once)."""
        if self._by_name is None:
            table: dict[str, int] = {}
            for i in range(self.nfunc):
                table.setdefault(self.func_at(i).name, i)
            self._by_name = table
        found = self._by_name.get(name)
        return None if found is None else self.func_at(found)

    def funcid_name(self, funcid: int) -> str:
        """The runtime's name for a funcID ("goexit", "systemstack", ...)."""
        if self._funcid_names is None:
            goexit = self.by_name("runtime.goexit.abi0") or self.by_name("runtime.goexit")
            self._funcid_names = _FUNCIDS_123 if goexit is not None and \
                goexit.funcid == _FUNCIDS_123.index("goexit") else _FUNCIDS
        names = self._funcid_names
        return names[funcid] if funcid < len(names) else f"funcid-{funcid}"

    # -- pc-value tables ------------------------------------------------------

    def _field(self, fn: GoFunc, n: int) -> int:
        """The n-th uint32 field of fn's record (0: entryoff, 4: pcsp, 5: pcfile...)."""
        return struct.unpack_from("<I", self.data, fn.offset + 4 * n)[0]  # type: ignore[no-any-return]

    def pcvalue(self, table_off: int, fn: GoFunc, pc: int) -> int | None:
        """The value of the pc-value table at pctab+`table_off` in effect at `pc`."""
        rows = self.pcvalue_rows(table_off, fn)
        i = bisect.bisect_right(rows, (pc, 1 << 64)) - 1
        if i >= 0 and rows[i][0] <= pc < rows[i][1]:
            return rows[i][2]
        return None

    def pcvalue_rows(self, table_off: int, fn: GoFunc) -> list[tuple[int, int, int]]:
        """Every (start, end, value) row of one function's pc-value table (the last
        few tables decoded are kept)."""
        key = (table_off, fn.entry)
        rows = self._rows.get(key)
        if rows is None:
            rows = self._decode_rows(table_off, fn)
            if len(self._rows) >= MAX_ROWS_KEPT:
                self._rows.clear()
            self._rows[key] = rows
        return rows

    def _decode_rows(self, table_off: int, fn: GoFunc) -> list[tuple[int, int, int]]:
        if table_off == 0:
            return []
        data = self.data
        pos = self._pctab_off + table_off
        size = len(data)
        if pos >= size:
            raise _err(self.name, f"{fn.name}: pc-value table offset past the end")
        rows: list[tuple[int, int, int]] = []
        val, pc = -1, fn.entry
        quantum = self.quantum
        for _ in range(MAX_STEPS):
            uv, pos = _uvarint(data, pos, size, self.name)
            if uv == 0 and rows:
                return rows
            val += -((uv >> 1) + 1) if uv & 1 else uv >> 1
            delta, pos = _uvarint(data, pos, size, self.name)
            nxt = pc + delta * quantum
            if nxt > fn.end:
                raise _err(self.name, f"{fn.name}: pc-value table runs past the function")
            rows.append((pc, nxt, val))
            pc = nxt
        raise _err(self.name, f"{fn.name}: pc-value table too long")

    def pcsp(self, fn: GoFunc, pc: int) -> int | None:
        """Bytes the function has pushed/reserved below its entry SP at `pc`."""
        return self.pcvalue(self._field(fn, 4), fn, pc)

    def pcsp_rows(self, fn: GoFunc) -> list[tuple[int, int, int]]:
        return self.pcvalue_rows(self._field(fn, 4), fn)

    def file_line(self, fn: GoFunc, pc: int) -> tuple[str, int] | None:
        """(source file, line) of `pc` in `fn`, or None when the table has none."""
        fileno = self.pcvalue(self._field(fn, 5), fn, pc)
        line = self.pcvalue(self._field(fn, 6), fn, pc)
        if fileno is None or line is None or fileno < 0:
            return None
        cu = self._field(fn, 8)
        pos = self._cutab_off + 4 * (cu + fileno)
        if pos + 4 > len(self.data):
            raise _err(self.name, f"{fn.name}: file index past the CU table")
        fileoff = struct.unpack_from("<I", self.data, pos)[0]
        if fileoff == 0xFFFFFFFF:
            return None
        return self._string(self._filetab_off, fileoff), line

    def _string(self, base: int, off: int) -> str:
        data = self.data
        start = base + off
        if off < 0 or start >= len(data):
            raise _err(self.name, "a name offset points past the end")
        end = data.find(b"\0", start, start + MAX_NAME)
        if end < 0:
            raise _err(self.name, "an unterminated name")
        return data[start:end].decode("utf-8", "replace")


def _uvarint(data: bytes, pos: int, size: int, name: str) -> tuple[int, int]:
    value = shift = 0
    while shift < 35:
        if pos >= size:
            raise _err(name, "a pc-value table runs past the end")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
    raise _err(name, "an overlong varint")
