#!/usr/bin/env bash
# arm64-vm.sh -- a real arm64 Linux kernel for sframe-prof's tests, on any x86_64 host.
#
#   scripts/arm64-vm.sh image                      build the guest image unless cached;
#                                                  print its directory
#   scripts/arm64-vm.sh run [--out DIR] [--timeout S] [--tree DIR] -- COMMAND [ARGS...]
#                                                  boot the guest, run COMMAND there,
#                                                  exit with its status
#   scripts/arm64-vm.sh key                        print the image's cache key
#
# The guest is Debian trixie arm64 (kernel 6.12 with its headers, python3-bpfcc, the
# project's Python dependencies) booted by qemu-system-aarch64 under TCG with
# `-M virt -cpu max,pauth-impdef=on` (pointer authentication on, at a bearable
# emulation speed).  It has no network.  In it:
#   /src     the working tree (TREE, default this checkout), read-only
#   /out     DIR on the host (default: a new temporary directory), writable
# COMMAND runs in /src, as root, with PYTHONPATH=/src and `sframe-prof` on PATH
# (scripts/arm64_vm/stage2.sh); its output appears here as it runs and is kept in
# DIR/.sfp-vm/output.log, the whole console in DIR/.sfp-vm/console.log.  Exit status: COMMAND's, or 125 when the
# guest never reported one (boot failure, panic, --timeout).
#
# The image is built once (about 11 minutes, mostly dpkg under qemu-user) into
#   $SFRAME_PROF_ARM64_CACHE/arm64-KEY/    (default /var/cache/sframe-prof)
# where KEY hashes the recipe (scripts/arm64_vm/recipe/*) and the project's Python
# dependencies: a changed recipe builds a new image, an unchanged one is reused, and
# images of other keys are deleted after a build.  It lives outside the clone; never
# commit it.  Needs root (mmdebstrap, binfmt_misc); installs its host packages itself.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RECIPE=$ROOT/scripts/arm64_vm/recipe
CACHE=${SFRAME_PROF_ARM64_CACHE:-/var/cache/sframe-prof}
HOST_PACKAGES=(qemu-system-arm qemu-user-static binfmt-support mmdebstrap arch-test e2fsprogs
               python3-pip ca-certificates)
CPU=${SFRAME_PROF_ARM64_CPU:-max,pauth-impdef=on}

log() { printf '==> arm64-vm: %s\n' "$*" >&2; }
die() { printf 'arm64-vm.sh: error: %s\n' "$*" >&2; exit 2; }

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }

# The project's runtime dependencies, one per line, from pyproject.toml.
python_deps() {
    /usr/bin/python3 - "$ROOT/pyproject.toml" <<'EOF'
import sys
try:
    import tomllib
except ImportError:  # python < 3.11: the list is simple enough to read by hand
    tomllib = None
text = open(sys.argv[1], encoding="utf-8").read()
if tomllib:
    deps = tomllib.loads(text)["project"]["dependencies"]
else:
    import re
    block = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.S | re.M).group(1)
    deps = re.findall(r'"([^"]+)"', block)
print("\n".join(deps))
EOF
}

cache_key() {
    {
        (cd "$RECIPE" && for f in $(ls | sort); do echo "== $f"; cat "$f"; done)
        echo "== python dependencies"
        python_deps
    } | sha256sum | cut -c1-16
}

need_root() { [[ $EUID -eq 0 ]] || die "$1 needs root"; }

host_packages() {
    local p missing=()
    for p in "${HOST_PACKAGES[@]}"; do
        [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] \
            || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "installing host packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
        --no-install-recommends "${missing[@]}"
}

# mmdebstrap runs arm64 maintainer scripts through qemu-user, found via binfmt_misc.
binfmt() {
    if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    fi
    if ! grep -qs '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64; then
        update-binfmts --import qemu-aarch64 >/dev/null 2>&1 || true
        update-binfmts --enable qemu-aarch64
    fi
    grep -qs '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
        || die "qemu-aarch64 is not registered with binfmt_misc"
}

