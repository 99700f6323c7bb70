#!/bin/sh
# Fetch newer Go toolchains from Debian without touching the host's golang-go.
#
# Usage: scripts/wild/fetch_go.sh [VERSION...]      (default: 1.23 1.24)
# Prints one GOROOT per line on stdout (the go binary is GOROOT/bin/go).
#
# Each toolchain is unpacked (dpkg -x, no installation) from Debian's golang-X.Y-go
# and golang-X.Y-src packages into /var/cache/sframe-prof/go/<recipe-hash>/, where the
# hash covers this recipe (version, suite, architecture).  A finished directory holds
# a .done marker, so a second run does nothing and prints the same paths (idempotent,
# usable from CI).  apt uses a private configuration (its own sources list, lists and
# archive cache) so the host's apt state is not changed either.
set -eu

CACHE=${SFRAME_PROF_CACHE:-/var/cache/sframe-prof}/go
ARCH=$(dpkg --print-architecture)
[ $# -gt 0 ] || set -- 1.23 1.24

suite_for() {
    case "$1" in
        1.21|1.22|1.23) echo bookworm-backports ;;
        1.24) echo trixie ;;
        *) echo sid ;;
    esac
}

fetch_one() {
    ver=$1
    suite=$(suite_for "$ver")
    key=$(printf 'go-%s %s %s recipe-1\n' "$ver" "$suite" "$ARCH" | sha256sum | cut -c1-16)
    dest=$CACHE/$ver-$key
    if [ -f "$dest/.done" ]; then
        echo "$dest/usr/lib/go-$ver"
        return 0
    fi
    apt_dir=$CACHE/apt-$suite
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/etc"
    printf 'deb http://deb.debian.org/debian %s main\n' "$suite" > "$apt_dir/etc/sources.list"
    set -- -o "Dir::Etc::sourcelist=$apt_dir/etc/sources.list" \
        -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$apt_dir/lists" \
        -o "Dir::Cache::archives=$apt_dir/archives" -o "Dir::Cache=$apt_dir" \
        -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root -o Debug::NoLocking=1
    apt-get -q "$@" update >&2
    tmp=$(mktemp -d "$CACHE/.dl-XXXXXX")
    (cd "$tmp" && apt-get -q "$@" download "golang-$ver-go:$ARCH" "golang-$ver-src" >&2)
    rm -rf "$dest.tmp"
    mkdir -p "$dest.tmp"
    for deb in "$tmp"/*.deb; do
        dpkg -x "$deb" "$dest.tmp"
    done
    rm -rf "$tmp"
    goroot=$dest.tmp/usr/lib/go-$ver
    [ -x "$goroot/bin/go" ] || { echo "fetch_go: no bin/go in golang-$ver-go" >&2; exit 1; }
    rm -rf "$dest"
    mv "$dest.tmp" "$dest"
    touch "$dest/.done"
    echo "$dest/usr/lib/go-$ver"
}

mkdir -p "$CACHE"
for v in "$@"; do
    fetch_one "$v"
done
