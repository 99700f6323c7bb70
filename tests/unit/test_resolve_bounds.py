"""The Resolver's cache bounds (profiler.symbolize.resolve) and what they are measured
with: ElfSymbols.nbytes() against tracemalloc, ElfSymbols.estimate() against the
section sizes `readelf -SW` prints, perf maps and symbol tables across windows."""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from profiler.symbolize.resolve import TABLE_SHARE, Resolver
from profiler.symbolize.symbols import ElfSymbols
from profiler.unwind.objfile import ObjectFile

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
FILES = [LIBC, os.path.realpath(sys.executable), "/usr/lib/x86_64-linux-gnu/libstdc++.so.6"]


@pytest.mark.parametrize("path", FILES)
def test_nbytes_is_what_a_table_holds(path: str) -> None:
    obj = ObjectFile.open(path)
    ElfSymbols.load(obj, debug_dirs=())        # the object's own lazy reads happen here
    gc.collect()
    tracemalloc.start()
    try:
        table = ElfSymbols.load(obj, debug_dirs=())
        gc.collect()                           # the build's garbage is not the table
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(table) > 1000, path
    assert 0.8 * held <= table.nbytes() <= 1.25 * held, (path, table.nbytes(), held)


def _readelf_symbol_bytes(path: str) -> int:
    out = subprocess.run(["readelf", "-SW", path], capture_output=True, text=True,
                         check=True).stdout
    total = 0
    for line in out.splitlines():
        m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+(\S+)\s+\S+\s+\S+\s+([0-9a-f]+)\s", line)
        if m and m.group(1) in (".symtab", ".dynsym"):
            total += int(m.group(3), 16)
    return total


@pytest.mark.parametrize("path", FILES)
def test_estimate_counts_the_symbol_table_sections(path: str) -> None:
    size = _readelf_symbol_bytes(path)
    assert size > 0, f"readelf -SW {path}: no .symtab or .dynsym"
    obj = ObjectFile.open(path)
    assert ElfSymbols.estimate(obj) == 16 + 110 * (size // 24)
    # Estimated before anything is built; all entries count, not only functions, so
    # it does not fall short of the table that is then built.
    assert ElfSymbols.estimate(obj) >= ElfSymbols.load(obj, debug_dirs=()).nbytes()


def test_the_default_resolver_keeps_every_table() -> None:
    r = Resolver()
    objs = [ObjectFile.open(p) for p in FILES]
    tables = [r.symbols(o) for o in objs]
    assert all(t is not None for t in tables)
    r.end_window()                             # tables outlive a window
    assert [r.symbols(o) for o in objs] == tables
    assert not r.too_big and len(r.symbol_cache) == len(FILES)


def test_a_table_over_its_share_of_the_budget_is_not_built() -> None:
    obj = ObjectFile.open(LIBC)
    need = ElfSymbols.estimate(obj)
    small = Resolver(max_symbols=8, max_symbol_bytes=need * TABLE_SHARE - TABLE_SHARE)
    assert small.symbols(obj) is None and small.too_big == {obj.name}
    fits = Resolver(max_symbols=8, max_symbol_bytes=need * TABLE_SHARE)
    table = fits.symbols(obj)
    assert table is not None and not fits.too_big
    assert fits.symbol_cache.bytes == table.nbytes()


def test_the_byte_budget_evicts_the_least_recently_used_tables() -> None:
    path = FILES[1]
    objs = [ObjectFile.open(path) for _ in range(12)]     # one table per object
    budget = ElfSymbols.estimate(objs[0]) * TABLE_SHARE    # the most one table may claim
    r = Resolver(max_symbols=100, max_symbol_bytes=budget)
    tables = [r.symbols(o) for o in objs]
    assert all(t is not None for t in tables) and not r.too_big
    each = ElfSymbols.load(objs[0], debug_dirs=()).nbytes()
    kept = budget // each
    assert 1 < kept < len(objs), (budget, each)
    assert list(r.symbol_cache) == objs[-kept:]
    assert r.symbol_cache.bytes == kept * each <= budget
    r.drop_caches()
    assert len(r.symbol_cache) == 0 and r.symbol_cache.bytes == 0


def test_perf_maps_are_read_again_after_a_window(tmp_path: Path) -> None:
    pid = 4242
    (tmp_path / "tmp").mkdir()
    perf_map = tmp_path / "tmp" / f"perf-{pid}.map"
    perf_map.write_text("1000 100 jit_one\n")
    r = Resolver(root=str(tmp_path), kallsyms=None)
    pm = r.perf_map(pid)
    assert pm is not None and pm.lookup(0x1010) == ("jit_one", 0x10)
    perf_map.write_text("1000 100 jit_two\n")
    pm = r.perf_map(pid)
    assert pm is not None and pm.lookup(0x1010) == ("jit_one", 0x10)   # within the window
    r.end_window()
    pm = r.perf_map(pid)
    assert pm is not None and pm.lookup(0x1010) == ("jit_two", 0x10)


def test_kernel_locations_are_bounded_and_named_the_same() -> None:
    names = {0xFFFFFFFF81000000 + 16 * i: (f"k{i}", i) for i in range(10)}
    plain = Resolver(kernel_names=names)
    bounded = Resolver(kernel_names=names, max_kernel_locations=3)
    for _ in range(2):
        for pc in [*names, 0xFFFFFFFF90000000]:
            assert bounded.kernel_location(pc) == plain.kernel_location(pc)
    pc = next(iter(names))
    assert bounded.kernel_location(pc) is bounded.kernel_location(pc)
    # The default keeps nothing per address (as before the bounds were settings).
    assert plain.kernel_location(pc) is not plain.kernel_location(pc)
