#!/bin/bash
# capture_aarch64.sh [PROGRAM...]  -- gdb ground truth for the wild panel on aarch64.
#
# Debian bookworm arm64 programs (from the sysroot of scripts/wild/fetch_arm64_sysroot.sh)
# and our own arm64 builds run under qemu-user (trixie's static qemu-aarch64, -cpu max)
# with qemu's gdbstub, and scripts/capture_gt.py drives gdb-multiarch through it
# (GT_REMOTE): random breakpoints on each program's hot exported functions, then 1..300
# stepi, and a snapshot with GT_STACK (64 KiB) of stack at every stop.
#
# Each capture runs in a private mount namespace (unshare -m) with qemu chrooted into
# the sysroot, so the guest sees a plain arm64 Debian: /proc/self/maps, and with it the
# snapshots' mapping paths, are guest paths (/usr/bin/python3.11,
# /lib/aarch64-linux-gnu/libc.so.6).  Mounted there for the run only: /proc, /dev, a
# tmpfs /tmp, and under /opt/sframe-prof-wild: src (tests/wild/src, read-only), aarch64
# (our arm64 builds, committed at tests/snapshots/wild/root/opt/sframe-prof-wild/aarch64)
# and qemu.  The sysroot is mounted read-only there; the empty mount-point directories
# are the only change this script makes to it.
#
# Programs are single-threaded, because qemu's gdbstub cannot stop and step one thread
# of several reliably: pyload_a64.py runs pyload's rounds in the main thread only;
# cxxload is built with cxxload_nothread_a64.h, which keeps its worker from starting;
# xz runs with -T1.  Go programs are not captured: they always run several threads,
# and the first stop in a thread other than the main one crashes qemu 10.0's stub
# (segfault; seen with trixie's gdb 16 and bookworm's gdb 13 alike).
#
# Before each capture a probe run (scripts/wild/probe_bps_aarch64.py) keeps only the
# candidate breakpoints the workload really hits once it is past its start-up:
# capture_gt.py would wait forever on one that is never reached.
#
# Output: tests/snapshots/wild/aarch64-<program>.jsonl.gz and .files.json (written by
# scripts/wild/aarch64_files.py); raw gdb output and logs in $RAW.
# Knobs (env): SEED, SCALE (multiplies stop counts), RAW, JOBS (parallel captures, 2).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
SEED=${SEED:-20261208}
SCALE=${SCALE:-1}
JOBS=${JOBS:-2}
STACK=65536
RAW=${RAW:-/var/cache/sframe-prof/wild-arm64-raw}
SNAP=$REPO/tests/snapshots/wild
GUEST=/opt/sframe-prof-wild
BIN=$SNAP/root$GUEST/aarch64

command -v gdb-multiarch >/dev/null || { echo "need gdb-multiarch (apt-get install gdb-multiarch)" >&2; exit 1; }
command -v aarch64-linux-gnu-g++ >/dev/null || { echo "need aarch64-linux-gnu-g++ (apt-get install g++-aarch64-linux-gnu)" >&2; exit 1; }
SYSROOT=$("$REPO/scripts/wild/fetch_arm64_sysroot.sh")
QEMU=$("$REPO/scripts/wild/fetch_arm64_sysroot.sh" --print-qemu)
[ -x "$QEMU" ] || { echo "no qemu at $QEMU" >&2; exit 1; }
mkdir -p "$SNAP" "$RAW" "$BIN" "$RAW/data"
mkdir -p "$SYSROOT/proc" "$SYSROOT/dev" "$SYSROOT/tmp" \
    "$SYSROOT$GUEST/src" "$SYSROOT$GUEST/aarch64" "$SYSROOT$GUEST/qemu" "$SYSROOT$GUEST/data"

# --- our arm64 builds (Debian bookworm's cross g++ 12, the sysroot's libstdc++) -----
aarch64-linux-gnu-g++ -O2 -g -ffile-prefix-map="$REPO"=. \
    -include "$REPO/tests/wild/src/cxxload_nothread_a64.h" \
    -o "$BIN/cxxload" "$REPO/tests/wild/src/cxx/cxxload.cpp"

