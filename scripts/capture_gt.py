# capture_gt.py -- gdb Python script: ground-truth stack snapshots for sframe-prof.
#
# Writes one JSON object per thread per stop, in the snapshot format of
# docs/snapshot-format.md (arch, regs, stack_base, stack_b64, mappings, memory,
# pac_mask, id, expected) plus optional fields expected_complete, expected_funcs,
# variant, event.  `expected` is gdb's own unwind (DWARF .eh_frame + gdb's
# sigtramp/prologue analysers; gdb has no SFrame reader), keeping only physical
# frames (NORMAL_FRAME, SIGTRAMP_FRAME).
#
# Native, gdb starts the target:
#   GT_OUT=x.jsonl gdb -q -nx -batch -x capture_gt.py --args ./prog 0 20 1 4000
# Native, repeated attach/detach of a running target:
#   GT_MODE=attach GT_PID=1234 GT_OUT=x.jsonl gdb -q -nx -batch -x capture_gt.py
# qemu-user gdbstub (single-threaded target: qemu's stub mixes up threads):
#   setarch -R qemu-aarch64 -cpu max -L /usr/aarch64-linux-gnu -g 1234 ./prog 0 20 0 4000 &
#   GT_REMOTE=localhost:1234 GT_OUT=x.jsonl gdb-multiarch -q -nx -batch \
#       -ex 'set sysroot /usr/aarch64-linux-gnu' -ex 'file ./prog' -x capture_gt.py
#
# Environment:
#   GT_OUT      output path (required)            GT_MODE    bp (default) | attach
#   GT_N        stops (default 40)                GT_PID     target pid (attach)
#   GT_STACK    bytes copied from sp (8192)       GT_REMOTE  host:port of a gdbstub
#   GT_SEED     RNG seed (default 1)              GT_MAXSTEP max random stepi (300)
#   GT_VARIANT  variant name put in id/variant    GT_BPS     comma list of functions
#   GT_PBP      probability of stopping at the breakpoint itself (default 0.25)
#   GT_BPS_EXTRA  more FUNC[:MAXSTEP] entries (weights a function, e.g. drap_frame:40)
#   GT_START    function of the first stop, where the breakpoints are set (main)
#   GT_START_IGNORE  hits of GT_START to let pass first (0; skips a program's start-up)
#   GT_OUTERMOST  comma list of functions that are outermost frames although gdb walks
#               on past them (Go's runtime.goexit, runtime.mstart): the chain ends there
import base64
import json
import os
import random
import re
import time

import gdb

OUT = os.environ["GT_OUT"]
MODE = os.environ.get("GT_MODE", "bp")
N = int(os.environ.get("GT_N", "40"))
STACK = int(os.environ.get("GT_STACK", "8192"))
SEED = int(os.environ.get("GT_SEED", "1"))
REMOTE = os.environ.get("GT_REMOTE")
MAXSTEP = int(os.environ.get("GT_MAXSTEP", "300"))
VARIANT = os.environ.get("GT_VARIANT", "unknown")
PBP = float(os.environ.get("GT_PBP", "0.25"))
DEFAULT_BPS = ("leaf,nest1,nest2,nest3,deep,hook_target,call_hook,by_value,sort_some,"
               "big_frame,vla_frame,usr1_handler,tick_handler,tick_work,one_round,"
               "drap_frame,shl_apply,shl_leaf,"
               # PLT stubs: stopped in with 0..3 stepi, so frame 0 is inside the stub
               "qsort@plt,raise@plt,memset@plt,shl_apply@plt,shl_leaf@plt")
# entries are FUNC or FUNC:MAXSTEP (a smaller random stepi range for that breakpoint);
# an entry may repeat to weight it.  GT_BPS_EXTRA is appended to the list.
START = os.environ.get("GT_START", "main")
START_IGNORE = int(os.environ.get("GT_START_IGNORE", "0"))
OUTERMOST = set(filter(None, os.environ.get("GT_OUTERMOST", "").split(",")))
BPS = [b for b in (os.environ.get("GT_BPS", DEFAULT_BPS) + ","
                   + os.environ.get("GT_BPS_EXTRA", "")).split(",") if b]
