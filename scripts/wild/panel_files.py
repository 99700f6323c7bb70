"""Package one wild-panel capture: gdb's JSONL parts -> snapshot file, sidecar, root/.

    panel_files.py --arch ARCH --name NAME --panel-dir DIR --out tests/snapshots/wild PARTS...

Writes OUT/<arch>-<name>.jsonl.gz (gzip without a timestamp, so a rerun with the same
records gives the same bytes) and OUT/<arch>-<name>.files.json, the sidecar of
tests/wild conventions: every absolute path with an executable mapping in any record,
its sha256, and where the test finds it: "repo" for files under the panel directory
(our own builds, copied to OUT/root/<path>), "host" for the rest (Debian's files, used
in place).  Prints a one-line summary of the records.

--stripped-twin: a program of ours also built stripped (FILE.stripped, Go's -s -w) whose
loaded sections (all but the build-ID notes) are byte-identical at the same addresses
gets a second file, <arch>-<name>-stripped, with the same records mapping FILE.stripped
instead: gdb needs the DWARF build to unwind, the unwinder sees only the stripped one.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_parts(parts: list[str]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for part in parts:
        if not os.path.exists(part):
            print(f"panel_files: {part} missing (that capture produced nothing)", file=sys.stderr)
            continue
        with open(part) as f:
            records.extend(json.loads(line) for line in f if line.strip())
    return records


def in_vdso(rec: dict[str, Any], pc: int) -> bool:
    return any(m["path"] == "[vdso]" and m["start"] <= pc < m["end"] for m in rec["mappings"])


KEEP_PAST_CHAIN = 4096     # bytes kept above the outermost frame's sp (complete walks)
KEEP_UNSURE = 16384        # bytes kept from sp where gdb's walk was incomplete


def slim(rec: dict[str, Any]) -> dict[str, Any]:
    """The record, smaller, with the same meaning for an unwinder.

    * The stack copy ends at the end of the mapping that holds sp (gdb read on into
      the next mapping: a thread's copy ran past its stack into other memory; a main
      thread's copy already ended at the top of [stack]), and at most 4 KiB above the
      outermost frame's sp (a goroutine's stack lies inside a large heap mapping), or
      16 KiB above sp where gdb's walk was incomplete (only frame 0 is compared there).
    * The vDSO image is kept only where a pc gdb reports, or the sampled pc, is in the
      vDSO; no other chain that is compared reads it.
    * The big fields go last, so gzip's 32 KiB window sees one record's mappings from
      the next one's.
    """
    data = base64.b64decode(rec["stack_b64"])
    sp = rec["stack_base"]
    for m in rec["mappings"]:
        if m["start"] <= sp < m["end"]:
            data = data[: m["end"] - sp]
            break
    if rec.get("expected_complete"):
        outer = max([e.get("cfa", sp) for e in rec["expected"]] + [sp])
        data = data[: outer - sp + KEEP_PAST_CHAIN]
    else:
        data = data[:KEEP_UNSURE]
    pcs = [e["pc"] for e in rec["expected"]] + [rec["regs"]["pc"]]
    out = {k: v for k, v in rec.items() if k not in ("mappings", "stack_b64", "memory")}
    out["mappings"] = rec["mappings"]
    out["stack_b64"] = base64.b64encode(data).decode()
    out["memory"] = rec["memory"] if any(in_vdso(rec, pc) for pc in pcs) else []
    return out


def loaded_sections(path: str) -> dict[str, tuple[int, bytes]]:
    """Every allocated section but the notes (build IDs): name -> (address, bytes)."""
    out = {}
    with open(path, "rb") as f:
        for sec in ELFFile(f).iter_sections():
            if sec["sh_flags"] & SH_FLAGS.SHF_ALLOC and not sec.name.startswith(".note"):
                out[sec.name] = (sec["sh_addr"], sec.data() if sec["sh_type"] != "SHT_NOBITS"
                                 else b"")
    return out


def twin_differs(path: str, twin: str) -> str:
    """Why `twin` (the stripped build) would unwind differently ("" if it cannot)."""
    a, b = loaded_sections(path), loaded_sections(twin)
    if a.keys() != b.keys():
        return f"sections differ: {sorted(a.keys() ^ b.keys())}"
    for name, (addr, data) in a.items():
        if b[name] != (addr, data):
            return f"section {name} differs"
    return ""


def as_twin(rec: dict[str, Any], renames: dict[str, str]) -> dict[str, Any]:
    out = dict(rec)
    out["id"] = rec["id"] + "/stripped"
    out["mappings"] = [dict(m, path=renames.get(m["path"], m["path"])) for m in rec["mappings"]]
    return out


def copy_holds_chain(rec: dict[str, Any]) -> bool:
    base = rec["stack_base"]
    top = base + len(base64.b64decode(rec["stack_b64"]))
    return all(base <= e.get("cfa", base) <= top for e in rec["expected"])


def write(out: Path, stem: str, records: list[dict[str, Any]], panel: str) -> None:
    body = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
    with open(out / f"{stem}.jsonl.gz", "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0, filename="") as gz:
            gz.write(body.encode())
    files: dict[str, dict[str, str]] = {}
    for r in records:
        for m in r["mappings"]:
            path = m["path"]
            if "x" not in m["perms"] or not path.startswith("/") or path in files:
                continue
            origin = "repo" if path.startswith(panel) else "host"
            files[path] = {"sha256": sha256(path), "from": origin}
            if origin == "repo":
                dst = out / "root" / path.lstrip("/")
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dst)
                shutil.copymode(path, dst)
    with open(out / f"{stem}.files.json", "w") as f:
        json.dump({"files": dict(sorted(files.items()))}, f, indent=1)
        f.write("\n")
    complete = sum(bool(r.get("expected_complete")) for r in records)
    held = sum(bool(r.get("expected_complete")) and copy_holds_chain(r) for r in records)
    size = (out / f"{stem}.jsonl.gz").stat().st_size
    print(f"{stem}: {len(records)} records, {complete} complete, {held} complete and held "
          f"by the copy, {len(files)} files, {size} bytes gzip'd")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", required=True, choices=("x86_64", "aarch64"))
    ap.add_argument("--name", required=True)
    ap.add_argument("--panel-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--stripped-twin", action="store_true",
                    help="also write <name>-stripped for the FILE.stripped builds of our "
                         "files, when their loaded sections are byte-identical")
    ap.add_argument("parts", nargs="+")
    args = ap.parse_args()
    records = [slim(r) for r in read_parts(args.parts)]
    if not records:
        print(f"panel_files: no records for {args.name}", file=sys.stderr)
        return 1
    out = Path(args.out)
    panel = os.path.realpath(args.panel_dir) + "/"
    write(out, f"{args.arch}-{args.name}", records, panel)
    if args.stripped_twin:
        ours = {m["path"] for r in records for m in r["mappings"]
                if m["path"].startswith(panel) and os.path.exists(m["path"] + ".stripped")}
        why = {p: twin_differs(p, p + ".stripped") for p in ours}
        if not ours or any(why.values()):
            print(f"panel_files: no stripped twin for {args.name}: {why or 'no .stripped file'}",
                  file=sys.stderr)
            return 1
        renames = {p: p + ".stripped" for p in ours}
        write(out, f"{args.arch}-{args.name}-stripped",
              [as_twin(r, renames) for r in records], panel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
