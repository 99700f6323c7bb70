#!/bin/bash
# build_panel.sh [OUTDIR]  -- build the wild panel's own programs and check the distro's.
#
# OUTDIR (default /opt/sframe-prof-wild) receives:
#   cxxload      tests/wild/src/cxx/cxxload.cpp, Debian's g++ -O2 -g -pthread
#   plload.pl, pyload.py, panel_sqlload.sql   the script workloads (stable paths)
#   xzdata.txt   xz's input (generated, deterministic)
#   Go programs  from scripts/wild/build_go.sh OUTDIR, when that script exists
# The C++ build is reproducible: the source is compiled from the repository with
# -ffile-prefix-map so no checkout path lands in the binary, and the build-id is a hash
# of the contents; a second run gives the same bytes (checked below).
# Finally every program the panel runs from the host is checked to exist, naming the
# Debian package to install when one is missing.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-/opt/sframe-prof-wild}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

missing=()
need() {   # path package
    [ -x "$1" ] || missing+=("$1 (Debian package $2)")
}
need /usr/bin/g++ g++
need /usr/bin/gdb gdb
need /usr/bin/perf linux-perf
need /usr/bin/python3.11 python3.11-minimal
need /usr/bin/perl perl-base
need /usr/bin/gzip gzip
need /usr/bin/xz xz-utils
need /usr/bin/sqlite3 sqlite3
need /usr/bin/openssl openssl
need /root/.pyenv/versions/3.10.13/bin/python3.10 "pyenv CPython 3.10.13 (scripts/setup.sh)"
if [ ${#missing[@]} -gt 0 ]; then
    printf 'build_panel: missing %s\n' "${missing[@]}" >&2
    exit 1
fi

build_cxx() {   # destination
    (cd "$REPO" && g++ -O2 -g -pthread -ffile-prefix-map="$REPO"=. \
        -o "$1" tests/wild/src/cxx/cxxload.cpp)
}
build_cxx "$OUT/cxxload.new"
build_cxx "$OUT/cxxload.again"
if ! cmp -s "$OUT/cxxload.new" "$OUT/cxxload.again"; then
    echo "build_panel: two builds of cxxload differ (not reproducible)" >&2
    exit 1
fi
rm -f "$OUT/cxxload.again"
mv "$OUT/cxxload.new" "$OUT/cxxload"
install -m 0644 "$REPO/tests/wild/src/plload.pl" "$OUT/plload.pl"
install -m 0644 "$REPO/tests/wild/src/pyload.py" "$OUT/pyload.py"
install -m 0644 "$REPO/scripts/wild/panel_sqlload.sql" "$OUT/panel_sqlload.sql"
# xz's input: 61 MB of deterministic pseudo-text (about 30 s of xz -6 -T2)
if [ ! -s "$OUT/xzdata.txt" ]; then
    python3 - "$OUT/xzdata.txt" <<'PY'
import random, sys
r = random.Random(5)
words = ["alpha", "beta", "gamma", "delta", "sframe", "unwind", "stack", "frame",
         "pointer", "return", "%d"]
with open(sys.argv[1], "w") as f:
    for _ in range(1_200_000):
        f.write(" ".join(r.choice(words).replace("%d", str(r.randrange(100000)))
                         for _ in range(8)) + "\n")
PY
fi
echo "build_panel: $OUT/cxxload $(sha256sum < "$OUT/cxxload" | cut -c1-16)"

if [ -x "$REPO/scripts/wild/build_go.sh" ]; then
    "$REPO/scripts/wild/build_go.sh" "$OUT"
else
    echo "build_panel: scripts/wild/build_go.sh not there yet, no Go programs" >&2
fi