# Remove a directory an interrupted build left behind: mmdebstrap may still have /proc,
# /sys and /dev mounted inside it.
remove_build_dir() {
    local m
    [[ -e $1 ]] || return 0
    for m in $(awk -v d="$1/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf --one-file-system "$1"
}

image_ok() { [[ -s $1/disk.img && -s $1/vmlinuz && -s $1/initrd && -s $1/manifest.json ]]; }

# Build the image for the current key unless it is cached; print its directory.
cmd_image() {
    local key dir tmp t0 wheels
    key=$(cache_key)
    dir=$CACHE/arm64-$key
    if image_ok "$dir"; then
        log "image $dir (cached)"
        echo "$dir"
        return 0
    fi
    need_root "building the guest image"
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.arm64-build.lock"
    flock 9
    if image_ok "$dir"; then     # another run built it while we waited
        echo "$dir"
        return 0
    fi
    t0=$SECONDS
    log "no image for key $key: building it (about 11 minutes)"
    host_packages >&2
    binfmt
    tmp=$CACHE/.arm64-$key.tmp
    remove_build_dir "$tmp"
    mkdir -p "$tmp"
    mapfile -t deps < <(python_deps)
    "$RECIPE/build.sh" "$tmp" "${deps[@]}" >&2
    local seconds=$((SECONDS - t0))
    /usr/bin/python3 - "$tmp" "$key" "$seconds" <<'EOF'
import json, os, sys, time
d, key, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3])
pk = dict(l.split(" ", 1) for l in open(os.path.join(d, "packages.txt")).read().split("\n") if l)
json.dump({"key": key, "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "build_seconds": seconds, "suite": "trixie",
           "kernel_release": open(os.path.join(d, "kernel-release")).read().strip(),
           "packages": {p: pk.get(p) for p in ("linux-image-arm64", "python3", "python3-bpfcc",
                                                "libbpfcc", "libc6")},
           "wheels": open(os.path.join(d, "wheels.txt")).read().split()},
          open(os.path.join(d, "manifest.json"), "w"), indent=1)
EOF
    rm -rf "$dir"
    mv "$tmp" "$dir"
    # Images of other recipes are ~1 GiB each: keep only this one.
    local old
    for old in "$CACHE"/arm64-* "$CACHE"/.arm64-*.tmp; do
        [[ $old == "$dir" || ! -d $old ]] || { log "removing $old"; remove_build_dir "$old"; }
    done
    log "image $dir built in ${seconds} s"
    echo "$dir"
}

cmd_run() {
    local out="" timeout=1500 tree=$ROOT
    while [[ $# -gt 0 ]]; do
        case $1 in
            --out) out=$2; shift 2 ;;
            --timeout) timeout=$2; shift 2 ;;
            --tree) tree=$2; shift 2 ;;
            --) shift; break ;;
            *) die "run: unknown option $1 (the command follows --)" ;;
        esac
    done
    [[ $# -gt 0 ]] || die "run: no command (scripts/arm64-vm.sh run -- COMMAND ARGS)"
    need_root "booting the guest"
    local img
    img=$(cmd_image)
    command -v qemu-system-aarch64 >/dev/null || host_packages >&2
    [[ -n $out ]] || out=$(mktemp -d /tmp/sfp-arm64-out.XXXXXX)
    mkdir -p "$out"
    out=$(cd "$out" && pwd)
    tree=$(cd "$tree" && pwd)
    local ctl=$out/.sfp-vm
    rm -rf "$ctl"
    mkdir -p "$ctl"
    install -m 0644 "$ROOT/scripts/arm64_vm/stage2.sh" "$ctl/stage2"
    printf 'export CI=%q\n' "${CI:-}" > "$ctl/env"
    { printf 'exec'; printf ' %q' "$@"; echo; } > "$ctl/cmd"
    log "booting $(cat "$img/kernel-release") (cpu $CPU) with /src=$tree /out=$out"
    local t0=$SECONDS rc=0
    set +e
    timeout --kill-after=10 "$timeout" qemu-system-aarch64 \
        -M virt -cpu "$CPU" -smp 2 -m 3072 -accel tcg,thread=multi \
        -nographic -no-reboot -nic none \
        -kernel "$img/vmlinuz" -initrd "$img/initrd" \
        -append "root=/dev/vda rw console=ttyAMA0 init=/usr/local/sbin/sfp-vm-init panic=-1 quiet loglevel=3" \
        -drive "file=$img/disk.img,format=raw,if=virtio,cache=unsafe,snapshot=on" \
        -virtfs "local,path=$tree,mount_tag=src,security_model=none,readonly=on" \
        -virtfs "local,path=$out,mount_tag=out,security_model=none" \
        -device virtio-rng-pci \
        < /dev/null 2>&1 | tee "$ctl/console.log" | tr -d '\r'
    local qrc=${PIPESTATUS[0]}
    set -e
    if [[ -s $ctl/status ]]; then
        rc=$(cat "$ctl/status")
        log "guest command exited with status $rc; VM ran $((SECONDS - t0)) s"
    else
        rc=125
        if [[ $qrc -eq 124 || $qrc -eq 137 ]]; then
            log "the guest did not finish within ${timeout} s"
        fi
        log "the guest reported no exit status (qemu exit $qrc); console: $ctl/console.log"
    fi
    return "$rc"
}

case ${1:-} in
    key) cache_key ;;
    image) shift; cmd_image "$@" ;;
    run) shift; cmd_run "$@" ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
esac
