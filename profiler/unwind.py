"""The unwinder: registers plus a raw stack copy in, a call chain with a verdict out.

For every frame the rule for its pc comes, in this order, from a signal trampoline
recognised by its instruction bytes, the object's `.sframe`, its `.eh_frame` /
`.debug_frame` CFI, the aarch64 PLT rule (frame 0 only), and finally frame
pointers.  Each step is checked the way the kernel's SFrame unwinder checks it: the
CFA must rise and be aligned, every load must fall inside the stack copy, every
return address must land in an executable mapping.  The first failed check ends
the chain as unreliable with a stable reason code (profiler.model.REASONS); a chain
is reliable only when it ends at an outermost-frame marker (an RA-undefined row).

The unwinder reads only the RawSample and the mapped files: it never touches BPF.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable

from profiler import rules as R
from profiler.model import Frame, Mapping, RawSample, UnwoundStack
from profiler.objfile import ObjectCache, ObjectFile, is_sigreturn_at

MAX_FRAMES = 512

_U64 = struct.Struct("<Q")
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
        out[R.X86_64_RSP] = regs["sp"]
        out[R.X86_64_RBP] = regs["fp"]
        out[R.X86_64_RIP] = regs["pc"]
    else:
        for i in range(31):
            if f"x{i}" in regs:
                out[i] = regs[f"x{i}"]
        out[R.AARCH64_SP] = regs["sp"]
        out[R.AARCH64_FP] = regs["fp"]
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

    def find(self, addr: int) -> Mapping | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and addr < self.maps[i].end:
            return self.maps[i]
        return None

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


class Unwinder:
    """Unwinds RawSamples; holds the object cache so tables are loaded once."""

    def __init__(self, objects: ObjectCache | None = None, max_frames: int = MAX_FRAMES) -> None:
        self.objects = objects or ObjectCache()
        self.max_frames = max_frames

    def unwind(self, sample: RawSample, space: AddressSpace | None = None) -> UnwoundStack:
        if space is None:
            space = AddressSpace(sample.mappings, sample.memory, self.objects)
        return _Walk(self, sample, space).run()


class _Walk:
    """The state of one unwind; `run` is the loop, one method per step kind."""

    def __init__(self, unwinder: Unwinder, sample: RawSample, space: AddressSpace) -> None:
        self.u = unwinder
        self.space = space
        self.arch = sample.arch
        self.a64 = sample.arch == "aarch64"
        self.stack = sample.stack
        self.base = sample.stack_base
        self.stack_len = len(sample.stack)
        regs = sample.regs
        self.pc = regs["pc"]
        self.sp = regs["sp"]
        self.fp = regs["fp"]
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

    # -- memory ---------------------------------------------------------------

    def read(self, addr: int) -> int | None:
        off = addr - self.base
        if 0 <= off <= self.stack_len - 8:
            return _U64.unpack_from(self.stack, off)[0]  # type: ignore[no-any-return]
        return None

    # -- the loop -------------------------------------------------------------

    def end(self, obj: str, reason: str, cfa: int | None = None, method: str = "") -> UnwoundStack:
        self.frames.append(Frame(self.pc, cfa, method, obj, self.exact))
        return self.verdict(reason)

    def verdict(self, reason: str) -> UnwoundStack:
        """The chain so far; the first reason met (e.g. an FP fallback) wins."""
        reason = self.first_reason or reason
        return UnwoundStack(tuple(self.frames), not reason, reason)

    def run(self) -> UnwoundStack:
        space = self.space
        while True:
            if len(self.frames) >= self.u.max_frames:
                return self.end("", "too-deep")
            pc = self.pc
            m = space.find(pc)
            if m is None or not m.executable:
                return self.end(m.path if m else "", "pc-not-mapped")
            if m.path == "[uprobes]":
                return self.end(m.path, "trampoline")
            obj, bias = space.object_for(m)
            if obj is None and m.path != "[vdso]":
                if self.fp_step(m.path, "object-unavailable"):
                    continue
                return self._last
            # Signal trampolines are recognised by their code, at the exact pc.
            if (obj.is_sigreturn(pc - bias) if obj is not None else self.is_sigreturn(pc)):
                if not self.sigframe_step(m.path):
                    return self._last
                continue
            rule = None
            method = ""
            if obj is not None and not self.fp_only:
                lt = (pc if self.exact else pc - 1) - bias
                rule, method = obj.lookup_rule(lt)
                if rule is None:
                    if method:  # "bad-sframe" or "bad-cfi"
                        return self.end(m.path, method)
                    if self.a64 and self.topmost:
                        rule, method = obj.a64_plt_rule(lt), "plt"
            if rule is None:
                if self.fp_step(m.path, "no-unwind-info"):
                    continue
                return self._last
            if not self.rule_step(rule, method, m.path):
                return self._last
            if self.done:
                return self.verdict("")

    # -- steps ----------------------------------------------------------------

    _last: UnwoundStack
    done = False
    first_reason = ""

    def stop(self, obj: str, reason: str, cfa: int | None = None, method: str = "") -> bool:
        self._last = self.end(obj, reason, cfa, method)
        return False

    def reg_value(self, reg: int) -> int | None:
        if reg == self.sp_reg:
            return self.sp
        if reg == self.fp_reg:
            return self.fp
        if self.regs is not None:
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
            return self.stop(obj, "ra-above-cfa")
        cfa = self._cfa(rule)
        if isinstance(cfa, str):
            return self.stop(obj, cfa)
        if cfa < self.sp or (cfa == self.sp and not self.topmost):
            return self.stop(obj, "cfa-not-increasing")
        if cfa % self.align:
            return self.stop(obj, "cfa-misaligned")
        ra = self._loc(rule.ra_kind, rule.ra_reg, rule.ra_off, cfa, self.ra_reg)
        if isinstance(ra, str):
            return self.stop(obj, ra, cfa, method)
        fp = self._loc(rule.fp_kind, rule.fp_reg, rule.fp_off, cfa, self.fp_reg)
        if isinstance(fp, str):
            return self.stop(obj, fp, cfa, method)
        return self.advance(ra, cfa, fp, method, obj)

    def _cfa(self, rule: R.Rule) -> int | str:
        if rule.cfa_reg < 0:
            return "unsupported-rule"
        base = self.reg_value(rule.cfa_reg)
        if base is None:
            return "register-rule"
        if rule.cfa_reg == self.fp_reg and base < self.sp:
            return "cfa-not-increasing"
        addr = (base + rule.cfa_off) & 0xFFFFFFFFFFFFFFFF
        if rule.cfa_deref:
            val = self.read(addr)
            if val is None:
                return "stack-truncated"
            return val
        return addr

    def _loc(self, kind: int, reg: int, off: int, cfa: int, which: int) -> int | str:
        if kind == R.LOC_CFA_DEREF:
            val = self.read(cfa + off)
            return "stack-truncated" if val is None else val
        if kind == R.LOC_SAME:
            if which == self.ra_reg:
                if not self.topmost or self.regs is None or self.ra_reg not in self.regs:
                    return "ra-in-lr"
                return self.regs[self.ra_reg]
            return self.fp
        if kind == R.LOC_REG or kind == R.LOC_REG_DEREF:
            base = self.reg_value(reg) if (self.topmost or reg in (self.sp_reg, self.fp_reg)) \
                else None
            if base is None:
                return "register-rule"
            if kind == R.LOC_REG:
                return (base + off) & 0xFFFFFFFFFFFFFFFF
            val = self.read(base + off)
            return "stack-truncated" if val is None else val
        return "unsupported-rule"

    def advance(self, ra: int, cfa: int, fp: int, method: str, obj: str,
                known_cfa: bool = True) -> bool:
        """Record the current frame and move to its caller at return address `ra`."""
        ra &= self.ra_mask
        self.frames.append(Frame(self.pc, cfa if known_cfa else None, method, obj,
                                 self.exact))
        m = self.space.find(ra)
        if m is None or not m.executable or ra == 0:
            self._last = self.verdict("ra-not-executable")
            return False
        if m.path == "[uprobes]":
            self.frames.append(Frame(ra, None, "", m.path, False))
            self._last = self.verdict("trampoline")
            return False
        self.pc, self.sp, self.fp = ra, cfa, fp
        self.topmost = False
        self.exact = False
        self.regs = None
        return True

    def fp_step(self, obj: str, reason: str) -> bool:
        """Frame-pointer fallback; the chain is unreliable from here on."""
        if not self.first_reason:
            self.first_reason = reason
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

    def is_sigreturn(self, pc: int) -> bool:
        return is_sigreturn_at(self.arch, pc, self.space.read_code)

    def sigframe_step(self, obj: str) -> bool:
        """Step through the kernel's signal frame to the interrupted context."""
        sp = self.sp
        regs: dict[int, int] = {}
        if self.a64:
            for i in range(31):
                v = self.read(sp + _A64_SIGCTX_REGS + 8 * i)
                if v is None:
                    return self.stop(obj, "stack-truncated")
                regs[i] = v
            new_sp = self.read(sp + _A64_SIGCTX_REGS + 8 * 31)
            new_pc = self.read(sp + _A64_SIGCTX_REGS + 8 * 32)
        else:
            for i, num in enumerate(_X86_GREG_DWARF):
                v = self.read(sp + _X86_GREGS + 8 * i)
                if v is None:
                    return self.stop(obj, "stack-truncated")
                regs[num] = v
            new_sp, new_pc = regs[7], regs[16]
        if new_sp is None or new_pc is None:
            return self.stop(obj, "stack-truncated")
        if new_sp <= sp:
            return self.stop(obj, "cfa-not-increasing")
        self.frames.append(Frame(self.pc, new_sp, "sigframe", obj, self.exact))
        m = self.space.find(new_pc)
        if m is None or not m.executable:
            self._last = self.verdict("ra-not-executable")
            return False
        regs[self.sp_reg] = new_sp
        self.pc, self.sp, self.fp = new_pc, new_sp, regs[self.fp_reg]
        self.regs = regs
        self.topmost = True   # registers are known again, like at the sample
        self.exact = True     # an interrupted pc, not a return address
        return True

