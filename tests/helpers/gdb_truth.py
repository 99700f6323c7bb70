"""Comparing an unwound chain with gdb's, the ground truth of tests/snapshots
(scripts/capture_gt.py; docs/snapshot-format.md)."""

from __future__ import annotations

from typing import Any

from profiler.model import RawSample, UnwoundStack


def mismatch(stack: UnwoundStack, expected: list[dict[str, int]], complete: bool = True) -> str:
    """Why `stack` differs from gdb's chain `expected` ("" when it matches): every pc,
    every CFA gdb gives, the same length.  Where gdb's walk was incomplete
    (`complete` false) only its frame 0 is known, and only that is compared."""
    if not complete:
        if not stack.frames or stack.frames[0].pc != expected[0]["pc"]:
            return "frame 0 differs from gdb's (gdb's walk was incomplete)"
        return ""
    if len(stack.frames) != len(expected):
        return f"{len(stack.frames)} frames, gdb has {len(expected)}"
    for i, (fr, exp) in enumerate(zip(stack.frames, expected)):
        if fr.pc != exp["pc"]:
            return f"frame {i}: pc 0x{fr.pc:x}, gdb 0x{exp['pc']:x}"
        if "cfa" in exp and fr.cfa != exp["cfa"]:
            got = "none" if fr.cfa is None else f"0x{fr.cfa:x}"
            return f"frame {i}: cfa {got}, gdb 0x{exp['cfa']:x}"
    return ""


def copy_holds_chain(obj: dict[str, Any], sample: RawSample) -> bool:
    """Every CFA of gdb's chain lies in the stack copy (not on another stack, not above
    it), so a complete chain can be unwound from the copy alone."""
    base, top = sample.stack_base, sample.stack_base + len(sample.stack)
    return all(base <= e.get("cfa", base) <= top for e in obj["expected"])
