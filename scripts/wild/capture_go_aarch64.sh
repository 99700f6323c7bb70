#!/bin/sh
# capture_go_aarch64.sh OUTDIR -- gdb ground truth for the arm64 Go panel programs
# (tests/snapshots/wild/aarch64-go*-goroutines.jsonl.gz), under the panel's
# qemu-aarch64 (scripts/wild/fetch_arm64_sysroot.sh --print-qemu) with gdb-multiarch.
#
# Go always starts several threads, and qemu's gdb stub crashes on a stop in any
# thread but the first; with GOMAXPROCS=1 the goroutines share the first thread, so
# breakpoints on the program's own functions (plus random stepi) stop there.  The
# binaries are scripts/wild/build_go.sh's arm64 goroutines builds (Go 1.19.8 from
# Debian bookworm, Go 1.24.4 from scripts/wild/fetch_go.sh), statically linked, so no
# sysroot is needed.  Their mapped path is renamed to /opt/sframe-prof-wild/aarch64/
# VERSION/goroutines when the files are committed (tests/snapshots/wild/root/...).
set -eu
OUT=${1:?usage: capture_go_aarch64.sh OUTDIR}
HERE=$(cd "$(dirname "$0")" && pwd)
QEMU=$("$HERE/fetch_arm64_sysroot.sh" --print-qemu)
BPS="main.fib,main.deep,main.mapWork,main.shapes,main.sortWork.func1,runtime.mallocgc,main.level1,strconv.Itoa,runtime.mapassign_faststr,main.allocate"
mkdir -p "$OUT"
port=12460
for bin in "$OUT"/*/arm64/goroutines; do
    ver=$(basename "$(dirname "$(dirname "$bin")")")
    port=$((port + 1))
    GOMAXPROCS=1 setarch -R "$QEMU" -cpu max -g $port "$bin" 60 >/dev/null 2>&1 &
    q=$!
    sleep 1
    GT_REMOTE=localhost:$port GT_BPS=$BPS GT_START=main.main GT_N=${N:-60} GT_STACK=32768 \
        GT_MAXSTEP=150 GT_OUTERMOST=runtime.goexit,runtime.mstart GT_VARIANT="aarch64-$ver" \
        GT_OUT="$OUT/aarch64-$ver-goroutines.jsonl" timeout 900 gdb-multiarch -q -nx -batch \
        -ex "file $bin" -x "$HERE/../capture_gt.py" >"$OUT/aarch64-$ver.log" 2>&1 || true
    kill $q 2>/dev/null || true
done
