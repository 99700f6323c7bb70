#!/bin/bash
# customize.sh ROOTFS WHEELS -- last step of the guest image build (an mmdebstrap
# customize hook, run on the host with the finished arm64 root file system).
#
#   * the project's Python dependencies (pyproject.toml [project].dependencies),
#     downloaded on the host as aarch64 wheels into WHEELS, go to
#     /usr/local/lib/python3.X/dist-packages: the guest has no network;
#   * our PID 1 (init) and the root file system's fstab and hostname.
set -euo pipefail
root=$1 wheels=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

pyver=$(basename "$(ls -d "$root"/usr/lib/python3.[0-9]* | sort -V | tail -1)")  # python3.13
site=$root/usr/local/lib/$pyver/dist-packages
mkdir -p "$site"
/usr/bin/python3 -m pip install --quiet --disable-pip-version-check --no-deps --no-index \
    --no-compile --target "$site" --platform manylinux2014_aarch64 \
    --python-version "${pyver#python}" --implementation cp --only-binary=:all: \
    "$wheels"/*.whl
rm -rf "$site/bin"
# Byte-compile them with the guest's own python (under qemu-user), as dpkg does for
# Debian's modules: the guest then imports them without compiling on every boot.
chroot "$root" "/usr/bin/$pyver" -m compileall -q "/usr/local/lib/$pyver/dist-packages" >/dev/null

install -m 0755 "$here/init" "$root/usr/local/sbin/sfp-vm-init"
echo sfp-arm64 > "$root/etc/hostname"
printf '/dev/vda / ext4 rw,relatime 0 1\n' > "$root/etc/fstab"
# What the image holds, for the manifest the harness writes next to it.
dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Package} ${Version}\n' \
    > "$root/etc/sfp-vm-packages"
ls "$site" | grep -E '\.dist-info$' | sed 's/\.dist-info$//' > "$root/etc/sfp-vm-wheels"
