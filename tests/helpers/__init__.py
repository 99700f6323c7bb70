"""Code shared by the tests, in one place (imported as ``helpers``: pyproject.toml puts
tests/ on sys.path for pytest).

* ``helpers.paths``: where the repository, the committed targets, snapshots and data
  are, and the arm64 sysroot (``arm64_sysroot()``);
* ``helpers.proc``: running a tool and asserting it succeeded, waiting for a condition;
* ``helpers.gdb_truth``: comparing an unwound chain with gdb's (the ground truth);
* ``helpers.disasm``: objdump's x86_64 instruction starts and branches (cached);
* ``helpers.live``: live profiling checks (require_live, pprof read back by
  ``go tool pprof -traces`` and by the project's reader);
* ``helpers.marks``: ``quick_few``, the quick loop's share of a parametrized sweep;
* ``helpers.symprogs``: the symbolizer's test programs (the ``symprogs`` session
  fixture of tests/unit/conftest.py builds them once).

Fixtures stay in the conftest.py files; these are plain functions and constants.
"""
