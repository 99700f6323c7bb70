"""The sframe-prof command line: one small function per subcommand.

Every user-facing failure is a one-line message on stderr and a nonzero exit
status; output already written stays written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from profiler.errors import SframeProfError
from profiler.objfile import ObjectCache, ObjectError, ObjectFile
from profiler.sframe.dump import COMPAT, dump_section
from profiler.sframe.section import SFrameError
from profiler.snapshots import SnapshotError, read_snapshots, result_json
from profiler.unwind import Unwinder


def cmd_sframe_dump(args: argparse.Namespace) -> int:
    obj = ObjectFile.open(args.file)
    sec = obj.sframe
    if sec is None:
        if obj.sframe_error:
            raise SframeProfError(obj.sframe_error)
        raise SframeProfError(f"{args.file}: no .sframe section")
    sys.stdout.write(dump_section(sec, compat=args.compat))
    return 0


def cmd_unwind_snapshots(args: argparse.Namespace) -> int:
    unwinder = Unwinder(ObjectCache(args.root))
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    n = reliable = 0
    try:
        for _lineno, obj, sample in read_snapshots(args.file):
            stack = unwinder.unwind(sample)
            out.write(json.dumps(result_json(obj, stack)) + "\n")
            n += 1
            reliable += stack.reliable
    finally:
        if out is not sys.stdout:
            out.close()
        else:
            out.flush()
    print(f"{n} snapshots, {reliable} reliable", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sframe-prof", description="SFrame-based native profiler")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("sframe-dump", help="print a file's .sframe like objdump --sframe")
    d.add_argument("file")
    d.add_argument("--compat", choices=COMPAT, default="2.46",
                   help="dump layout of this binutils release (default 2.46)")
    d.set_defaults(func=cmd_sframe_dump)
    u = sub.add_parser("unwind-snapshots", help="unwind stack snapshots (JSON Lines)")
    u.add_argument("file")
    u.add_argument("--root", help="resolve mapped paths under this directory")
    u.add_argument("-o", "--output", help="write results here (default: stdout)")
    u.set_defaults(func=cmd_unwind_snapshots)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (SframeProfError, ObjectError, SFrameError, SnapshotError) as exc:
        print(f"sframe-prof: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except BrokenPipeError:
        return 1
    except KeyboardInterrupt:
        return 130
