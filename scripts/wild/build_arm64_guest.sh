#!/bin/bash
# build_arm64_guest.sh [OUT] -- the wild panel's own programs for the arm64 guest, built
# on this x86_64 host (default OUT: build/wild/arm64-guest):
#
#   cxxload      tests/wild/src/cxx/cxxload.cpp, Debian's aarch64-linux-gnu-g++ -O2 -g
#                -pthread (bookworm's cross g++ 12; the trixie guest's libstdc++ is newer)
#   goroutines   tests/wild/src/go/goroutines, the host's go, GOARCH=arm64 (static,
#                with DWARF), by scripts/wild/build_go.sh
#
# tests/arm64/guest/e2e.sh profiles them, next to the guest's own perl, gzip, xz,
# sqlite3 and openssl, in the wild panel's live window.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$repo/build/wild/arm64-guest}
mkdir -p "$out"
cxx=aarch64-linux-gnu-g++
[ "$(uname -m)" = aarch64 ] && cxx=g++
command -v "$cxx" >/dev/null || {
    echo "build_arm64_guest: $cxx is missing (scripts/setup.sh installs it)" >&2; exit 1; }
(cd "$repo" && "$cxx" -O2 -g -pthread -ffile-prefix-map="$repo"=. \
    -o "$out/cxxload.new" tests/wild/src/cxx/cxxload.cpp)
mv "$out/cxxload.new" "$out/cxxload"
gobuild=$(mktemp -d)
trap 'rm -rf "$gobuild"' EXIT
"$here/build_go.sh" "$gobuild" "$(go env GOROOT)" >/dev/null
ver=$(go env GOVERSION)
install -m 0755 "$gobuild/$ver/arm64/goroutines" "$out/goroutines"
echo "build_arm64_guest: $out/cxxload $out/goroutines ($ver)"
