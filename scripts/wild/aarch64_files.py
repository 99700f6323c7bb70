"""Write one aarch64 wild-panel ground-truth file and its sidecar.

    aarch64_files.py --name NAME --sysroot DIR --snap DIR RAW.jsonl...

Reads scripts/capture_gt.py's JSONL output (captured under qemu-user in a chroot of
the arm64 sysroot, so mapping paths are guest paths), writes
SNAP/aarch64-NAME.jsonl.gz (gzip -9, no timestamp) and SNAP/aarch64-NAME.files.json:
every absolute path with an executable mapping, "repo" for the binaries we built
(committed under SNAP/root/ at their guest path, /opt/sframe-prof-wild/aarch64/...)
and "arm64-sysroot" for Debian's files (under the sysroot that
scripts/wild/fetch_arm64_sysroot.sh makes), each with its sha256.  Fails, naming the
path, when a mapped file is in neither place.  Records are slimmed as the x86_64 side
does it (scripts/wild/panel_files.py's slim: the stack copy cut 4 KiB above the
outermost frame, the vDSO image kept only where a compared pc is in it).
"""

import argparse
import gzip
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from panel_files import sha256, slim  # noqa: E402  (shared with the x86_64 side)

REPO_PREFIX = "/opt/sframe-prof-wild/aarch64/"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--sysroot", required=True)
    ap.add_argument("--snap", required=True)
    ap.add_argument("raw", nargs="+")
    a = ap.parse_args()
    lines: list[str] = []
    exec_paths: set[str] = set()
    for raw in a.raw:
        with open(raw) as f:
            for line in f:
                if not line.strip():
                    continue
                rec = json.loads(line)
                if rec.get("arch") != "aarch64":
                    sys.exit(f"{raw}: not an aarch64 record: {rec.get('id')}")
                for m in rec["mappings"]:
                    if "x" in m["perms"] and m["path"].startswith("/"):
                        exec_paths.add(m["path"])
                lines.append(json.dumps(slim(rec), separators=(",", ":")))
    if not lines:
        sys.exit("no records in " + " ".join(a.raw))
    files: dict[str, dict[str, str]] = {}
    for p in sorted(exec_paths):
        if p.startswith(REPO_PREFIX):
            real = os.path.join(a.snap, "root", p.lstrip("/"))
            origin = "repo"
        else:
            real = os.path.join(a.sysroot, p.lstrip("/"))
            origin = "arm64-sysroot"
        if not os.path.isfile(real):
            sys.exit(f"mapped file {p} is not at {real}")
        files[p] = {"sha256": sha256(real), "from": origin}
    out = os.path.join(a.snap, f"aarch64-{a.name}.jsonl.gz")
    with open(out, "wb") as raw_out:
        with gzip.GzipFile(fileobj=raw_out, mode="wb", compresslevel=9, mtime=0,
                           filename="") as gz:
            gz.write(("\n".join(lines) + "\n").encode())
    with open(os.path.join(a.snap, f"aarch64-{a.name}.files.json"), "w") as f:
        json.dump({"files": files}, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{out}: {len(lines)} records, {len(files)} mapped files, "
          f"{os.path.getsize(out)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
