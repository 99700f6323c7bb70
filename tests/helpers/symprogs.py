"""The symbolizer's test programs (tests/data/symbolize/symprog.c and symprog.cpp),
built with the host's gcc and g++ in the variants the symbol tests need.  Built once a
session by the ``symprogs`` fixture (tests/unit/conftest.py) and shared by
test_symbolize and test_demangle."""

from __future__ import annotations

from pathlib import Path

from helpers.paths import DATA
from helpers.proc import run_ok

SRC = DATA / "symbolize"

# name: (compiler, source, flags)
BUILDS: dict[str, tuple[str, str, list[str]]] = {
    "c-O0": ("gcc", "symprog.c", ["-O0"]),
    "c-O2": ("gcc", "symprog.c", ["-O2"]),
    "c-O2-g": ("gcc", "symprog.c", ["-O2", "-g"]),
    "c-O2-rdynamic": ("gcc", "symprog.c", ["-O2", "-rdynamic"]),
    "cxx-O0": ("g++", "symprog.cpp", ["-O0"]),
    "cxx-O2": ("g++", "symprog.cpp", ["-O2"]),
    "cxx-O2-g": ("g++", "symprog.cpp", ["-O2", "-g"]),
    "cxx-O2-rdynamic": ("g++", "symprog.cpp", ["-O2", "-rdynamic"]),
}


def build_all(out: Path) -> dict[str, Path]:
    """Every build of BUILDS in `out`, by name."""
    paths = {}
    for key, (cc, src, flags) in BUILDS.items():
        path = out / key
        run_ok(cc, *flags, "-Wl,--build-id", "-o", str(path), str(SRC / src))
        paths[key] = path
    return paths
