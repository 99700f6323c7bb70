#!/bin/bash
# capture_x86_64.sh [PANEL_DIR]  -- gdb ground truth for the wild panel on x86_64.
#
# Runs each panel program (Debian's binaries in place, ours from PANEL_DIR, default
# /opt/sframe-prof-wild, as built by scripts/wild/build_panel.sh) under native gdb
# with scripts/capture_gt.py, twice:
#   bp      gdb starts the program; after GT_START (main, or a function reached only
#           once the workload runs, for CPython's long start-up) it stops at random
#           breakpoints on the program's hot functions (picked from perf profiles of
#           the workload) and steps 1..300 instructions on from most of them;
#   attach  a free-running copy (ASLR on) is attached to and detached from at
#           arbitrary moments.
# Every thread of the process is recorded at each stop, with GT_STACK (64 KiB) of
# stack.  scripts/wild/panel_files.py then writes tests/snapshots/wild/x86_64-<name>
# .jsonl.gz and its .files.json sidecar, and copies our own binaries under root/.
# Knobs (env): SEED, ONLY (a glob over program names), SCALE (multiplies stop counts).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
W=${1:-/opt/sframe-prof-wild}
SEED=${SEED:-20261207}
ONLY=${ONLY:-*}
SCALE=${SCALE:-1}
STACK=65536
SNAP=$REPO/tests/snapshots/wild
RAW=$W/raw                    # gdb's JSONL output and logs (not committed)
mkdir -p "$SNAP" "$RAW"

[ -x "$W/cxxload" ] || { echo "no $W/cxxload: run scripts/wild/build_panel.sh $W first" >&2; exit 1; }
PY310=/root/.pyenv/versions/3.10.13/bin/python3.10
GO_VERSION=${GO_VERSION:-go1.24.4}   # the Go toolchain whose builds are captured
EXTRA_ENV=()                         # more GT_* settings for the next runs
TIMEOUT=600                          # seconds per gdb run

# bp NAME PART SEED STOPS START START_IGNORE BPS -- CMD...   (gdb starts CMD)
bp() {
    local name=$1 part=$2 seed=$3 n=$(( $4 * SCALE )) start=$5 ign=$6 bps=$7
    shift 8
    env "${EXTRA_ENV[@]}" GT_OUT="$RAW/$name.$part.jsonl" GT_N="$n" GT_STACK=$STACK \
        GT_SEED="$seed" GT_VARIANT="x86_64-$name${part#bp}" GT_BPS="$bps" GT_START="$start" GT_START_IGNORE="$ign" \
        timeout "$TIMEOUT" gdb -q -nx -batch -x "$REPO/scripts/capture_gt.py" --args "$@" \
        > "$RAW/$name.$part.log" 2>&1 < /dev/null || echo "$name: $part gdb rc=$?"
    PARTS+=("$RAW/$name.$part.jsonl")
}

# attach NAME PART SEED STOPS -- CMD...   (CMD runs free, gdb attaches again and again)
attach() {
    local name=$1 part=$2 seed=$3 n=$(( $4 * SCALE ))
    shift 5
    "$@" > /dev/null 2>&1 < /dev/null &
    local pid=$!
    sleep 3    # past start-up
    env "${EXTRA_ENV[@]}" GT_MODE=attach GT_PID=$pid GT_OUT="$RAW/$name.$part.jsonl" GT_N="$n" \
        GT_STACK=$STACK GT_SEED="$seed" GT_VARIANT="x86_64-$name" \
        timeout "$TIMEOUT" gdb -q -nx -batch -x "$REPO/scripts/capture_gt.py" \
        > "$RAW/$name.$part.log" 2>&1 < /dev/null || echo "$name: $part gdb rc=$?"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    PARTS+=("$RAW/$name.$part.jsonl")
}

# package NAME [OPTION]: the parts captured since the last package -> tests/snapshots/wild
package() {
    "$REPO/.venv/bin/python" "$REPO/scripts/wild/panel_files.py" --arch x86_64 \
        --name "$1" --panel-dir "$W" --out "$SNAP" ${2:-} "${PARTS[@]}"
    for p in "${PARTS[@]}"; do grep -h '^GT: .*records' "${p%.jsonl}.log" || true; done
    PARTS=()
}

# program NAME INDEX: true if NAME is selected; sets SEED1 for its captures
program() {
    [[ $1 == $ONLY ]] || return 1
    SEED1=$(( SEED + 10 * $2 ))
    PARTS=()
    echo "== $1 ($(date -u +%T))"
}

