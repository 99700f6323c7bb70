"""OTLP profiles over HTTP: a hand-written encoder for a documented subset.

The OpenTelemetry profiles protobuf (``opentelemetry-proto``,
``opentelemetry/proto/profiles/v1development/profiles.proto`` and
``collector/profiles/v1development/profiles_service.proto``, Alpha) is not a dependency
of sframe-prof; this module writes the wire format itself from the public field
numbers, for exactly the messages and fields below, and reads it back the same way
(for tests and :func:`check_request`).  Fields not listed are never written.

``ExportProfilesServiceRequest``: resource_profiles = 1 (repeated ResourceProfiles),
dictionary = 2 (ProfilesDictionary).

``ProfilesDictionary``: mapping_table = 1, location_table = 2, function_table = 3,
link_table = 4, string_table = 5, attribute_table = 6, stack_table = 7; every table
starts with its zero value at index 0 (``""`` for strings; Link{} carries 16 and 8
zero bytes as the spec recommends).

``ResourceProfiles``: resource = 1 (Resource: attributes = 1, repeated KeyValue
{key = 1, value = 2 AnyValue}), scope_profiles = 2.
``ScopeProfiles``: scope = 1 (InstrumentationScope: name = 1, version = 2),
profiles = 2.
``Profile``: sample_type = 1 (ValueType), samples = 2, time_unix_nano = 3 (fixed64),
duration_nano = 4, period_type = 5, period = 6, attribute_indices = 11 (packed).
``ValueType``: type_strindex = 1, unit_strindex = 2.
``Sample``: stack_index = 1, attribute_indices = 2 (packed), values = 4 (packed).
``Mapping``: memory_start = 1, memory_limit = 2, file_offset = 3, filename_strindex = 4,
attribute_indices = 5 (packed; the GNU build id as ``process.executable.build_id.gnu``).
``Stack``: location_indices = 1 (packed, leaf first).
``Location``: mapping_index = 1, address = 2, lines = 3 (Line: function_index = 1).
``Function``: name_strindex = 1, system_name_strindex = 2, filename_strindex = 3.
``KeyValueAndUnit``: key_strindex = 1, value = 2 (AnyValue: string_value = 1,
int_value = 3).

What goes where: the resource carries ``service.name``, ``host.name``,
``process.pid`` (per-pid groups), ``container.id`` and the extra labels; the scope is
``sframe-prof`` with the agent's version; one Profile per group and window with
sample_type (samples, count), period_type (cpu, nanoseconds) and the period; each
sample's pprof labels become sample attributes (``thread.id``, ``thread.name``,
``process.executable.name``, ``unwind``, ``unwind_reason``, ...).  The transport is
``POST <url>/v1development/profiles`` with ``Content-Type: application/x-protobuf``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from profiler.proto import profile_pb2

OTLP_PATH = "/v1development/profiles"
CONTENT_TYPE = "application/x-protobuf"

# pprof sample label -> OTLP sample attribute (semantic conventions where they exist)
SAMPLE_ATTRIBUTE = {"tid": "thread.id", "thread": "thread.name", "pid": "process.pid",
                    "process": "process.executable.name"}
# fleet labels that describe the whole profile: resource attributes, not per sample
RESOURCE_ATTRIBUTE = {"service": "service.name", "host": "host.name", "pid": "process.pid",
                      "container_id": "container.id", "agent_version": "sframe_prof.agent_version"}

# -- wire format ---------------------------------------------------------------------

VARINT, I64, LEN, I32 = 0, 1, 2, 5


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


class Writer:
    """Appends proto3 fields; zero scalars are left out, as proto3 does."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def _tag(self, field: int, wire: int) -> None:
        self.buf += _varint(field << 3 | wire)

    def uint(self, field: int, value: int) -> Writer:
        if value:
            self._tag(field, VARINT)
            self.buf += _varint(value)
        return self

    def fixed64(self, field: int, value: int) -> Writer:
        if value:
            self._tag(field, I64)
            self.buf += struct.pack("<Q", value)
        return self

    def bytes_(self, field: int, value: bytes, always: bool = False) -> Writer:
        if value or always:
            self._tag(field, LEN)
            self.buf += _varint(len(value))
            self.buf += value
        return self

    def string(self, field: int, value: str, always: bool = False) -> Writer:
        return self.bytes_(field, value.encode("utf-8"), always)

    def message(self, field: int, msg: Writer) -> Writer:
        """An embedded message, written even when empty (index-0 zero values)."""
        return self.bytes_(field, bytes(msg.buf), always=True)

    def packed(self, field: int, values: Iterable[int]) -> Writer:
        body = b"".join(_varint(v) for v in values)
        return self.bytes_(field, body)


