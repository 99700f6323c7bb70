#!/usr/bin/env python3
"""Fuzz the demangler (profiler.symbolize.demangle): C++ through __cxa_demangle, Rust legacy and
the Rust v0 decoder.  Symbol names come from the target's symbol tables.

Input: one symbol name (bytes decoded as the symbol reader decodes them: UTF-8 with
surrogateescape).  Seeds: mangled names from tests/data/symbolize and the test targets.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator

import common

with common.instrumented("profiler"):
    from profiler.symbolize.demangle import demangle
    from profiler.symbolize.itanium import demangle_itanium
    from profiler.symbolize.rust_legacy import demangle_rust_legacy
    from profiler.symbolize.rust_v0 import demangle_rust_v0

TARGET = "demangle"
MAX_LEN = 4096


def one_input(data: bytes) -> None:
    name = data.decode("utf-8", "surrogateescape")
    out = demangle(name)
    if not isinstance(out, str):
        raise common.InvariantError(f"demangle returned {type(out).__name__}")
    for fn in (demangle_rust_v0, demangle_rust_legacy):
        r = fn(name)
        if r is not None and not isinstance(r, str):
            raise common.InvariantError(f"{fn.__name__} returned {type(r).__name__}")
    if name.startswith("_Z") and "\0" not in name:
        demangle_itanium(name)


def seeds() -> Iterator[tuple[str, bytes]]:
    seen: set[bytes] = set()
    texts = [p.read_text(errors="replace") for p in sorted(
        (common.DATA / "symbolize").glob("*"))]
    texts += [p.read_text(errors="replace") for p in sorted(
        (common.REPO / "tests" / "unit").glob("test_demangle*.py"))]
    for text in texts:
        for m in re.findall(r"_[ZR][A-Za-z0-9_$.@]{3,200}", text):
            b = m.encode()
            if b not in seen:
                seen.add(b)
                yield f"name-{len(seen):04d}", b


if __name__ == "__main__":
    common.main(sys.modules[__name__])
