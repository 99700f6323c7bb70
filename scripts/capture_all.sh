#!/bin/bash
# capture_all.sh [CHROOTS]  -- capture ground-truth snapshots of every built target
# (tests/targets/<toolchain>-<arch>-<variant>/) with scripts/capture_gt.py and
# write tests/snapshots/<variant>.jsonl.gz plus the sysroot tests/snapshots/root/.
#
# Everything runs inside the sid chroot (made by scripts/make_chroots.sh), whatever
# toolchain built the binary, so only one libc per arch has to be kept in root/:
#   x86_64   native gdb: breakpoint+stepi stops (2 threads each), then attach stops
#            on a free-running copy (2 threads each);
#   aarch64  setarch -R qemu-aarch64 -cpu max (PAuth on) -L /usr/aarch64-linux-gnu,
#            gdb-multiarch through qemu's gdbstub, single-threaded target.
# Targets run as `prog 0 LEAF_N THREADS TICK_US` (forever, small leaf loop, SIGPROF
# interval timer on).  Knobs (env): SEED, X86_BP, X86_ATTACH, A64_BP, ONLY (a glob).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CHROOTS=${1:-/work/chroots}
SID=$CHROOTS/sid
SEED=${SEED:-20251126}
X86_BP=${X86_BP:-40}          # stops per x86_64 variant (x2 threads)
X86_ATTACH=${X86_ATTACH:-15}  # attach stops per x86_64 variant (x2 threads)
A64_BP=${A64_BP:-50}          # stops per aarch64 variant
ONLY=${ONLY:-*}
LEAF_N=20
TICK_US=4000
SNAP=$REPO/tests/snapshots
LOGDIR=$SNAP/.logs            # not committed
mkdir -p "$SNAP" "$LOGDIR"

[ -x "$SID/usr/bin/gdb-multiarch" ] || { echo "no sid chroot at $SID (run scripts/make_chroots.sh)" >&2; exit 1; }

