"""Chain ends already walked: deep chains cost only the frames that differ.

A walk that steps into a frame from its callee has a state -- pc, SP, the end of the
stack copy, the RA mask -- from which the rest of the chain depends only on the
stack words it reads (and FP, if it uses FP without reading it).  Walks that note
their reads record the end of their chain under each such state (record); a later
walk that meets the same state with the same words there takes that end whole
(suffix_hit).  Recursion and an event loop under every sample then cost a few frames.
The ends are kept in the address space (AddressSpace.suffixes), a bounded number.
"""

from __future__ import annotations

import struct

from profiler.model import UnwoundStack
from profiler.unwind.walkstate import READ_FP, WalkState

SUFFIXES_PER_STATE = 4      # chain ends kept per state
SUFFIX_STATES = 1 << 12     # states with known chain ends kept per address space
STRUCTS_KEPT = 1 << 12      # structs kept for struct_for (shared by every space)

_STRUCTS: dict[tuple[int, ...], struct.Struct | None] = {}


def struct_for(offsets: tuple[int, ...]) -> struct.Struct | None:
    """One struct reading the 8-byte words at `offsets` (sorted, no duplicates, not
    negative) from offset 0; None if two overlap.  Shared: equal offsets, one struct."""
    known = _STRUCTS.get(offsets, False)
    if known is not False:
        return known  # type: ignore[return-value]
    fmt = ["<"]
    pos = 0
    check: struct.Struct | None = None
    for off in offsets:
        if off < pos:       # overlapping reads: not expressible as one struct
            break
        if off > pos:
            fmt.append(f"{off - pos}x")
        fmt.append("Q")
        pos = off + 8
    else:
        check = struct.Struct("".join(fmt))
    if len(_STRUCTS) >= STRUCTS_KEPT:
        _STRUCTS.clear()
    _STRUCTS[offsets] = check
    return check


class SuffixMemo(WalkState):
    """Finding and recording chain ends in the space's memo."""

    def suffix_hit(self, pc: int) -> UnwoundStack | None:
        """The chain, if an earlier walk stepped into this frame in the same state:
        same pc, SP, end of the stack copy and RA mask, the same words wherever that
        walk read from here on (at the same addresses), and the same FP if it used
        FP without reading it.  Deep chains (recursion, an event loop under every
        sample) then cost the few frames that differ."""
        entries = self.space.suffixes.get((pc, self.sp, self.end_addr, self.ra_mask))
        if not entries:
            return None
        for first, check, words, fp_req, chain, start, reason, offsets, doubt in entries:
            if fp_req is not None and fp_req != self.fp:
                continue
            at = first - self.base
            if at < 0 or check.unpack_from(self.stack, at) != words:
                continue
            if len(self.frames) + len(chain) - start > self.max_frames:
                continue
            doubt += len(self.frames) - start
            self.frames.extend(chain[start:])
            if self.reads is not None:
                if fp_req is not None:
                    self.note_fp()
                self.reads.extend(at + off for off in offsets)
            return self.verdict(reason, doubt)
        return None

    def record(self, result: UnwoundStack) -> None:
        """Remember the end of `result` from every state noted in `marks`."""
        suffixes = self.space.suffixes
        reads = self.reads
        assert reads is not None and self.marks is not None
        chain, base = result.frames, self.base
        for start, pc, sp, fp, nread in self.marks:
            key = (pc, sp, self.end_addr, self.ra_mask)
            entries = suffixes.get(key)
            if entries is not None and len(entries) >= SUFFIXES_PER_STATE:
                continue
            used = reads[nread:]
            addrs = sorted({base + off for off in used if off >= 0})
            first = addrs[0] if addrs else self.end_addr   # (no words: never out of range)
            offsets = tuple(a - first for a in addrs)
            check = struct_for(offsets)
            if check is None:
                continue
            fp_req = fp if READ_FP in used else None
            if entries is None:
                if len(suffixes) >= SUFFIX_STATES:
                    suffixes.clear()
                entries = suffixes[key] = []
            entries.append((first, check, check.unpack_from(self.stack, first - base),
                            fp_req, chain, start, result.reason, offsets, result.doubt))
