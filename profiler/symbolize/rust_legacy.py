"""Rust legacy symbol demangling.

Legacy names are Itanium-shaped (``_ZN<len><ident>...17h<16 hex>E``).  They are split
into their path components here (no libstdc++ needed), the trailing ``h<hash>``
component is dropped and rustc's ``$LT$``/``$u20$``/``..`` escapes are undone, as
rustfilt does by default.
"""

from __future__ import annotations

import re

__all__ = ["demangle_rust_legacy"]

_LEGACY_ESCAPES = {
    "SP": "@", "BP": "*", "RF": "&", "LT": "<", "GT": ">", "LP": "(", "RP": ")", "C": ",",
}
_LEGACY_HASH = re.compile(r"h[0-9a-f]{16}")
_LEGACY_ESCAPE = re.compile(r"\$([A-Z]{1,2}|u[0-9a-f]{1,6})\$")


def _legacy_component(ident: str) -> str | None:
    """One legacy path component with rustc's escapes undone (None if malformed)."""
    if ident.startswith("_$"):
        ident = ident[1:]
    out: list[str] = []
    i = 0
    while i < len(ident):
        c = ident[i]
        if c == "$":
            m = _LEGACY_ESCAPE.match(ident, i)
            if m is None:
                return None
            code = m.group(1)
            if code[0] == "u" and len(code) > 1 and code not in _LEGACY_ESCAPES:
                value = int(code[1:], 16)
                if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                    return None
                out.append(chr(value))
            elif code in _LEGACY_ESCAPES:
                out.append(_LEGACY_ESCAPES[code])
            else:
                return None
            i = m.end()
        elif c == "." and ident.startswith("..", i):
            out.append("::")
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def demangle_rust_legacy(name: str) -> str | None:
    """A legacy Rust name without its hash, or None if `name` is not one."""
    if not name.startswith("_ZN"):
        return None
    pos = 3
    parts: list[str] = []
    n = len(name)
    while pos < n and name[pos] != "E":
        start = pos
        while pos < n and name[pos].isdigit():
            pos += 1
        if pos == start or name[start] == "0":
            return None
        length = int(name[start:pos])
        if pos + length > n:
            return None
        parts.append(name[pos:pos + length])
        pos += length
    if pos >= n or len(parts) < 2 or not _LEGACY_HASH.fullmatch(parts[-1]):
        return None
    rest = name[pos + 1:]
    if rest and not rest.startswith("."):     # ".llvm.123..." and similar suffixes
        return None
    shown: list[str] = []
    for ident in parts[:-1]:
        comp = _legacy_component(ident)
        if comp is None:
            return None
        shown.append(comp)
    return "::".join(shown)