FRAME_LIMIT = 256
PAGE = 4096
M64 = (1 << 64) - 1

rng = random.Random(SEED)

KEEP_TYPES = {gdb.NORMAL_FRAME, gdb.SIGTRAMP_FRAME}
TYPE_NAMES = {getattr(gdb, n): n for n in dir(gdb) if n.endswith("_FRAME") and n.isupper()}


def quiet(cmd):
    return gdb.execute(cmd, to_string=True)


for cmd in ("set pagination off", "set confirm off", "set width 0", "set height 0",
            "set print thread-events off", "set print inferior-events off",
            "set startup-with-shell off", "set breakpoint pending on",
            # walk on into __libc_start_call_main / _start / clone, as a profiler does
            "set backtrace past-main on", "set backtrace past-entry on",
            "set backtrace limit unlimited",
            "handle SIGUSR1 nostop noprint pass", "handle SIGPROF nostop noprint pass",
            "handle SIGALRM nostop noprint pass",
            # Go's runtime preempts goroutines with SIGURG
            "handle SIGURG nostop noprint pass"):
    quiet(cmd)


def arch():
    name = gdb.selected_inferior().architecture().name()
    return "aarch64" if "aarch64" in name else "x86_64"


X86_REGS = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12",
            "r13", "r14", "r15", "eflags"]
A64_REGS = [f"x{i}" for i in range(29)] + ["cpsr"]


def read_regs(a, frame):
    def rd(name):
        return int(frame.read_register(name)) & M64
    if a == "x86_64":
        regs = {"pc": rd("rip"), "sp": rd("rsp"), "fp": rd("rbp")}
        extra = X86_REGS
    else:
        regs = {"pc": rd("pc"), "sp": rd("sp"), "fp": rd("x29"), "lr": rd("x30")}
        extra = A64_REGS
    for r in extra:
        try:
            regs[r] = rd(r)
        except (gdb.error, ValueError):
            pass
    return regs


def pac_mask(a, frame):
    if a != "aarch64":
        return None
    for r in ("pauth_cmask", "pauth_dmask"):
        try:
            return int(frame.read_register(r)) & M64
        except (gdb.error, ValueError):
            continue
    return None


def read_clipped(inf, addr, size):
    """Up to size bytes from addr, stopping at the first unreadable page."""
    try:
        return bytes(inf.read_memory(addr, size))
    except gdb.MemoryError:
        pass
    out = bytearray()
    end = addr + size
    while addr < end:
        n = min(end, (addr & ~(PAGE - 1)) + PAGE) - addr
        try:
            out += bytes(inf.read_memory(addr, n))
        except gdb.MemoryError:
            break
        addr += n
    return bytes(out)


MAPS_LINE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+)\s+(\S{4})\s+([0-9a-f]+)\s+\S+\s+\d+\s*(.*)$")
INFO_LINE = re.compile(r"^\s*(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+0x[0-9a-f]+\s+(0x[0-9a-f]+)"
                       r"\s+([r-][w-][x-][ps])\s*(.*)$")


def mappings(pid):
    """The process's memory map.  Natively /proc/PID/maps is read directly (we run in
    the target's root, so paths are as the target sees them).  Through a remote stub
    (qemu-user) gdb's `info proc mappings` reads the *guest* view of /proc/PID/maps
    over the remote protocol; gdb >= 12 prints the permissions column."""
    out = []
    if not REMOTE:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                m = MAPS_LINE.match(line.rstrip("\n"))
                if m:
                    out.append({"start": int(m.group(1), 16), "end": int(m.group(2), 16),
                                "offset": int(m.group(4), 16), "perms": m.group(3),
                                "path": m.group(5).strip()})
        return out
    text = quiet("info proc mappings")
    for line in text.splitlines():
        m = INFO_LINE.match(line)
        if m:
            out.append({"start": int(m.group(1), 16), "end": int(m.group(2), 16),
                        "offset": int(m.group(3), 16), "perms": m.group(4),
                        "path": m.group(5).strip()})
    if not out:
        raise RuntimeError("could not parse 'info proc mappings':\n" + text)
    return out


