"""The unwind memo (profiler.unwind.memo.UnwindMemo) gives exactly the unwinder's chains.

Every ground-truth snapshot is unwound plainly and through the memo, then again with
one stack word changed -- at each offset the first unwind read, and at a few it did
not -- so the memo must both reuse chains (hits) and notice every relevant change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.marks import quick_few
from helpers.paths import SNAPSHOTS

from profiler.capture.snapshots import read_snapshots
from profiler.model import RawSample, UnwoundStack
from profiler.unwind import unwinder as unwind_mod
from profiler.unwind.memo import UnwindMemo
from profiler.unwind.objfile import ObjectCache
from profiler.unwind.unwinder import Unwinder

FILES = sorted(SNAPSHOTS.glob("*.jsonl.gz"))
# the quick loop's files: the plain -O2 build of each toolchain and arch
QUICK = quick_few(FILES, lambda p: p.name.endswith("-O2.jsonl.gz"))
EVERY = 7


def _flip(sample: RawSample, off: int) -> RawSample:
    stack = bytearray(sample.stack)
    stack[off] ^= 0x5A
    return dataclasses.replace(sample, stack=bytes(stack))


def _reads(unwinder: Unwinder, sample: RawSample, space: object) -> list[int]:
    offsets: list[int] = []
    unwinder.unwind(sample, space, offsets)  # type: ignore[arg-type]
    return sorted({off for off in offsets if off >= 0})    # READ_FP is no offset


def _reference() -> tuple[Unwinder, Callable[[RawSample], UnwoundStack]]:
    """An unwinder that is never asked for its reads, so it never records chain ends
    (Unwinder's suffix memo) and walks every chain in full: the reference."""
    ref = Unwinder(ObjectCache(str(SNAPSHOTS / "root")))
    return ref, lambda s: ref.unwind(s, ref.space_for(s))


@pytest.mark.parametrize("path", QUICK, ids=[p.name.split(".")[0] for p in FILES])
def test_memo_matches_the_unwinder(path: Path) -> None:
    unwinder = Unwinder(ObjectCache(str(SNAPSHOTS / "root")))
    memo = UnwindMemo(unwinder)
    _ref, expect = _reference()
    checked = 0
    for _, _obj, s in list(read_snapshots(str(path)))[::EVERY]:
        space = unwinder.space_for(s)
        plain = expect(s)
        assert memo.unwind(s, space) == plain
        hits = memo.hits
        assert memo.unwind(s, space) == plain      # the same input again: reused
        assert memo.hits == hits + 1
        assert unwinder.unwind(s, space) == plain
        reads = _reads(unwinder, s, space)
        others = [o for o in range(0, len(s.stack) - 8, 8) if o not in reads][:3]
        for off in reads + others:
            v = _flip(s, off)
            want = expect(v)
            assert memo.unwind(v, space) == want, (path.name, off)
            assert unwinder.unwind(v, space) == want, (path.name, off)
        checked += 1
    assert memo.enabled
    assert checked


@pytest.mark.slow
@pytest.mark.parametrize("path", FILES, ids=[p.name.split(".")[0] for p in FILES])
def test_words_not_noted_do_not_change_the_chain(path: Path) -> None:
    """The words a walk reads but does not note (a saved FP no later rule uses, a
    register restored from a signal frame that no rule reads) must not matter: any
    change outside the noted words, up to well past the last of them, gives the same
    chain.  Both ends of each word are changed (its low and its high byte)."""
    unwinder = Unwinder(ObjectCache(str(SNAPSHOTS / "root")))
    _ref, expect = _reference()
    skipped = changed = 0
    for _, _obj, s in list(read_snapshots(str(path)))[::EVERY]:
        space = unwinder.space_for(s)
        plain = expect(s)
        reads = _reads(unwinder, s, space)
        noted = {b for r in reads for b in range(r, r + 8)}
        end = min(len(s.stack), (max(reads) if reads else 0) + 512)
        for off in range(0, end - 7, 8):
            for b in (off, off + 7):
                if b in noted:
                    continue
                flipped = _flip(s, b)
                assert expect(flipped) == plain, (path.name, b)
                assert unwinder.unwind(flipped, space) == plain, (path.name, b)
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


@pytest.mark.parametrize("path", QUICK, ids=[p.name.split(".")[0] for p in FILES])
def test_known_chain_ends_give_the_full_walk(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every snapshot in turn through the memo (which records the ends of the chains
    it walks, and reuses them from the state where a later walk meets one), and each
    again with one word changed where the recorded end read it: always the chain of
    a full walk."""
    hits = []
    real = unwind_mod._Walk.suffix_hit

    def counting(self: unwind_mod._Walk, pc: int) -> UnwoundStack | None:
        found = real(self, pc)
        hits.append(found is not None)
        return found

    monkeypatch.setattr(unwind_mod._Walk, "suffix_hit", counting)
    unwinder = Unwinder(ObjectCache(str(SNAPSHOTS / "root")))
    memo = UnwindMemo(unwinder)
    _ref, expect = _reference()
    samples = [s for _, _obj, s in read_snapshots(str(path))]
    for s in samples:
        assert memo.unwind(s, unwinder.space_for(s)) == expect(s), path.name
    for i, s in enumerate(samples[::3]):
        space = unwinder.space_for(s)
        reads = _reads(unwinder, s, space)
        if reads:
            v = _flip(s, reads[(i * 7) % len(reads)])
            assert memo.unwind(v, space) == expect(v), path.name
    assert any(hits)
