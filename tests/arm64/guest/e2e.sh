#!/bin/bash
# e2e.sh -- the arm64 guest's half of tests/arm64/test_arm64_e2e.py.
#
# Runs inside the arm64 VM (scripts/arm64-vm.sh run -- bash tests/arm64/guest/e2e.sh)
# or, unchanged, on a real arm64 Linux machine as root from the repository root with
# SFP_VM_OUT=DIR (see docs/arm64.md).  Writes everything to $SFP_VM_OUT/e2e:
#
#   live.pb.gz, live.folded, live.log   sframe-prof -p PIDS -d 10: unwound in the guest
#   run.sfcap, record.log               sframe-prof record -p PIDS, stopped (SIGINT) when
#                                       the live profile's 10 s end: the same run
#   guest-report.pb.gz, report.log      sframe-prof report run.sfcap, in the guest
#   root/                               the targets' mapped files (for report --root)
#   targets.json                        pid -> program
#   wild-python.pb.gz, wild-python.log  sframe-prof -p on Debian's python3 running the wild
#                                       panel's tests/wild/src/pyload.py, 10 s
#   wild-panel.pb.gz, wild-panel.log    the rest of the panel (perl, gzip, xz, sqlite3,
#                                       openssl, cxxload, Go goroutines), one 15 s window
#   guest.json                          kernel, CPU features, PAC mask, versions, timings
#
# Targets (each a pac-ret build with SFrame V3 from sid's cross toolchain, run from a
# copy in /tmp):
#   tests/targets/v3sid-aarch64-O2-pacret/prog     threads, signal handlers (raise and a
#                                                  SIGPROF timer), qsort through the PLT
#   tests/targets/v3sid-aarch64-O2-pacretleaf/prog the same with leaf functions signed too
#   tests/arm64/targets/kio                        mostly in the kernel (read of /dev/zero)
# They are stopped (SIGSTOP) while the two BPF programs compile (one to two minutes
# under TCG), run at nice 19 during the 10 s window (the profilers' consumers come
# first, the programs get the rest of the two CPUs) and are stopped again after it.
set -uo pipefail
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
OUT=${SFP_VM_OUT:?set SFP_VM_OUT to a writable directory}/e2e
rm -rf "$OUT"
mkdir -p "$OUT"
cd "$SRC"
WORK=$(mktemp -d /tmp/sfp-e2e.XXXXXX)
# In the VM scripts/arm64-vm.sh puts sframe-prof on PATH; on an arm64 machine the
# checkout's .venv (scripts/setup.sh) has what it needs.
export PYTHONPATH=$SRC${PYTHONPATH:+:$PYTHONPATH}
PY=python3
if ! command -v sframe-prof >/dev/null; then
    [ -x "$SRC/.venv/bin/python" ] && PY=$SRC/.venv/bin/python
    mkdir -p "$WORK/bin"
    printf '#!/bin/sh\nexec %s -m profiler "$@"\n' "$PY" > "$WORK/bin/sframe-prof"
    chmod +x "$WORK/bin/sframe-prof"
    export PATH=$WORK/bin:$PATH
fi
T0=$(date +%s.%N)
STEPS=()
step() {
    local t
    t=$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
    STEPS+=("\"$1\": $t")
    echo "### [$t s] $1"
}
fail() { echo "e2e.sh: FAILED: $*" >&2; exit 1; }

# Slow TCG interrupts make the kernel lower perf_event_max_sample_rate; do not throttle.
echo 0 > /proc/sys/kernel/perf_cpu_time_max_percent 2>/dev/null

step start
# The programs and the capture live in /tmp: in the VM /src and /out are 9p shares,
# where every read of a page is a round trip to the host.
T=$SRC/tests/targets
mkdir -p "$WORK/prog-pacret" "$WORK/prog-pacretleaf" "$WORK/kio"
cp "$T/v3sid-aarch64-O2-pacret/prog" "$WORK/prog-pacret/"
cp "$T/v3sid-aarch64-O2-pacretleaf/prog" "$WORK/prog-pacretleaf/"
cp "$SRC/tests/arm64/targets/kio" "$WORK/kio/"
nice -n 19 "$WORK/prog-pacret/prog" 0 1000 1 4000 &
P1=$!
nice -n 19 "$WORK/prog-pacretleaf/prog" 0 1000 1 &
P2=$!
nice -n 19 "$WORK/kio/kio" 0 3000 &
P3=$!
PIDS=$P1,$P2,$P3
cleanup() { kill -9 $P1 $P2 $P3 2>/dev/null; wait $P1 $P2 $P3 2>/dev/null; }
trap cleanup EXIT
sleep 1
kill -STOP $P1 $P2 $P3      # held while the two BPF programs compile
printf '{"%s": "prog-pacret", "%s": "prog-pacretleaf", "%s": "kio"}\n' $P1 $P2 $P3 \
    > "$OUT/targets.json"

