"""The unwinder: registers plus a raw stack copy in, a call chain with a verdict out.

For every frame the rule for its pc comes, in this order, from a signal trampoline
recognised by its instruction bytes, the object's `.sframe`, its `.eh_frame` /
`.debug_frame` CFI, the aarch64 PLT rule (frame 0 only), and finally frame
pointers.  Each step is checked the way the kernel's SFrame unwinder checks it: the
CFA must rise and be aligned, every load must fall inside the stack copy, every
return address must land in an executable mapping.  The first failed check ends
the chain as unreliable with a stable reason code (profiler.reasons); a chain
is reliable only when it ends at an outermost-frame marker (an RA-undefined row).

The unwinder reads only the RawSample and the mapped files: it never touches BPF.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable

from profiler.model import Frame, Mapping, RawSample, UnwoundStack
from profiler.reasons import (
    BAD_CFI,
    BAD_SFRAME,
    BAD_SIGNAL_PC,
    CALL_MISMATCH,
    CFA_MISALIGNED,
    CFA_NOT_INCREASING,
    GO_STACK_SWITCH,
    NO_UNWIND_INFO,
    OBJECT_UNAVAILABLE,
    PC_NOT_MAPPED,
    RA_ABOVE_CFA,
    RA_IN_LR,
    RA_NOT_AFTER_CALL,
    RA_NOT_EXECUTABLE,
    REGISTER_RULE,
    STACK_TRUNCATED,
    TOO_DEEP,
    TRAMPOLINE,
    UNSUPPORTED_RULE,
)
from profiler.unwind import insn
from profiler.unwind import rules as R
from profiler.unwind.objfile import ObjectCache, ObjectFile, is_sigreturn_at

MAX_FRAMES = 512
# Entries per memo of unwind decisions (per pc, per return address, per call edge):
# a memo that reaches it starts again, so memory stays bounded on any workload.
MEMO_LIMIT = 1 << 17

# Step kinds cached per (pc, exact, topmost): (kind, rule, method or reason, path, fast)
_K_RULE, _K_SIGNAL, _K_STOP, _K_FALLBACK, _K_DOUBT = range(5)
_Step = tuple[int, "R.Rule | None", str, str, "tuple[bool, int, int, int | None] | None"]
# The end of a chain walked from some state: (address of the first stack word it
# used, struct reading the words it used from there, those words, the FP value it
# needs or None, the chain, index in it where this end starts, the chain's reason,
# the words' offsets from the first, the chain's first frame in doubt).
_Suffix = tuple[int, struct.Struct, tuple[int, ...], "int | None", "tuple[Frame, ...]", int,
                str, tuple[int, ...], int]

_U64 = struct.Struct("<Q")

# The top of a Go system stack: a caller frame in runtime.systemstack, mcall or
# morestack, which switched stacks before calling (profiler.unwind.golang.frames).
_SWITCH_END = R.Rule(-1, 0, False, R.LOC_UNDEFINED, 0, 0, R.LOC_SAME, 0, 0)

# Failed checks that a walk goes past (the step itself was computed from the data):
# the chain is unreliable from the caller on, but keeps its shape.
_DOUBTED = frozenset({RA_NOT_AFTER_CALL, CALL_MISMATCH})
# Steps the unwind data could not give, where frame pointers are tried next.
_FP_AFTER = frozenset({CFA_NOT_INCREASING, CFA_MISALIGNED, RA_ABOVE_CFA,
                       REGISTER_RULE, UNSUPPORTED_RULE, RA_IN_LR, BAD_SFRAME,
                       BAD_CFI})

# In a walk's `reads`: the FP value was used without a stack word standing for it
# (it is the sample's register, or a word already noted): whoever reuses the walk
# must have the same FP value.
READ_FP = -1
SUFFIXES_PER_STATE = 4
SUFFIX_STATES = 1 << 12     # states with known chain ends kept per address space
STRUCTS_KEPT = 1 << 12

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
# aarch64 rt_sigframe: siginfo (128) + ucontext; uc_mcontext at +176, regs at +8.
_A64_SIGCTX_REGS = 128 + 176 + 8
# x86_64: SP points at the ucontext; uc_mcontext.gregs at +40.
_X86_GREGS = 40
# x86_64 gregs index -> DWARF register number.
_X86_GREG_DWARF = (8, 9, 10, 11, 12, 13, 14, 15, 5, 4, 6, 3, 1, 0, 2, 7, 16)

_X86_REG_NAMES = {"rax": 0, "rdx": 1, "rcx": 2, "rbx": 3, "rsi": 4, "rdi": 5, "rbp": 6,
                  "rsp": 7, **{f"r{i}": i for i in range(8, 16)}}


def _dwarf_regs(arch: str, regs: dict[str, int]) -> dict[int, int]:
    out: dict[int, int] = {}
    if arch == "x86_64":
        for name, num in _X86_REG_NAMES.items():
            if name in regs:
                out[num] = regs[name]
        out[R.X86_64_RSP] = regs.get("sp", 0)
        out[R.X86_64_RBP] = regs.get("fp", 0)
        out[R.X86_64_RIP] = regs.get("pc", 0)
    else:
        for i in range(31):
            if f"x{i}" in regs:
                out[i] = regs[f"x{i}"]
        out[R.AARCH64_SP] = regs.get("sp", 0)
        out[R.AARCH64_FP] = regs.get("fp", 0)
        if "lr" in regs:
            out[R.AARCH64_LR] = regs["lr"]
    return out


class AddressSpace:
    """The mappings of one process, with the object behind each executable one."""

    def __init__(self, mappings: tuple[Mapping, ...], memory: tuple[tuple[int, bytes], ...],
                 objects: ObjectCache,
                 opener: Callable[[Mapping], ObjectFile | None] | None = None) -> None:
        self.maps = sorted(mappings, key=lambda m: m.start)
        self._starts = [m.start for m in self.maps]
        self.memory = memory
        self.objects = objects
        # How a file-backed mapping becomes an object: by default its path (under the
        # cache's root); live profiling opens /proc/PID/map_files/... instead.
        self.opener = opener or (lambda m: objects.get(m.path))
        self._resolved: dict[int, tuple[ObjectFile | None, int]] = {}
        # Caches of the unwinder's decisions, valid as long as the mappings are.
        self.steps: dict[tuple[int, bool, bool], _Step] = {}
        self.ra_ok: dict[int, bool] = {}
        self.edges: dict[tuple[int, int], bool] = {}
        # The ends of chains already walked, by the state a walk was in when it
        # stepped into a frame (see _Walk.suffix_hit).
        self.suffixes: dict[tuple[int, int, int, int], list[_Suffix]] = {}

    def ra_status(self, ra: int) -> str:
        """"" if `ra` can be a return address here, else the reason it cannot."""
        m = self.find(ra)
        if m is None or not m.executable or ra == 0:
            return RA_NOT_EXECUTABLE
        if m.path == "[uprobes]":
            return TRAMPOLINE
        if not self.follows_call(m, ra) and not self.planted(m, ra):
            return RA_NOT_AFTER_CALL
        return ""

    def planted(self, m: Mapping, ra: int) -> bool:
        """Whether `ra` is a return address a language runtime plants by design, with
        no call before it: Go's runtime.goexit + PCQuantum under every goroutine,
        and runtime.systemstack_switch, where cgocallback resumes the Go frames that
        called into C (profiler.unwind.golang)."""
        obj, bias = self.object_for(m)
        return obj is not None and (obj.designed_return(ra - bias)
                                    or obj.go_switch_return(ra - bias))

    def follows_call(self, m: Mapping, ra: int) -> bool:
        """Whether the code just before `ra` is a call instruction.

        A return address is pushed by a call, so a stack word or rule that gives
        anything else (a corrupt stack, a wrong table row) is not one.  The signal
        handler's return address, the rt_sigreturn trampoline, is the one exception.
        x86_64 code is decoded from the start of its function where that is known;
        otherwise the bytes before `ra` must have the shape of a call.  Code that
        cannot be read (no object behind the mapping) is not judged here.
        """
        obj, bias = self.object_for(m)
        if obj is None:
            return True
        if obj.arch == "aarch64":
            if ra & 3:
                return False
            code = self.read_code(ra - 4, 4)
            if len(code) == 4 and insn.a64_is_call(int.from_bytes(code, "little")):
                return True
        elif obj.arch == "x86_64":
            fn = obj.x86_function(ra - bias - 1)
            if fn is not None:
                if ra - bias in fn.calls:
                    return True
            else:
                code = self.read_code(ra - 7, 7)
                if len(code) < 7:
                    code = self.read_code(ra - 5, 5)
                if code and insn.x86_call_before(code):
                    return True
        else:
            return True
        return is_sigreturn_at(obj.arch, ra, self.read_code)

    def call_ok(self, child: int, ra: int) -> bool:
        """Whether the call before return address `ra` can lead to the function
        that holds `child` (the frame below's pc, minus one past frame 0), memoized."""
        key = (child, ra)
        hit = self.edges.get(key)
        if hit is None:
            if len(self.edges) >= MEMO_LIMIT:
                self.edges.clear()
            hit = self._call_ok(child, ra)
            self.edges[key] = hit
        return hit

    def _call_ok(self, child: int, ra: int) -> bool:
        """The call-edge check behind call_ok.

        A corrupt stack word or table row can give a return address that is a real
        call site, just not this frame's: it passes every other check.  A direct
        call names its callee, and so does a call through a PLT stub or a GOT slot
        (by the symbol its dynamic relocation names).  The edge is kept when that
        callee is the child's function (its FDE), or jumps into it (a tail call, a
        jump into a .cold part, directly or through a PLT stub).  Register-indirect
        calls, ifuncs, the signal trampoline and code without unwind data or
        relocations cannot be judged and pass.
        """
        rm = self.find(ra)
        cm = self.find(child)
        if rm is None or cm is None:
            return True
        robj, rbias = self.object_for(rm)
        cobj, cbias = self.object_for(cm)
        if robj is None or cobj is None or is_sigreturn_at(robj.arch, ra, self.read_code):
            return True
        if self.planted(rm, ra) or cobj.go_switch_return(child - cbias) \
                or cobj.go_switch_return(child + 1 - cbias):
            return True     # no call made this edge: Go's scheduler did
        crange = cobj.function_range(child - cbias)
        if crange is None:
            return True
        callee = _Callee(self, cobj, cbias, crange[0] + cbias, crange[1] + cbias)
        arch = robj.arch
        fn = robj.x86_function(ra - rbias - 1) if arch == "x86_64" else None
        if fn is not None:
            kind, where = fn.calls.get(ra - rbias, (insn.X86_CALL_INDIRECT, None))
            if where is None:
                return True
            if kind == insn.X86_CALL_RIP:
                return callee.via_slot(robj, where)
            return callee.reached_from(where + rbias)
        size = 4 if arch == "aarch64" else 7
        code = self.read_code(ra - size, size)
        target = insn.call_target(arch, ra, code)
        if target is None:
            slot = insn.x86_got_call_slot(ra, code) if arch == "x86_64" else None
            return slot is None or callee.via_slot(robj, slot - rbias)
        return callee.reached_from(target)

    def find(self, addr: int) -> Mapping | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and addr < self.maps[i].end:
            return self.maps[i]
        return None

    def objects_defining_first(self, obj: ObjectFile, bias: int
                               ) -> list[tuple[ObjectFile | None, int]]:
        """`obj` (at `bias`), then the object of every other executable file
        mapping, each once (None for one that cannot be opened): where a dynamic
        symbol may be defined."""
        out: list[tuple[ObjectFile | None, int]] = [(obj, bias)]
        seen = {id(obj)}
        for m in self.maps:
            if m.executable and m.path.startswith("/"):
                other, obias = self.object_for(m)
                if id(other) not in seen:
                    seen.add(id(other))
                    out.append((other, obias))
        return out

    def opened(self) -> list[ObjectFile]:
        """The objects object_for() has opened so far."""
        return [obj for obj, _bias in self._resolved.values() if obj is not None]

    def object_for(self, m: Mapping) -> tuple[ObjectFile | None, int]:
        """(object, load bias) for an executable mapping; object None if unavailable."""
        hit = self._resolved.get(m.start)
        if hit is not None:
            return hit
        obj: ObjectFile | None = None
        bias = 0
        if m.path.startswith("/"):
            obj = self.opener(m)
            if obj is not None:
                bias = obj.load_bias(m.start, m.offset)
        elif m.path == "[vdso]":
            image = self._image_at(m.start, m.end)
            if image is not None:
                obj = self.objects.get_image(f"[vdso]@{hash(image):x}", image)
                if obj is not None:
                    obj.name = "[vdso]"
                    bias = obj.load_bias(m.start, 0)
        self._resolved[m.start] = (obj, bias)
        return obj, bias

    def _image_at(self, start: int, end: int) -> bytes | None:
        for mstart, data in self.memory:
            if mstart <= start and end <= mstart + len(data):
                return data[start - mstart:end - mstart]
        return None

    def read_code(self, addr: int, size: int) -> bytes:
        for mstart, data in self.memory:
            if mstart <= addr and addr + size <= mstart + len(data):
                return data[addr - mstart:addr - mstart + size]
        m = self.find(addr)
        if m is None:
            return b""
        obj, bias = self.object_for(m)
        return obj.read_code(addr - bias, size) if obj is not None else b""


# How far the call-edge check follows tail calls from a call's target (functions
# that jump on to other functions), and how many functions it looks at in all;
# beyond either it cannot judge the edge, and passes it.
TAIL_DEPTH = 4
TAIL_BUDGET = 64


class _Callee:
    """The function of the frame below a call edge: [lo, hi) in object `obj`.

    The question is whether the call's target can reach it: by being it, or by
    jumping on to it (a tail call, a jump into a .cold part, a PLT stub, a symbol
    defined in another object), directly or through a few such hops.  Only what
    the code shows is held against an edge: an indirect jump out of a torn-down
    frame (ObjectFile.leaves_indirectly), code that cannot be decoded, an unknown
    symbol or a search past its bounds all pass.
    """

    def __init__(self, space: AddressSpace, obj: ObjectFile, bias: int, lo: int,
                 hi: int) -> None:
        self.space, self.obj, self.bias, self.lo, self.hi = space, obj, bias, lo, hi
        self.seen: set[tuple[int, int]] = set()

    def reached_from(self, target: int, depth: int = TAIL_DEPTH) -> bool:
        """Whether code at runtime address `target` (a call's or jump's target) is
        this function, a PLT stub leading to it, or a function that jumps into it."""
        if self.lo <= target < self.hi:
            return True
        space = self.space
        tm = space.find(target)
        if tm is None or not tm.executable:
            return False       # a direct call into nothing: not a call site at all
        tobj, tbias = space.object_for(tm)
        if tobj is None:
            return True
        if tobj.in_stubs(target - tbias):
            return self.via_stub(tobj, tbias, target, depth)
        trange = tobj.function_range(target - tbias)
        if trange is None:
            return True
        key = (id(tobj), trange[0])
        if key in self.seen:
            return False       # already looked at (a cycle of tail calls, a join)
        self.seen.add(key)
        jumps = tobj.jump_targets(*trange)
        if jumps is None or tobj.leaves_indirectly(*trange):
            return True
        if jumps and (depth <= 0 or len(self.seen) >= TAIL_BUDGET):
            return True
        return any(self.reached_from(t + tbias, depth - 1) for t in jumps)

    def via_stub(self, sobj: ObjectFile, sbias: int, stub: int, depth: int) -> bool:
        """Whether PLT stub `stub` (runtime, in `sobj`) can lead to this function.

        Before lazy binding resolves it, a stub leads to PLT0 and the dynamic
        linker's resolver: those are accepted for every stub."""
        if self.obj is sobj and sobj.in_stubs(self.lo - sbias):
            return True
        if self.obj.is_dynamic_linker:
            return True
        slot = insn.stub_slot(sobj.arch, stub - sbias, sobj.read_code(stub - sbias, 16))
        return slot is None or self.via_slot(sobj, slot, depth)

    def via_slot(self, sobj: ObjectFile, slot: int, depth: int = TAIL_DEPTH) -> bool:
        """Whether the symbol GOT slot `slot` (link time, in `sobj`) is relocated to
        can be this function or reach it.  Slots without a symbol and ifuncs can.
        The symbol's definitions are looked for in this function's object, then in
        every other mapped object; a symbol that no openable object defines can be
        anything, unless every mapped object was opened."""
        name = sobj.slot_symbol(slot)
        if not name:
            return True
        found = False
        for obj, bias in self.space.objects_defining_first(self.obj, self.bias):
            if obj is None:
                found = True    # an object we cannot read may define it
                continue
            defs = obj.exports(name)
            if any(ifunc for _, ifunc in defs):
                return True
            for value, _ in defs:
                found = True
                if self.reached_from(value + bias, depth):
                    return True
        return not found


class Unwinder:
    """Unwinds RawSamples; holds the object cache so tables are loaded once."""

    def __init__(self, objects: ObjectCache | None = None, max_frames: int = MAX_FRAMES) -> None:
        self.objects = objects or ObjectCache()
        self.max_frames = max_frames
        self._spaces: dict[tuple[object, ...], AddressSpace] = {}

    def unwind(self, sample: RawSample, space: AddressSpace | None = None,
               reads: list[int] | None = None) -> UnwoundStack:
        """Unwind one sample.  `reads`, if given, receives the offset into the stack
        copy of every 8-byte word whose value the walk used: the chain depends on the
        registers, the address space and those words only (profiler.unwind.memo.UnwindMemo).
        A word read but never used is left out: a saved frame pointer that no later
        rule bases a CFA on (at -O2 on x86_64 RBP holds data), or a register restored
        from a signal frame that no rule reads."""
        if space is None:
            space = self.space_for(sample)
        return _Walk(self, sample, space, reads).run()

    def space_for(self, sample: RawSample) -> AddressSpace:
        """An AddressSpace for the sample's maps, shared by samples with the same maps."""
        key = (sample.arch, sample.mappings, tuple((a, hash(b)) for a, b in sample.memory))
        space = self._spaces.get(key)
        if space is None:
            if len(self._spaces) >= 256:
                self._spaces.pop(next(iter(self._spaces)))
            space = AddressSpace(sample.mappings, sample.memory, self.objects)
            self._spaces[key] = space
        return space


def _noting(reads: list[int]) -> Callable[[bytes, int], tuple[int]]:
    """An 8-byte stack reader that appends each offset it reads to `reads`."""
    real = _U64.unpack_from

    def unpack(buf: bytes, offset: int) -> tuple[int]:
        reads.append(offset)
        return real(buf, offset)
    return unpack


class _Walk:
    """The state of one unwind; `run` is the loop, one method per step kind."""

    def __init__(self, unwinder: Unwinder, sample: RawSample, space: AddressSpace,
                 reads: list[int] | None = None) -> None:
        self.u = unwinder
        # Every stack word is read through this (noting its offset when asked to).
        self.unpack = _U64.unpack_from if reads is None else _noting(reads)
        self.reads = reads
        # Where the values not yet noted in `reads` came from: the stack offset of
        # the current FP value (-1: noted, or from the sample's registers), and of
        # the registers restored from a signal frame.  They are noted when used.
        self.fp_src = -1
        self.reg_src: dict[int, int] = {}
        # (frame index, pc, sp, fp, len(reads)) where the walk entered a frame in a
        # state that a later walk can meet again (see suffix_hit); noted only when
        # the reads are, to record what the chain's end depended on.
        self.marks: list[tuple[int, int, int, int, int]] | None = \
            [] if reads is not None else None
        self.space = space
        self.arch = sample.arch
        self.a64 = sample.arch == "aarch64"
        self.stack = sample.stack
        self.base = sample.stack_base
        self.stack_len = len(sample.stack)
        regs = sample.regs
        # A register missing from a capture or snapshot reads as 0: an unmapped pc,
        # a stack that cannot be read (a per-sample reason, not a KeyError).
        self.pc = regs.get("pc", 0)
        self.sp = regs.get("sp", 0)
        self.fp = regs.get("fp", 0)
        self.regs: dict[int, int] | None = _dwarf_regs(sample.arch, regs)
        self.topmost = True
        self.exact = True
        self.fp_only = False
        self.align = 16 if self.a64 else 8
        if self.a64:
            mask = sample.pac_mask if sample.pac_mask is not None else 0x00FF000000000000
            self.ra_mask = ~(mask | 0xFF00000000000000) & 0xFFFFFFFFFFFFFFFF
            self.sp_reg, self.fp_reg, self.ra_reg = R.AARCH64_SP, R.AARCH64_FP, R.AARCH64_LR
        else:
            self.ra_mask = 0xFFFFFFFFFFFFFFFF
            self.sp_reg, self.fp_reg, self.ra_reg = R.X86_64_RSP, R.X86_64_RBP, R.X86_64_RIP
        self.frames: list[Frame] = []
        self.end_addr = self.base + self.stack_len

    # -- memory ---------------------------------------------------------------

    def read(self, addr: int) -> int | None:
        off = addr - self.base
        if 0 <= off <= self.stack_len - 8:
            return self.unpack(self.stack, off)[0]  # type: ignore[no-any-return]
        return None

    # -- the loop -------------------------------------------------------------

    def end(self, obj: str, reason: str, cfa: int | None = None, method: str = "") -> UnwoundStack:
        self.frames.append(Frame(self.pc, cfa, method, obj, self.exact))
        return self.verdict(reason)

    def verdict(self, reason: str, doubt: int = -1) -> UnwoundStack:
        """The chain so far; the first reason met (e.g. an FP fallback) wins, and
        with it the index of the first frame in doubt.  Without one, the doubt
        begins past the last frame (`doubt`, from a reused chain end, says else)."""
        if self.first_reason:
            reason, doubt = self.first_reason, self.doubt_at
        elif doubt < 0:
            doubt = len(self.frames)
        return UnwoundStack(tuple(self.frames), not reason, reason, doubt)

    def doubt(self, reason: str, at: int) -> None:
        """A step was taken against a failed check (or without unwind data): the
        chain goes on, unreliable from frame `at` on, for its first such reason."""
        if not self.first_reason:
            self.first_reason = reason
            self.doubt_at = at

    def run(self) -> UnwoundStack:
        result = self.walk()
        if self.marks and result.reason != TOO_DEEP:
            self.record(result)
        return result

    def walk(self) -> UnwoundStack:
        """The unwind loop.

        How to step at a pc depends only on the address space, so it is classified
        once per (pc, exact, topmost) and cached in the space.  Rules of the common
        shape (CFA = SP/FP + off, RA and FP saved below the CFA) then take an inlined
        fast path; anything else, and every failed check, goes through rule_step,
        which is the reference implementation of a step.
        """
        space = self.space
        steps = space.steps
        ra_ok = space.ra_ok
        edges = space.edges
        frames = self.frames
        max_frames = self.u.max_frames
        stack, base = self.stack, self.base
        last = self.stack_len - 8
        unpack = self.unpack
        align_mask = self.align - 1
        ra_mask = self.ra_mask
        suffixes = space.suffixes
        marks = self.marks
        while True:
            if len(frames) >= max_frames:
                return self.end("", TOO_DEEP)
            pc = self.pc
            if self.regs is None and not self.fp_only and not self.first_reason:
                # Stepped into this frame from its callee: the rest of the chain
                # depends only on pc, SP, FP and stack words, and may be known.
                if suffixes:
                    done = self.suffix_hit(pc)
                    if done is not None:
                        return done
                if marks is not None:
                    marks.append((len(frames), pc, self.sp, self.fp,
                                  len(self.reads)))  # type: ignore[arg-type]
            key = (pc, self.exact, self.topmost)
            step = steps.get(key)
            if step is None:
                if len(steps) >= MEMO_LIMIT:
                    steps.clear()
                step = self.classify(pc)
                steps[key] = step
            kind, rule, method, path, fast = step
            if kind == _K_RULE and not self.fp_only:
                if fast is not None:
                    use_fp, cfa_off, ra_off, fp_off = fast
                    sp = self.sp
                    if use_fp and marks is not None:
                        self.note_fp()
                    cfa = (self.fp if use_fp else sp) + cfa_off
                    off = cfa + ra_off - base
                    if ((cfa > sp or (cfa == sp and self.topmost)) and not cfa & align_mask
                            and (not use_fp or self.fp >= sp) and 0 <= off <= last):
                        ra = unpack(stack, off)[0] & ra_mask
                        new_fp: int | None
                        if fp_off is None:
                            new_fp = self.fp
                        else:
                            foff = cfa + fp_off - base
                            new_fp = _U64.unpack_from(stack, foff)[0] \
                                if 0 <= foff <= last else None
                        ok = ra_ok.get(ra)
                        if ok is None:
                            if len(ra_ok) >= MEMO_LIMIT:
                                ra_ok.clear()
                            ok = space.ra_status(ra) == ""
                            ra_ok[ra] = ok
                        if ok and new_fp is not None:
                            edge = (pc if self.exact else pc - 1, ra)
                            ok = edges.get(edge)
                            if ok is None:
                                ok = space.call_ok(*edge)
                        if ok and new_fp is not None:
                            frames.append(Frame(pc, cfa, method, path, self.exact))
                            if fp_off is not None:
                                self.fp_src = foff   # noted if a later step uses it
                            self.pc, self.sp, self.fp = ra, cfa, new_fp
                            self.topmost = False
                            self.exact = False
                            self.regs = None
                            continue
                self.note_fp()
                if not self.rule_step(rule, method, path):  # type: ignore[arg-type]
                    return self._last
                if self.done:
                    return self.verdict("")
                continue
            if kind == _K_SIGNAL:
                if not self.sigframe_step(path):
                    return self._last
                continue
            if kind == _K_STOP:
                return self.end(path, method)
            if kind == _K_DOUBT:
                self.note_fp()
                self.doubt(method, len(frames) + 1)
                if not self.rule_step(rule, "eh_frame", path):  # type: ignore[arg-type]
                    return self._last
                if self.done:
                    return self.verdict("")
                continue
            # no usable unwind data here (or frame-record mode on arm64)
            self.note_fp()
            if self.fp_step(path, method if kind == _K_FALLBACK else NO_UNWIND_INFO):
                continue
            return self._last

    def classify(self, pc: int) -> _Step:
        """How to step at `pc` (the slow path; the result is cached per space)."""
        space = self.space
        m = space.find(pc)
        if m is None or not m.executable:
            return (_K_STOP, None, PC_NOT_MAPPED, m.path if m else "", None)
        if m.path == "[uprobes]":
            return (_K_STOP, None, TRAMPOLINE, m.path, None)
        obj, bias = space.object_for(m)
        if obj is None and m.path != "[vdso]":
            return (_K_FALLBACK, None, OBJECT_UNAVAILABLE, m.path, None)
        # Signal trampolines are recognised by their code, at the exact pc.
        if obj.is_sigreturn(pc - bias) if obj is not None else self.is_sigreturn(pc):
            return (_K_SIGNAL, None, "sigframe", m.path, None)
        if obj is None:
            return (_K_FALLBACK, None, NO_UNWIND_INFO, m.path, None)
        lt = (pc if self.exact else pc - 1) - bias
        rule, method = obj.lookup_rule(lt)
        if rule is None:
            if method == BAD_CFI:
                return (_K_FALLBACK, None, method, m.path, None)
            if method:  # "bad-sframe" or "tables-disagree": .eh_frame's row, in doubt
                other = obj.cfi_rule(lt)
                if other is None:
                    return (_K_FALLBACK, None, method, m.path, None)
                return (_K_DOUBT, other, method, m.path, None)
            if self.a64 and self.topmost:
                rule, method = obj.a64_plt_rule(lt), "plt"
                if rule is None:
                    rule, method = obj.a64_leaf_rule(lt), "leaf"
        if rule is None and not self.topmost:
            switch = obj.go_stack_switch(lt)
            if switch == "end":
                return (_K_RULE, _SWITCH_END, "gopclntab", m.path, None)
            if switch:
                return (_K_STOP, None, GO_STACK_SWITCH, m.path, None)
        if rule is None:
            return (_K_FALLBACK, None, NO_UNWIND_INFO, m.path, None)
        return (_K_RULE, rule, method, m.path, self._fast_form(rule))

    def _fast_form(self, rule: R.Rule) -> tuple[bool, int, int, int | None] | None:
        """(CFA from FP?, CFA offset, RA offset, FP offset or None) for the common shape."""
        if rule.cfa_deref or rule.cfa_reg not in (self.sp_reg, self.fp_reg):
            return None
        if rule.ra_kind != R.LOC_CFA_DEREF or rule.ra_off >= 0:
            return None
        if rule.fp_kind == R.LOC_SAME:
            fp_off = None
        elif rule.fp_kind == R.LOC_CFA_DEREF:
            fp_off = rule.fp_off
        else:
            return None
        return (rule.cfa_reg == self.fp_reg, rule.cfa_off, rule.ra_off, fp_off)

    # -- steps ----------------------------------------------------------------

    _last: UnwoundStack
    done = False
    first_reason = ""
    doubt_at = -1

    def stop(self, obj: str, reason: str, cfa: int | None = None, method: str = "") -> bool:
        self._last = self.end(obj, reason, cfa, method)
        return False

    def give_up(self, obj: str, reason: str, cfa: int | None = None, method: str = "") -> bool:
        """The unwind data gave no usable step here: try frame pointers where they
        may still give a caller (not past a truncated copy), else stop."""
        if reason in _FP_AFTER and not self.fp_only:
            self.note_fp()
            return self.fp_step(obj, reason)
        return self.stop(obj, reason, cfa, method)

    def note_fp(self) -> None:
        """The current FP value is used: note the stack word it came from, or
        READ_FP when no unnoted word stands for it."""
        if self.reads is not None:
            self.reads.append(self.fp_src if self.fp_src >= 0 else READ_FP)
        self.fp_src = -1

    # -- chain ends already walked ------------------------------------------------

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
            if len(self.frames) + len(chain) - start > self.u.max_frames:
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

    def reg_value(self, reg: int) -> int | None:
        if reg == self.sp_reg:
            return self.sp
        if reg == self.fp_reg:
            self.note_fp()
            return self.fp
        if self.regs is not None:
            src = self.reg_src.pop(reg, -1)
            if src >= 0 and self.reads is not None:
                self.reads.append(src)
            return self.regs.get(reg)
        return None

    def rule_step(self, rule: R.Rule, method: str, obj: str) -> bool:
        if rule.ra_kind == R.LOC_UNDEFINED:
            # Outermost frame: a clean, positively identified end of the chain.
            cfa = self._cfa(rule)
            self.frames.append(Frame(self.pc, cfa if isinstance(cfa, int) else None,
                                     method, obj, self.exact))
            self.done = True
            return True
        if rule.ra_kind == R.LOC_CFA_DEREF and rule.ra_off >= 0:
            # The ABIs save registers below the CFA (the caller's SP).  A slot at or
            # above it means this "CFA" is not the caller's SP (glibc's aarch64 lazy
            # binding trampoline describes the PLT0 push that way): stepping would
            # give the caller a wrong SP, so stop.
            return self.give_up(obj, RA_ABOVE_CFA)
        cfa = self._cfa(rule)
        if isinstance(cfa, str):
            return self.give_up(obj, cfa)
        if cfa < self.sp or (cfa == self.sp and not self.topmost):
            return self.give_up(obj, CFA_NOT_INCREASING)
        if cfa % self.align:
            return self.give_up(obj, CFA_MISALIGNED)
        ra = self._loc(rule.ra_kind, rule.ra_reg, rule.ra_off, cfa, self.ra_reg)
        if isinstance(ra, str):
            return self.give_up(obj, ra, cfa, method)
        fp = self._loc(rule.fp_kind, rule.fp_reg, rule.fp_off, cfa, self.fp_reg)
        if isinstance(fp, str):
            return self.give_up(obj, fp, cfa, method)
        return self.advance(ra, cfa, fp, method, obj)

    def _cfa(self, rule: R.Rule) -> int | str:
        if rule.cfa_reg < 0:
            return UNSUPPORTED_RULE
        base = self.reg_value(rule.cfa_reg)
        if base is None:
            return REGISTER_RULE
        if rule.cfa_reg == self.fp_reg and base < self.sp:
            return CFA_NOT_INCREASING
        addr = (base + rule.cfa_off) & 0xFFFFFFFFFFFFFFFF
        if rule.cfa_deref:
            val = self.read(addr)
            if val is None:
                return STACK_TRUNCATED
            return (val + rule.cfa_add) & 0xFFFFFFFFFFFFFFFF
        return addr

    def _loc(self, kind: int, reg: int, off: int, cfa: int, which: int) -> int | str:
        if kind == R.LOC_CFA_DEREF:
            val = self.read(cfa + off)
            if val is None and which == self.fp_reg and cfa + off < self.sp \
                    and self.topmost and self.regs is not None and self.fp_popped():
                self.note_fp()
                return self.fp      # popped already: the register holds what was saved
            return STACK_TRUNCATED if val is None else val
        if kind == R.LOC_SAME:
            if which == self.ra_reg:
                if not self.topmost or self.regs is None or self.ra_reg not in self.regs:
                    return RA_IN_LR
                return self.reg_value(self.ra_reg)  # type: ignore[return-value]
            self.note_fp()
            return self.fp
        if kind == R.LOC_REG or kind == R.LOC_REG_DEREF:
            base = self.reg_value(reg) if (self.topmost or reg in (self.sp_reg, self.fp_reg)) \
                else None
            if base is None:
                return REGISTER_RULE
            if kind == R.LOC_REG:
                return (base + off) & 0xFFFFFFFFFFFFFFFF
            val = self.read(base + off)
            return STACK_TRUNCATED if val is None else val
        return UNSUPPORTED_RULE

    def advance(self, ra: int, cfa: int, fp: int, method: str, obj: str,
                known_cfa: bool = True) -> bool:
        """Record the current frame and move to its caller at return address `ra`."""
        ra &= self.ra_mask
        self.frames.append(Frame(self.pc, cfa if known_cfa else None, method, obj,
                                 self.exact))
        status = self.space.ra_status(ra)
        if status == TRAMPOLINE:
            self.frames.append(Frame(ra, None, "", "[uprobes]", False))
        elif not status and method != "fp" and not self.space.call_ok(
                self.pc if self.exact else self.pc - 1, ra):
            status = CALL_MISMATCH
        if status in _DOUBTED and method != "fp":
            # The data gives a caller that a check refuses: follow it anyway, so the
            # chain keeps its shape, and mark where the doubt begins.
            self.doubt(status, len(self.frames))
        elif status:
            self._last = self.verdict(status)
            return False
        self.pc, self.sp, self.fp = ra, cfa, fp
        self.topmost = False
        self.exact = False
        self.regs = None
        return True

    def fp_step(self, obj: str, reason: str) -> bool:
        """Frame-pointer fallback; the chain is unreliable from the caller on."""
        self.doubt(reason, len(self.frames) + 1)
        fp = self.fp
        if fp < self.sp or fp % 8:
            return self.stop(obj, reason)
        saved_fp = self.read(fp)
        ra = self.read(fp + 8)
        if saved_fp is None or ra is None:
            return self.stop(obj, reason)
        if self.a64:
            # The frame record sits at the bottom of an arm64 frame: the caller's
            # SP is unknown, so continue with frame records only.
            self.fp_only = True
        return self.advance(ra, fp + 16, saved_fp, "fp", obj, known_cfa=not self.a64)

    def fp_popped(self) -> bool:
        """At an interrupted x86_64 pc in an epilogue, whether the frame pointer was
        popped already: the instructions just before the pc are pops, back to a
        ``pop %rbp``.  GCC's CFI keeps saying "RBP saved at CFA-n" after that pop
        (it has no .cfi_restore there), at an address below SP that the stack
        copy does not hold, while the register itself holds the saved value."""
        if self.a64:
            return False
        m = self.space.find(self.pc)
        obj, bias = self.space.object_for(m) if m is not None else (None, 0)
        fn = obj.x86_function(self.pc - bias) if obj is not None else None
        if fn is None:
            return False
        at = self.pc - bias
        i = bisect.bisect_left(fn.offsets, at - fn.start)
        for _ in range(8):             # at most the 6 callee-saved pops, and then some
            if i <= 0:
                return False
            i -= 1
            start = fn.start + fn.offsets[i]
            code = obj.read_code(start, at - start)   # type: ignore[union-attr]
            at = start
            if code == b"\x5d":
                return True
            if not (len(code) == 1 and 0x58 <= code[0] <= 0x5F
                    or len(code) == 2 and code[0] == 0x41 and 0x58 <= code[1] <= 0x5F):
                return False
        return False

    def is_sigreturn(self, pc: int) -> bool:
        return is_sigreturn_at(self.arch, pc, self.space.read_code)

    def sigframe_step(self, obj: str) -> bool:
        """Step through the kernel's signal frame to the interrupted context."""
        sp = self.sp
        # The saved registers, each with the stack offset it was read from; only SP
        # and PC are used at once (the others are noted in `reads` when used).
        if self.a64:
            slots = [(i, sp + _A64_SIGCTX_REGS + 8 * i) for i in range(33)]
            sp_num, pc_num = 31, 32
        else:
            slots = [(num, sp + _X86_GREGS + 8 * i) for i, num in enumerate(_X86_GREG_DWARF)]
            sp_num, pc_num = 7, 16
        regs: dict[int, int] = {}
        src: dict[int, int] = {}
        stack, last = self.stack, self.stack_len - 8
        for num, addr in slots:
            off = addr - self.base
            if not 0 <= off <= last:
                return self.stop(obj, STACK_TRUNCATED)
            regs[num] = _U64.unpack_from(stack, off)[0]
            src[num] = off
        new_sp, new_pc = regs[sp_num], regs[pc_num]
        if self.reads is not None:
            self.reads += (src.pop(sp_num), src.pop(pc_num))
        if self.a64:
            del regs[31], regs[32]
        if new_sp <= sp:
            return self.stop(obj, CFA_NOT_INCREASING)
        if new_sp % self.align:
            return self.stop(obj, CFA_MISALIGNED)
        self.frames.append(Frame(self.pc, new_sp, "sigframe", obj, self.exact))
        m = self.space.find(new_pc)
        if m is None or not m.executable or (self.a64 and new_pc & 3):
            self._last = self.verdict(RA_NOT_EXECUTABLE)
            return False
        if not self.a64:
            # The interrupted pc is the start of an instruction (of the x86_64
            # function that holds it, decoded from its first byte).
            code_obj, bias = self.space.object_for(m)
            fn = code_obj.x86_function(new_pc - bias) if code_obj is not None else None
            if fn is not None and not fn.is_boundary(new_pc - bias):
                self.doubt(BAD_SIGNAL_PC, len(self.frames))
        regs[self.sp_reg] = new_sp
        self.pc, self.sp, self.fp = new_pc, new_sp, regs[self.fp_reg]
        self.fp_src = src.pop(self.fp_reg)
        self.regs = regs
        self.reg_src = src
        self.topmost = True   # registers are known again, like at the sample
        self.exact = True     # an interrupted pc, not a return address
        return True

