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
This module is the loop; the steps are profiler.unwind.steps (rules, frame
pointers), .sigframe (signal frames) and .suffixes (chain ends walked before), the
checks on return addresses and call edges profiler.unwind.calls, and the process's
mappings and objects profiler.unwind.space.
"""

from __future__ import annotations

from profiler.model import Frame, RawSample, UnwoundStack
from profiler.reasons import (
    BAD_CFI,
    GO_STACK_SWITCH,
    NO_UNWIND_INFO,
    OBJECT_UNAVAILABLE,
    PC_NOT_MAPPED,
    TOO_DEEP,
    TRAMPOLINE,
)
from profiler.unwind import insn
from profiler.unwind import rules as R
from profiler.unwind import space as _space
from profiler.unwind.calls import call_ok, ra_status
from profiler.unwind.objfile import ObjectCache
from profiler.unwind.sigframe import SignalStep
from profiler.unwind.space import AddressSpace, Step
from profiler.unwind.steps import RuleSteps
from profiler.unwind.suffixes import SuffixMemo
from profiler.unwind.walkstate import U64

MAX_FRAMES = 512

# Step kinds cached per (pc, exact, topmost): (kind, rule, method or reason, path, fast)
_K_RULE, _K_SIGNAL, _K_STOP, _K_FALLBACK, _K_DOUBT = range(5)

# The top of a Go system stack: a caller frame in runtime.systemstack, mcall or
# morestack, which switched stacks before calling (profiler.unwind.golang.frames).
_SWITCH_END = R.Rule(-1, 0, False, R.LOC_UNDEFINED, 0, 0, R.LOC_SAME, 0, 0)


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
        return _Walk(self.max_frames, sample, space, reads).run()

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


class _Walk(SuffixMemo, SignalStep, RuleSteps):
    """One unwind; `run` is the loop, one method per step kind."""

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
        max_frames = self.max_frames
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
                if len(steps) >= _space.MEMO_LIMIT:
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
                            new_fp = U64.unpack_from(stack, foff)[0] \
                                if 0 <= foff <= last else None
                        ok = ra_ok.get(ra)
                        if ok is None:
                            if len(ra_ok) >= _space.MEMO_LIMIT:
                                ra_ok.clear()
                            ok = ra_status(space, ra) == ""
                            ra_ok[ra] = ok
                        if ok and new_fp is not None:
                            edge = (pc if self.exact else pc - 1, ra)
                            ok = edges.get(edge)
                            if ok is None:
                                ok = call_ok(space, *edge)
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

    def classify(self, pc: int) -> Step:
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
        if obj.is_sigreturn(pc - bias) if obj is not None \
                else insn.is_sigreturn_at(self.arch, pc, space.read_code):
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

