"""Symbol demangling: C++ (Itanium ABI), Rust legacy and Rust v0, by the name's prefix.

* C++ names (``_Z...``): profiler.symbolize.itanium (libstdc++'s ``__cxa_demangle``);
  without libstdc++.so.6 they are returned unchanged.
* Rust legacy names (``_ZN...17h<hash>E``): profiler.symbolize.rust_legacy, tried
  before C++ (a legacy name is also a valid C++ name).
* Rust v0 names (``_R...``): profiler.symbolize.rust_v0.

A symbol version suffix (``foo@@LIB_1.0``) is kept after the demangled name.
``demangle()`` never raises; results are cached.
"""

from __future__ import annotations

import functools

from profiler.symbolize.itanium import demangle_itanium
from profiler.symbolize.rust_legacy import demangle_rust_legacy
from profiler.symbolize.rust_v0 import demangle_rust_v0

__all__ = ["demangle"]


@functools.lru_cache(maxsize=1 << 16)
def demangle(name: str) -> str:
    """The demangled form of `name`; `name` itself when it is not mangled or not understood."""
    at = name.find("@", 2)
    if at > 0 and name.startswith(("_Z", "_R")):     # symbol version: foo@@LIB_1.0
        base = demangle(name[:at])
        return name if base == name[:at] else base + name[at:]
    if name.startswith("_R"):
        return demangle_rust_v0(name) or name
    if name.startswith("_Z"):
        if name.startswith("_ZN"):
            legacy = demangle_rust_legacy(name)
            if legacy is not None:
                return legacy
        return demangle_itanium(name) or name
    return name
