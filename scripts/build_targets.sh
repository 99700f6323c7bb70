#!/bin/bash
# build_targets.sh [CHROOTS]  -- build tests/targets/<toolchain>-<arch>-<variant>/
#
# Toolchains (made by scripts/make_chroots.sh; CHROOTS defaults to /work/chroots):
#   v1host    host gcc 12 / binutils 2.40          -> SFrame V1
#   v2trixie  CHROOTS/trixie gcc 14 / binutils 2.44 -> SFrame V2 (no PCREL flag)
#   v3sid     CHROOTS/sid gcc 16 / binutils 2.47    -> SFrame V3
# Each output directory holds the binary `prog` (plus `libsfpshape.so` for the
# shlib variant), `sframe.objdump.txt` (= that toolchain's own `objdump --sframe prog`,
# run from inside the directory; `libsfpshape.so.sframe.objdump.txt` for the library)
# and `build.txt` (compiler, binutils, flags).
# Usage: scripts/build_targets.sh [CHROOTS] [TOOLCHAIN...]
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CHROOTS=${1:-/work/chroots}
shift || true
TOOLCHAINS=${*:-v1host v2trixie v3sid}
SRC=$REPO/tests/targets/src
OUT=$REPO/tests/targets

COMMON="-g -pthread -Wa,--gsframe"
# name|flags    (x86_64 and aarch64)
BOTH=(
  "O0|-O0"
  "O2|-O2"
  "O2-omitfp|-O2 -fomit-frame-pointer"
  "O2-fp|-O2 -fno-omit-frame-pointer"
  "O2-shlib|-O2 -DWITH_SHLIB"
)
X86=("${BOTH[@]}" "O2-drap|-O2 -DWITH_DRAP" "O2-static|-O2 -static")
A64=("${BOTH[@]}"
  "O2-pacret|-O2 -mbranch-protection=pac-ret"
  "O2-pacretleaf|-O2 -mbranch-protection=pac-ret+leaf")

# The build itself runs in the toolchain's root (host / chroot) in a scratch dir;
# this body is fed to `bash -s` there.  Args: tag arch cc objdump variant-specs...
read -r -d '' BODY <<'EOS' || true
set -euo pipefail
tag=$1 arch=$2 cc=$3 od=$4 common=$5; shift 5
cd "$WORK"
for spec in "$@"; do
  name=${spec%%|*} flags=${spec#*|}
  d=out/$tag-$arch-$name
  rm -rf "$d"; mkdir -p "$d"
  if [[ $flags == *WITH_SHLIB* ]]; then
    $cc $common $flags -shared -fPIC -o "$d/libsfpshape.so" src/shlib.c
    $cc $common $flags -o "$d/prog" src/prog.c -L"$d" -lsfpshape -Wl,-rpath,'$ORIGIN'
    (cd "$d" && $od --sframe libsfpshape.so > libsfpshape.so.sframe.objdump.txt)
  else
    $cc $common $flags -o "$d/prog" src/prog.c
  fi
  (cd "$d" && $od --sframe prog > sframe.objdump.txt)
  {
    echo "toolchain: $tag"
    echo "arch:      $arch"
    echo "compiler:  $($cc --version | head -1)"
    echo "binutils:  $($od --version | head -1)"
    if [ "$arch" = aarch64 ]; then libc=libc6-dev-arm64-cross; else libc=libc6-dev; fi
    echo "libc:      $libc $(dpkg-query -W -f='${Version}' $libc)"
    echo "flags:     $common $flags"
    if [[ $flags == *WITH_SHLIB* ]]; then
      echo "library:   $cc $common $flags -shared -fPIC -o libsfpshape.so shlib.c"
      echo "command:   $cc $common $flags -o prog prog.c -L. -lsfpshape -Wl,-rpath,'\$ORIGIN'"
    else
      echo "command:   $cc $common $flags -o prog prog.c"
    fi
    echo "sframe:    $(grep -m1 Version "$d/sframe.objdump.txt" | sed 's/^ *//'); $(grep -m1 Flags "$d/sframe.objdump.txt" | sed 's/^ *//')"
  } > "$d/build.txt"
  printf '%-28s %s\n' "$tag-$arch-$name" "$(grep -m1 Version "$d/sframe.objdump.txt" | sed 's/^ *//')"
done
EOS

run_in() {   # root(empty=host) tag arch cc objdump specs...
  local root=$1; shift
  local work
  if [ -z "$root" ]; then
    work=$(mktemp -d /tmp/sfp-build.XXXXXX)
  else
    mkdir -p "$root/tmp"
    work=$(mktemp -d "$root/tmp/sfp-build.XXXXXX")
  fi
  mkdir -p "$work/src" "$work/out"
  cp "$SRC"/*.c "$work/src/"
  if [ -z "$root" ]; then
    WORK=$work LC_ALL=C bash -c "$BODY" build "$@"
  else
    chroot "$root" /usr/bin/env WORK="${work#$root}" LC_ALL=C bash -c "$BODY" build "$@"
  fi
  local d
  for d in "$work"/out/*; do
    rm -rf "$OUT/$(basename "$d")"
    cp -a "$d" "$OUT/"
  done
  rm -rf "$work"
}

for tc in $TOOLCHAINS; do
  case $tc in
    v1host)   root="" ;;
    v2trixie) root=$CHROOTS/trixie ;;
    v3sid)    root=$CHROOTS/sid ;;
    *) echo "unknown toolchain $tc" >&2; exit 2 ;;
  esac
  run_in "$root" "$tc" x86_64  gcc                   objdump                   "$COMMON" "${X86[@]}"
  run_in "$root" "$tc" aarch64 aarch64-linux-gnu-gcc aarch64-linux-gnu-objdump "$COMMON" "${A64[@]}"
done