# libc's string functions are IFUNCs: gdb's breakpoint may land on a variant this CPU
# does not use (never hit, and the run waits for it), so only malloc and free
LIBC_BPS="malloc,free"
PY311_BPS="_PyEval_EvalFrameDefault,_PyEval_EvalFrameDefault,_Py_Dealloc,PyObject_Hash,\
PyUnicode_RichCompare,_PyUnicode_JoinArray,PyTuple_New,PyLong_FromLong,PyNumber_Remainder,\
PyObject_Free,PyObject_Malloc,_PyFunction_Vectorcall,PyObject_Str,PyTraceBack_Here,\
PyDict_SetItem,PyObject_GetAttr,$LIBC_BPS"
PY310_BPS="_PyEval_EvalFrameDefault,_PyEval_EvalFrameDefault,PyObject_RichCompare,\
_PyEval_MakeFrameVector,PyLong_FromLong,unsafe_tuple_compare,frame_dealloc,_PyObject_Malloc,\
_PyObject_Free,list_sort_impl,tupledealloc,list_dealloc,_Py_Dealloc,PyObject_Hash,\
sre_ucs1_search,sre_ucs1_match,PyTraceBack_Here,_PyUnicode_JoinArray,$LIBC_BPS"
PERL_BPS="Perl_pp_modulo,Perl_pp_multideref,Perl_av_fetch,Perl_hv_common,Perl_runops_standard,\
Perl_pp_const,Perl_sv_clear,Perl_pp_multiconcat,Perl_pp_match,Perl_regexec_flags,\
Perl_pp_entersub,Perl_sortsv_flags,Perl_pp_sort,Perl_pp_subst,Perl_die_unwind,\
Perl_leave_scope,Perl_sv_setsv_flags,Perl_pp_padsv,$LIBC_BPS"
CXX_BPS="(anonymous namespace)::sort_round,(anonymous namespace)::map_round,\
(anonymous namespace)::virtual_round,(anonymous namespace)::thrower,\
(anonymous namespace)::exception_round,(anonymous namespace)::callback_round,\
(anonymous namespace)::Square::area,(anonymous namespace)::Circle::area,\
std::_Rb_tree_increment,std::_Rb_tree_insert_and_rebalance,__cxa_throw,\
_Unwind_RaiseException,_Unwind_Find_FDE,__gxx_personality_v0,__cxa_allocate_exception,\
$LIBC_BPS"
SQLITE_BPS="sqlite3VdbeExec,sqlite3VdbeExec,sqlite3BtreeTableMoveto,sqlite3GetVarint,\
sqlite3BtreeNext,sqlite3VdbeSorterRowkey,sqlite3VdbeSorterWrite,sqlite3VdbeSerialGet,\
sqlite3BtreePayloadFetch,sqlite3Int64ToText,sqlite3_step,sqlite3VdbeSorterNext,$LIBC_BPS"
# xz allocates at start only, and uses no crc32: every name here is reached all along
XZ_BPS="lzma_code,lzma_code,lzma_crc64,lzma_crc64,read,write"
OPENSSL_SHA_BPS="SHA256_Update,SHA256_Final,SHA256_Init,EVP_Digest,EVP_DigestUpdate,\
EVP_DigestFinal_ex,OPENSSL_cleanse,CRYPTO_zalloc,CRYPTO_free,malloc,free"
OPENSSL_RSA_BPS="BN_mod_mul_montgomery,BN_mod_mul_montgomery,BN_CTX_get,BN_CTX_start,\
CRYPTO_malloc,CRYPTO_free,OPENSSL_cleanse,malloc,free"

if program python3.11 1; then
    cmd=(/usr/bin/python3.11 "$W/pyload.py" 1200)
    bp python3.11 bp $SEED1 60 PyTraceBack_Here 3000 "$PY311_BPS" -- "${cmd[@]}"
    attach python3.11 attach $(( SEED1 + 1 )) 30 -- "${cmd[@]}"
    package python3.11
fi
if program python3.10 2; then
    cmd=("$PY310" "$W/pyload.py" 1200)
    bp python3.10 bp $SEED1 60 PyTraceBack_Here 3000 "$PY310_BPS" -- "${cmd[@]}"
    attach python3.10 attach $(( SEED1 + 1 )) 30 -- "${cmd[@]}"
    package python3.10
