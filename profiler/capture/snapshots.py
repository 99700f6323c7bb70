"""Stack snapshot files (JSON Lines, optionally gzip'd): docs/snapshot-format.md.

`read_snapshots` yields (line number, input object, RawSample) and raises
SnapshotError with the file name and line for malformed input;
`result_json` renders one UnwoundStack as the output object.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
from collections.abc import Iterator
from typing import Any

from profiler.errors import SframeProfError
from profiler.model import Mapping, RawSample, UnwoundStack


class SnapshotError(SframeProfError):
    """A snapshot line that does not follow the format."""


def _int(obj: dict[str, Any], key: str, where: str) -> int:
    v = obj.get(key)
    if not isinstance(v, int) or isinstance(v, bool):
        raise SnapshotError(f"{where}: field {key!r} must be an integer")
    return v


def parse_snapshot(obj: Any, where: str) -> RawSample:
    if not isinstance(obj, dict):
        raise SnapshotError(f"{where}: not a JSON object")
    arch = obj.get("arch")
    if arch not in ("x86_64", "aarch64"):
        raise SnapshotError(f"{where}: arch must be \"x86_64\" or \"aarch64\", got {arch!r}")
    regs_in = obj.get("regs")
    if not isinstance(regs_in, dict):
        raise SnapshotError(f"{where}: field 'regs' must be an object")
    regs = {k: v for k, v in regs_in.items() if isinstance(v, int) and not isinstance(v, bool)}
    for key in ("pc", "sp", "fp") + (("lr",) if arch == "aarch64" else ()):
        if key not in regs:
            raise SnapshotError(f"{where}: regs.{key} missing")
    base = _int(obj, "stack_base", where)
    try:
        stack = base64.b64decode(obj.get("stack_b64", ""), validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise SnapshotError(f"{where}: stack_b64 is not valid base64") from None
    maps_in = obj.get("mappings")
    if not isinstance(maps_in, list):
        raise SnapshotError(f"{where}: field 'mappings' must be an array")
    maps = []
    for i, m in enumerate(maps_in):
        w = f"{where}: mappings[{i}]"
        if not isinstance(m, dict):
            raise SnapshotError(f"{w}: not an object")
        perms, path = m.get("perms", ""), m.get("path", "")
        if not isinstance(perms, str) or not isinstance(path, str):
            raise SnapshotError(f"{w}: perms and path must be strings")
        maps.append(Mapping(_int(m, "start", w), _int(m, "end", w), _int(m, "offset", w),
                            perms, path))
    memory = []
    for i, r in enumerate(obj.get("memory") or []):
        w = f"{where}: memory[{i}]"
        if not isinstance(r, dict):
            raise SnapshotError(f"{w}: not an object")
        try:
            memory.append((_int(r, "start", w), base64.b64decode(r.get("b64", ""), validate=True)))
        except (binascii.Error, TypeError, ValueError):
            raise SnapshotError(f"{w}: b64 is not valid base64") from None
    pac = obj.get("pac_mask")
    if pac is not None and (not isinstance(pac, int) or isinstance(pac, bool)):
        raise SnapshotError(f"{where}: pac_mask must be an integer")
    return RawSample(arch=arch, regs=regs, stack_base=base, stack=stack, mappings=tuple(maps),
                     memory=tuple(memory), pac_mask=pac)


def open_text(path: str) -> Any:
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def read_snapshots(path: str) -> Iterator[tuple[int, dict[str, Any], RawSample]]:
    """Yield (line number, raw object, sample) for every non-blank line."""
    try:
        f = open_text(path)
    except OSError as exc:
        raise SnapshotError(f"{path}: cannot open ({exc.strerror})") from None
    with f:
        lineno = 0
        try:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SnapshotError(f"{where}: invalid JSON ({exc.msg})") from None
                yield lineno, obj, parse_snapshot(obj, where)
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise SnapshotError(f"{path}:{lineno + 1}: unreadable ({exc})") from None


def result_json(obj: dict[str, Any], stack: UnwoundStack) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "id" in obj:
        out["id"] = obj["id"]
    frames = []
    for fr in stack.frames:
        d: dict[str, Any] = {"pc": fr.pc}
        if fr.cfa is not None:
            d["cfa"] = fr.cfa
        d["method"] = fr.method
        d["object"] = fr.object
        frames.append(d)
    out["frames"] = frames
    out["reliable"] = stack.reliable
    out["reason"] = stack.reason
    return out
