"""Where an ELF file's symbols live when not in its own .symtab, and its build ID.

* a separate debug file found by build ID (``<debug_dir>/.build-id/ab/cdef....debug``,
  build ID checked) or by ``.gnu_debuglink`` (the file's directory, its ``.debug/``
  subdirectory and ``<debug_dir>/<directory of the file>/``, CRC32 checked);
* the MiniDebugInfo ``.gnu_debugdata`` section: an xz-compressed ELF holding a
  ``.symtab``, decompressed to at most MAX_MINIDEBUGINFO_BYTES.

Every path is taken under ``root`` when one is given (containers, chroots).  What is
rejected on the way is noted in the caller's ``errors`` list, one line each.
"""

from __future__ import annotations

import io
import lzma
import os
import zlib
from collections.abc import Sequence
from typing import BinaryIO

from profiler.unwind.elf import SHT_NOBITS, ElfError, ElfFile
from profiler.unwind.objfile import ObjectFile

__all__ = ["MAX_MINIDEBUGINFO_BYTES", "find_debug_file", "mini_debuginfo", "read_build_id"]

# The size a MiniDebugInfo (.gnu_debugdata) section may decompress to: a bound on what
# a target's file can make us do.
MAX_MINIDEBUGINFO_BYTES = 1 << 27


def _rooted(root: str | None, path: str) -> str:
    if root and os.path.isabs(path):
        return os.path.join(root, path.lstrip("/"))
    return path


def read_build_id(obj: ObjectFile) -> str:
    """The GNU build ID of `obj` as lowercase hex ("" if it has none)."""
    return obj.elf.build_id()


def _debuglink(elf: ElfFile) -> tuple[str, int] | None:
    """(file name, CRC32) from .gnu_debuglink, if present and a plain file name."""
    link = elf.debuglink()
    if link is None or "/" in link[0]:
        return None
    return link


def _file_crc32(path: str) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


def _open_elf_candidate(path: str) -> BinaryIO | None:
    try:
        f = open(path, "rb")  # noqa: SIM115 - handed to the caller, closed there
    except OSError:
        return None
    if f.read(4) != b"\x7fELF":
        f.close()
        return None
    f.seek(0)
    return f


def find_debug_file(obj: ObjectFile, build_id: str, debug_dirs: Sequence[str],
                     root: str | None, errors: list[str]
                     ) -> tuple[str, str, BinaryIO] | None:
    """(path, "build-id" or "debuglink", open stream) of a matching separate debug file."""
    if len(build_id) >= 4:
        for d in debug_dirs:
            path = _rooted(root, os.path.join(d, ".build-id", build_id[:2],
                                              build_id[2:] + ".debug"))
            f = _open_elf_candidate(path)
            if f is None:
                continue
            if _stream_build_id(f) == build_id:
                f.seek(0)
                return path, "build-id", f
            errors.append(f"{path}: build ID does not match")
            f.close()
    link = _debuglink(obj.elf)
    if link is None:
        return None
    name, crc = link
    objdir = os.path.dirname(obj.name)
    dirs = [objdir]
    if not root and objdir:
        real = os.path.dirname(os.path.realpath(obj.name))
        if real != objdir:
            dirs.append(real)
    own_path = _rooted(root, obj.name)
    seen: set[str] = set()
    for dirpath in dirs:
        paths = [_rooted(root, os.path.join(dirpath, name)),
                 _rooted(root, os.path.join(dirpath, ".debug", name))]
        if os.path.isabs(dirpath):
            paths += [_rooted(root, os.path.join(d, dirpath.lstrip("/"), name))
                      for d in debug_dirs]
        for path in paths:
            if path in seen:
                continue
            seen.add(path)
            try:
                if os.path.samefile(path, own_path):
                    continue
            except OSError:
                pass
            f = _open_elf_candidate(path)
            if f is None:
                continue
            try:
                ok = _file_crc32(path) == crc
            except OSError:
                ok = False
            if not ok:
                errors.append(f"{path}: CRC32 does not match .gnu_debuglink")
                f.close()
                continue
            other = _stream_build_id(f)
            if build_id and other and other != build_id:
                errors.append(f"{path}: build ID does not match")
                f.close()
                continue
            f.seek(0)
            return path, "debuglink", f
    return None


def _stream_build_id(f: BinaryIO) -> str:
    try:
        return ElfFile(f).build_id()
    except ElfError:
        return ""


def mini_debuginfo(elf: ElfFile, errors: list[str]) -> ElfFile | None:
    """The ELF file inside .gnu_debugdata (MiniDebugInfo), or None."""
    sec = elf.find_section(".gnu_debugdata")
    if sec is None or sec.sh_type == SHT_NOBITS:
        return None
    try:
        dec = lzma.LZMADecompressor()
        data = dec.decompress(elf.section_data(sec), max_length=MAX_MINIDEBUGINFO_BYTES)
        if not dec.eof:
            errors.append(".gnu_debugdata: unusable (truncated, or larger than "
                          f"{MAX_MINIDEBUGINFO_BYTES} bytes decompressed)")
            return None
        return ElfFile(io.BytesIO(data))
    except (lzma.LZMAError, ElfError) as exc:
        errors.append(f".gnu_debugdata: unusable ({exc})")
        return None
