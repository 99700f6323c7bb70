"""The quick loop's share of a sweep: parameters of which only some run without --slow.

A test that compares with an oracle over a family of inputs (every committed target,
every snapshot file, every toolchain) keeps a few of them in the quick loop (a bare
``pytest``) and marks the rest ``slow``; CI (scripts/run_tests.sh, --slow) runs all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


def quick_few(values: Iterable[T], keep: Callable[[T], bool]) -> list[Any]:
    """`values` as parameters, those `keep` rejects marked slow.  A tuple value stands
    for several argument names (``parametrize("a,b", ...)``)."""
    out: list[Any] = []
    for v in values:
        if keep(v):
            out.append(v)
        else:
            args = v if isinstance(v, tuple) else (v,)
            out.append(pytest.param(*args, marks=pytest.mark.slow))
    return out
