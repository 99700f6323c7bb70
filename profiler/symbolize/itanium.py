"""C++ (Itanium ABI) demangling through libstdc++'s ``__cxa_demangle`` (ctypes).

Without libstdc++.so.6 nothing is demangled (demangle_itanium returns None).  GCC
clone suffixes (``.cold``, ``.isra.0``) are understood by ``__cxa_demangle`` itself
("[clone .cold]").  The library is bound on first use.
"""

from __future__ import annotations

import ctypes

__all__ = ["demangle_itanium"]


class _CxxAbi:
    """Lazily bound ``__cxa_demangle`` and the matching ``free``."""

    def __init__(self) -> None:
        self.loaded = False
        self.fn: ctypes._CFuncPtr | None = None  # type: ignore[name-defined]
        self.free: ctypes._CFuncPtr | None = None  # type: ignore[name-defined]

    def load(self) -> None:
        import ctypes.util  # (runs ldconfig; its import alone takes subprocess & co.)
        self.loaded = True
        path = ctypes.util.find_library("stdc++")
        if not path:
            return
        try:
            lib = ctypes.CDLL(path)
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            fn = lib["__cxa_demangle"]   # (attribute syntax would be name-mangled)
            free = libc["free"]
        except (OSError, AttributeError):
            return
        fn.restype = ctypes.c_void_p
        fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p,
                       ctypes.POINTER(ctypes.c_int)]
        free.restype = None
        free.argtypes = [ctypes.c_void_p]
        self.fn, self.free = fn, free


_CXXABI = _CxxAbi()


def demangle_itanium(name: str) -> str | None:
    """``__cxa_demangle(name)``, or None if it fails or libstdc++ is unavailable."""
    if not _CXXABI.loaded:
        _CXXABI.load()
    fn, free = _CXXABI.fn, _CXXABI.free
    if fn is None or free is None:
        return None
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None
    if b"\0" in raw:
        return None
    status = ctypes.c_int(-1)
    ptr = fn(raw, None, None, ctypes.byref(status))
    if not ptr:
        return None
    try:
        if status.value != 0:
            return None
        return ctypes.string_at(ptr).decode("utf-8", "replace")
    finally:
        free(ptr)
