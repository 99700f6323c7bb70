#!/usr/bin/env bash
# setup.sh -- make this machine ready to build, run and test sframe-prof.
#
# Run it once on a Debian 12 / Ubuntu machine, as root or as a user with sudo:
#
#     scripts/setup.sh
#
# It is idempotent: a second run only checks, and installs nothing that is already there.
#
# What it does:
#   1. apt-get installs the distro's bcc (python3-bpfcc, bpfcc-tools), kernel headers,
#      binutils, gcc, golang-go (for `go tool pprof`), gdb, gzip, python3-venv, python3-pip.
#   2. If the running kernel has no headers of its own (/lib/modules/$(uname -r)/build is
#      missing, e.g. a cloud/VM kernel), links the newest installed distro headers there so
#      that bcc can compile BPF programs.  Safe only for programs that use uapi layouts.
#   3. Creates .venv from the *system* python (/usr/bin/python3) with
#      --system-site-packages, so that the venv sees the distro's bcc module, and installs
#      sframe-prof into it in editable mode with the test extras and the dev ones (ruff,
#      mypy: scripts/lint.sh).
#
# bcc comes only from the distro: PyPI's package named "bcc" is an unrelated project.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
SYS_PYTHON=/usr/bin/python3
KREL=$(uname -r)
APT_OPTS=(-o DPkg::Lock::Timeout=600)

BASE_PACKAGES=(
    python3 python3-venv python3-pip
    python3-bpfcc bpfcc-tools
    binutils gcc golang-go gdb gzip linux-perf
    # headless browser for the flame graph tests
    chromium fonts-dejavu-core
    # aarch64 cross tools and libc: the CFI tests compile and read arm64 objects
    gcc-aarch64-linux-gnu g++-aarch64-linux-gnu binutils-aarch64-linux-gnu libc6-dev-arm64-cross
    # the wild panel (tests/snapshots/wild, tests/integration/test_wild_live.py):
    # distro programs nobody here built, and the C++ workload's compiler
    g++ sqlite3 xz-utils openssl perl
    # names for libc's thread roots (clone3, start_thread) in the live wild tests
    libc6-dbg
)

log() { printf '==> %s\n' "$*"; }
die() { printf 'setup.sh: error: %s\n' "$*" >&2; exit 1; }

if [[ $EUID -eq 0 ]]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    die "run as root, or install sudo"
fi
command -v apt-get >/dev/null 2>&1 || die "this script needs apt-get (Debian or Ubuntu)"

is_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

