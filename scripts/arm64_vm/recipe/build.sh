#!/bin/bash
# build.sh OUT REQUIREMENT... -- build the arm64 test guest into the empty directory OUT:
#   OUT/disk.img  raw ext4 root file system (sparse), booted read-only (qemu -snapshot)
#   OUT/vmlinuz   the trixie arm64 kernel (an uncompressed arm64 Image: qemu -kernel)
#   OUT/initrd    its initramfs (virtio_blk + ext4 only)
# REQUIREMENTs are the project's Python dependencies (pyproject.toml): they are
# downloaded here as aarch64 wheels and installed into the image (no network inside).
#
# Called by scripts/arm64-vm.sh, which hashes this directory (scripts/arm64_vm/recipe)
# into the cache key: edit anything here and the next run builds a new image.
#
# mmdebstrap runs the arm64 maintainer scripts under qemu-user (binfmt_misc), which is
# where nearly all of the ~11 minutes go.  To keep that short:
#   * the initrd is built once, by the kernel's postinst, with MODULES=list and the two
#     modules the root disk needs (a MODULES=most initrd copies hundreds of modules, one
#     emulated cp each), and update_initramfs=no stops dpkg triggers rebuilding it;
#   * no udev hwdb (systemd-hwdb update is a minute of emulation), man pages, docs,
#     locales or info files.
set -euo pipefail
out=$1
shift
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
suite=trixie
mirror=${SFRAME_PROF_ARM64_MIRROR:-http://deb.debian.org/debian}

include=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$here/packages" | tr -s ' \n' ',' | sed 's/,$//')
rootfs=$out/rootfs
wheels=$out/wheels
t0=$SECONDS
mkdir -p "$wheels"
/usr/bin/python3 -m pip download --quiet --disable-pip-version-check -d "$wheels" \
    --only-binary=:all: --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 \
    --python-version 3.13 --implementation cp "$@"   # trixie's python3 is 3.13
mmdebstrap --arch=arm64 --variant=minbase --mode=root --format=directory \
    --include="$include" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/lib/udev/hwdb.d/*' \
    --dpkgopt='force-confdef' --dpkgopt='force-confold' \
    --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/etc/initramfs-tools/hooks"' \
    --essential-hook='echo MODULES=list > "$1/etc/initramfs-tools/conf.d/sfp-vm"' \
    --essential-hook="install -m 0755 '$here/initramfs-hook' \"\$1/etc/initramfs-tools/hooks/sfp-vm\"" \
    --essential-hook='printf "update_initramfs=no\nbackup_initramfs=no\n" > "$1/etc/initramfs-tools/update-initramfs.conf"' \
    --customize-hook="'$here/customize.sh' \"\$1\" '$wheels'" \
    "$suite" "$rootfs" "$mirror"
echo "build.sh: mmdebstrap took $((SECONDS - t0)) s"

kernel=$(ls "$rootfs"/boot/vmlinuz-* | sort -V | tail -1)
initrd=$(ls "$rootfs"/boot/initrd.img-* | sort -V | tail -1)
cp -L "$kernel" "$out/vmlinuz"
cp -L "$initrd" "$out/initrd"
# Populated straight from the directory (no loop device, so it also works in a
# container); 768 MiB free for what the guest writes to / (the host never sees it:
# every boot uses a throw-away overlay).
used_mb=$(du -sm "$rootfs" | cut -f1)
truncate -s $((used_mb + 768))M "$out/disk.img"
mkfs.ext4 -q -F -L sfp-arm64 -E lazy_itable_init=0,lazy_journal_init=0 -d "$rootfs" "$out/disk.img"
basename "$kernel" | sed 's/^vmlinuz-//' > "$out/kernel-release"
cp "$rootfs/etc/sfp-vm-packages" "$out/packages.txt"
cp "$rootfs/etc/sfp-vm-wheels" "$out/wheels.txt"
rm -rf "$rootfs" "$wheels"
echo "build.sh: image ready after $((SECONDS - t0)) s ($used_mb MiB of files)"
