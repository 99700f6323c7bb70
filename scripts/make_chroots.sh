#!/bin/bash
# make_chroots.sh [DIR]  -- prepare the three toolchains the test targets are built with.
#
#   host (Debian 12, binutils 2.40)   -> SFrame V1   (+ aarch64 cross gcc installed here)
#   DIR/trixie (binutils 2.44)        -> SFrame V2   (flags: FDE_SORTED, no PCREL)
#   DIR/sid    (binutils 2.47)        -> SFrame V3   (+ qemu-user, gdb, gdb-multiarch:
#                                                      ground-truth capture runs here)
#
# Idempotent: a chroot that already has its packages is left alone (apt just
# confirms).  Must run as root.  DIR defaults to /work/chroots.
set -euo pipefail

DIR=${1:-/work/chroots}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
# another engineer may be using apt/dpkg on this host at the same time
APT=(apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

SID_PKGS="gcc binutils libc6-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu
          qemu-user gdb gdb-multiarch python3 file procps"
TRIXIE_PKGS="gcc binutils libc6-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu"
HOST_PKGS="debootstrap gcc binutils gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu"

[ "$(id -u)" = 0 ] || { echo "must be root" >&2; exit 1; }

# ---- host -------------------------------------------------------------------
need_host=0
for p in $HOST_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_host=1
done
if [ $need_host = 1 ]; then
    "${APT[@]}" update -q
    "${APT[@]}" install -y -q --no-install-recommends $HOST_PKGS
fi
echo "host: $(ld --version | head -1)"

# ---- chroots -----------------------------------------------------------------
MOUNTED=()
cleanup() {
    local m
    for m in "${MOUNTED[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

mount_proc() {   # mount ROOT/proc unless something already mounted it; remember ours
    local root=$1
    if ! mountpoint -q "$root/proc"; then
        mount -t proc proc "$root/proc"
        MOUNTED+=("$root/proc")
    fi
}

make_one() {   # suite root packages...
    local suite=$1 root=$2; shift 2
    local pkgs="$*"
    mkdir -p "$root"
    if [ ! -x "$root/usr/bin/apt-get" ]; then
        echo "== debootstrap $suite into $root"
        debootstrap --variant=minbase "$suite" "$root" "$MIRROR"
    fi
    mount_proc "$root"
    cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
    # the registry serves frozen snapshots whose Valid-Until has passed
    echo 'Acquire::Check-Valid-Until "false";' > "$root/etc/apt/apt.conf.d/99no-valid-until"
    # never start daemons from postinst scripts
    printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
    local missing=0 p
    for p in $pkgs; do
        chroot "$root" dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing=1
    done
    if [ $missing = 1 ]; then
        echo "== apt install in $suite"
        chroot "$root" /usr/bin/env DEBIAN_FRONTEND=noninteractive LC_ALL=C \
            apt-get -o DPkg::Lock::Timeout=600 update -q
        chroot "$root" /usr/bin/env DEBIAN_FRONTEND=noninteractive LC_ALL=C \
            apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $pkgs
        chroot "$root" apt-get clean
    fi
    echo "$suite: $(chroot "$root" ld --version | head -1); $(chroot "$root" gcc --version | head -1)"
}

make_one sid    "$DIR/sid"    $SID_PKGS
make_one trixie "$DIR/trixie" $TRIXIE_PKGS
du -sh --one-file-system "$DIR/sid" "$DIR/trixie"
