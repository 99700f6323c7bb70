"""Project-wide pytest configuration.

* ``--update-golden``: rewrite golden files instead of comparing against them.  Tests read
  it as ``request.config.update_golden`` (a bool).
* ``--slow``: also run the tests marked ``slow`` (the long property sweeps and oracle
  comparisons).  Without it, and without a ``-m`` expression, they are deselected, so
  that a plain ``pytest tests/unit`` is a quick loop; ``scripts/run_tests.sh`` (and so
  CI) always passes ``--slow``.  An explicit ``-m`` expression decides alone, e.g.
  ``-m slow`` runs only them.  A sweep over many inputs marks all but a few of its
  parameters slow (``helpers.marks.quick_few``).
* ``repo_root``: the repository root as a :class:`pathlib.Path`.

Shared helpers for the tests live in tests/helpers/ (on sys.path through the
``pythonpath`` setting in pyproject.toml): ``from helpers import ...``.

Nothing here skips tests: a ``bpf`` test that cannot run on this machine must fail (or
say why it skips in the test itself), never vanish quietly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.paths import REPO


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite golden files with the current output instead of comparing",
    )
    parser.addoption(
        "--slow",
        action="store_true",
        default=False,
        help="also run the tests marked slow (scripts/run_tests.sh always passes it)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.update_golden = bool(config.getoption("--update-golden"))  # type: ignore[attr-defined]


def _slow_left_out(config: pytest.Config) -> bool:
    return not config.getoption("--slow") and not config.option.markexpr


def pytest_report_header(config: pytest.Config) -> str | None:
    if _slow_left_out(config):
        return "slow tests deselected: pass --slow to run them (scripts/run_tests.sh does)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _slow_left_out(config):
        return
    slow = [i for i in items if i.get_closest_marker("slow") is not None]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [i for i in items if i.get_closest_marker("slow") is None]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (the directory holding pyproject.toml)."""
    return REPO
