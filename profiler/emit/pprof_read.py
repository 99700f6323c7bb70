"""Read a pprof profile back into plain Python values.

The project's own reader, for tests and checks: each sample becomes its frames (leaf
first, as stored), values and labels, with every reference already resolved.  A frame
is named the way every output of this project names it (see :mod:`profiler.emit`): the
function, else ``module+0xfileoffset``, else the address.

    prof = read_pprof("cpu.pb.gz")
    prof.stacks()            # Counter: root-first tuple of names -> samples
    prof.samples[0].labels   # {"pid": 42, "thread": "worker", "unwind": "reliable", ...}
"""

from __future__ import annotations

import gzip
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import BinaryIO

from profiler.emit import KERNEL_MAPPING, module_offset
from profiler.emit.pprof import check_valid
from profiler.model import MappingInfo
from profiler.proto import profile_pb2


@dataclass(frozen=True, slots=True)
class ReadMapping:
    start: int
    limit: int
    offset: int
    path: str
    build_id: str
    has_functions: bool


@dataclass(frozen=True, slots=True)
class ReadFrame:
    name: str                   # function, module+0xoffset, or 0xaddress
    address: int
    mapping: ReadMapping | None
    is_kernel: bool             # in the [kernel.kallsyms] mapping
    synthetic: bool             # no mapping, address 0: a marker such as [unreliable: ...]
    has_function: bool          # `name` is a function name, not an address


@dataclass(frozen=True, slots=True)
class ReadSample:
    frames: tuple[ReadFrame, ...]   # leaf first
    values: tuple[int, ...]
    labels: dict[str, str | int]

    @property
    def names_leaf_first(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.frames)

    @property
    def names_root_first(self) -> tuple[str, ...]:
        return tuple(f.name for f in reversed(self.frames))


@dataclass(slots=True)
class ReadProfile:
    sample_types: list[tuple[str, str]]
    period_type: tuple[str, str]
    period: int
    time_nanos: int
    duration_nanos: int
    default_sample_type: str
    comments: list[str]
    mappings: list[ReadMapping]
    samples: list[ReadSample] = field(default_factory=list)

    def value_index(self, sample_type: str) -> int:
        return [t for t, _ in self.sample_types].index(sample_type)

    def stacks(self, sample_type: str = "samples", *, root_first: bool = True,
               where: dict[str, str | int] | None = None) -> Counter[tuple[str, ...]]:
        """Sum one value per distinct stack, optionally only over samples whose labels
        include every item of `where`."""
        col = self.value_index(sample_type)
        out: Counter[tuple[str, ...]] = Counter()
        for s in self.samples:
            if where and any(s.labels.get(k) != v for k, v in where.items()):
                continue
            names = s.names_root_first if root_first else s.names_leaf_first
            out[names] += s.values[col]
        return out

    def total(self, sample_type: str = "samples") -> int:
        col = self.value_index(sample_type)
        return sum(s.values[col] for s in self.samples)


def read_pprof(source: str | os.PathLike[str] | BinaryIO | bytes, *,
               validate: bool = True) -> ReadProfile:
    """Decode a pprof profile (gzip'd or raw) from a path, a binary file or bytes.

    With `validate`, :func:`profiler.emit.pprof.check_valid` runs first and its
    :class:`InvalidProfileError` propagates.
    """
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            data = f.read()
    else:
        data = source.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    profile = profile_pb2.Profile()
    profile.ParseFromString(data)
    if validate:
        check_valid(profile)
    return decode_profile(profile)


def decode_profile(p: profile_pb2.Profile) -> ReadProfile:
    """Resolve every reference of a Profile message (which must be valid)."""
    st = p.string_table
    mappings = [ReadMapping(m.memory_start, m.memory_limit, m.file_offset, st[m.filename],
                            st[m.build_id], m.has_functions) for m in p.mapping]
    functions = [st[f.name] for f in p.function]
    locations: list[tuple[ReadFrame, ...]] = []
    for loc in p.location:
        mapping = mappings[loc.mapping_id - 1] if loc.mapping_id else None
        is_kernel = mapping is not None and mapping.path == KERNEL_MAPPING
        synthetic = mapping is None and loc.address == 0
        if loc.line:
            # Inlined callee first: the order a leaf-first stack needs.
            frames = tuple(ReadFrame(functions[line.function_id - 1], loc.address, mapping,
                                     is_kernel, synthetic, True) for line in loc.line)
        else:
            if mapping is not None:
                info = MappingInfo(mapping.start, mapping.limit, mapping.offset, mapping.path)
                name = module_offset(info, loc.address)
            else:
                name = f"{loc.address:#x}"
            frames = (ReadFrame(name, loc.address, mapping, is_kernel, synthetic, False),)
        locations.append(frames)
    out = ReadProfile(
        sample_types=[(st[t.type], st[t.unit]) for t in p.sample_type],
        period_type=(st[p.period_type.type], st[p.period_type.unit]),
        period=p.period, time_nanos=p.time_nanos, duration_nanos=p.duration_nanos,
        default_sample_type=st[p.default_sample_type],
        comments=[st[c] for c in p.comment], mappings=mappings)
    for s in p.sample:
        frames = tuple(f for lid in s.location_id for f in locations[lid - 1])
        labels: dict[str, str | int] = {
            st[lb.key]: st[lb.str] if lb.str else lb.num for lb in s.label}
        out.samples.append(ReadSample(frames, tuple(s.value), labels))
    return out
