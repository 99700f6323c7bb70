"""The files a run writes: checked before sampling starts, written atomically at the end."""

from __future__ import annotations

import os

from profiler.app.options import Options
from profiler.atomic import atomic_path
from profiler.errors import SframeProfError
from profiler.model import ProfileData


def check_outputs(opts: Options) -> None:
    """Fail before sampling, not after, when an output cannot be written."""
    for path in (opts.output, opts.folded, opts.flamegraph, opts.record):
        if not path:
            continue
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise SframeProfError(f"cannot write {path}: no such directory {directory}")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise SframeProfError(f"cannot write {path}: {directory} is not writable")
        if os.path.isdir(path):
            raise SframeProfError(f"cannot write {path}: it is a directory")


def write_outputs(data: ProfileData, opts: Options) -> list[str]:
    """Write every requested output; returns what was written (for the summary)."""
    written = []
    try:
        if opts.output:
            from profiler.emit.pprof import write_pprof
            with atomic_path(opts.output) as tmp:
                write_pprof(data, tmp)
            written.append(f"pprof {opts.output}")
        if opts.folded:
            from profiler.emit.folded import write_folded
            with atomic_path(opts.folded) as tmp:
                write_folded(data, tmp)
            written.append(f"folded {opts.folded}")
        if opts.flamegraph:
            from profiler.emit.flamegraph import write_flamegraph
            with atomic_path(opts.flamegraph) as tmp:
                write_flamegraph(data, tmp, fmt="svg" if opts.flamegraph.endswith(".svg")
                                 else "html")
            written.append(f"flame graph {opts.flamegraph}")
    except OSError as exc:
        raise SframeProfError(f"cannot write {exc.filename or 'output'}: {exc.strerror}") from None
    return written
