"""Fixtures shared by the unit tests: expensive builds made once a session."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import symprogs as sp


@pytest.fixture(scope="session")
def symprogs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The symbolizer's test programs by name (helpers.symprogs.BUILDS); read only."""
    return sp.build_all(tmp_path_factory.mktemp("symprogs"))
