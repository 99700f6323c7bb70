"""profiler.symbolize.demangle against c++filt (GNU binutils 2.40, libiberty) on real symbols.

`c++filt -i` (no "implementation details") is the reference: it prints std::string for
the Ss substitution like libstdc++'s __cxa_demangle, and hides Rust hashes and crate
disambiguators like rustfilt.  One known difference: libiberty writes every non-ASCII
char constant as '\\u{...}' and leaves a non-ASCII legacy escape ($ufc$) alone, where
rustc-demangle (and this module) print the character.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from helpers.paths import DATA as TEST_DATA
from helpers.proc import run_ok as run
from hypothesis import given, settings
from hypothesis import strategies as st

from profiler.symbolize.demangle import demangle
from profiler.symbolize.itanium import demangle_itanium
from profiler.symbolize.rust_legacy import demangle_rust_legacy
from profiler.symbolize.rust_v0 import demangle_rust_v0

DATA = TEST_DATA / "symbolize"
LIBSTDCXX = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6"


def cxxfilt(names: list[str]) -> list[str]:
    out = run("c++filt", "-i", stdin="".join(n + "\n" for n in names)).split("\n")
    assert len(out) == len(names) + 1 and out[-1] == ""
    return out[:-1]


def defined_names(path: str, *nm_args: str) -> list[str]:
    out = run("nm", "--defined-only", "--without-symbol-versions", *nm_args, path)
    return sorted({line.split()[-1] for line in out.splitlines() if len(line.split()) >= 3})


def compare(names: list[str], normalize: bool = False) -> None:
    expected = cxxfilt(names)
    bad = []
    for name, want in zip(names, expected, strict=True):
        if normalize:
            want = _unescape_chars(want)
        got = demangle(name)
        if got != want:
            bad.append(f"{name}\n   got  {got}\n   want {want}")
    assert not bad, f"{len(bad)} of {len(names)} differ:\n" + "\n".join(bad[:20])


def _unescape_chars(text: str) -> str:
    """libiberty's escapes for non-ASCII characters, written as rustc-demangle does."""
    def sub(m: re.Match[str]) -> str:
        c = chr(int(m.group(1), 16))
        return f"'{c}'" if c.isprintable() else m.group(0)

    def sub_legacy(m: re.Match[str]) -> str:
        return chr(int(m.group(1), 16))
    text = re.sub(r"'\\u\{([0-9a-f]+)\}'", sub, text)
    return re.sub(r"\$u([0-9a-f]{2,6})\$", sub_legacy, text)


# -- C++ --------------------------------------------------------------------------------

def test_libstdcxx_exports_match_cxxfilt() -> None:
    names = [n for n in defined_names(LIBSTDCXX, "-D") if n.startswith("_Z")]
    assert len(names) > 4000
    compare(names)
    assert demangle("_ZNKSs4sizeEv") == "std::string::size() const"


def test_cxx_program_symbols_match_cxxfilt(symprogs: dict[str, Path]) -> None:
    """Local, template, lambda and clone (.constprop/.isra/.cold) names of a real build
    (symprog.cpp at -O0 and -O2: helpers.symprogs)."""
    names: list[str] = []
    for key in ("cxx-O0", "cxx-O2"):
        names += [n for n in defined_names(str(symprogs[key])) if n.startswith("_Z")]
    names = sorted(set(names))
    assert any(".constprop." in n for n in names) and any(n.endswith(".cold") for n in names)
    compare(names)
    shown = {demangle(n) for n in names}
    assert "geo::Vec<double>::dot(geo::Vec<double> const&) const" in shown
    assert any(s.startswith("(anonymous namespace)::anon_fn(") for s in shown)
    assert any("{lambda(int)#1}" in s for s in shown)


def test_symbol_versions_kept() -> None:
    names = ["_ZN3foo3barEv@GLIBCXX_3.4", "_ZNKSs4sizeEv@@GLIBCXX_3.4",
             "_RNvC1a3foo@@V1", "_ZN4core3fmt5write17h0123456789abcdefE@V2", "_Zbad@V1",
             "malloc@@GLIBC_2.2.5"]
    assert [demangle(n) for n in names] == cxxfilt(names)
    assert demangle(names[1]) == "std::string::size() const@@GLIBCXX_3.4"


def test_itanium_failures_return_the_name() -> None:
    for name in ("_Z", "_Zbogus", "_ZN3foo", "_Z\udcff", "_Z3f\x00oov"):
        assert demangle_itanium(name) is None
        assert demangle(name) == name
    for name in ("main", "_start", "__libc_start_main", "", "Z3foov", "_", "_R"):
        assert demangle(name) == name


