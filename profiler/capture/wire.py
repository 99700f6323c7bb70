"""The protobuf wire format, decoded by hand for the records of proto/capture.proto.

`sframe-prof report` reads a capture without importing google.protobuf, whose import
alone costs about a third of the command's start-up.  :func:`decode` turns the bytes
of one message into a dict of its fields, the way protobuf's own parser (upb) reads
them::

    rec = decode(RECORD, body)          # {"kind": "maps", "maps": {...}, "header": None, ...}
    rec["maps"]["mappings"][0]["path"]  # "/usr/lib/libc.so.6"

* Absent fields have their proto3 defaults (0, ""); an absent message field and an
  absent ``optional`` scalar are None (protobuf's HasField false).
* A scalar field seen twice keeps the last value; a message field seen twice is
  merged; repeated numeric fields are accepted packed and unpacked, even mixed.
* A oneof is one more key, named after it, holding the name of the member set last
  (None if none); the other members are None.
* ``uint32`` values are cut to 32 bits, varints to 64, as protobuf does.
* ``bytes`` fields come back as a ``(start, end)`` span of the input, not a copy, so a
  caller can keep a large payload in place.
* ``string`` fields must be valid UTF-8.
* A ``map<K, V>`` field is a dict; an entry carrying unknown fields is left out of
  it, as upb leaves it out.
* Unknown fields, and known ones with an unexpected wire type, are skipped.  So are
  varint, 64-bit, length-delimited and 32-bit fields; groups (wire types 3 and 4,
  from proto2) are rejected.

Anything that does not decode raises :class:`WireError` with a one-line reason.
Lengths and tags are held to upb's limits (at most 5 bytes and 32 bits); other varints
to 10 bytes.  tests/unit/test_capture_wire.py checks the tables here against
proto/capture.proto and the results against capture_pb2.
"""

from __future__ import annotations

from typing import Any

VARINT, I64, LEN, SGROUP, EGROUP, I32 = range(6)   # wire types
_MASK64 = (1 << 64) - 1
_MASK32 = (1 << 32) - 1

Fields = dict[str, Any]


class WireError(Exception):
    """Bytes that are not a message of the expected type; the message is one line."""


class Field:
    """One field of a message: its name and type as in the .proto."""

    __slots__ = ("name", "type", "repeated", "optional", "oneof")

    def __init__(self, name: str, type: str | Message, *, repeated: bool = False,
                 optional: bool = False, oneof: str = "") -> None:
        self.name = name
        self.type = type            # "uint32", "uint64", "string", "bytes", or a message
        self.repeated = repeated
        self.optional = optional    # proto3 `optional`: None when absent
        self.oneof = oneof          # name of the oneof holding the field, if any


class Message:
    """A message type: its fields by number.  (Plain classes, not dataclasses: this
    module is imported at every start of `report`.)"""

    __slots__ = ("name", "fields", "map_entry", "oneofs", "_defaults")

    def __init__(self, name: str, fields: dict[int, Field], *, map_entry: bool = False
                 ) -> None:
        self.name = name
        self.fields = fields
        self.map_entry = map_entry  # the entry of a map<K, V>: key = 1, value = 2
        # (name, default) of each field and oneof; a list or dict default stands for
        # a new empty one
        defaults: list[tuple[str, object]] = []
        oneofs: list[str] = []
        for f in fields.values():
            if isinstance(f.type, Message) and f.type.map_entry:
                default: object = {}
            elif f.repeated:
                default = []
            elif f.optional or f.oneof or isinstance(f.type, Message):
                default = None
            elif f.type == "string":
                default = ""
            elif f.type == "bytes":
                default = (0, 0)
            else:
                default = 0
            defaults.append((f.name, default))
            if f.oneof and f.oneof not in oneofs:
                oneofs.append(f.oneof)
                defaults.append((f.oneof, None))
        self.oneofs = tuple(oneofs)
        self._defaults = tuple(defaults)

    def empty(self) -> Fields:
        """The fields of a message with nothing set."""
        return {name: (type(d)() if isinstance(d, (list, dict)) else d)
                for name, d in self._defaults}


def decode(msg: Message, buf: bytes, start: int = 0, end: int | None = None) -> Fields:
    """The fields of the `msg` message encoded in buf[start:end]."""
    out = msg.empty()
    _parse_into(msg, buf, start, len(buf) if end is None else end, out)
    return out


