"""Project-wide pytest configuration.

* ``--update-golden``: rewrite golden files instead of comparing against them.  Tests read
  it as ``request.config.update_golden`` (a bool).
* ``repo_root``: the repository root as a :class:`pathlib.Path`.

Nothing here skips tests: a ``bpf`` test that cannot run on this machine must fail (or
say why it skips in the test itself), never vanish quietly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite golden files with the current output instead of comparing",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.update_golden = bool(config.getoption("--update-golden"))  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (the directory holding pyproject.toml)."""
    return REPO_ROOT