def vdso_memory(inf, maps):
    mem = []
    for m in maps:
        if m["path"] == "[vdso]":
            data = read_clipped(inf, m["start"], m["end"] - m["start"])
            mem.append({"start": m["start"], "b64": base64.b64encode(data).decode()})
    return mem


def walk(a, mask):
    """gdb's unwind from the selected thread's newest frame.
    Returns (kept frames [(pc, sp, name, type)], complete flag, note)."""
    kept = []
    f = gdb.newest_frame()
    depth = 0
    while True:
        depth += 1
        if f.type() in KEEP_TYPES:
            pc = int(f.pc()) & M64
            if mask:
                pc &= ~mask & M64
            sp = int(f.read_register("sp")) & M64
            kind = "SIGTRAMP" if f.type() == gdb.SIGTRAMP_FRAME else "NORMAL"
            kept.append((pc, sp, f.name(), kind))
            if f.name() in OUTERMOST:
                return kept, True, f"outermost function {f.name()}"
        if depth >= FRAME_LIMIT:
            return kept, False, "frame-limit"
        try:
            older = f.older()
        except gdb.error as e:
            return kept, False, f"gdb-error: {e}"
        if older is None:
            reason = f.unwind_stop_reason()
            return kept, reason == gdb.FRAME_UNWIND_OUTERMOST, gdb.frame_stop_reason_string(reason)
        f = older


class Capture:
    def __init__(self, out):
        self.out = out
        self.records = 0
        self.errors = 0

    def snapshot_all(self, event, stop):
        inf = gdb.selected_inferior()
        a = arch()
        maps = mappings(inf.pid)
        mem = vdso_memory(inf, maps)
        cur = gdb.selected_thread()
        recs = []
        for th in sorted(inf.threads(), key=lambda t: t.num):
            try:
                th.switch()
                fr = gdb.newest_frame()
                regs = read_regs(a, fr)
                mask = pac_mask(a, fr)
                stack = read_clipped(inf, regs["sp"], STACK)
                kept, complete, note = walk(a, mask)
            except (gdb.error, gdb.MemoryError, RuntimeError) as e:
                self.errors += 1
                print(f"GT: snapshot error (stop {stop} thread {th.num}): {e}")
                continue
            # a pc outside executable memory means gdb lost its way (e.g. an object
            # it had no symbols/CFI for): keep only the frames before it, and since
            # the last kept frame's cfa would come from the bogus frame, drop it too
            xmaps = [(m["start"], m["end"]) for m in maps if "x" in m["perms"]]
            for i, k in enumerate(kept):
                if not any(lo <= k[0] < hi for lo, hi in xmaps):
                    kept = kept[:i]
                    complete = False
                    note = f"pc-not-executable at frame {i} ({note})"
                    break
            if not complete:
                # gdb did not reach a genuine outermost frame: its last frames came
                # from heuristics (e.g. aarch64 PLT0 / the lazy resolver, which have no
                # CFI) and earlier frames' sp values can already be wrong.  Keep only
                # frame 0, which is exact.
                kept = kept[:1]
            expected = []
            for i, (pc, _sp, _n, _t) in enumerate(kept):
                e = {"pc": pc}
                if i + 1 < len(kept):
                    e["cfa"] = kept[i + 1][1]
                expected.append(e)
            rec = {
                "arch": a,
                "id": f"{VARIANT}/{event.split(':')[0]}/{stop}/t{th.num}",
                "variant": VARIANT,
                "event": event,
                "regs": regs,
                "stack_base": regs["sp"],
                "stack_b64": base64.b64encode(stack).decode(),
                "mappings": maps,
                "memory": mem,
                "expected": expected,
                "expected_complete": complete,
                "expected_stop": note,
                "expected_funcs": [k[2] for k in kept],
                "expected_types": [k[3] for k in kept],
            }
            if mask is not None:
                rec["pac_mask"] = mask
            recs.append(rec)
        if cur is not None and cur.is_valid():
            cur.switch()
        for r in recs:
            self.out.write(json.dumps(r, separators=(",", ":")) + "\n")
        self.records += len(recs)


