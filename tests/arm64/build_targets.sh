#!/bin/bash
# build_targets.sh [CHROOTS] -- build tests/arm64/targets/ with sid's aarch64 cross
# toolchain (gcc 16, binutils 2.47: SFrame V3), in CHROOTS/sid (scripts/make_chroots.sh;
# default /work/chroots).  The binaries are committed: CI never rebuilds them.
#
#   targets/kio    tests/arm64/src/kio.c, -O2 -mbranch-protection=pac-ret, SFrame V3
#
# The e2e test also uses tests/targets/v3sid-aarch64-O2-pacret{,leaf}/prog
# (scripts/build_targets.sh), built by the same toolchain.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SID=${1:-/work/chroots}/sid
CC=aarch64-linux-gnu-gcc
OD=aarch64-linux-gnu-objdump
FLAGS="-O2 -g -pthread -Wa,--gsframe -mbranch-protection=pac-ret"

work=$(mktemp -d "$SID/tmp/sfp-arm64.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp "$HERE/src/kio.c" "$work/"
w=${work#"$SID"}
chroot "$SID" /usr/bin/env LC_ALL=C bash -c "cd $w && $CC $FLAGS -o kio kio.c && $OD --sframe kio > kio.sframe.objdump.txt"
install -m 0755 "$work/kio" "$HERE/targets/kio"
cp "$work/kio.sframe.objdump.txt" "$HERE/targets/"
{
    echo "compiler:  $(chroot "$SID" $CC --version | head -1)"
    echo "binutils:  $(chroot "$SID" $OD --version | head -1)"
    echo "libc:      libc6-dev-arm64-cross $(chroot "$SID" dpkg-query -W -f='${Version}' libc6-dev-arm64-cross)"
    echo "command:   $CC $FLAGS -o kio kio.c"
    echo "sframe:    $(grep -m1 Version "$HERE/targets/kio.sframe.objdump.txt" | sed 's/^ *//')"
} > "$HERE/targets/kio.build.txt"
cat "$HERE/targets/kio.build.txt"
