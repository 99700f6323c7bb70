#!/bin/sh
# Build the Go profiling targets (tests/wild/src/go/*) for amd64 and arm64, with
# DWARF and stripped (-ldflags='-s -w'), with every Go toolchain given.
#
# Usage: scripts/wild/build_go.sh OUTDIR [GOROOT...]
#   Without GOROOTs: the host's `go` plus the toolchains scripts/wild/fetch_go.sh
#   provides (fetched on first use).
# Output: OUTDIR/go<version>/<arch>/<program>, <program>.stripped and <program>.pie
#   (position-independent, with DWARF; the cgo one is linked externally), plus
#   OUTDIR/go<version>/<arch>/BUILT listing them.  Builds use -trimpath and no VCS
#   stamping, so they are reproducible (Go's build cache makes a rebuild cheap;
#   tests/unit/test_gopclntab.py keys its own cache by a hash of the sources).
set -eu

[ $# -ge 1 ] || { echo "usage: $0 OUTDIR [GOROOT...]" >&2; exit 2; }
mkdir -p "$1"
out=$(cd "$1" && pwd)      # absolute: the builds run in each program's directory
shift
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../../tests/wild/src/go" && pwd)
if [ $# -eq 0 ]; then
    set -- "$(go env GOROOT)" $("$here/fetch_go.sh")
fi

command -v aarch64-linux-gnu-gcc >/dev/null || {
    echo "build_go: aarch64-linux-gnu-gcc is needed for the arm64 cgo build" >&2; exit 1; }

for goroot in "$@"; do
    gobin=$goroot/bin/go
    [ -x "$gobin" ] || { echo "build_go: no go binary at $gobin" >&2; exit 1; }
    ver=$(GOROOT=$goroot GOTOOLCHAIN=local "$gobin" env GOVERSION)
    for arch in amd64 arm64; do
        dir=$out/$ver/$arch
        mkdir -p "$dir"
        : > "$dir/BUILT.tmp"
        for prog in $(ls "$src"); do
            [ -f "$src/$prog/main.go" ] || continue
            cc=gcc
            [ "$arch" = arm64 ] && cc=aarch64-linux-gnu-gcc
            for variant in dwarf stripped pie; do
                target=$dir/$prog
                flags=
                mode=exe
                case $variant in
                    stripped) target=$dir/$prog.stripped; flags="-s -w" ;;
                    pie) target=$dir/$prog.pie; mode=pie ;;
                esac
                (cd "$src/$prog" && env GOROOT="$goroot" GOTOOLCHAIN=local GOOS=linux \
                    GOARCH="$arch" CGO_ENABLED=1 CC="$cc" GOFLAGS=-buildvcs=false \
                    "$gobin" build -trimpath -buildmode="$mode" -ldflags="$flags" \
                    -o "$target" .)
                echo "$target" >> "$dir/BUILT.tmp"
            done
        done
        mv "$dir/BUILT.tmp" "$dir/BUILT"
    done
done
