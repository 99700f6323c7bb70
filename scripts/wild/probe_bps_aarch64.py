# probe_bps_aarch64.py -- gdb Python script: which candidate breakpoints does a program
# under qemu's gdbstub really hit?  scripts/capture_gt.py waits forever on a breakpoint
# that is never reached, so scripts/wild/capture_aarch64.sh keeps only the functions
# this probe saw hit at least PROBE_MIN times in PROBE_SECONDS of the workload.
#
#   GT_REMOTE=localhost:PORT GT_BPS=f,g,... PROBE_OUT=hits.txt \
#       gdb-multiarch -q -nx -batch -ex 'set sysroot S' -ex 'file S/EXE' -x probe_bps_aarch64.py
#
# Run it under `timeout`: once only never-hit breakpoints are left the probe waits for
# good, and is killed; the kept names are written whenever one more function reaches
# PROBE_MIN hits, so the file is complete by then.
# Env: GT_START / GT_START_IGNORE as for capture_gt.py (where the probe starts),
# PROBE_SECONDS (60), PROBE_MIN (6), PROBE_WARMUP (15: seconds whose hits do not count).
# Writes the kept names to PROBE_OUT, one per line in GT_BPS order (repeats kept, so
# weights survive), and prints every count when it ends by itself.
import os
import time

import gdb

REMOTE = os.environ["GT_REMOTE"]
NAMES = [b for b in os.environ["GT_BPS"].split(",") if b]
OUT = os.environ["PROBE_OUT"]
SECONDS = float(os.environ.get("PROBE_SECONDS", "60"))
WARMUP = float(os.environ.get("PROBE_WARMUP", "15"))
MIN_HITS = int(os.environ.get("PROBE_MIN", "6"))
START = os.environ.get("GT_START", "main")
START_IGNORE = int(os.environ.get("GT_START_IGNORE", "0"))

for cmd in ("set pagination off", "set confirm off", "set breakpoint pending on",
            "handle SIGUSR1 nostop noprint pass", "handle SIGPROF nostop noprint pass",
            "handle SIGALRM nostop noprint pass"):
    gdb.execute(cmd, to_string=True)


def write_kept() -> None:
    with open(OUT, "w") as f:
        for name in NAMES:
            c = counters.get(name)
            if c is not None and hits.get(c.number, 0) >= MIN_HITS:
                f.write(name + "\n")


gdb.execute("target remote " + REMOTE, to_string=True)
start = gdb.Breakpoint(START, temporary=True)
start.ignore_count = START_IGNORE
gdb.execute("continue", to_string=True)
counters: dict[str, gdb.Breakpoint] = {}
hits: dict[int, int] = {}
for name in dict.fromkeys(NAMES):
    # an entry may be FUNC:MAXSTEP (capture_gt.py's step range for it)
    func, _, steps = name.rpartition(":")
    spec = func if func and steps.isdigit() else name
    try:
        counters[name] = gdb.Breakpoint(spec, internal=True)
        hits[counters[name].number] = 0
    except (gdb.error, RuntimeError) as e:
        print(f"PROBE: no breakpoint on {name}: {e}")
# each stop counts the breakpoints it was for; one that reached PROBE_MIN is turned off
# (every hit is a round trip through the stub), so the program runs on to the others
stopped_at: list[int] = []


def on_stop(ev: gdb.StopEvent) -> None:
    stopped_at.extend(b.number for b in getattr(ev, "breakpoints", []))
    if isinstance(ev, gdb.SignalEvent):
        print("PROBE: stopped by", ev.stop_signal)


gdb.events.stop.connect(on_stop)
# hits in the first WARMUP seconds do not count: a function called only while the
# program sets up (or only when it ends) would stall the capture
counting_from = time.time() + WARMUP
deadline = counting_from + SECONDS
while time.time() < deadline and any(b.enabled for b in counters.values()):
    stopped_at.clear()
    try:
        gdb.execute("continue", to_string=True)
    except gdb.error as e:
        print("PROBE: continue failed:", e)
        break
    if not stopped_at:
        break               # interrupted (SIGINT from `timeout`) or the program ended
    if time.time() < counting_from:
        continue
    for num in stopped_at:
        hits[num] = hits.get(num, 0) + 1
    for b in counters.values():
        if b.enabled and hits.get(b.number, 0) >= MIN_HITS:
            b.enabled = False
            write_kept()
write_kept()
for name, c in counters.items():
    print(f"PROBE: {hits.get(c.number, 0):8d} {name}")
try:
    gdb.execute("kill", to_string=True)
except gdb.error:
    pass
