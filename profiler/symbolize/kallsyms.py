"""Kernel symbols: /proc/kallsyms as sorted arrays, looked up by address.

Real addresses need root; all-zero addresses mean kptr_restrict hides them, and the
table then reports itself unavailable (with the reason).

The table (about 200,000 lines) is kept as a few flat arrays and one bytes object
(about 4 MB): every line is parsed and dropped at once.  Parsed into tuples with
one str per symbol, the transient objects and the surviving names shared the
interpreter's small-object arenas, and tens of megabytes of arenas stayed resident
after the parse -- in the agent, for months.

Lookups: non-text symbols end the text symbol before them; aliases at one address
keep the best-ranked name (text over data, global over local, fewer leading
underscores, shorter, then by name); the last symbol covers one page.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right

__all__ = ["KernelSymbols"]


_KERNEL_TEXT = frozenset(b"tTwW")
_KERNEL_LAST_SIZE = 4096   # kallsyms has no sizes; the last symbol gets one page


def _kernel_rank(stype: int, name: bytes) -> tuple[int, int, int, int, bytes]:
    return (0 if stype in _KERNEL_TEXT else 1, 0 if 65 <= stype <= 90 else 1,
            len(name) - len(name.lstrip(b"_")), len(name), name)


class KernelSymbols:
    """/proc/kallsyms as sorted arrays: starts, name offsets (-1: not text), modules."""

    def __init__(self, reason: str = "") -> None:
        self.reason = reason
        self._starts = array("Q")
        self._name_at = array("q")
        self._module_of = array("H")
        self._blob = b""
        self._modules: list[str] = [""]
        self.available = False

    @classmethod
    def load(cls, path: str = "/proc/kallsyms") -> KernelSymbols:
        try:
            with open(path, "rb") as f:
                return cls._parse(f, path)
        except OSError as exc:
            return cls(f"{path}: cannot read ({exc.strerror})")

    @classmethod
    def _parse(cls, lines: object, path: str) -> KernelSymbols:
        self = cls()
        starts, types = array("Q"), array("B")
        name_at, module_of = array("q"), array("H")
        blob = bytearray()
        modules: dict[bytes, int] = {b"": 0}
        hidden = True
        for line in lines:  # type: ignore[attr-defined]
            parts = line.split()
            if len(parts) < 3 or len(parts[1]) != 1:
                continue
            stype = parts[1][0]
            if stype in b"aA":
                continue
            try:
                addr = int(parts[0], 16)
            except ValueError:
                continue
            if not addr:
                continue
            hidden = False
            mod = b""
            if len(parts) > 3 and parts[3].startswith(b"[") and parts[3].endswith(b"]"):
                mod = parts[3][1:-1]
            mi = modules.get(mod)
            if mi is None:
                mi = modules[mod] = len(modules)
            starts.append(addr)
            types.append(stype)
            name_at.append(len(blob))
            blob += parts[2] + b"\0"
            module_of.append(mi)
        if hidden:
            return cls(f"{path}: no symbols, or addresses are hidden "
                       "(kernel.kptr_restrict, or not root)")
        n = len(starts)
        if any(starts[i] > starts[i + 1] for i in range(n - 1)):
            order = sorted(range(n), key=starts.__getitem__)
        else:
            order = range(n)    # type: ignore[assignment]
        raw = bytes(blob)
        out_blob = bytearray()
        i = 0
        while i < n:
            addr = starts[order[i]]
            j = i + 1
            while j < n and starts[order[j]] == addr:
                j += 1
            best = order[i]
            if j > i + 1:
                best = min((order[k] for k in range(i, j)),
                           key=lambda e: _kernel_rank(types[e], _kernel_name(raw, name_at[e])))
            self._starts.append(addr)
            self._module_of.append(module_of[best])
            if types[best] in _KERNEL_TEXT:
                self._name_at.append(len(out_blob))
                out_blob += _kernel_name(raw, name_at[best]) + b"\0"
            else:
                self._name_at.append(-1)
            i = j
        self._blob = bytes(out_blob)
        self._modules = [m.decode("utf-8", "replace") for m in modules]
        self.available = bool(self._starts)
        return self

    def _index(self, addr: int) -> int:
        i = bisect_right(self._starts, addr) - 1
        if i < 0 or self._name_at[i] < 0:
            return -1
        if i == len(self._starts) - 1 and addr >= self._starts[i] + _KERNEL_LAST_SIZE:
            return -1
        return i

    def lookup(self, addr: int) -> tuple[str, int] | None:
        """(symbol, offset) for a kernel text address, or None."""
        i = self._index(addr)
        if i < 0:
            return None
        return (_kernel_name(self._blob, self._name_at[i]).decode("utf-8", "replace"),
                addr - self._starts[i])

    def module(self, addr: int) -> str | None:
        """The module owning a kernel text address ("" for the kernel image), or None."""
        i = self._index(addr)
        return self._modules[self._module_of[i]] if i >= 0 else None

    def __len__(self) -> int:
        return len(self._starts)


def _kernel_name(blob: bytes, at: int) -> bytes:
    return blob[at:blob.index(b"\0", at)]
