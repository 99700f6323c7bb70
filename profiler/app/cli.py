"""The sframe-prof command line.

    sframe-prof [-p PID[,PID...] | -a] [-F HZ] [-d SECONDS] [-o FILE] [-- CMD ARGS]
    sframe-prof record [same options] -o CAPTURE
    sframe-prof report CAPTURE [-o FILE] [--folded F] [--flamegraph F] [--root DIR]
    sframe-prof sframe-dump FILE
    sframe-prof unwind-snapshots FILE.jsonl [--root DIR] [-o OUT]

Every user-facing failure is a one-line message on stderr and a nonzero exit status;
output already written stays written.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from profiler.app.options import Options, pid_list, positive_int, stack_size
from profiler.errors import SframeProfError
from profiler.unwind.objfile import ObjectError, ObjectFile
from profiler.unwind.sframe.section import SFrameError

SUBCOMMANDS = ("record", "report", "sframe-dump", "unwind-snapshots")


def cmd_sframe_dump(args: argparse.Namespace) -> int:
    from profiler.unwind.sframe.dump import dump_section
    obj = ObjectFile.open(args.file)
    sec = obj.sframe
    if sec is None:
        if obj.sframe_error:
            raise SframeProfError(obj.sframe_error)
        raise SframeProfError(f"{args.file}: no .sframe section")
    sys.stdout.write(dump_section(sec, compat=args.compat))
    return 0


def cmd_unwind_snapshots(args: argparse.Namespace) -> int:
    import json

    from profiler.capture.snapshots import read_snapshots, result_json
    from profiler.unwind.objfile import ObjectCache
    from profiler.unwind.unwinder import Unwinder
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


def _output_options(p: argparse.ArgumentParser, default_output: str | None) -> None:
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", default=default_output, metavar="FILE",
                   help=f"gzip'd pprof profile (default {default_output})")
    g.add_argument("--folded", metavar="FILE", help="also write folded stacks (FlameGraph)")
    g.add_argument("--flamegraph", metavar="FILE",
                   help="also write an interactive flame graph (.html, or .svg)")


def _capture_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to sample")
    g.add_argument("-p", "--pid", type=pid_list, default=[], metavar="PID[,PID...]",
                   help="sample these processes (all their threads)")
    g.add_argument("-a", "--all-cpus", action="store_true", dest="system_wide",
                   help="sample every process on the system")
    g.add_argument("-F", "--freq", type=positive_int, default=99, metavar="HZ",
                   help="samples per second per CPU (default 99)")
    g.add_argument("-d", "--duration", type=float, metavar="SECONDS",
                   help="stop after this long (default: until Ctrl-C or the targets exit)")
    g.add_argument("-e", "--event", default="cpu-clock",
                   choices=("cpu-clock", "task-clock", "cycles"),
                   help="sampling event (default cpu-clock; cycles needs a hardware PMU)")
    g.add_argument("--stack-size", type=stack_size, default=16384, metavar="BYTES",
                   help="user stack bytes copied per sample (default 16384)")
    g.add_argument("--no-children", action="store_false", dest="follow_children",
                   help="do not follow processes the targets start (followed by default)")
    g.add_argument("--transport", choices=("auto", "ringbuf", "perf"), default="auto",
                   help=argparse.SUPPRESS)
    g.add_argument("-q", "--quiet", action="store_true", help="no status line or summary")


def profile_parser(prog: str = "sframe-prof") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, usage=f"{prog} [-p PID[,PID...] | -a] [options] [-- COMMAND [ARGS...]]",
        description="Sample processes at interrupts with BPF and unwind their stacks with "
                    "SFrame (falling back to .eh_frame and frame pointers); write a pprof "
                    "profile, folded stacks and a flame graph. Other commands: "
                    "record, report, sframe-dump, unwind-snapshots (see `sframe-prof "
                    "COMMAND --help`).",
        epilog="Needs root (BPF). Ctrl-C or the end of -d stops sampling and still "
               "writes every output. Example: sudo sframe-prof -p 1234 -d 10 "
               "--flamegraph flame.html")
    _capture_options(p)
    _output_options(p, "sframe-prof.pb.gz")
    return p


def _split_command(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def _options(args: argparse.Namespace, command: list[str],
             record: str | None = None) -> Options:
    return Options(pids=args.pid, system_wide=args.system_wide, freq=args.freq,
                   duration=args.duration, stack_size=args.stack_size, event=args.event,
                   output=None if record else args.output,
                   folded=None if record else args.folded,
                   flamegraph=None if record else args.flamegraph, command=command,
                   record=record, transport=args.transport, quiet=args.quiet,
                   follow_children=args.follow_children)


def _check_target(args: argparse.Namespace, command: list[str],
                  parser: argparse.ArgumentParser) -> None:
    chosen = bool(args.pid) + bool(args.system_wide) + bool(command)
    if chosen == 0:
        parser.error("say what to profile: -p PID, -a, or -- COMMAND")
    if args.system_wide and (args.pid or command):
        parser.error("-a samples everything: do not combine it with -p or a command")


def cmd_profile(argv: list[str]) -> int:
    from profiler.app.live import LiveRun, ProfileMode
    own, command = _split_command(argv)
    parser = profile_parser()
    args = parser.parse_args(own)
    _check_target(args, command, parser)
    opts = _options(args, command)
    return LiveRun(opts, ProfileMode(defer=not opts.system_wide)).run()


def cmd_record(argv: list[str]) -> int:
    from profiler.app.live import LiveRun
    from profiler.app.record import RecordMode
    own, command = _split_command(argv)
    p = argparse.ArgumentParser(
        prog="sframe-prof record",
        usage="sframe-prof record [-p PID | -a] [options] -o CAPTURE [-- COMMAND ...]",
        description="Sample like sframe-prof, but keep the raw samples (registers, stack "
                    "bytes, maps, file identities) in a capture file for `sframe-prof "
                    "report`, later or on another machine.")
    _capture_options(p)
    p.add_argument("-o", "--output", required=True, metavar="CAPTURE")
    args = p.parse_args(own)
    _check_target(args, command, p)
    return LiveRun(_options(args, command, record=args.output), RecordMode(args.output)).run()


def cmd_report(argv: list[str]) -> int:
    from profiler.app.report import report
    p = argparse.ArgumentParser(
        prog="sframe-prof report",
        description="Unwind and symbolize a capture made by `sframe-prof record`.")
    p.add_argument("capture")
    p.add_argument("--root", metavar="DIR",
                   help="find the captured processes' files under this directory")
    p.add_argument("--debug-dir", action="append", default=[], metavar="DIR",
                   help="extra debug-file directory (like /usr/lib/debug); repeatable")
    _output_options(p, "sframe-prof.pb.gz")
    p.add_argument("-j", "--jobs", type=int, default=0, metavar="N",
                   help="unwind in N processes (default: one per CPU, at most 4; "
                        "a small capture uses fewer)")
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    return report(args)


def tools_parser() -> argparse.ArgumentParser:
    from profiler.unwind.sframe.dump import COMPAT
    p = argparse.ArgumentParser(prog="sframe-prof")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("sframe-dump", help="print a file's .sframe like objdump --sframe")
    d.add_argument("file")
    d.add_argument("--compat", choices=COMPAT, default=None,
                   help="dump layout of this binutils release (default: the one that "
                        "reads the file's version, 2.40 for SFrame V1, else 2.46)")
    d.set_defaults(func=cmd_sframe_dump)
    u = sub.add_parser("unwind-snapshots", help="unwind stack snapshots (JSON Lines)")
    u.add_argument("file")
    u.add_argument("--root", help="resolve mapped paths under this directory")
    u.add_argument("-o", "--output", help="write results here (default: stdout)")
    u.set_defaults(func=cmd_unwind_snapshots)
    return p


def cmd_agent(argv: list[str]) -> int:
    from profiler.app.agent import main as agent_main
    return agent_main(argv)


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] == "agent":
        return cmd_agent(argv[1:])
    if argv and argv[0] == "record":
        return cmd_record(argv[1:])
    if argv and argv[0] == "report":
        return cmd_report(argv[1:])
    if argv and argv[0] in SUBCOMMANDS:
        args = tools_parser().parse_args(argv)
        return int(args.func(args))
    return cmd_profile(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(args)
    except (SframeProfError, ObjectError, SFrameError) as exc:
        print(f"sframe-prof: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except BrokenPipeError:
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: one line, details on request
        if os.environ.get("SFRAME_PROF_DEBUG"):
            raise
        print(f"sframe-prof: internal error: {type(exc).__name__}: {exc} (run with "
              "SFRAME_PROF_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
        return 70
