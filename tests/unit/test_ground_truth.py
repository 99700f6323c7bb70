"""The unwinder against gdb: ground-truth snapshots of real programs.

tests/snapshots/*.jsonl.gz were captured by scripts/capture_gt.py: gdb stopped
programs built with three toolchains (SFrame V1, V2, V3), natively on x86_64 and
under qemu-aarch64 -cpu max (real PAC), at breakpoints and after random single
steps, and recorded the registers, 8 KiB of stack and its own DWARF unwind.  gdb has
no SFrame reader, so its chain is an independent reference.

The rules, from docs/snapshot-format.md and the issue:
  * a chain marked reliable must equal gdb's: every pc, every CFA, the same length;
  * at least 97% of snapshots are reliable where gdb unwound fully and the copy
    holds the whole chain;
  * a copy cut short is `stack-truncated`, unless the whole chain still fits.
"""

from __future__ import annotations

import collections
import random
from typing import Any

import pytest
from helpers.gdb_truth import copy_holds_chain, mismatch
from helpers.paths import SNAPSHOTS

from profiler.capture.snapshots import read_snapshots
from profiler.model import RawSample, UnwoundStack
from profiler.unwind.objfile import ObjectCache
from profiler.unwind.unwinder import Unwinder

ROOT = SNAPSHOTS / "root"
FILES = sorted(SNAPSHOTS.glob("*.jsonl.gz"))


@pytest.fixture(scope="module")
def unwinder() -> Unwinder:
    return Unwinder(ObjectCache(str(ROOT)))


@pytest.fixture(scope="module")
def results(unwinder: Unwinder) -> dict[str, list[tuple[dict[str, Any], RawSample, UnwoundStack]]]:
    out = {}
    for path in FILES:
        out[path.name] = [(obj, s, unwinder.unwind(s)) for _, obj, s in read_snapshots(str(path))]
    return out


def test_enough_ground_truth(results: dict[str, list[Any]]) -> None:
    per_arch = collections.Counter(s.arch for rows in results.values() for _, s, _ in rows)
    assert sum(per_arch.values()) >= 1000, per_arch
    assert per_arch["x86_64"] >= 300 and per_arch["aarch64"] >= 300, per_arch
    variants = {obj.get("variant", "")[:2] for rows in results.values() for obj, _, _ in rows}
    assert {"v1", "v2", "v3"} <= variants


@pytest.mark.parametrize("name", [p.name for p in FILES])
def test_reliable_chains_equal_gdb(name: str, results: dict[str, list[Any]]) -> None:
    wrong = [f"{obj.get('id')}: {why}" for obj, _, st in results[name]
             if st.reliable and (why := mismatch(st, obj["expected"]))]
    assert not wrong, "\n".join(wrong[:20])


def test_reliable_rate(results: dict[str, list[Any]]) -> None:
    eligible = reliable = 0
    reasons: collections.Counter[str] = collections.Counter()
    for rows in results.values():
        for obj, sample, st in rows:
            if obj.get("expected_complete") and copy_holds_chain(obj, sample):
                eligible += 1
                reliable += st.reliable
                if not st.reliable:
                    reasons[st.reason] += 1
    assert eligible >= 900
    rate = reliable / eligible
    print(f"reliable {reliable}/{eligible} = {rate:.2%}; unreliable by reason {dict(reasons)}")
    assert rate >= 0.97, reasons


def test_truncated_copies(unwinder: Unwinder, results: dict[str, list[Any]]) -> None:
    """Cut each reliable snapshot's copy at random points and unwind again."""
    rng = random.Random(7)
    checked = cut_short = 0
    for rows in results.values():
        for obj, sample, st in rows[::3]:
            if not st.reliable:
                continue
            for _ in range(2):
                n = rng.randrange(0, len(sample.stack) + 1)
                short = RawSample(sample.arch, sample.regs, sample.stack_base,
                                  sample.stack[:n], sample.mappings, sample.memory,
                                  sample.pac_mask)
                got = unwinder.unwind(short)
                checked += 1
                if got.reliable:
                    assert not mismatch(got, obj["expected"]), obj.get("id")
                else:
                    cut_short += 1
                    assert got.reason == "stack-truncated", (obj.get("id"), n, got.reason)
                    # what was unwound before the cut is a prefix of gdb's chain
                    for fr, exp in zip(got.frames[:-1], obj["expected"]):
                        assert fr.pc == exp["pc"]
    assert checked >= 300 and cut_short >= 100


def test_bounded_memos_change_nothing(monkeypatch: pytest.MonkeyPatch,
                                      results: dict[str, list[Any]]) -> None:
    """With tiny memo limits (they restart constantly) every chain is the same, and no
    memo ever holds more than its limit."""
    import profiler.unwind.objcode as objcode
    import profiler.unwind.objfile as objfile
    import profiler.unwind.space as space_mod
    import profiler.unwind.suffixes as suffixes
    monkeypatch.setattr(space_mod, "MEMO_LIMIT", 8)
    monkeypatch.setattr(suffixes, "SUFFIX_STATES", 8)
    monkeypatch.setattr(suffixes, "STRUCTS_KEPT", 8)
    monkeypatch.setattr(suffixes, "_STRUCTS", {})
    monkeypatch.setattr(objfile, "MAX_MEMO", 8)
    monkeypatch.setattr(objcode, "MAX_DECODED", 2)
    small = Unwinder(ObjectCache(str(ROOT)))
    n = 0
    for rows in results.values():
        for _obj, sample, st in rows[::3]:
            space = small.space_for(sample)
            assert small.unwind(sample, space) == st
            # walks that note their reads also record chain ends (the memo's walks)
            assert small.unwind(sample, space, []) == st
            assert small.unwind(sample, space) == st
            assert max(len(space.steps), len(space.ra_ok), len(space.edges),
                       len(space.suffixes)) <= 8
            assert len(suffixes._STRUCTS) <= 8
            n += 1
    for obj in small.objects._by_path.values():
        if obj is not None:
            assert len(obj._rule_memo) <= 8 and len(obj._x86_memo) <= 2
    assert n >= 900
