#!/bin/sh
# The wild panel's arm64 sysroot: Debian bookworm arm64 packages unpacked (dpkg -x, no
# installation, no maintainer scripts) into one directory, plus trixie's static
# qemu-aarch64 to run them under (bookworm's qemu 7.2 gdbstub cannot read the guest's
# /proc/PID/maps, which the ground-truth capture needs).
#
# Usage: scripts/wild/fetch_arm64_sysroot.sh              fetch unless cached; print the dir
#        scripts/wild/fetch_arm64_sysroot.sh --print-dir  print the sysroot dir (no fetching)
#        scripts/wild/fetch_arm64_sysroot.sh --print-qemu print the qemu-aarch64 path (no fetching)
#        scripts/wild/fetch_arm64_sysroot.sh --pin        rewrite the recipe's pinned versions
#                                                         from the archive as it is now
#
# The recipe is scripts/wild/arm64_sysroot.list: the dependency closure of the packages
# the panel runs, each pinned PACKAGE=VERSION, and the qemu-user version.  The sysroot
# lives in ${SFRAME_PROF_CACHE:-/var/cache/sframe-prof}/wild-arm64-KEY/, KEY = hash of
# the package lines of the recipe; qemu in .../wild-arm64-qemu-KEY2/ (KEY2 = hash of the
# qemu line).  A finished directory holds .done, so a second run does nothing.  apt runs
# with a private configuration and state (its own sources, lists, status and archive
# cache under the cache directory): the host's apt and dpkg state are not touched.
# The ground-truth files record sha256 sums of sysroot files: a new pin means new
# captures (scripts/wild/capture_aarch64.sh).  When Debian replaces a pinned version
# (a point release), the download fails with a message saying so.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
RECIPE=$HERE/arm64_sysroot.list
CACHE=${SFRAME_PROF_CACHE:-/var/cache/sframe-prof}
MIRROR=http://deb.debian.org/debian
# the packages the panel's programs need; --pin adds their dependency closure
ROOTS="libc6 libgcc-s1 libstdc++6 python3.11-minimal libpython3.11-minimal
libpython3.11-stdlib perl perl-base perl-modules-5.36 libperl5.36 gzip xz-utils liblzma5
sqlite3 libsqlite3-0 openssl libssl3"

log() { echo "fetch_arm64_sysroot: $*" >&2; }
die() { log "$*"; exit 1; }

[ -f "$RECIPE" ] || die "no recipe at $RECIPE"
pkg_lines() { grep -E '^[a-z0-9][a-z0-9.+-]*=' "$RECIPE" | sort; }
qemu_line() { grep -E '^qemu ' "$RECIPE"; }
sys_key=$( { echo "wild-arm64 recipe-1 bookworm"; pkg_lines; } | sha256sum | cut -c1-16)
qemu_key=$( { echo "wild-arm64-qemu recipe-1"; qemu_line; } | sha256sum | cut -c1-16)
SYSROOT=$CACHE/wild-arm64-$sys_key
QEMU_DIR=$CACHE/wild-arm64-qemu-$qemu_key

# apt_setup DIR SUITE ARCH: a private apt configuration and state in DIR (APT_OPTS)
apt_setup() {
    d=$1
    mkdir -p "$d/lists/partial" "$d/archives/partial" "$d/etc/sources.list.d" \
        "$d/etc/preferences.d"
    [ -f "$d/status" ] || : > "$d/status"
    printf 'deb [arch=%s] %s %s main\n' "$3" "$MIRROR" "$2" > "$d/etc/sources.list"
    APT_OPTS="-o Dir::Etc::sourcelist=$d/etc/sources.list
        -o Dir::Etc::sourceparts=$d/etc/sources.list.d
        -o Dir::Etc::preferences=$d/etc/preferences
        -o Dir::Etc::preferencesparts=$d/etc/preferences.d
        -o Dir::State::Lists=$d/lists -o Dir::State::status=$d/status
        -o Dir::Cache=$d -o Dir::Cache::archives=$d/archives
        -o APT::Architecture=$3 -o APT::Architectures::=$3
        -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root -o Debug::NoLocking=1"
    # shellcheck disable=SC2086
    apt-get -q $APT_OPTS update >&2 || die "apt-get update ($2 $3) failed"
}

# download NAME=VERSION... into the current directory
download() {
    # shellcheck disable=SC2086
    apt-get -q $APT_OPTS download "$@" >&2 || die "download failed: a pinned version \
is probably no longer in the archive (Debian point release).  Run '$0 --pin', then \
recapture with scripts/wild/capture_aarch64.sh (the ground-truth sha256 sums change)"
}

