"""OTLP profiles: a :class:`ProfileData` as an ``ExportProfilesServiceRequest``.

The messages are the generated classes of the maintained PyPI package
``opentelemetry-proto`` (``profiles/v1development``, Alpha; the version range is pinned
in pyproject.toml because the development schema still changes).  The request is built
from the same ProfileData the pprof writer gets, not from a pprof message.

What goes where (docs/agent.md):

* the resource carries the profile's labels: ``service.name``, ``host.name``,
  ``process.pid`` (per-pid groups), ``container.id``, ``sframe_prof.agent_version``
  and any extra label under its own name;
* the scope is ``sframe-prof`` with the agent's version;
* one Profile with sample type ``samples/count``, period type ``cpu/nanoseconds``, the
  period, ``time_unix_nano`` and ``duration_nano``; each sample has one value, its count;
* sample attributes are the pprof writer's sample labels under OTLP names:
  ``process.pid``, ``thread.id``, ``thread.name``, ``process.executable.name``,
  ``unwind``, ``unwind_reason``, ``unwind_doubt_frame``; a label that is also a
  resource attribute (``pid`` of a per-pid group) stays on the resource only;
* mappings carry start, limit, file offset, file name and the GNU build id as the
  ``process.executable.build_id.gnu`` attribute; kernel frames without a mapping share
  a ``[kernel.kallsyms]`` one spanning their addresses, as in pprof;
* locations keep the runtime address and one line naming the function (none when the
  name is unknown); synthetic ``[unreliable: ...]`` frames have no mapping, address 0;
* every dictionary table starts with its zero value (``""``; ``Link`` with 16 and 8
  zero bytes, as the spec recommends).

:func:`parse_request` and :func:`check_request` are what a receiver runs on a body.
The transport is ``POST <url>/v1development/profiles``, ``application/x-protobuf``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2 import (
    ExportProfilesServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.profiles.v1development import profiles_pb2 as pb

from profiler.emit import KERNEL_MAPPING, doubt_frame

if TYPE_CHECKING:
    from profiler.model import Location, MappingInfo, ProfileData, StackSample

OTLP_PATH = "/v1development/profiles"
CONTENT_TYPE = "application/x-protobuf"
SCOPE_NAME = "sframe-prof"

# pprof sample label -> OTLP sample attribute (semantic conventions where they exist)
SAMPLE_ATTRIBUTE = {"tid": "thread.id", "thread": "thread.name", "pid": "process.pid",
                    "process": "process.executable.name"}
# profile labels -> resource attributes
RESOURCE_ATTRIBUTE = {"service": "service.name", "host": "host.name", "pid": "process.pid",
                      "container_id": "container.id", "agent_version": "sframe_prof.agent_version"}
BUILD_ID_ATTRIBUTE = "process.executable.build_id.gnu"

# (start, limit, offset, path, build_id): one Mapping
_MappingKey = tuple[int, int, int, str, str]


def build_request(data: ProfileData, labels: dict[str, str], *,
                  scope_version: str) -> ExportProfilesServiceRequest:
    """The request holding `data` as one Profile, with `labels` on its resource."""
    return _Builder(data, labels).build(scope_version)


def encode_request(data: ProfileData, labels: dict[str, str], *, scope_version: str) -> bytes:
    """:func:`build_request`, serialized: the body of an OTLP profiles POST."""
    raw: bytes = build_request(data, labels, scope_version=scope_version).SerializeToString()
    return raw


def any_value(value: str | int) -> AnyValue:
    return AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=value)


def plain_value(value: AnyValue) -> object:
    """The Python value of an AnyValue (None when unset)."""
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


class _Builder:
    def __init__(self, data: ProfileData, labels: dict[str, str]) -> None:
        self.data = data
        self.labels = labels
        self.strings: dict[str, int] = {"": 0}
        self.attributes: dict[tuple[str, str | int], int] = {}
        self.stacks: dict[tuple[int, ...], int] = {(): 0}
        self.mappings: dict[_MappingKey, int] = {}
        self.functions: dict[str, int] = {}
        self.locations: dict[tuple[int, int, bool, str], int] = {}
        self.by_loc: dict[int, int] = {}        # id(Location) -> location index
        self.by_info: dict[int, int] = {}       # id(MappingInfo) -> mapping index
        d = self.dictionary = pb.ProfilesDictionary()
        d.mapping_table.add()
        d.location_table.add()
        d.function_table.add()
        d.link_table.add(trace_id=bytes(16), span_id=bytes(8))
        d.attribute_table.add()
        kernel = [loc.address for s in data.samples for loc in s.locations
                  if loc.is_kernel and loc.mapping is None and not loc.synthetic]
        self.kernel_fallback: _MappingKey | None = (
            (min(kernel), max(kernel) + 1, 0, KERNEL_MAPPING, "") if kernel else None)

    def string(self, s: str) -> int:
        idx = self.strings.get(s)
        if idx is None:
            idx = self.strings[s] = len(self.strings)
        return idx

    def attribute(self, key: str, value: str | int) -> int:
        k = (key, value)
        idx = self.attributes.get(k)
        if idx is None:
            idx = self.attributes[k] = len(self.dictionary.attribute_table)
            self.dictionary.attribute_table.add(key_strindex=self.string(key),
                                                value=any_value(value))
        return idx

    def build(self, scope_version: str) -> ExportProfilesServiceRequest:
        data = self.data
        prof = pb.Profile(
            sample_type=pb.ValueType(type_strindex=self.string("samples"),
                                     unit_strindex=self.string("count")),
            time_unix_nano=data.start_ns, duration_nano=data.duration_ns,
            period_type=pb.ValueType(type_strindex=self.string("cpu"),
                                     unit_strindex=self.string("nanoseconds")),
            period=data.period_ns)
        by_loc = self.by_loc
        for stack in data.samples:
            locs = tuple([by_loc.get(id(loc)) or self.location(loc) for loc in stack.locations])
            stack_index = self.stacks.get(locs)
            if stack_index is None:
                stack_index = self.stacks[locs] = len(self.stacks)
            prof.samples.add(stack_index=stack_index,
                             attribute_indices=self.sample_attributes(stack),
                             values=[stack.count])
        d = self.dictionary
        d.string_table.extend(self.strings)           # insertion order is index order
        d.stack_table.extend(pb.Stack(location_indices=s) for s in self.stacks)
        resource = [KeyValue(key=RESOURCE_ATTRIBUTE.get(k, k),
                             value=any_value(int(v) if k == "pid" and v.isdigit() else v))
                    for k, v in self.labels.items()]
        request = ExportProfilesServiceRequest(dictionary=d)
        rp = request.resource_profiles.add()
        rp.resource.attributes.extend(resource)
        rp.scope_profiles.add(scope=InstrumentationScope(name=SCOPE_NAME, version=scope_version),
                              profiles=[prof])
        return request

    def sample_attributes(self, stack: StackSample) -> list[int]:
        """The pprof writer's sample labels, in its order, minus the resource's keys."""
        pairs: list[tuple[str, str | int]] = [("pid", stack.pid), ("tid", stack.tid)]
        if stack.thread_name:
            pairs.append(("thread", stack.thread_name))
        if stack.process_name:
            pairs.append(("process", stack.process_name))
        pairs.append(("unwind", "reliable" if stack.reliable else "unreliable"))
        if not stack.reliable:
            pairs.append(("unwind_reason", stack.reason or "unknown"))
            pairs.append(("unwind_doubt_frame", doubt_frame(stack)))
        return [self.attribute(SAMPLE_ATTRIBUTE.get(k, k), v) for k, v in pairs
                if k not in self.labels]

    def mapping(self, info: MappingInfo | None, loc: Location) -> int:
        if loc.synthetic:
            return 0
        if info is None:
            if not loc.is_kernel or self.kernel_fallback is None:
                return 0
            key = self.kernel_fallback
        else:
            known = self.by_info.get(id(info))
            if known is not None:
                return known
            key = (info.start, info.limit, info.offset, info.path, info.build_id)
        idx = self.mappings.get(key)
        if idx is None:
            start, limit, offset, path, build_id = key
            attrs = [self.attribute(BUILD_ID_ATTRIBUTE, build_id)] if build_id else []
            idx = self.mappings[key] = len(self.dictionary.mapping_table)
            self.dictionary.mapping_table.add(
                memory_start=start, memory_limit=limit, file_offset=offset,
                filename_strindex=self.string(path), attribute_indices=attrs)
        if info is not None:
            self.by_info[id(info)] = idx
        return idx

    def function(self, name: str) -> int:
        idx = self.functions.get(name)
        if idx is None:
            s = self.string(name)
            idx = self.functions[name] = len(self.dictionary.function_table)
            self.dictionary.function_table.add(name_strindex=s, system_name_strindex=s)
        return idx

    def location(self, loc: Location) -> int:
        mapping = self.mapping(loc.mapping, loc)
        address = 0 if loc.synthetic else loc.address
        key = (mapping, address, loc.is_kernel, loc.function)
        idx = self.locations.get(key)
        if idx is None:
            lines = [pb.Line(function_index=self.function(loc.function))] if loc.function else []
            idx = self.locations[key] = len(self.dictionary.location_table)
            self.dictionary.location_table.add(mapping_index=mapping, address=address,
                                               lines=lines)
        self.by_loc[id(loc)] = idx
        return idx


# -- receiving ---------------------------------------------------------------------------


def parse_request(body: bytes) -> ExportProfilesServiceRequest:
    """The request in `body`; ValueError with one line when it is not one."""
    req = ExportProfilesServiceRequest()
    try:
        req.ParseFromString(body)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ValueError(f"not an OTLP profiles request: {exc}") from None
    return req


def check_request(req: ExportProfilesServiceRequest) -> list[str]:
    """Broken rules of the spec (zero values at index 0, every index in its table), as
    readable lines; [] for a good request."""
    problems: list[str] = []
    d = req.dictionary
    strings = d.string_table
    if not strings or strings[0] != "":
        problems.append('string_table[0] must be ""')
    tables: list[tuple[str, bool]] = [
        ("mapping_table", bool(d.mapping_table) and d.mapping_table[0].ByteSize() == 0),
        ("location_table", bool(d.location_table) and d.location_table[0].ByteSize() == 0),
        ("function_table", bool(d.function_table) and d.function_table[0].ByteSize() == 0),
        ("attribute_table", bool(d.attribute_table) and d.attribute_table[0].ByteSize() == 0),
        ("stack_table", bool(d.stack_table) and d.stack_table[0].ByteSize() == 0),
        ("link_table", bool(d.link_table) and not any(d.link_table[0].trace_id)
         and not any(d.link_table[0].span_id)),
    ]
    problems.extend(f"{name}[0] must be the zero value" for name, ok in tables if not ok)
    ns, nm, nl, nf = (len(strings), len(d.mapping_table), len(d.location_table),
                      len(d.function_table))
    na, nst, nlink = len(d.attribute_table), len(d.stack_table), len(d.link_table)

    def out_of_range(indices: Iterable[int], n: int) -> bool:
        return any(i >= n for i in indices)

    for i, m in enumerate(d.mapping_table):
        if m.filename_strindex >= ns:
            problems.append(f"mapping {i}: filename out of range")
        if out_of_range(m.attribute_indices, na):
            problems.append(f"mapping {i}: attribute out of range")
    for i, loc in enumerate(d.location_table):
        if loc.mapping_index >= nm:
            problems.append(f"location {i}: mapping out of range")
        if any(line.function_index >= nf for line in loc.lines):
            problems.append(f"location {i}: function out of range")
        if out_of_range(loc.attribute_indices, na):
            problems.append(f"location {i}: attribute out of range")
    for i, fn in enumerate(d.function_table):
        if out_of_range((fn.name_strindex, fn.system_name_strindex, fn.filename_strindex), ns):
            problems.append(f"function {i}: string out of range")
    for i, st in enumerate(d.stack_table):
        if out_of_range(st.location_indices, nl):
            problems.append(f"stack {i}: location out of range")
    for i, a in enumerate(d.attribute_table):
        if a.key_strindex >= ns or a.unit_strindex >= ns:
            problems.append(f"attribute {i}: string out of range")
    for rp in req.resource_profiles:
        for sp in rp.scope_profiles:
            for p in sp.profiles:
                types = (p.sample_type.type_strindex, p.sample_type.unit_strindex,
                         p.period_type.type_strindex, p.period_type.unit_strindex)
                if out_of_range(types, ns):
                    problems.append("profile: value type string out of range")
                if out_of_range(p.attribute_indices, na):
                    problems.append("profile: attribute out of range")
                for s in p.samples:
                    if s.stack_index >= nst:
                        problems.append("sample: stack out of range")
                    if s.link_index >= nlink:
                        problems.append("sample: link out of range")
                    if out_of_range(s.attribute_indices, na):
                        problems.append("sample: attribute out of range")
                    if len(s.values) != 1:
                        problems.append("sample: expected one value")
    return problems