MOUNTED=0
if ! mountpoint -q "$SID/proc"; then mount -t proc proc "$SID/proc"; MOUNTED=1; fi
cleanup() { [ $MOUNTED = 1 ] && umount "$SID/proc" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# targets appear inside the chroot as /targets/<variant>/..., which is also the
# path the snapshots' mappings carry (and where root/ keeps them)
rm -rf "$SID/targets" "$SID/sfp"
mkdir -p "$SID/targets" "$SID/sfp/out"
for d in "$REPO"/tests/targets/*-*-*/; do cp -a "$d" "$SID/targets/"; done
cp "$REPO/scripts/capture_gt.py" "$SID/sfp/"

in_sid() { chroot "$SID" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C "$@"; }

capture_x86() {   # variant seed
  local v=$1 seed=$2 extra=""
  # DRAP variants: many more stops inside drap_frame's realigning prologue/epilogue
  [[ $v == *-drap ]] && extra="drap_frame:60,drap_frame:60,drap_frame:60,drap_frame:60,drap_frame:20,drap_frame:20"
  in_sid GT_OUT=/sfp/out/$v.bp.jsonl GT_BPS_EXTRA=$extra GT_N=$X86_BP GT_SEED=$seed GT_VARIANT=$v \
    timeout 600 gdb -q -nx -batch -x /sfp/capture_gt.py \
      --args /targets/$v/prog 0 $LEAF_N 1 $TICK_US > "$LOGDIR/$v.bp.log" 2>&1 || echo "$v: bp gdb rc=$?"
  # attach mode: a free-running process (ASLR on), stopped at arbitrary points
  in_sid bash -c "
    /targets/$v/prog 0 $LEAF_N 1 $TICK_US & P=\$!
    sleep 0.2
    GT_MODE=attach GT_PID=\$P GT_OUT=/sfp/out/$v.attach.jsonl GT_N=$X86_ATTACH GT_SEED=$((seed + 1)) \
      GT_VARIANT=$v timeout 600 gdb -q -nx -batch -x /sfp/capture_gt.py
    kill \$P; wait \$P 2>/dev/null; true" > "$LOGDIR/$v.attach.log" 2>&1 || echo "$v: attach rc=$?"
  cat "$SID/sfp/out/$v.bp.jsonl" "$SID/sfp/out/$v.attach.jsonl" | gzip -9n > "$SNAP/$v.jsonl.gz"
  grep -h '^GT: .*records' "$LOGDIR/$v.bp.log" "$LOGDIR/$v.attach.log" || true
}

capture_a64() {   # variant seed port
  local v=$1 seed=$2 port=$3
  in_sid bash -c "
    setarch -R qemu-aarch64 -cpu max -L /usr/aarch64-linux-gnu -g $port \
      /targets/$v/prog 0 $LEAF_N 0 $TICK_US > /dev/null 2>&1 & Q=\$!
    sleep 0.3
    GT_REMOTE=localhost:$port GT_OUT=/sfp/out/$v.bp.jsonl GT_N=$A64_BP GT_SEED=$seed GT_VARIANT=$v \
      timeout 900 gdb-multiarch -q -nx -batch -ex 'set sysroot /usr/aarch64-linux-gnu' \
        -ex 'set solib-search-path /targets/$v' -ex 'file /targets/$v/prog' -x /sfp/capture_gt.py
    kill \$Q 2>/dev/null; wait \$Q 2>/dev/null; true" > "$LOGDIR/$v.bp.log" 2>&1 || echo "$v: qemu rc=$?"
  gzip -9n < "$SID/sfp/out/$v.bp.jsonl" > "$SNAP/$v.jsonl.gz"
  grep -h '^GT: .*records' "$LOGDIR/$v.bp.log" || true
}

i=0
(
  for d in "$REPO"/tests/targets/*-x86_64-*/; do
    v=$(basename "$d"); i=$((i + 1))
    [[ $v == $ONLY ]] || continue
    capture_x86 "$v" $((SEED + 10 * i))
  done
) &
XJOB=$!
(
  for d in "$REPO"/tests/targets/*-aarch64-*/; do
    v=$(basename "$d"); i=$((i + 1))
    [[ $v == $ONLY ]] || continue
    capture_a64 "$v" $((SEED + 10 * i + 5)) $((12300 + i))
  done
) &
AJOB=$!
wait $XJOB $AJOB

# sysroot: every mapped file, at its mapped path
python3 - "$SNAP" "$SID" <<'EOF'
import gzip, json, os, shutil, sys, glob
snap, sid = sys.argv[1], sys.argv[2]
paths = set()
for f in glob.glob(os.path.join(snap, "*.jsonl.gz")):
    with gzip.open(f, "rt") as fh:
        for line in fh:
            for m in json.loads(line)["mappings"]:
                if m["path"].startswith("/"):
                    paths.add(m["path"])
root = os.path.join(snap, "root")
for p in sorted(paths):
    src = os.path.join(sid, p.lstrip("/"))
    dst = os.path.join(root, p.lstrip("/"))
    if not os.path.isfile(src):
        print("missing in chroot:", p); continue
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copyfile(src, dst)      # follows symlinks: root/ holds real files
    shutil.copymode(src, dst)
print("root/: %d files" % len(paths))
EOF

# summary table (markdown) for tests/snapshots/README.md
python3 - "$SNAP" <<'EOF2'
import gzip, json, os, sys, glob
snap = sys.argv[1]
print("| file | snapshots | expected frames | expected_complete | signal frames | worker-thread | qsort callback | DRAP frame | in libsfpshape |")
print("|---|---|---|---|---|---|---|---|---|")
tot = {}
for f in sorted(glob.glob(os.path.join(snap, "*.jsonl.gz"))):
    n = fr = comp = sig = thr = cb = drap = shl = 0
    with gzip.open(f, "rt") as fh:
        for line in fh:
            r = json.loads(line)
            funcs = [x or "" for x in r.get("expected_funcs", [])]
            n += 1; fr += len(r["expected"]); comp += bool(r.get("expected_complete"))
            sig += "SIGTRAMP" in r.get("expected_types", [])
            thr += "worker" in funcs
            cb += "by_value" in funcs
            drap += "drap_frame" in funcs
            shl += any(x.startswith("shl_") for x in funcs)
    row = (n, fr, comp, sig, thr, cb, drap, shl)
    arch = "aarch64" if "-aarch64-" in f else "x86_64"
    tot[arch] = [a + b for a, b in zip(tot.get(arch, [0] * 8), row)]
    print("| %s | %s |" % (os.path.basename(f), " | ".join(map(str, row))))
for arch, row in sorted(tot.items()):
    print("| **total %s** | %s |" % (arch, " | ".join(map(str, row))))
EOF2