pin() {
    apt_setup "$CACHE/apt-arm64-bookworm" bookworm arm64
    # shellcheck disable=SC2086
    closure=$(apt-cache $APT_OPTS depends --recurse --no-recommends --no-suggests \
        --no-conflicts --no-breaks --no-replaces --no-enhances $ROOTS |
        grep -E '^[a-z0-9]' | sort -u)
    tmp=$RECIPE.tmp
    {
        echo "# Recipe of scripts/wild/fetch_arm64_sysroot.sh (written by its --pin)."
        echo "# Debian bookworm arm64: the dependency closure of"
        # shellcheck disable=SC2086 # one line of words
        echo "#  " $ROOTS
        echo "# (Depends and Pre-Depends), each PACKAGE=VERSION, unpacked with dpkg -x."
        for p in $closure; do
            # shellcheck disable=SC2086
            v=$(apt-cache $APT_OPTS show --no-all-versions "$p" | sed -n 's/^Version: //p' | head -n1)
            [ -n "$v" ] || die "no version for $p"
            echo "$p=$v"
        done
        echo "# static qemu-aarch64 from trixie's qemu-user (amd64)"
        qemu_line || true
    } > "$tmp"
    grep -q '^qemu ' "$tmp" || echo "qemu trixie qemu-user=1:10.0.13+ds-0+deb13u1" >> "$tmp"
    mv "$tmp" "$RECIPE"
    log "wrote $RECIPE ($(pkg_lines | wc -l) packages)"
}

fetch_sysroot() {
    [ -f "$SYSROOT/.done" ] && return 0
    log "building $SYSROOT"
    apt_setup "$CACHE/apt-arm64-bookworm" bookworm arm64
    tmp=$(mktemp -d "$CACHE/.wild-arm64-dl-XXXXXX")
    # shellcheck disable=SC2046
    (cd "$tmp" && download $(pkg_lines | sed 's/=/:arm64=/'))
    n=$(find "$tmp" -maxdepth 1 -name '*.deb' | wc -l)
    [ "$n" -eq "$(pkg_lines | wc -l)" ] || die "expected $(pkg_lines | wc -l) .debs, got $n"
    rm -rf "$SYSROOT.tmp"
    mkdir -p "$SYSROOT.tmp"
    for deb in "$tmp"/*.deb; do
        dpkg -x "$deb" "$SYSROOT.tmp"
    done
    # the manifest names every package and version that went in
    for deb in "$tmp"/*.deb; do
        dpkg-deb -f "$deb" Package Version | tr '\n' ' '
        echo
    done | sort > "$SYSROOT.tmp/.manifest"
    rm -rf "$tmp"
    [ -x "$SYSROOT.tmp/usr/bin/python3.11" ] || die "no usr/bin/python3.11 in the sysroot"
    [ -e "$SYSROOT.tmp/lib/ld-linux-aarch64.so.1" ] || die "no lib/ld-linux-aarch64.so.1"
    rm -rf "$SYSROOT"
    mv "$SYSROOT.tmp" "$SYSROOT"
    touch "$SYSROOT/.done"
    # sysroots of other recipes are dropped (wild-arm64-<16 hex digits> only)
    hex16='[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]'
    for old in "$CACHE"/wild-arm64-$hex16$hex16; do
        if [ -d "$old" ] && [ "$old" != "$SYSROOT" ]; then rm -rf "$old"; fi
    done
}

fetch_qemu() {
    [ -f "$QEMU_DIR/.done" ] && return 0
    # shellcheck disable=SC2046 # split into its three words
    set -- $(qemu_line)
    [ $# -eq 3 ] || die "bad qemu line in $RECIPE"
    log "fetching $3 ($2)"
    apt_setup "$CACHE/apt-amd64-$2-a64" "$2" amd64
    tmp=$(mktemp -d "$CACHE/.wild-arm64-qemu-XXXXXX")
    (cd "$tmp" && download "$3")
    rm -rf "$QEMU_DIR"
    mkdir -p "$QEMU_DIR"
    dpkg-deb --fsys-tarfile "$tmp"/*.deb | tar -x -C "$tmp" ./usr/bin/qemu-aarch64
    mv "$tmp/usr/bin/qemu-aarch64" "$QEMU_DIR/qemu-aarch64"
    rm -rf "$tmp"
    "$QEMU_DIR/qemu-aarch64" --version >/dev/null || die "qemu-aarch64 does not run"
    touch "$QEMU_DIR/.done"
    for old in "$CACHE"/wild-arm64-qemu-*; do
        if [ -d "$old" ] && [ "$old" != "$QEMU_DIR" ]; then rm -rf "$old"; fi
    done
}

case ${1:-} in
    --print-dir) echo "$SYSROOT" ;;
    --print-qemu) echo "$QEMU_DIR/qemu-aarch64" ;;
    --pin) mkdir -p "$CACHE"; pin ;;
    "") mkdir -p "$CACHE"; fetch_sysroot; fetch_qemu; echo "$SYSROOT" ;;
    *) die "usage: $0 [--print-dir | --print-qemu | --pin]" ;;
esac
