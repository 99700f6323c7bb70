"""The unwind memo: one unwind per distinct input, found again by an exact check of
the stack words the unwind read."""

from __future__ import annotations

import struct
import weakref
from mmap import mmap
from typing import Any

from profiler.model import RawSample
from profiler.unwind.space import AddressSpace
from profiler.unwind.suffixes import struct_for
from profiler.unwind.unwinder import Unwinder

_REG_BITS = {"pc": 1, "sp": 2, "fp": 4, "lr": 8}   # as the capture's packed samples
_MEMO_KEYS = 4096       # register sets remembered per address space
_MEMO_PER_KEY = 8       # distinct chains remembered per register set


class UnwindMemo:
    """Unwind once per distinct input: same address space, same registers, same stack
    length and the same values in every stack word the unwind used give the same
    chain (the unwinder is a pure function of those; its step classification is
    cached per address space anyway).

    A profile of a busy program is a few hundred distinct chains repeated thousands of
    times, but no two stack copies are equal byte for byte (locals, loop counters).
    So a new register set is unwound with the unwinder noting the offsets of the
    words it used (Unwinder.unwind's `reads`); the entry keeps those offsets as one
    precompiled struct and the words found there.  A later sample with the same
    registers reuses the chain when one unpack_from of its stack gives the same
    words -- an exact check, not a heuristic.  A chain of several frames for which
    no read was noted turns the memo off.
    """

    def __init__(self, unwinder: Unwinder) -> None:
        self.unwinder = unwinder
        self.enabled = True
        self.hits = 0
        self.misses = 0
        self._memos: weakref.WeakKeyDictionary[AddressSpace, dict[tuple[object, ...], list[
            tuple[struct.Struct, tuple[int, ...], Any]]]] = weakref.WeakKeyDictionary()
        self._last_space: AddressSpace | None = None
        self._last_memo: dict[tuple[object, ...], list[Any]] = {}

    @staticmethod
    def key(stack_base: int, stack_len: int, regs: dict[str, int], pac_mask: int | None,
            arch: str) -> tuple[object, ...]:
        """What besides the stack words an unwind depends on (the space aside)."""
        mask = 0
        extra: tuple[tuple[str, int], ...] | None = None
        for name in regs:
            bit = _REG_BITS.get(name)
            if bit is None:
                extra = tuple(sorted(regs.items()))
                break
            mask |= bit
        return (stack_base, stack_len, mask, regs.get("pc", 0), regs.get("sp", 0),
                regs.get("fp", 0), regs.get("lr", 0), pac_mask, arch, extra)

    @staticmethod
    def packed_key(base: int, slen: int, mask: int, pc: int, sp: int, fp: int, lr: int,
                   pac_mask: int | None, arch: str) -> tuple[object, ...]:
        """key() for registers given as a capture packs them (mask: _REG_BITS)."""
        return (base, slen, mask, pc, sp, fp, lr, pac_mask, arch, None)

    @staticmethod
    def match(chains: dict[tuple[object, ...], list[Any]], key: tuple[object, ...],
              buf: bytes | mmap, offset: int) -> Any:
        """The chain in `chains` (chains_for a space) for `key` whose stack words match
        those at buf[offset:], or None; hits are not counted (see note_hits)."""
        entries = chains.get(key)
        if entries is not None:
            for check, words, result in entries:
                if check.unpack_from(buf, offset) == words:
                    return result
        return None

    def note_hits(self, n: int) -> None:
        self.hits += n

    def chains_for(self, space: AddressSpace) -> dict[tuple[object, ...], list[Any]]:
        """The memo of one address space (for match())."""
        if space is self._last_space:
            return self._last_memo
        memo = self._memos.get(space)
        if memo is None:
            memo = {}
            self._memos[space] = memo
        self._last_space, self._last_memo = space, memo
        return memo

    def lookup(self, space: AddressSpace, key: tuple[object, ...], buf: bytes,
               offset: int = 0) -> Any:
        """The remembered chain for `key` whose stack words match those of the stack
        at buf[offset:], or None."""
        found = self.match(self.chains_for(space), key, buf, offset)
        if found is not None:
            self.hits += 1
        return found

    def unwind(self, sample: RawSample, space: AddressSpace,
               key: tuple[object, ...] | None = None) -> Any:
        if not self.enabled:
            return self.unwinder.unwind(sample, space)
        stack = sample.stack
        if key is None:
            key = self.key(sample.stack_base, len(stack), sample.regs, sample.pac_mask,
                           sample.arch)
        found = self.lookup(space, key, stack)
        if found is not None:
            return found
        self.misses += 1
        memo = self.chains_for(space)
        entries = memo.get(key)
        reads: list[int] = []
        result = self.unwinder.unwind(sample, space, reads)
        check = self._check_for(result, reads)
        if check is not None:
            if entries is None:
                if len(memo) >= _MEMO_KEYS:
                    memo.clear()
                entries = memo[key] = []
            if len(entries) < _MEMO_PER_KEY:
                entries.append((check, check.unpack_from(stack), result))
        return result

    def _check_for(self, result: Any, offsets_read: list[int]) -> struct.Struct | None:
        """One struct reading every stack word the unwind used, or None if impossible
        (struct objects are shared by chains that used the same offsets)."""
        offsets = tuple(sorted({off for off in offsets_read if off >= 0}))
        if not offsets and len(result.frames) > 1:
            self.enabled = False   # a chain without stack reads: the reader was bypassed
            return None
        return struct_for(offsets)