fi
if program perl 3; then
    cmd=(/usr/bin/perl "$W/plload.pl" 1200)
    bp perl bp $SEED1 100 main 0 "$PERL_BPS" -- "${cmd[@]}"
    attach perl attach $(( SEED1 + 1 )) 40 -- "${cmd[@]}"
    package perl
fi
if program cxxload 4; then
    cmd=("$W/cxxload" 1200)
    bp cxxload bp $SEED1 60 main 0 "$CXX_BPS" -- "${cmd[@]}"
    attach cxxload attach $(( SEED1 + 1 )) 30 -- "${cmd[@]}"
    package cxxload
fi
if program sqlite3 5; then
    # the SQL runs as the -init file; stdin is /dev/null, so sqlite3 exits after it
    cmd=(/usr/bin/sqlite3 -init "$W/panel_sqlload.sql" :memory:)
    bp sqlite3 bp $SEED1 100 sqlite3_step 0 "$SQLITE_BPS" -- "${cmd[@]}"
    attach sqlite3 attach $(( SEED1 + 1 )) 40 -- "${cmd[@]}"
    package sqlite3
fi
if program xz 6; then
    # breakpoints on the single-threaded encoder (with -T2 the main thread mostly
    # sleeps and the breakpoints are seldom reached); the attached copy has 2 workers
    bp xz bp $SEED1 50 lzma_code 0 "$XZ_BPS" -- /usr/bin/xz -6 -T1 -k -f "$W/xzdata.txt"
    attach xz attach $(( SEED1 + 1 )) 25 -- /usr/bin/xz -6 -T2 -k -f "$W/xzdata.txt"
    package xz
fi
if program openssl 7; then
    # one breakpoint run per algorithm: a breakpoint that only the other one reaches
    # would never be hit
    bp openssl bp-sha $SEED1 50 EVP_Digest 0 "$OPENSSL_SHA_BPS" -- \
        /usr/bin/openssl speed -seconds 4 sha256
    bp openssl bp-rsa $(( SEED1 + 2 )) 50 BN_mod_mul_montgomery 0 "$OPENSSL_RSA_BPS" -- \
        /usr/bin/openssl speed -seconds 8 rsa2048
    attach openssl attach $(( SEED1 + 1 )) 40 -- \
        /usr/bin/openssl speed -seconds 6 sha256 rsa2048
    package openssl
fi

# Go (scripts/wild/build_go.sh): gdb unwinds Go frames with the DWARF build's
# .debug_frame and walks on past a stack's first frame into garbage; the chain ends
# at runtime.goexit (goroutines) or runtime.mstart / runtime.rt0_go (system stacks),
# the functions Go's own traceback treats as outermost.  Several short gdb sessions:
# stepping one thread of a Go program while the others are held can deadlock, and
# gdb 13 sometimes dies with "Recursive internal problem" on Go; a lost session
# costs only its own stops.  The -s -w build gets the same records (--stripped-twin)
# when its loaded sections are byte-identical to the DWARF build's.
go_program() {   # NAME INDEX BPS
    local name=$GO_VERSION-$1 bin=$W/$GO_VERSION/amd64/$1
    program "$name" "$2" || return 0
    [ -x "$bin" ] || { echo "no $bin: scripts/wild/build_go.sh $W" >&2; return 1; }
    EXTRA_ENV=(GT_OUTERMOST=runtime.goexit,runtime.mstart,runtime.rt0_go GT_MAXSTEP=100)
    TIMEOUT=240
    for s in 0 1 2 3; do
        bp "$name" bp-s$s $(( SEED1 + 2 + s )) 12 main.main 0 "$3" -- "$bin" 900
    done
    attach "$name" attach $(( SEED1 + 1 )) 15 -- "$bin" 900
    EXTRA_ENV=()
    TIMEOUT=600
    package "$name" --stripped-twin
}
GO_RUNTIME_BPS="runtime.mallocgc,runtime.memmove,runtime.morestack,runtime.newstack,\
runtime.mapassign_faststr,runtime.scanobject,runtime.findObject,runtime.nanotime1"
go_program goroutines 8 "main.fib,main.fib,main.mapWork,main.deep,main.deep,main.sortWork,\
main.shapes,main.allocate,main.rect.area,main.circle.area,$GO_RUNTIME_BPS"
go_program cgo 9 "main.goWork,main.goWork,main.round,main.goCallback,c_entry,c_leaf,c_spin,\
c_middle,crosscall2,runtime.cgocall,runtime.asmcgocall,runtime.cgocallbackg,\
runtime.cgocallbackg1,runtime.exitsyscall,runtime.entersyscall,runtime.casgstatus"
