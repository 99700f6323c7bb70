#!/bin/bash
# stage2.sh -- the per-run half of the arm64 guest's boot.  scripts/arm64-vm.sh copies
# it to OUT/.sfp-vm/stage2 and the image's PID 1 (recipe/init) runs it once it has
# mounted OUT at /out.  It is not part of the image, so editing it rebuilds nothing.
#
# Mounts the working tree (9p tag "src") read-only at /src, runs /out/.sfp-vm/cmd with
# bash in /src, keeps its output in /out/.sfp-vm/output.log (and on the console) and its
# exit status in /out/.sfp-vm/status.  PID 1 powers off when this returns.
ctl=/out/.sfp-vm
say() { echo "sfp-vm: $* (uptime $(cut -d' ' -f1 /proc/uptime) s)"; }

mkdir -p /src
# cache=loose: the guest's page cache holds what it read (the host does not change the
# tree during a run); without it every read and mmap page is a 9p round trip.
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro src /src; then
    say "cannot mount the working tree"
    exit 1
fi

# The command's environment: the tree's Python package, `sframe-prof` on PATH.
export PYTHONPATH=/src PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 SFP_VM_OUT=/out
mkdir -p /usr/local/bin
printf '#!/bin/sh\nexec python3 -m profiler "$@"\n' > /usr/local/bin/sframe-prof
chmod +x /usr/local/bin/sframe-prof
[ -f "$ctl/env" ] && . "$ctl/env"

say "running the command"
cd /src
bash "$ctl/cmd" < /dev/null 2>&1 | tee "$ctl/output.log"
rc=${PIPESTATUS[0]}
echo "$rc" > "$ctl/status.tmp" && mv "$ctl/status.tmp" "$ctl/status"
say "command exited with status $rc"
cd /
sync