sframe-prof -p "$PIDS" -d 10 -o "$OUT/live.pb.gz" --folded "$OUT/live.folded" \
    > "$OUT/live.log" 2>&1 &
L=$!
# The recorder samples until the live profile's 10 s are over (SIGINT: it writes what it
# has and exits 0), so that both see the same run of the programs.
sframe-prof record -p "$PIDS" -o "$WORK/run.sfcap" > "$OUT/record.log" 2>&1 &
R=$!
step "profilers started (pids $PIDS)"

sampling() { grep -q '^sframe-prof: sampling' "$1" 2>/dev/null; }
live_at="" rec_at=""
for _ in $(seq 1 3000); do
    [ -z "$live_at" ] && sampling "$OUT/live.log" && live_at=$(date +%s.%N) && step "live profiler sampling"
    [ -z "$rec_at" ] && sampling "$OUT/record.log" && rec_at=$(date +%s.%N) && step "recorder sampling"
    [ -n "$live_at" ] && [ -n "$rec_at" ] && break
    kill -0 $L 2>/dev/null && kill -0 $R 2>/dev/null || break
    sleep 0.1
done
[ -n "$live_at" ] && [ -n "$rec_at" ] || fail "a profiler did not start: $(cat "$OUT/live.log" "$OUT/record.log")"
# Both sample: let the programs run (at nice 19 still, so that the profilers' consumers
# keep up with the samples of both CPUs) until the live profile's -d 10 ends.
cpu() { local p; for p in "$@"; do awk '{printf "%d ", $14 + $15}' /proc/$p/stat 2>/dev/null || printf '- '; done; }
CPU0=$(cpu $L $R $P1 $P2 $P3)
kill -CONT $P1 $P2 $P3
step "programs running"
sleep "$(awk -v a="$live_at" -v b="$(date +%s.%N)" 'BEGIN{d = a + 10.2 - b; print (d > 0 ? d : 0)}')"
kill -STOP $P1 $P2 $P3
kill -INT $R
CPU1=$(cpu $L $R $P1 $P2 $P3)
step "programs stopped, recorder stopped"
# CPU time (1/100 s) each used in the window: live profiler, recorder, the programs
echo "$CPU0 $CPU1" | awk '{n = NF / 2; s = ""; for (i = 1; i <= n; i++) s = s " " ($(i + n) - $i)
    print "e2e.sh: cpu ticks in the window (live, recorder, prog-pacret, prog-pacretleaf, kio):" s}'

wait $R
rrc=$?
step "recording done (status $rrc)"
cat "$OUT/record.log"
[ $rrc -eq 0 ] || fail "sframe-prof record exited with $rrc"
kill -0 $P1 $P2 $P3 || fail "a target died during the run"
mapfile -t MAPPED < <(for p in $P1 $P2 $P3; do awk '$6 ~ /^\// {print $6}' /proc/$p/maps; done \
                      | sort -u)

# The report in the guest runs while the live profiler symbolizes (two CPUs).
sframe-prof report "$WORK/run.sfcap" -o "$OUT/guest-report.pb.gz" \
    --folded "$OUT/guest-report.folded" > "$OUT/report.log" 2>&1 &
G=$!

wait $L
lrc=$?
step "live profile done (status $lrc)"
cat "$OUT/live.log"
[ $lrc -eq 0 ] || fail "sframe-prof -p exited with $lrc"
cleanup

# The files the targets mapped, and their detached debug files (by build ID), kept for
# `report --root` on another machine.
mkdir -p "$OUT/root"
for f in "${MAPPED[@]}"; do
    [ -f "$f" ] && cp --parents "$f" "$OUT/root/"
done
"$PY" - "$OUT/root" "${MAPPED[@]}" <<'EOF' || fail "copying the debug files failed"
import os, shutil, sys
from profiler.unwind.objfile import ObjectFile
from profiler.symbolize.debugfiles import read_build_id
root = sys.argv[1]
for path in sys.argv[2:]:
    try:
        bid = read_build_id(ObjectFile.open(path))
    except Exception:  # noqa: BLE001 - not an ELF file, unreadable: nothing to copy
        continue
    dbg = f"/usr/lib/debug/.build-id/{bid[:2]}/{bid[2:]}.debug"
    if len(bid) > 2 and os.path.exists(dbg):
        os.makedirs(os.path.dirname(root + dbg), exist_ok=True)
        shutil.copyfile(dbg, root + dbg)
        print(f"e2e.sh: kept {dbg} ({path})")