def test_results_are_cached() -> None:
    demangle.cache_clear()
    name = "_ZNSt6vectorIiSaIiEE9push_backERKi"
    first = demangle(name)
    hits = demangle.cache_info().hits
    assert demangle(name) is first
    assert demangle.cache_info().hits == hits + 1
    assert first == "std::vector<int, std::allocator<int> >::push_back(int const&)"


# -- Rust ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rust_symbols(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Defined symbols of tests/data/symbolize/mangling.rs built with v0 and legacy
    mangling (legacy needs -Z unstable-options since rustc made v0 the choice)."""
    if shutil.which("rustc") is None:
        pytest.skip("rustc is not installed")
    out = tmp_path_factory.mktemp("rust")
    src = str(DATA / "mangling.rs")
    env = dict(os.environ, RUSTC_BOOTSTRAP="1")
    v0, legacy = str(out / "v0"), str(out / "legacy")
    run("rustc", "-C", "symbol-mangling-version=v0", "-o", v0, src)
    run("rustc", "-Z", "unstable-options", "-C", "symbol-mangling-version=legacy",
        "-o", legacy, src, env=env)
    return {"v0": defined_names(v0), "legacy": defined_names(legacy)}


def test_rust_v0_matches_cxxfilt(rust_symbols: dict[str, list[str]]) -> None:
    names = [n for n in rust_symbols["v0"] if n.startswith("_R")]
    assert len(names) > 500
    assert all(demangle_rust_v0(n) is not None for n in names)
    compare(names, normalize=True)
    shown = {demangle(n) for n in names}
    for want in (
        "mangling::grüße",                                    # punycode identifier
        "mangling::char_const::<'λ'>",
        "mangling::signed_const::<-5>",
        "mangling::signed_const::<1000>",
        "mangling::bool_const::<true>",
        "mangling::const_generic::<300>",
        "<mangling::Wrapper<i64> as mangling::Shape>::area",
        "<mangling::Wrapper<(&str, f32)>>::show",
        "mangling::main::{closure#0}",
        "<[i32]>::sort_by::<mangling::main::{closure#1}>",
        "mangling::inner::deeper::leaf",
        "mangling::takes_dyn_iter",
    ):
        assert want in shown, want
    assert any("dyn mangling::Shape" in s for s in shown)
    assert any("{shim:vtable#0}" in s for s in shown)
    assert any("unsafe extern \"C\" fn(" in s for s in shown)


def test_rust_legacy_matches_cxxfilt(rust_symbols: dict[str, list[str]]) -> None:
    names = [n for n in rust_symbols["legacy"] if re.search(r"17h[0-9a-f]{16}E", n)]
    assert len(names) > 20
    assert all(demangle_rust_legacy(n) is not None for n in names)
    compare(names, normalize=True)
    shown = {demangle(n) for n in names}
    assert "mangling::grüße" in shown                       # gr$ufc$$udf$e
    assert "<mangling::Square as mangling::Shape>::area" in shown
    assert "mangling::Wrapper<T>::show" in shown
    assert "mangling::inner::deeper::leaf" in shown


# Built by hand from the grammar in the Rust v0 mangling RFC (2603).  Backref
# positions count from the first character after "_R".
V0_EXAMPLES = {
    "_RNvCs1234_7mycrate3foo": "mycrate::foo",
    "_RNvNtCs1234_7mycrate3foo3bar": "mycrate::foo::bar",
    "_RNvMC1aNtB2_3Foo3new": "<a::Foo>::new",
    "_RNvXC1aNtB2_3FooNtC1b5Trait4call": "<a::Foo as b::Trait>::call",
    "_RNvYNtC1a3FooNtC1b5Trait4call": "<a::Foo as b::Trait>::call",
    "_RNCNvC1a4main0": "a::main::{closure#0}",
    "_RNCNvC1a4mains_0": "a::main::{closure#1}",
    "_RNCNvC1a4mains0_0": "a::main::{closure#2}",
    "_RNSNvC1a4main6vtable": "a::main::{shim:vtable#0}",
    "_RINvC1a1fFG_RL0_hEuE": "a::f::<for<'a> fn(&'a u8)>",
    "_RINvC1a1fFG0_RL1_hRL0_tEuE": "a::f::<for<'a, 'b> fn(&'a u8, &'b u16)>",
    "_RINvC1a1fDNtC1b8Iteratorp4ItemmEL_E": "a::f::<dyn b::Iterator<Item = u32>>",
    "_RINvC1a1fDG_INtC1b2FnTRL0_hEEp6OutputuEL_E":
        "a::f::<dyn for<'a> b::Fn<(&'a u8,), Output = ()>>",
    "_RINvC1a1fDNtC1b1XNtC1b1YEL_E": "a::f::<dyn b::X + b::Y>",
    "_RINvC1a1fTRShOaPmEAhj3_E": "a::f::<(&[u8], *mut i8, *const u32), [u8; 3]>",
    "_RINvC1a1fTlEuzvE": "a::f::<(i32,), (), !, ...>",
    "_RINvC1a1fQeRL_dE": "a::f::<&mut str, &f64>",
    "_RINvC1a1fKpKb1_Kb0_Kc61_Kln5_Kj0_Ky2a_L_E": "a::f::<_, true, false, 'a', -5, 0, 42, '_>",
    "_RINvC1a1fFKCEuFUKCEuFhEmFK8C_unwindEuE":
        'a::f::<extern "C" fn(), unsafe extern "C" fn(), fn(u8) -> u32, extern "C-unwind" fn()>',
    "_RINvC1a1fNtB2_3FooB7_E": "a::f::<a::Foo, a::Foo>",           # path and type backrefs
    "_RNvCs1234_7mycrate3fooCs5678_5other": "mycrate::foo",      # instantiating crate
    "_RNvC1a3foo.llvm.1234": "a::foo",                             # vendor suffix
    "_RNqCs4fqI2P2rA04_11utf8_identsu30____7hkackfecea1cbdathfdh9hlq6y":
        "utf8_idents::საჭმელად_გემრიელი_სადილი",
    "_RNvC1au9gre_6ka8l": "a::grüße",                              # ascii "gre" + deltas
}


def test_rust_v0_hand_built_examples() -> None:
    for name, want in V0_EXAMPLES.items():
        assert demangle(name) == want, name
    # c++filt agrees on every one of them.
    assert cxxfilt(list(V0_EXAMPLES)) == list(V0_EXAMPLES.values())


LEGACY_EXAMPLES = {
    "_ZN4core3fmt5write17h0123456789abcdefE": "core::fmt::write",
    "_ZN71_$LT$Test$u20$$u2b$$u20$$u27$static$u20$as$u20$foo..Bar$LT$Test$GT$$GT$"
    "3bar17h930b740aa94f1d3aE": "<Test + 'static as foo::Bar<Test>>::bar",
    "_ZN12_$LT$i32$GT$3foo17h0123456789abcdefE": "<i32>::foo",
    "_ZN4core3ptr85drop_in_place$LT$std..rt..lang_start$LT$$LP$$RP$$GT$..$u7b$$u7b$closure"
    "$u7d$$u7d$$GT$17h0ca4b5e5c2d8eaabE":
        "core::ptr::drop_in_place<std::rt::lang_start<()>::{{closure}}>",
    "_ZN5alloc5slice29_$LT$impl$u20$$u5b$T$u5d$$GT$4sort17h0123456789abcdefE.llvm.42":
        "alloc::slice::<impl [T]>::sort",
    "_ZN3foo9$RF$$BP$x17h0123456789abcdefE": "foo::&*x",
    "_ZN3foo10a$C$b$SP$c17h0123456789abcdefE": "foo::a,b@c",
}


def test_rust_legacy_examples() -> None:
    for name, want in LEGACY_EXAMPLES.items():
        assert demangle(name) == want, name
    assert cxxfilt(list(LEGACY_EXAMPLES)) == list(LEGACY_EXAMPLES.values())
    # Without a hash, or with a malformed one, it is a C++ name.
    assert demangle("_ZN3foo3barE") == "foo::bar"
    assert demangle_rust_legacy("_ZN3foo3barE") is None
    assert demangle_rust_legacy("_ZN3foo17h0123456789abcdeE") is None      # 15 digits
    assert demangle_rust_legacy("_ZN3foo3$XX$17h0123456789abcdefE") is None


def test_rust_v0_unsupported_or_malformed_returns_the_name() -> None:
    for name in (
        "_R", "_RX", "_RNvC1a", "_RNvC5abc", "_RB_", "_RNvB_1a", "_R0NvC1a1f",
        "_RINvC1a1fKe3abc_E",            # structural constant (str): not decoded
        "_RINvC1a1fKb2_E",               # bool that is neither 0 nor 1
        "_RNvC1a1fZZZ",                  # trailing characters
        "_RINvC1a1fRL1_hE",              # lifetime bound by no binder
        "_RNvC1au3___",                  # empty punycode
        "_R" + "INvC1a1f" * 400 + "E" * 400,         # deeper than the limit
        "_RINvC1a1f" + "R" * 2000 + "hE",
    ):
        assert demangle_rust_v0(name) is None, name
        assert demangle(name) == name


@pytest.mark.slow
@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(["_R", "_RN", "_RI", "_ZN", "_Z"]),
       st.text(alphabet="0123456789_abcdefghjklmnopstuvxyzABCDEFGHIKLMNOPQRSTUVXY$.",
               max_size=60))
def test_never_raises(prefix: str, tail: str) -> None:
    out = demangle(prefix + tail)
    assert isinstance(out, str) and out