# The headers package to install when the running kernel has no build directory.
# Preference: headers built for exactly this kernel (stock Debian/Ubuntu kernels), then
# Debian's per-arch metapackage (pulls the current linux-headers-6.1.0-N-ARCH on
# bookworm), then Ubuntu's generic metapackage.
pick_headers_package() {
    local arch candidate policy
    arch=$(dpkg --print-architecture)
    for candidate in "linux-headers-$KREL" "linux-headers-$arch" linux-headers-generic; do
        # (Captured first: with pipefail, `apt-cache | grep -q` can fail on SIGPIPE.)
        policy=$(apt-cache policy "$candidate" 2>/dev/null)
        if grep -Eq '^ *Candidate: [^(]' <<<"$policy"; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

install_packages() {
    local missing=() pkg headers_pkg=""
    for pkg in "${BASE_PACKAGES[@]}"; do
        is_installed "$pkg" || missing+=("$pkg")
    done
    local need_headers=0
    headers_usable || need_headers=1

    if [[ ${#missing[@]} -eq 0 && $need_headers -eq 0 ]]; then
        log "distro packages: all present"
        return 0
    fi

    log "apt-get update"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" update -q

    if [[ $need_headers -eq 1 ]]; then
        headers_pkg=$(pick_headers_package) \
            || die "no linux-headers package found for kernel $KREL"
        is_installed "$headers_pkg" || missing+=("$headers_pkg")
    fi

    if [[ ${#missing[@]} -gt 0 ]]; then
        log "apt-get install ${missing[*]}"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" \
            install -y -q --no-install-recommends "${missing[@]}"
    fi
}

# bcc finds kernel headers through /lib/modules/$(uname -r)/{build,source}: `build` holds
# the generated, per-arch files and `source` (when present) the rest, including
# include/linux/kconfig.h.  Debian splits them the same way (linux-headers-V-ARCH and
# linux-headers-V-common).
headers_usable() {
    local mod="/lib/modules/$KREL"
    [[ -d $mod/build ]] || return 1
    [[ -f $mod/build/include/linux/kconfig.h || -f $mod/source/include/linux/kconfig.h ]]
}

# When the running kernel is not a distro kernel, point its build/source links at those
# of the newest installed distro headers.  Real directories are never touched; links
# that are dangling or incomplete (e.g. left behind by a removed headers package) are
# replaced.
link_kernel_headers() {
    local mod="/lib/modules/$KREL" name from="" link target
    if headers_usable; then
        log "kernel headers: $mod/build -> $(readlink -f "$mod/build")"
        return 0
    fi
    for link in "$mod/build" "$mod/source"; do
        if [[ -e $link && ! -L $link ]]; then
            die "$link exists but bcc cannot use it; fix it by hand"
        fi
    done

    # Newest installed headers that come with their own /lib/modules/VER/build link
    # (Debian linux-headers-6.1.0-N-ARCH, Ubuntu linux-headers-X-generic).
    for name in $(find /lib/modules -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V -r); do
        [[ $name != "$KREL" && -d /lib/modules/$name/build ]] || continue
        from="/lib/modules/$name"
        break
    done
    [[ -n $from ]] || die "no installed kernel headers found to link for kernel $KREL"

    "${SUDO[@]}" mkdir -p "$mod"
    for link in build source; do
        if [[ -d $from/$link ]]; then
            target=$(readlink -f "$from/$link")
            log "kernel headers: linking $mod/$link -> $target"
            "${SUDO[@]}" ln -sfn "$target" "$mod/$link"
        elif [[ -L $mod/$link ]]; then
            "${SUDO[@]}" rm -f "$mod/$link"
        fi
    done
    headers_usable || die "linked the headers of $from, but include/linux/kconfig.h is missing"
}

venv_is_usable() {
    [[ -x $VENV/bin/python && -f $VENV/pyvenv.cfg ]] || return 1
    grep -Eq '^include-system-site-packages *= *true' "$VENV/pyvenv.cfg" || return 1
    "$VENV/bin/python" -c 'import sys; sys.exit(0 if sys.base_prefix == "/usr" else 1)' \
        2>/dev/null
}

IMPORT_CHECK='import bcc, elftools, google.protobuf, psutil, pytest, hypothesis, ruff, mypy, profiler'

setup_venv() {
    [[ -x $SYS_PYTHON ]] || die "$SYS_PYTHON is missing"
    if venv_is_usable; then
        log "venv: $VENV (exists)"
    else
        log "venv: creating $VENV from $SYS_PYTHON with --system-site-packages"
        rm -rf "$VENV"
        "$SYS_PYTHON" -m venv --system-site-packages "$VENV"
    fi

    # Reinstall only when pyproject.toml changed since the last successful install, or
    # when something the project needs can no longer be imported.
    local stamp="$VENV/.sframe-prof-installed" want
    want=$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)
    if [[ -f $stamp && $(cat "$stamp") == "$want" ]] \
        && (cd / && "$VENV/bin/python" -c "$IMPORT_CHECK") >/dev/null 2>&1; then
        log "pip: sframe-prof[test,dev] already installed (editable)"
        return 0
    fi
    # compat mode: the checkout goes on sys.path through a .pth line, like an installed
    # package; the default editable mode imports a finder (pathlib, urllib, ...) at
    # every interpreter start, 15 ms of each sframe-prof command.
    log "pip install -e '.[test,dev]' (editable_mode=compat)"
    "$VENV/bin/python" -m pip install --quiet -e "${ROOT}[test,dev]" \
        --config-settings editable_mode=compat
    echo "$want" > "$stamp"
}

check() {
    log "checking the environment"
    (cd / && "$VENV/bin/python" -c "$IMPORT_CHECK") \
        || die "the venv cannot import what sframe-prof needs"
    "$VENV/bin/python" - <<'EOF'
import bcc, elftools, google.protobuf, psutil, pytest, hypothesis
from importlib.metadata import version
print("    bcc", getattr(bcc, "__version__", "?"), "from", bcc.__file__)
for dist in ("pyelftools", "protobuf", "psutil", "pytest", "hypothesis"):
    print("   ", dist, version(dist))
EOF
    printf '    %s\n' "$(go version)" "$(objdump --version | head -n1)" "$(gdb --version | head -n1)"
}

# The main job on a bundled demo: build the test program with SFrame (the host's
# assembler, -Wa,--gsframe), profile it for a few seconds, write pprof + flame graph.
run_demo() {
    local out="$ROOT/build/demo"
    mkdir -p "$out"
    log "demo: building tests/targets/src/prog.c with -Wa,--gsframe"
    gcc -O2 -g -pthread -Wa,--gsframe -o "$out/prog" "$ROOT/tests/targets/src/prog.c"
    log "demo: sframe-prof -d 5 -- build/demo/prog (needs root for BPF)"
    "${SUDO[@]}" "$VENV/bin/sframe-prof" -d 5 -o "$out/demo.pb.gz" \
        --flamegraph "$out/flamegraph.html" --folded "$out/demo.folded" \
        -- "$out/prog" 0 1000 1 4000
    echo "Demo profile: $out/demo.pb.gz (go tool pprof -top $out/demo.pb.gz)"
    echo "Flame graph:  $out/flamegraph.html"
}

# The wild panel's downloads, cached by recipe hash under /var/cache/sframe-prof:
# Debian's arm64 packages that the aarch64 ground truth maps (dpkg -x, host apt state
# untouched), and Debian's Go 1.23 and 1.24 for the .gopclntab tests.
fetch_wild() {
    log "wild panel: arm64 sysroot $("$ROOT/scripts/wild/fetch_arm64_sysroot.sh" | tail -n1)"
    log "wild panel: Go toolchains $("$ROOT/scripts/wild/fetch_go.sh" | tr '\n' ' ')"
}

cd "$ROOT"
SECONDS=0
install_packages
link_kernel_headers
setup_venv
fetch_wild
check
log "setup finished in ${SECONDS}s"
if [[ ${SFRAME_PROF_NO_DEMO:-} != 1 ]]; then
    run_demo
fi
echo "Run the tests with: scripts/run_tests.sh"