EOF
step "mapped files copied"

wait $G
prc=$?
cat "$OUT/report.log"
step "guest report done (status $prc)"
[ $prc -eq 0 ] || fail "sframe-prof report exited with $prc"
cp "$WORK/run.sfcap" "$OUT/run.sfcap"
rm -rf "$WORK"

# The wild panel's CPython, live: Debian's python3 as the guest has it (built by
# Debian with pac-ret, .eh_frame only, no .sframe) running tests/wild/src/pyload.py
# (json, re, hashlib, sort with a key, exceptions, generators, a second thread).
python3 "$SRC/tests/wild/src/pyload.py" 900 &
PYW=$!
sframe-prof -p $PYW -d 10 -o "$OUT/wild-python.pb.gz" > "$OUT/wild-python.log" 2>&1
wrc=$?
kill $PYW 2>/dev/null; wait $PYW 2>/dev/null
cat "$OUT/wild-python.log"
[ $wrc -eq 0 ] || fail "sframe-prof -p (wild python3) exited with $wrc"
step "wild python3 profiled"

# The rest of the wild panel, live, in one 15 s window: the guest's own perl, gzip, xz,
# sqlite3 and openssl (Debian trixie arm64, pac-ret, .eh_frame only), and the panel's
# C++ program and Go goroutines, cross-built on the host (scripts/wild/build_arm64_guest.sh).
# The test tells the programs apart by the pprof `process` label.
PANEL=/tmp/sfp-panel
rm -rf "$PANEL"; mkdir -p "$PANEL"
cp "$SRC/build/wild/arm64-guest/cxxload" "$SRC/build/wild/arm64-guest/goroutines" "$PANEL/" \
    || fail "build/wild/arm64-guest is missing (scripts/wild/build_arm64_guest.sh)"
cp "$SRC/tests/wild/src/plload.pl" "$SRC/scripts/wild/panel_sqlload.sql" "$PANEL/"
yes 'the quick brown fox jumps over the lazy dog 0123456789' | head -c 16M > "$PANEL/in"
LOOPS=()
# the long runs are the programs themselves; gzip and xz are shell loops (a new process
# every few seconds, followed by sframe-prof as the loop's children)
run() { nice -n 19 "$@" >/dev/null 2>&1 & LOOPS+=($!); }
loop() { nice -n 19 sh -c "while :; do $1; done" >/dev/null 2>&1 & LOOPS+=($!); }
run perl "$PANEL/plload.pl" 900
loop "gzip -6 -c $PANEL/in"
loop "xz -6 -T1 -c $PANEL/in"
nice -n 19 sqlite3 :memory: < "$PANEL/panel_sqlload.sql" >/dev/null 2>&1 & LOOPS+=($!)
run openssl speed -seconds 60 -bytes 8192 sha256 rsa2048 ecdsap256
run "$PANEL/cxxload" 900
run "$PANEL/goroutines" 900
sleep 2
PIDS=$(IFS=,; echo "${LOOPS[*]}")
sframe-prof -p "$PIDS" -d 15 -o "$OUT/wild-panel.pb.gz" > "$OUT/wild-panel.log" 2>&1
prc=$?
for pid in "${LOOPS[@]}"; do pkill -P "$pid" 2>/dev/null; kill "$pid" 2>/dev/null; done
pkill -f "$PANEL/" 2>/dev/null
wait 2>/dev/null
rm -rf "$PANEL"
cat "$OUT/wild-panel.log"
[ $prc -eq 0 ] || fail "sframe-prof -p (wild panel) exited with $prc"
step "wild panel profiled"
step "writing guest.json"

"$PY" - "$OUT/guest.json" "{$(IFS=,; echo "${STEPS[*]}")}" <<'EOF'
import json, os, platform, subprocess, sys
from profiler.capture.bcc_source import read_pac_mask

def pkg(name):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name], capture_output=True,
                       text=True)
    return r.stdout.strip() or None

features = ""
for line in open("/proc/cpuinfo"):
    if line.startswith("Features"):
        features = line.split(":", 1)[1].split()
        break
mask = read_pac_mask()
json.dump({
    "machine": platform.machine(), "kernel": os.uname().release,
    "python": platform.python_version(), "python3-bpfcc": pkg("python3-bpfcc"),
    "cpu_features": features, "pac_mask": None if mask is None else hex(mask),
    "steps": json.loads(sys.argv[2]),
}, open(sys.argv[1], "w"), indent=1)
print(open(sys.argv[1]).read())
EOF
