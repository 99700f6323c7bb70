"""The unwind memo (profiler.session.UnwindMemo) gives exactly the unwinder's chains.

Every ground-truth snapshot is unwound plainly and through the memo, then again with
one stack word changed -- at each offset the first unwind read, and at a few it did
not -- so the memo must both reuse chains (hits) and notice every relevant change.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from profiler.model import RawSample
from profiler.objfile import ObjectCache
from profiler.session import UnwindMemo
from profiler.snapshots import read_snapshots
from profiler.unwind import Unwinder

SNAPSHOTS = Path(__file__).parent.parent / "snapshots"
FILES = sorted(SNAPSHOTS.glob("*.jsonl.gz"))
EVERY = 7


def _flip(sample: RawSample, off: int) -> RawSample:
    stack = bytearray(sample.stack)
    stack[off] ^= 0x5A
    return dataclasses.replace(sample, stack=bytes(stack))


def _reads(unwinder: Unwinder, sample: RawSample, space: object) -> list[int]:
    offsets: list[int] = []
    unwinder.unwind(sample, space, offsets)  # type: ignore[arg-type]
    return sorted(set(offsets))


@pytest.mark.parametrize("path", FILES, ids=[p.name.split(".")[0] for p in FILES])
def test_memo_matches_the_unwinder(path: Path) -> None:
    unwinder = Unwinder(ObjectCache(str(SNAPSHOTS / "root")))
    memo = UnwindMemo(unwinder)
    checked = 0
    for _, _obj, s in list(read_snapshots(str(path)))[::EVERY]:
        space = unwinder.space_for(s)
        plain = unwinder.unwind(s, space)
        assert memo.unwind(s, space) == plain
        hits = memo.hits
        assert memo.unwind(s, space) == plain      # the same input again: reused
        assert memo.hits == hits + 1
        reads = _reads(unwinder, s, space)
        others = [o for o in range(0, len(s.stack) - 8, 8) if o not in reads][:3]
        for off in reads + others:
            v = _flip(s, off)
            assert memo.unwind(v, space) == unwinder.unwind(v, space), (path.name, off)
        checked += 1
    assert memo.enabled
    assert checked


@pytest.mark.parametrize("path", FILES, ids=[p.name.split(".")[0] for p in FILES])
def test_words_not_noted_do_not_change_the_chain(path: Path) -> None:
    """The words a walk reads but does not note (a saved FP no later rule uses, a
    register restored from a signal frame that no rule reads) must not matter: any
    change outside the noted words, up to well past the last of them, gives the same
    chain.  Both ends of each word are changed (its low and its high byte)."""
    unwinder = Unwinder(ObjectCache(str(SNAPSHOTS / "root")))
    skipped = changed = 0
    for _, _obj, s in list(read_snapshots(str(path)))[::EVERY]:
        space = unwinder.space_for(s)
        plain = unwinder.unwind(s, space)
        reads = _reads(unwinder, s, space)
        noted = {b for r in reads for b in range(r, r + 8)}
        end = min(len(s.stack), (max(reads) if reads else 0) + 512)
        for off in range(0, end - 7, 8):
            for b in (off, off + 7):
                if b in noted:
                    continue
                assert unwinder.unwind(_flip(s, b), space) == plain, (path.name, b)
                changed += 1
        skipped += len(noted)
    assert changed > skipped


def test_memo_turns_itself_off_when_reads_bypass_it() -> None:
    unwinder = Unwinder(ObjectCache(str(SNAPSHOTS / "root")))
    memo = UnwindMemo(unwinder)
    for _, _obj, s in read_snapshots(str(FILES[0])):
        result = unwinder.unwind(s)
        if len(result.frames) > 1:
            break
    # a multi-frame chain for which no stack read was noted: the unwinder reads the
    # stack some other way now, so nothing can be checked and the memo stops
    assert memo._check_for(result, []) is None
    assert not memo.enabled
    space = unwinder.space_for(s)
    assert memo.unwind(s, space) == unwinder.unwind(s, space)
    assert memo.hits == memo.misses == 0


def test_overlapping_reads_are_not_memoized() -> None:
    memo = UnwindMemo(Unwinder(ObjectCache()))
    fake = type("R", (), {"frames": ()})()
    assert memo._check_for(fake, [0, 4]) is None
    check = memo._check_for(fake, [16, 0, 16])
    assert check is not None and check.format == "<Q8xQ"
    assert memo.enabled
