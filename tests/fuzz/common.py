"""Shared runner for the atheris harnesses in this folder.

Every harness module (``fuzz_<target>.py``) defines

* ``TARGET``: its name, also the name of its corpus folder ``corpus/<TARGET>/``;
* ``one_input(data: bytes) -> None``: feeds ``data`` to the parser under test.  It
  catches only the parser's own one-line error type (SFrameError, CfiError,
  ObjectError, CaptureError) and checks that message is one line; any other
  exception, a multi-line message or a broken invariant is a crash;
* ``seeds() -> Iterator[tuple[str, bytes]]``: (name, bytes) seed inputs built from the
  real fixtures (scripts/fuzz.py --seed writes them into the corpus folder);
* ``MAX_LEN``: the largest input libFuzzer should build.

and ends with ``if __name__ == "__main__": common.main(sys.modules[__name__])``.

Run one directly (libFuzzer flags pass through)::

    .venv/bin/python tests/fuzz/fuzz_sframe.py -runs=100000 build/fuzz/sframe \
        tests/fuzz/corpus/sframe

or all of them with scripts/fuzz.py.  Imported (by tests/unit/test_fuzz_ci.py) a
harness is plain Python: nothing is instrumented and ``one_input`` can replay a file.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CORPUS = HERE / "corpus"
DATA = REPO / "tests" / "data"
TARGETS = REPO / "tests" / "targets"
SNAPSHOTS = REPO / "tests" / "snapshots"

# The harness modules, in the order scripts/fuzz.py runs them.
HARNESSES = ("sframe", "cfi", "elf", "symbols", "capture", "unwind", "demangle")


class InvariantError(AssertionError):
    """A harness found the code under test breaking its contract (a crash)."""


def check_one_line(exc: BaseException) -> None:
    """The contract for every parser error: a non-empty one-line message."""
    msg = str(exc)
    if not msg or "\n" in msg:
        raise InvariantError(f"{type(exc).__name__} message is not one line: {msg!r}")


def instrumented(*packages: str) -> contextlib.AbstractContextManager[Any]:
    """Instrument the imports of `packages` for coverage when running as a fuzzer.

    Under pytest (or any import of a harness) this does nothing, so the modules are
    the ordinary ones.
    """
    main = sys.modules.get("__main__")
    fuzzing = main is not None and Path(getattr(main, "__file__", "") or "").name.startswith(
        "fuzz_")
    if not fuzzing:
        return contextlib.nullcontext()
    import atheris
    return atheris.instrument_imports(include=list(packages))


def corpus_files(target: str) -> list[Path]:
    d = CORPUS / target
    return sorted(p for p in d.iterdir() if p.is_file()) if d.is_dir() else []


def main(module: ModuleType) -> None:
    """libFuzzer entry: ``python fuzz_X.py [libFuzzer flags] [corpus dirs]``."""
    import atheris

    argv = list(sys.argv)
    if not any(a.startswith("-max_len=") for a in argv):
        argv.insert(1, f"-max_len={module.MAX_LEN}")
    one_input = module.one_input

    def test_one_input(data: bytes) -> None:
        one_input(data)

    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


def load_harness(name: str) -> ModuleType:
    """Import tests/fuzz/fuzz_<name>.py as a plain module (for tests and the runner)."""
    import importlib.util

    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    modname = f"fuzz_{name}"
    if modname in sys.modules:
        return sys.modules[modname]
    spec = importlib.util.spec_from_file_location(modname, HERE / f"{modname}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    spec.loader.exec_module(mod)
    return mod


def iter_seed_files(target: str) -> Iterator[tuple[str, bytes]]:
    for p in corpus_files(target):
        yield p.name, p.read_bytes()
