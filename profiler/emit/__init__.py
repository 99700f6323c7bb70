"""Output formats: the last pipeline stage, fed a :class:`profiler.model.ProfileData`.

* :mod:`profiler.emit.pprof` -- gzip'd pprof protobuf (``go tool pprof``, back ends);
  :mod:`profiler.emit.pprof_read` reads such a file back for tests and checks.
* :mod:`profiler.emit.folded` -- Brendan Gregg's folded stacks, one line per stack.
* :mod:`profiler.emit.flamegraph` -- the interactive flame graph (HTML, or SVG), from
  :mod:`profiler.emit.flametree`.
* :mod:`profiler.emit.otlp` -- an OTLP profiles export request (the agent's OTLP sink).

This module holds the naming rules every format shares, so a frame reads the same in
all of them.  It imports nothing heavy: the protobuf runtime is loaded only by the pprof
modules.
"""

from __future__ import annotations

import posixpath

from profiler.model import Location, MappingInfo, StackSample

KERNEL_MAPPING = "[kernel.kallsyms]"


def module_name(path: str) -> str:
    """The short name of a mapped object: the basename of a path, pseudo names as is."""
    if path.startswith("["):
        return path
    return posixpath.basename(path) or path


def module_offset(mapping: MappingInfo, address: int) -> str:
    """``libfoo.so+0x1a2b``: an address as a file offset in its object."""
    return f"{module_name(mapping.path)}+{address - mapping.start + mapping.offset:#x}"


def location_label(loc: Location) -> str:
    """A frame's display name without any format-specific suffix.

    The function name when there is one (synthetic frames always have one), else
    ``module+0xfileoffset``, else the bare address.
    """
    if loc.function:
        return loc.function
    if loc.mapping is not None:
        return module_offset(loc.mapping, loc.address)
    return f"{loc.address:#x}"


def doubt_frame(stack: StackSample) -> int:
    """How many user frames come before the synthetic `[unreliable: ...]` one: the
    index of the first user frame in doubt, as the `unwind_doubt_frame` label gives it."""
    n = 0
    for loc in stack.locations:
        if loc.synthetic:
            break
        n += not loc.is_kernel
    return n
