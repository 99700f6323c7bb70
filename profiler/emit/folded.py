"""Folded stacks, the text format of Brendan Gregg's FlameGraph tools.

One line per distinct stack: the frames from the root to the leaf joined by ``;``, a
space, and the count.  As ``stackcollapse-perf.pl`` writes them:

* the first frame is the thread's name (its comm), so each program is its own tower;
* kernel frames end in ``_[k]``, which flamegraph.pl colours apart;
* a frame with no symbol is ``module+0xfileoffset`` (module basename);
* synthetic frames such as ``[unreliable: stack-truncated]`` keep their name;
* ``;`` inside a name becomes ``:`` and line breaks become spaces, so every line parses.

Stacks that read the same are merged whatever thread or process they came from, and the
lines are sorted, so the same profile always gives the same text.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Literal, TextIO

from profiler.emit import location_label
from profiler.model import Location, ProfileData, StackSample

Weight = Literal["samples", "nanoseconds"]

_CLEAN = str.maketrans({";": ":", "\n": " ", "\r": " "})


def frame_name(loc: Location) -> str:
    name = location_label(loc).translate(_CLEAN)
    if loc.is_kernel and not loc.synthetic:
        name += "_[k]"
    return name


def stack_line(stack: StackSample) -> str:
    """The frames part of a folded line: comm, then root ... leaf."""
    comm = stack.thread_name or stack.process_name or "[unknown]"
    frames = [comm.translate(_CLEAN)]
    frames.extend(frame_name(loc) for loc in reversed(stack.locations))
    return ";".join(frames)


def folded_lines(data: ProfileData, weight: Weight = "samples") -> list[str]:
    """Sorted ``"frames count"`` lines (without newlines); zero counts are left out."""
    counts: Counter[str] = Counter()
    for stack in data.samples:
        counts[stack_line(stack)] += stack.count if weight == "samples" else stack.cpu_ns
    return [f"{frames} {n}" for frames, n in sorted(counts.items()) if n > 0]


def write_folded(data: ProfileData, file: str | os.PathLike[str] | TextIO,
                 weight: Weight = "samples") -> None:
    """Write the folded lines of `data` to a path or a text file.

    `weight` picks the count: samples (the FlameGraph convention) or CPU nanoseconds.
    """
    text = "".join(line + "\n" for line in folded_lines(data, weight))
    if isinstance(file, (str, os.PathLike)):
        with open(file, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        file.write(text)