# --- workload inputs (in the guest at /opt/sframe-prof-wild/data) ------------------
cp "$REPO/scripts/wild/panel_sqlload.sql" "$RAW/data/sqlload.sql"
if [ ! -f "$RAW/data/xzdata.txt" ]; then
    python3 - "$RAW/data/xzdata.txt" <<'EOF'
import random, sys
rng = random.Random(7)
words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa",
         "lambda", "sigma", "omega", "stack", "frame", "unwind", "profile"]
with open(sys.argv[1], "w") as f:
    for i in range(1_500_000):
        f.write("%d %s %s %08x\n" % (i, rng.choice(words), rng.choice(words),
                                      rng.getrandbits(32)))
EOF
fi

# capture NAME INDEX STOPS START START_IGNORE BPS EXE ARGS...  (EXE: a guest path)
# NAME is a program or PROGRAM+PART (one of several runs of a program); its raw
# records go to $RAW/NAME.jsonl
capture() {
    local name=$1 idx=$2 n=$(( $3 * SCALE )) start=$4 ign=$5 bps=$6
    shift 6
    local port=$(( 12400 + idx )) seed=$(( SEED + 10 * idx )) t0=$SECONDS
    local out=$RAW/$name.jsonl log=$RAW/$name.log
    rm -f "$out" "$RAW/$name.bps"
    # shellcheck disable=SC2016
    env GT_OUT="$out" GT_N="$n" GT_SEED="$seed" GT_VARIANT="aarch64-$name" GT_BPS="$bps" \
        GT_START="$start" GT_START_IGNORE="$ign" PROBE_OUT="$RAW/$name.bps" \
        unshare -m --propagation private bash -c '
        set -eu
        S=$1 G=$2 Q=$3 SRC=$4 BIN=$5 DATA=$6 PORT=$7; shift 7
        # the sysroot itself read-only: the guest must not change the cached files
        mount --bind "$S" "$S"; mount -o remount,bind,ro "$S"
        mount -t proc proc "$S/proc"
        mount --rbind /dev "$S/dev"
        mount -t tmpfs tmpfs "$S/tmp"
        mount --bind "$SRC" "$S$G/src"; mount -o remount,bind,ro "$S$G/src"
        mount --bind "$BIN" "$S$G/aarch64"
        mount --bind "$(dirname "$Q")" "$S$G/qemu"
        mount --bind "$DATA" "$S$G/data"
        # the program under qemu in the chroot, waiting for gdb on port $1
        start_q() {
            local port=$1; shift
            env -i PATH=/usr/bin:/bin HOME=/tmp LC_ALL=C.UTF-8 PYTHONHASHSEED=0 \
                PYTHONDONTWRITEBYTECODE=1 \
                setarch -R /usr/sbin/chroot "$S" "$G/qemu/qemu-aarch64" -cpu max -g "$port" \
                "$@" < /dev/null > /dev/null 2>&1 &
            QPID=$!
            sleep 1
        }
        stop_q() { kill "$QPID" 2>/dev/null || true; wait "$QPID" 2>/dev/null || true; }
        # 1. which candidate breakpoints the workload hits (a never-hit one would stall)
        start_q "$PORT" "$@"
        GT_REMOTE=localhost:$PORT timeout -k 10 100 gdb-multiarch -q -nx -batch \
            -ex "set sysroot $S" -ex "file $S$1" -x "$PROBE_SCRIPT" || echo "probe gdb rc=$?"
        stop_q
        GT_BPS=$(paste -sd, "$PROBE_OUT")
        [ -n "$GT_BPS" ] || { echo "no candidate breakpoint was hit"; exit 1; }
        export GT_BPS
        # 2. the capture
        start_q $(( PORT + 100 )) "$@"
        # watchdog: qemu sometimes loses a single-step (the program runs on and gdb
        # waits for good); after 3 minutes without a new record stop the program, and
        # the records so far are kept
        (
            last=-1 idle=0
            while sleep 60; do
                n=$(wc -l < "$GT_OUT" 2>/dev/null || echo 0)
                if [ "$n" = "$last" ]; then idle=$(( idle + 1 )); else idle=0; fi
                last=$n
                if [ "$idle" -ge 3 ]; then
                    echo "watchdog: no new record for 3 minutes, stopping the program"
                    kill "$QPID" 2>/dev/null || true
                    break
                fi
            done
        ) &
        WPID=$!
        GT_REMOTE=localhost:$(( PORT + 100 )) timeout 2400 gdb-multiarch -q -nx -batch \
            -ex "set sysroot $S" -ex "file $S$1" -x "$GT_SCRIPT" || echo "gdb rc=$?"
        kill "$WPID" 2>/dev/null || true
        stop_q
    ' capture "$SYSROOT" "$GUEST" "$QEMU" "$REPO/tests/wild/src" "$BIN" "$RAW/data" "$port" "$@" \
        > "$log" 2>&1 || echo "$name: capture rc=$?"
    grep -ah '^GT: .*records' "$log" || echo "$name: no result, see $log"
    echo "$name: $(( SECONDS - t0 )) s"
}