def read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value cut to 64 bits, position after it) of the varint at buf[pos:end]."""
    value = shift = 0
    at = pos
    limit = min(end, pos + 10)
    while pos < limit:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value & _MASK64, pos
        shift += 7
    if pos - at == 10:
        raise WireError(f"varint at byte {at} is longer than 10 bytes")
    raise WireError(f"varint at byte {at} runs past the end")


def _read_short(buf: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """A tag or a length: a varint of at most 5 bytes and 32 bits, as upb takes them."""
    value = shift = 0
    at = pos
    limit = min(end, pos + 5)
    while pos < limit:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            if value > _MASK32:
                raise WireError(f"{what} at byte {at} is larger than 32 bits")
            return value, pos
        shift += 7
    if pos - at == 5:
        raise WireError(f"{what} at byte {at} is longer than 5 bytes")
    raise WireError(f"{what} at byte {at} runs past the end")


def _parse_into(msg: Message, buf: bytes, pos: int, end: int, out: Fields) -> bool:
    """Decode buf[pos:end] into `out` (fields of `msg`, merged as protobuf merges);
    True if it held unknown fields."""
    fields = msg.fields
    unknown = False
    while pos < end:
        at = pos
        tag = buf[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = _read_short(buf, pos, end, "tag")
        number, wtype = tag >> 3, tag & 7
        if number == 0:
            raise WireError(f"field number 0 at byte {at}")
        f = fields.get(number)
        ftype = f.type if f is not None else None
        if wtype == VARINT:
            if pos < end and buf[pos] < 0x80:
                value = buf[pos]
                pos += 1
            else:
                value, pos = read_varint(buf, pos, end)
            if f is None or ftype not in ("uint32", "uint64"):
                unknown = True
            elif f.repeated:
                out[f.name].append(value & _MASK32 if ftype == "uint32" else value)
            else:
                out[f.name] = value & _MASK32 if ftype == "uint32" else value
        elif wtype == LEN:
            size, pos = _read_short(buf, pos, end, "length")
            start, pos = pos, pos + size
            if pos > end:
                raise WireError(f"field {number} at byte {at}: {size} bytes run past the end")
            if f is None:
                unknown = True
            elif isinstance(ftype, Message):
                _message_field(msg, f, ftype, buf, start, pos, out)
            elif ftype == "string":
                try:
                    text = buf[start:pos].decode("utf-8")
                except UnicodeDecodeError:
                    raise WireError(f"{msg.name}.{f.name} at byte {at} is not valid UTF-8"
                                    ) from None
                if f.repeated:
                    out[f.name].append(text)
                else:
                    out[f.name] = text
            elif ftype == "bytes":
                if f.repeated:
                    out[f.name].append((start, pos))
                else:
                    out[f.name] = (start, pos)
            elif f.repeated:    # packed varints
                _packed(buf, start, pos, out[f.name], ftype == "uint32")
            else:
                unknown = True
        elif wtype == I64 or wtype == I32:
            pos += 8 if wtype == I64 else 4
            if pos > end:
                raise WireError(f"field {number} at byte {at}: fixed-size value runs past "
                                f"the end")
            unknown = True      # no fixed-size fields in the schema
        elif wtype in (SGROUP, EGROUP):
            raise WireError(f"field {number} at byte {at} is a group (wire type {wtype})")
        else:
            raise WireError(f"field {number} at byte {at} has wire type {wtype}")
    return unknown


def _message_field(msg: Message, f: Field, sub: Message, buf: bytes, start: int, end: int,
                   out: Fields) -> None:
    if f.repeated:
        entry = sub.empty()
        unknown = _parse_into(sub, buf, start, end, entry)
        if not sub.map_entry:
            out[f.name].append(entry)
        elif not unknown:
            out[f.name][entry["key"]] = entry["value"]
        return
    if f.oneof and out[f.oneof] != f.name:
        if out[f.oneof] is not None:
            out[out[f.oneof]] = None        # another member was set: it is cleared
        out[f.oneof] = f.name
    value = out[f.name]
    if value is None:
        value = out[f.name] = sub.empty()
    _parse_into(sub, buf, start, end, value)    # merged into what was there


def _packed(buf: bytes, pos: int, end: int, values: list[int], u32: bool) -> None:
    mask = _MASK32 if u32 else _MASK64
    append = values.append
    while pos < end:
        b = buf[pos]
        if b < 0x80:
            append(b)
            pos += 1
        else:
            value, pos = read_varint(buf, pos, end)
            append(value & mask)


# -- proto/capture.proto ----------------------------------------------------------------

_U32, _U64, _STR, _BYTES = "uint32", "uint64", "string", "bytes"

HEADER = Message("Header", {
    1: Field("version", _U32),
    2: Field("arch", _STR),
    3: Field("hostname", _STR),
    4: Field("kernel_release", _STR),
    5: Field("start_time_ns", _U64),
    6: Field("frequency_hz", _U64),
    7: Field("period_ns", _U64),
    8: Field("pac_mask", _U64, optional=True),
    9: Field("pids", _U32, repeated=True),
    10: Field("command", _STR, repeated=True),
    11: Field("stack_bytes", _U32),
})
FILE_IDENTITY = Message("FileIdentity", {
    1: Field("build_id", _STR),
    2: Field("dev", _U64),
    3: Field("inode", _U64),
    4: Field("size", _U64),
})
MAP_ENTRY = Message("MapEntry", {
    1: Field("start", _U64),
    2: Field("end", _U64),
    3: Field("offset", _U64),
    4: Field("perms", _STR),
    5: Field("path", _STR),
    6: Field("identity", FILE_IDENTITY),
})
MAPS_SNAPSHOT = Message("MapsSnapshot", {
    1: Field("pid", _U32),
    2: Field("time_ns", _U64),
    3: Field("mappings", MAP_ENTRY, repeated=True),
})
_REGS_ENTRY = Message("Sample.RegsEntry", {
    1: Field("key", _STR),
    2: Field("value", _U64),
}, map_entry=True)
SAMPLE = Message("Sample", {
    1: Field("pid", _U32),
    2: Field("tid", _U32),
    3: Field("cpu", _U32),
    4: Field("time_ns", _U64),
    5: Field("comm", _STR),
    6: Field("regs", _REGS_ENTRY, repeated=True),
    7: Field("stack_base", _U64),
    8: Field("stack", _BYTES),
    9: Field("kernel_stack", _U64, repeated=True),
})
SAMPLE_BATCH = Message("SampleBatch", {
    1: Field("count", _U32),
    2: Field("packed", _BYTES),
})
KERNEL_SYMBOLS = Message("KernelSymbols", {
    1: Field("pcs", _U64, repeated=True),
    2: Field("names", _STR, repeated=True),
    3: Field("offsets", _U64, repeated=True),
})
MEMORY_BLOB = Message("MemoryBlob", {
    1: Field("pid", _U32),
    2: Field("start", _U64),
    3: Field("data", _BYTES),
    4: Field("name", _STR),
})
FILE_BLOB = Message("FileBlob", {
    1: Field("path", _STR),
    2: Field("identity", FILE_IDENTITY),
    3: Field("data", _BYTES),
})
TRAILER = Message("Trailer", {
    1: Field("lost_samples", _U64),
    2: Field("samples", _U64),
    3: Field("end_time_ns", _U64),
})
RECORD = Message("Record", {
    1: Field("header", HEADER, oneof="kind"),
    2: Field("maps", MAPS_SNAPSHOT, oneof="kind"),
    3: Field("sample", SAMPLE, oneof="kind"),
    4: Field("memory", MEMORY_BLOB, oneof="kind"),
    5: Field("file", FILE_BLOB, oneof="kind"),
    6: Field("trailer", TRAILER, oneof="kind"),
    7: Field("samples", SAMPLE_BATCH, oneof="kind"),
    8: Field("kernel_symbols", KERNEL_SYMBOLS, oneof="kind"),
})
# Every message of proto/capture.proto, by name (map entries are not messages there).
MESSAGES = {m.name: m for m in (RECORD, HEADER, FILE_IDENTITY, MAP_ENTRY, MAPS_SNAPSHOT,
                                SAMPLE, SAMPLE_BATCH, KERNEL_SYMBOLS, MEMORY_BLOB,
                                FILE_BLOB, TRAILER)}