def read_fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(field, wire type, value) for every field; LEN values stay bytes."""
    out: list[tuple[int, int, Any]] = []
    i, n = 0, len(data)

    def varint() -> int:
        nonlocal i
        shift = result = 0
        while True:
            if i >= n:
                raise ValueError("truncated varint")
            b = data[i]
            i += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")

    while i < n:
        key = varint()
        field, wire = key >> 3, key & 7
        if field == 0:
            raise ValueError("field number 0")
        if wire == VARINT:
            out.append((field, wire, varint()))
        elif wire == I64:
            if i + 8 > n:
                raise ValueError("truncated fixed64")
            out.append((field, wire, struct.unpack_from("<Q", data, i)[0]))
            i += 8
        elif wire == LEN:
            size = varint()
            if i + size > n:
                raise ValueError("truncated length-delimited field")
            out.append((field, wire, data[i:i + size]))
            i += size
        elif wire == I32:
            if i + 4 > n:
                raise ValueError("truncated fixed32")
            out.append((field, wire, struct.unpack_from("<I", data, i)[0]))
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def unpack_varints(data: bytes) -> list[int]:
    """The values of a packed repeated varint field."""
    out: list[int] = []
    value = shift = 0
    for b in data:
        value |= (b & 0x7F) << shift
        if b & 0x80:
            shift += 7
        else:
            out.append(value)
            value = shift = 0
    if shift:
        raise ValueError("truncated packed varint")
    return out


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


# -- encoding --------------------------------------------------------------------------


class _Dictionary:
    def __init__(self) -> None:
        self.strings: dict[str, int] = {"": 0}
        self.mappings: list[Writer] = [Writer()]
        self.locations: list[Writer] = [Writer()]
        self.functions: list[Writer] = [Writer()]
        self.stacks: dict[tuple[int, ...], int] = {(): 0}
        self.attributes: dict[tuple[str, object], int] = {}
        self.attribute_msgs: list[Writer] = [Writer()]

    def string(self, s: str) -> int:
        idx = self.strings.get(s)
        if idx is None:
            idx = self.strings[s] = len(self.strings)
        return idx

    def attribute(self, key: str, value: str | int) -> int:
        k = (key, value)
        idx = self.attributes.get(k)
        if idx is None:
            any_value = Writer()
            if isinstance(value, int):
                any_value._tag(3, VARINT)
                any_value.buf += _varint(value)
            else:
                any_value.string(1, value, always=True)
            msg = Writer().uint(1, self.string(key)).message(2, any_value)
            idx = self.attributes[k] = len(self.attribute_msgs)
            self.attribute_msgs.append(msg)
        return idx

    def stack(self, locations: tuple[int, ...]) -> int:
        idx = self.stacks.get(locations)
        if idx is None:
            idx = self.stacks[locations] = len(self.stacks)
        return idx

    def write(self) -> Writer:
        d = Writer()
        for m in self.mappings:
            d.message(1, m)
        for loc in self.locations:
            d.message(2, loc)
        for f in self.functions:
            d.message(3, f)
        link0 = Writer().bytes_(1, bytes(16)).bytes_(2, bytes(8))
        d.message(4, link0)
        for s in self.strings:              # insertion order == index order
            d.string(5, s, always=True)
        for a in self.attribute_msgs:
            d.message(6, a)
        for stack in self.stacks:
            d.message(7, Writer().packed(1, stack))
        return d


def _key_value(key: str, value: str | int) -> Writer:
    any_value = Writer()
    if isinstance(value, int):
        any_value._tag(3, VARINT)
        any_value.buf += _varint(value)
    else:
        any_value.string(1, value, always=True)
    return Writer().string(1, key).message(2, any_value)


def encode_request(profile: profile_pb2.Profile, labels: dict[str, str], *,
                   scope_version: str) -> bytes:
    """An ExportProfilesServiceRequest holding one pprof Profile as OTLP."""
    strings = profile.string_table
    d = _Dictionary()
    map_index: dict[int, int] = {}
    for m in profile.mapping:
        attrs = []
        build_id = strings[m.build_id]
        if build_id:
            attrs.append(d.attribute("process.executable.build_id.gnu", build_id))
        w = (Writer().uint(1, m.memory_start).uint(2, m.memory_limit).uint(3, m.file_offset)
             .uint(4, d.string(strings[m.filename])).packed(5, attrs))
        map_index[m.id] = len(d.mappings)
        d.mappings.append(w)
    func_index: dict[int, int] = {}
    for f in profile.function:
        w = (Writer().uint(1, d.string(strings[f.name]))
             .uint(2, d.string(strings[f.system_name]))
             .uint(3, d.string(strings[f.filename])))
        func_index[f.id] = len(d.functions)
        d.functions.append(w)
    loc_index: dict[int, int] = {}
    for loc in profile.location:
        w = Writer().uint(1, map_index.get(loc.mapping_id, 0)).uint(2, loc.address)
        for line in loc.line:
            w.message(3, Writer().uint(1, func_index.get(line.function_id, 0))
                      .uint(2, line.line))
        loc_index[loc.id] = len(d.locations)
        d.locations.append(w)

    prof = Writer()
    prof.message(1, Writer().uint(1, d.string("samples")).uint(2, d.string("count")))
    for s in profile.sample:
        attrs = []
        for lab in s.label:
            key = strings[lab.key]
            if key in labels:
                continue  # on the resource already (pid too, for per-pid groups)
            name = SAMPLE_ATTRIBUTE.get(key, key)
            attrs.append(d.attribute(name, strings[lab.str] if lab.str else lab.num))
        stack = d.stack(tuple(loc_index[i] for i in s.location_id))
        w = Writer().uint(1, stack).packed(2, attrs).packed(4, [s.value[0]] if s.value else [])
        prof.message(2, w)
    prof.fixed64(3, profile.time_nanos).uint(4, profile.duration_nanos)
    prof.message(5, Writer().uint(1, d.string("cpu")).uint(2, d.string("nanoseconds")))
    prof.uint(6, profile.period)

    resource = Writer()
    for key, value in labels.items():
        name = RESOURCE_ATTRIBUTE.get(key, key)
        resource.message(1, _key_value(name, int(value) if key == "pid" else value))
    scope = Writer().string(1, "sframe-prof").string(2, scope_version)
    scope_profiles = Writer().message(1, scope).message(2, prof)
    resource_profiles = Writer().message(1, resource).message(2, scope_profiles)
    request = Writer().message(1, resource_profiles).message(2, d.write())
    return bytes(request.buf)


# -- decoding (tests, checks) -----------------------------------------------------------


def _any_value(data: bytes) -> object:
    for f, w, v in read_fields(data):
        if f == 1 and w == LEN:
            return bytes(v).decode("utf-8")
        if f == 3 and w == VARINT:
            return _signed(v)
        if f == 2 and w == VARINT:
            return bool(v)
    return None


def _packed(v: Any, w: int) -> list[int]:
    return unpack_varints(v) if w == LEN else [v]


def decode_request(data: bytes) -> dict[str, Any]:
    """The subset above as plain Python data: {"resource_profiles": [...], "dictionary": {...}}."""
    out: dict[str, Any] = {"resource_profiles": [], "dictionary": {}}
    for f, _w, v in read_fields(data):
        if f == 1:
            out["resource_profiles"].append(_resource_profiles(v))
        elif f == 2:
            out["dictionary"] = _dictionary(v)
    return out


def _resource_profiles(data: bytes) -> dict[str, Any]:
    rp: dict[str, Any] = {"resource": {}, "scope_profiles": []}
    for f, _w, v in read_fields(data):
        if f == 1:
            for f2, _w2, v2 in read_fields(v):
                if f2 == 1:
                    key, value = "", None
                    for f3, _w3, v3 in read_fields(v2):
                        if f3 == 1:
                            key = bytes(v3).decode()
                        elif f3 == 2:
                            value = _any_value(v3)
                    rp["resource"][key] = value
        elif f == 2:
            sp: dict[str, Any] = {"scope": {}, "profiles": []}
            for f2, _w2, v2 in read_fields(v):
                if f2 == 1:
                    for f3, _w3, v3 in read_fields(v2):
                        if f3 in (1, 2):
                            sp["scope"]["name" if f3 == 1 else "version"] = bytes(v3).decode()
                elif f2 == 2:
                    sp["profiles"].append(_profile(v2))
            rp["scope_profiles"].append(sp)
    return rp


def _value_type(data: bytes) -> tuple[int, int]:
    t = u = 0
    for f, _w, v in read_fields(data):
        if f == 1:
            t = v
        elif f == 2:
            u = v
    return t, u


def _profile(data: bytes) -> dict[str, Any]:
    p: dict[str, Any] = {"samples": [], "sample_type": (0, 0), "period_type": (0, 0),
                         "period": 0, "time_unix_nano": 0, "duration_nano": 0}
    for f, w, v in read_fields(data):
        if f == 1:
            p["sample_type"] = _value_type(v)
        elif f == 2:
            s: dict[str, Any] = {"stack_index": 0, "attribute_indices": [], "values": []}
            for f2, w2, v2 in read_fields(v):
                if f2 == 1:
                    s["stack_index"] = v2
                elif f2 == 2:
                    s["attribute_indices"] += _packed(v2, w2)
                elif f2 == 4:
                    s["values"] += [_signed(x) for x in _packed(v2, w2)]
            p["samples"].append(s)
        elif f == 3:
            p["time_unix_nano"] = v
        elif f == 4:
            p["duration_nano"] = v
        elif f == 5:
            p["period_type"] = _value_type(v)
        elif f == 6:
            p["period"] = _signed(v)
        elif f == 11:
            p.setdefault("attribute_indices", []).extend(_packed(v, w))
    return p


def _dictionary(data: bytes) -> dict[str, list[Any]]:
    d: dict[str, list[Any]] = {k: [] for k in ("mapping_table", "location_table",
                                               "function_table", "link_table",
                                               "string_table", "attribute_table",
                                               "stack_table")}
    for f, _w, v in read_fields(data):
        if f == 1:
            m: dict[str, Any] = {"memory_start": 0, "memory_limit": 0, "file_offset": 0,
                                 "filename_strindex": 0, "attribute_indices": []}
            for f2, w2, v2 in read_fields(v):
                if f2 == 5:
                    m["attribute_indices"] += _packed(v2, w2)
                else:
                    m[("memory_start", "memory_limit", "file_offset",
                       "filename_strindex")[f2 - 1]] = v2
            d["mapping_table"].append(m)
        elif f == 2:
            loc: dict[str, Any] = {"mapping_index": 0, "address": 0, "lines": []}
            for f2, _w2, v2 in read_fields(v):
                if f2 == 1:
                    loc["mapping_index"] = v2
                elif f2 == 2:
                    loc["address"] = v2
                elif f2 == 3:
                    fn = 0
                    for f3, _w3, v3 in read_fields(v2):
                        if f3 == 1:
                            fn = v3
                    loc["lines"].append(fn)
            d["location_table"].append(loc)
        elif f == 3:
            fn_: dict[str, int] = {"name_strindex": 0, "system_name_strindex": 0,
                                   "filename_strindex": 0}
            for f2, _w2, v2 in read_fields(v):
                if 1 <= f2 <= 3:
                    fn_[("name_strindex", "system_name_strindex", "filename_strindex")[f2 - 1]] = v2
            d["function_table"].append(fn_)
        elif f == 4:
            d["link_table"].append({f2: bytes(v2) for f2, _w2, v2 in read_fields(v)})
        elif f == 5:
            d["string_table"].append(bytes(v).decode("utf-8"))
        elif f == 6:
            a: dict[str, Any] = {"key_strindex": 0, "value": None}
            for f2, _w2, v2 in read_fields(v):
                if f2 == 1:
                    a["key_strindex"] = v2
                elif f2 == 2:
                    a["value"] = _any_value(v2)
            d["attribute_table"].append(a)
        elif f == 7:
            locs: list[int] = []
            for f2, w2, v2 in read_fields(v):
                if f2 == 1:
                    locs += _packed(v2, w2)
            d["stack_table"].append(locs)
    return d


def check_request(req: dict[str, Any]) -> list[str]:
    """Broken rules of the spec (index-0 zero values, indices in range), as lines."""
    problems: list[str] = []
    d = req["dictionary"]
    strings = d["string_table"]
    if not strings or strings[0] != "":
        problems.append('string_table[0] must be ""')
    zero_checks: dict[str, Callable[[Any], bool]] = {
        "mapping_table": lambda m: not any(m[k] for k in m),
        "location_table": lambda loc: not loc["mapping_index"] and not loc["address"]
        and not loc["lines"],
        "function_table": lambda f: not any(f.values()),
        "attribute_table": lambda a: not a["key_strindex"] and a["value"] is None,
        "stack_table": lambda s: not s,
        "link_table": lambda link: not any(any(b) for b in link.values()),
    }
    for table, is_zero in zero_checks.items():
        if not d[table] or not is_zero(d[table][0]):
            problems.append(f"{table}[0] must be the zero value")
    ns, nm, nl, nf, na, nst = (len(strings), len(d["mapping_table"]), len(d["location_table"]),
                               len(d["function_table"]), len(d["attribute_table"]),
                               len(d["stack_table"]))
    for i, m in enumerate(d["mapping_table"]):
        if m["filename_strindex"] >= ns:
            problems.append(f"mapping {i}: filename out of range")
        if any(a >= na for a in m["attribute_indices"]):
            problems.append(f"mapping {i}: attribute out of range")
    for i, loc in enumerate(d["location_table"]):
        if loc["mapping_index"] >= nm:
            problems.append(f"location {i}: mapping out of range")
        if any(fn >= nf for fn in loc["lines"]):
            problems.append(f"location {i}: function out of range")
    for i, fn in enumerate(d["function_table"]):
        if any(v >= ns for v in fn.values()):
            problems.append(f"function {i}: string out of range")
    for i, st in enumerate(d["stack_table"]):
        if any(x >= nl for x in st):
            problems.append(f"stack {i}: location out of range")
    for i, a in enumerate(d["attribute_table"]):
        if a["key_strindex"] >= ns:
            problems.append(f"attribute {i}: key out of range")
    for rp in req["resource_profiles"]:
        for sp in rp["scope_profiles"]:
            for p in sp["profiles"]:
                if any(x >= ns for x in (*p["sample_type"], *p["period_type"])):
                    problems.append("profile: value type string out of range")
                for s in p["samples"]:
                    if s["stack_index"] >= nst:
                        problems.append("sample: stack out of range")
                    if any(a >= na for a in s["attribute_indices"]):
                        problems.append("sample: attribute out of range")
                    if len(s["values"]) != 1:
                        problems.append("sample: expected one value")
    return problems