# assemble PROGRAM PART...: the parts' records -> tests/snapshots/wild/aarch64-PROGRAM.*
assemble() {
    local prog=$1 raws=() p
    shift
    for p in "$@"; do
        [ -s "$RAW/$p.jsonl" ] && raws+=("$RAW/$p.jsonl")
    done
    [ ${#raws[@]} -gt 0 ] || { echo "$prog: nothing captured" >&2; return 1; }
    "$REPO/.venv/bin/python" "$REPO/scripts/wild/aarch64_files.py" --name "$prog" \
        --sysroot "$SYSROOT" --snap "$SNAP" "${raws[@]}"
}
export GT_STACK=$STACK GT_SCRIPT=$REPO/scripts/capture_gt.py \
    PROBE_SCRIPT=$REPO/scripts/wild/probe_bps_aarch64.py

# (not memcpy, memmove, strlen, strcmp: ifuncs on aarch64, which gdb cannot break on
# through qemu's stub, or where a breakpoint broke the program)
LIBC_BPS="malloc,free,memcmp"
PY_BPS="_PyEval_EvalFrameDefault,_PyEval_EvalFrameDefault,_Py_Dealloc,PyObject_Hash,\
PyUnicode_RichCompare,_PyUnicode_JoinArray,PyTuple_New,PyLong_FromLong,PyNumber_Remainder,\
PyObject_Free,PyObject_Malloc,_PyFunction_Vectorcall,PyObject_Str,PyTraceBack_Here,\
PyDict_SetItem,PyObject_GetAttr,PyObject_RichCompare,EVP_DigestUpdate,$LIBC_BPS"
PERL_BPS="Perl_pp_modulo,Perl_pp_multideref,Perl_av_fetch,Perl_hv_common,Perl_runops_standard,\
Perl_pp_const,Perl_sv_clear,Perl_pp_multiconcat,Perl_pp_match,Perl_regexec_flags,\
Perl_pp_entersub,Perl_sortsv_flags,Perl_pp_sort,Perl_pp_subst,Perl_die_unwind,\
Perl_leave_scope,Perl_sv_setsv_flags,Perl_pp_padsv,$LIBC_BPS"
# the workload's own functions by their linkage names: capture_gt.py splits FUNC:MAXSTEP
# at the first ':', so C++ qualified names cannot be given as they demangle
CXX_OWN=$(aarch64-linux-gnu-nm "$BIN/cxxload" | awk '$2 ~ /^[tT]$/ &&
    $3 ~ /(sort|map|virtual|exception|callback)_round|thrower|4area|_M_invoke|__introsort_loop|__insertion_sort|__adjust_heap/ {
    printf "%s,", $3 }')
CXX_BPS="${CXX_OWN}_ZSt18_Rb_tree_incrementPSt18_Rb_tree_node_base,\
_ZSt29_Rb_tree_insert_and_rebalancebPSt18_Rb_tree_node_baseS0_RS_,__cxa_throw,\
_Unwind_RaiseException,_Unwind_Find_FDE,__gxx_personality_v0,__cxa_allocate_exception,\
_Unwind_GetIPInfo,_Znwm,$LIBC_BPS"
# Debian's libsqlite3 exports its internal functions too
SQLITE_BPS="sqlite3VdbeExec,sqlite3VdbeExec,sqlite3BtreeTableMoveto,sqlite3GetVarint,\
sqlite3BtreeNext,sqlite3VdbeSorterRowkey,sqlite3VdbeSorterWrite,sqlite3VdbeSerialGet,\
sqlite3BtreePayloadFetch,sqlite3Int64ToText,sqlite3VdbeSorterNext,sqlite3VdbeRecordCompare,\
sqlite3VdbeMemRelease,sqlite3_value_text,sqlite3_result_text,sqlite3_str_appendf,\
sqlite3_step,$LIBC_BPS"
XZ_BPS="lzma_code,lzma_code,lzma_crc64,lzma_crc32,read,write,$LIBC_BPS"
# gzip exports nothing: its deflate code is reached by stepping on from read/write
# (not the libc functions: gzip calls them only when it starts and ends)
GZIP_INPUT=()
for _ in $(seq 20); do GZIP_INPUT+=("$GUEST/data/xzdata.txt"); done
GZIP_BPS="read:400,read:400,write:400,write:400"
OPENSSL_BPS="SHA256_Update,SHA256_Final,BN_mod_mul_montgomery,BN_mod_exp_mont_consttime,\
BN_CTX_get,CRYPTO_malloc,CRYPTO_free,OPENSSL_cleanse,EVP_DigestUpdate,EVP_Digest,RSA_sign,\
BN_bin2bn,BN_mul,BN_sqr,$LIBC_BPS"

run_one() {
    case $1 in
        python3.11) capture python3.11 1 100 PyTraceBack_Here 500 "$PY_BPS" \
            /usr/bin/python3.11 "$GUEST/src/pyload_a64.py" 3600 ;;
        perl) capture perl 2 100 main 0 "$PERL_BPS" \
            /usr/bin/perl "$GUEST/src/plload.pl" 3600 ;;
        cxxload) capture cxxload 3 100 main 0 "$CXX_BPS" "$GUEST/aarch64/cxxload" 3600 ;;
        # stripped Debian binaries have no `main` symbol: start in libc's
        sqlite3) capture sqlite3 4 100 __libc_start_main 0 "$SQLITE_BPS" \
            /usr/bin/sqlite3 :memory: ".read $GUEST/data/sqlload.sql" ;;
        xz) capture xz 5 100 __libc_start_main 0 "$XZ_BPS" \
            /usr/bin/xz -6 -T1 -c -k "$GUEST/data/xzdata.txt" ;;
        # gzip is quick: the same input 20 times over (20 gzip members on stdout)
        gzip) capture gzip 8 100 __libc_start_main 0 "$GZIP_BPS" \
            /bin/gzip -9 -c "${GZIP_INPUT[@]}" ;;
        # two runs: `openssl speed` does its digests before RSA, and 100 stops are
        # over long before it gets there
        openssl)
            capture openssl+sha256 6 50 __libc_start_main 0 "$OPENSSL_BPS" \
                /usr/bin/openssl speed -seconds 30 sha256
            capture openssl+rsa2048 7 50 __libc_start_main 0 "$OPENSSL_BPS" \
                /usr/bin/openssl speed -seconds 60 rsa2048 ;;
        *) echo "unknown program $1" >&2; return 1 ;;
    esac
    case $1 in
        openssl) assemble openssl openssl+sha256 openssl+rsa2048 ;;
        *) assemble "$1" "$1" ;;
    esac
}

[ $# -gt 0 ] || set -- python3.11 perl cxxload sqlite3 xz gzip openssl
# at most JOBS captures at a time (2 cores shared with others)
running=0
for p in "$@"; do
    run_one "$p" &
    running=$(( running + 1 ))
    if [ "$running" -ge "$JOBS" ]; then wait -n || true; running=$(( running - 1 )); fi
done
wait
