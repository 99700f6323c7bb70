"""Return addresses and call edges: the checks that keep a walk on real calls.

A return address is pushed by a call, so the word or rule that gives one must point
just past a call instruction (ra_status); and the call there must be able to lead to
the function of the frame below it (call_ok): a direct call names its callee, a call
through a PLT stub or a GOT slot names it by symbol, and the callee may reach the
frame's function by tail calls (_Callee).  What the code does not show -- register
calls, ifuncs, code that cannot be decoded -- is never held against an edge.
"""

from __future__ import annotations

from profiler.model import Mapping
from profiler.reasons import RA_NOT_AFTER_CALL, RA_NOT_EXECUTABLE, TRAMPOLINE
from profiler.unwind import insn
from profiler.unwind import space as _space
from profiler.unwind.objfile import ObjectFile
from profiler.unwind.space import AddressSpace


def ra_status(space: AddressSpace, ra: int) -> str:
    """"" if `ra` can be a return address here, else the reason it cannot."""
    m = space.find(ra)
    if m is None or not m.executable or ra == 0:
        return RA_NOT_EXECUTABLE
    if m.path == "[uprobes]":
        return TRAMPOLINE
    if not follows_call(space, m, ra) and not planted(space, m, ra):
        return RA_NOT_AFTER_CALL
    return ""


def planted(space: AddressSpace, m: Mapping, ra: int) -> bool:
    """Whether `ra` is a return address a language runtime plants by design, with
    no call before it: Go's runtime.goexit + PCQuantum under every goroutine,
    and runtime.systemstack_switch, where cgocallback resumes the Go frames that
    called into C (profiler.unwind.golang)."""
    obj, bias = space.object_for(m)
    return obj is not None and (obj.designed_return(ra - bias)
                                or obj.go_switch_return(ra - bias))


def follows_call(space: AddressSpace, m: Mapping, ra: int) -> bool:
    """Whether the code just before `ra` is a call instruction.

    A return address is pushed by a call, so a stack word or rule that gives
    anything else (a corrupt stack, a wrong table row) is not one.  The signal
    handler's return address, the rt_sigreturn trampoline, is the one exception.
    x86_64 code is decoded from the start of its function where that is known;
    otherwise the bytes before `ra` must have the shape of a call.  Code that
    cannot be read (no object behind the mapping) is not judged here.
    """
    obj, bias = space.object_for(m)
    if obj is None:
        return True
    if obj.arch == "aarch64":
        if ra & 3:
            return False
        code = space.read_code(ra - 4, 4)
        if len(code) == 4 and insn.a64_is_call(int.from_bytes(code, "little")):
            return True
    elif obj.arch == "x86_64":
        fn = obj.x86_function(ra - bias - 1)
        if fn is not None:
            if ra - bias in fn.calls:
                return True
        else:
            code = space.read_code(ra - 7, 7)
            if len(code) < 7:
                code = space.read_code(ra - 5, 5)
            if code and insn.x86_call_before(code):
                return True
    else:
        return True
    return insn.is_sigreturn_at(obj.arch, ra, space.read_code)


def call_ok(space: AddressSpace, child: int, ra: int) -> bool:
    """Whether the call before return address `ra` can lead to the function
    that holds `child` (the frame below's pc, minus one past frame 0), memoized."""
    key = (child, ra)
    hit = space.edges.get(key)
    if hit is None:
        if len(space.edges) >= _space.MEMO_LIMIT:
            space.edges.clear()
        hit = _edge_ok(space, child, ra)
        space.edges[key] = hit
    return hit


def _edge_ok(space: AddressSpace, child: int, ra: int) -> bool:
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
    rm = space.find(ra)
    cm = space.find(child)
    if rm is None or cm is None:
        return True
    robj, rbias = space.object_for(rm)
    cobj, cbias = space.object_for(cm)
    if robj is None or cobj is None or insn.is_sigreturn_at(robj.arch, ra, space.read_code):
        return True
    if planted(space, rm, ra) or cobj.go_switch_return(child - cbias) \
            or cobj.go_switch_return(child + 1 - cbias):
        return True     # no call made this edge: Go's scheduler did
    crange = cobj.function_range(child - cbias)
    if crange is None:
        return True
    callee = _Callee(space, cobj, cbias, crange[0] + cbias, crange[1] + cbias)
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
    code = space.read_code(ra - size, size)
    target = insn.call_target(arch, ra, code)
    if target is None:
        slot = insn.x86_got_call_slot(ra, code) if arch == "x86_64" else None
        return slot is None or callee.via_slot(robj, slot - rbias)
    return callee.reached_from(target)


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