def run_bp(cap):
    if REMOTE:
        quiet("target remote " + REMOTE)
    start = gdb.Breakpoint(START, temporary=True)
    start.ignore_count = START_IGNORE
    quiet("continue" if REMOTE else "run")
    # only the thread being stepped moves during stepi (must follow a live target)
    quiet("set scheduler-locking step")
    bps = []
    maxstep = {}
    for ent in BPS:
        fn, _, ms = ent.rpartition(":")
        if not ms.isdigit():     # no :MAXSTEP (C++ names hold "::")
            fn, ms = ent, ""
        try:
            if not gdb.lookup_global_symbol(fn) and not gdb.lookup_static_symbol(fn):
                # no debug symbol (e.g. a name that only exists in some variants)
                if "No symbol" in quiet(f"info address {fn}"):
                    continue
        except gdb.error:
            continue
        b = gdb.Breakpoint(fn, internal=False)
        b.enabled = False
        bps.append(b)
        maxstep[b.number] = int(ms) if ms else MAXSTEP
    print("GT: breakpoints on", ", ".join(b.location for b in bps))
    t0 = time.time()
    stop = 0
    # Lazy binding: the first call through each PLT slot goes via PLT0 into the
    # dynamic linker's resolver.  Catch each slot's first call once (nothing has
    # called it yet when main starts) and step a few instructions into it.
    for b in [b for b in bps if "@plt" in b.location]:
        if stop >= N:
            break
        for o in bps:
            o.enabled = False
        b.ignore_count = 0
        b.enabled = True
        try:
            quiet("continue")
        except gdb.error as e:
            print("GT: continue failed:", e)
            break
        b.enabled = False
        k = rng.randint(1, 12)
        quiet(f"stepi {k}")
        cap.snapshot_all(f"lazy:{b.location}+{k}", stop)
        stop += 1
    while stop < N:
        for b in bps:
            b.enabled = False
        b = rng.choice(bps)
        b.ignore_count = rng.randint(0, 3)
        b.enabled = True
        try:
            quiet("continue")
        except gdb.error as e:
            print("GT: continue failed:", e)
            break
        if not gdb.selected_inferior().pid or gdb.selected_thread() is None:
            print("GT: inferior is gone")
            break
        b.enabled = False
        if "@plt" in b.location:
            # x86_64: a resolved .plt entry is a single jmp, so favour k = 0
            k = rng.choice((0, 0, 1, 2, 3))
        elif rng.random() < PBP:
            k = 0
        else:
            k = rng.randint(1, maxstep[b.number])
        if k == 0:
            event = f"bp:{b.location}"
        else:
            # breakpoints off while stepping, or 'stepi N' stops at the next one
            try:
                quiet(f"stepi {k}")
            except gdb.error as e:
                print("GT: stepi failed:", e)
                break
            event = f"stepi:{b.location}+{k}"
        cap.snapshot_all(event, stop)
        stop += 1
    print(f"GT: {VARIANT} {stop} stops, {cap.records} records, {cap.errors} errors in "
          f"{time.time() - t0:.1f} s")
    try:
        quiet("kill")
    except gdb.error:
        pass


def run_attach(cap):
    pid = int(os.environ["GT_PID"])
    t0 = time.time()
    for stop in range(N):
        time.sleep(rng.uniform(0.005, 0.04))
        quiet(f"attach {pid}")
        cap.snapshot_all("attach", stop)
        quiet("detach")
    print(f"GT: {VARIANT} {N} attaches, {cap.records} records, {cap.errors} errors in "
          f"{time.time() - t0:.1f} s")


with open(OUT, "w", buffering=1) as fh:    # lines reach the file as written
    c = Capture(fh)
    (run_attach if MODE == "attach" else run_bp)(c)
