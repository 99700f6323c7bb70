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
* Unknown fields (varint, 64-bit, length-delimited, 32-bit) are skipped, and so are
  known fields with a wire type they cannot have, which protobuf keeps as unknown.
  Groups (wire types 3 and 4, from proto2) are refused, though protobuf skips them:
  nothing writes them into a capture.

Anything that does not decode raises :class:`WireError` with a one-line reason.
Lengths and tags are held to upb's limits (at most 5 bytes and 32 bits); other varints
to 10 bytes.  tests/unit/test_capture_wire.py checks the tables here against
proto/capture.proto, and the results against capture_pb2's: the same fields, or both
refuse the bytes.
"""

from __future__ import annotations

import re
from typing import Any

VARINT, I64, LEN, SGROUP, EGROUP, I32 = range(6)   # wire types
_MASK64 = (1 << 64) - 1
_MASK32 = (1 << 32) - 1

Fields = dict[str, Any]


class WireError(Exception):
    """Bytes that are not a message of the expected type; the message is one line."""


class Field:
    """One field of a message: its name and type as in the .proto."""

    __slots__ = ("name", "type", "repeated", "optional", "oneof", "mask")

    def __init__(self, name: str, type: str | Message, *, repeated: bool = False,
                 optional: bool = False, oneof: str = "") -> None:
        self.name = name
        self.type = type            # "uint32", "uint64", "string", "bytes", or a message
        self.repeated = repeated
        self.optional = optional    # proto3 `optional`: None when absent
        self.oneof = oneof          # name of the oneof holding the field, if any
        self.mask = _MASK32 if type == "uint32" else _MASK64    # for numbers

    def tags(self, number: int) -> tuple[int, ...]:
        """The tags (number and wire type) the field is read from; any other tag with
        its number is an unknown field."""
        if self.type in ("uint32", "uint64"):
            return (number << 3 | VARINT, number << 3 | LEN) if self.repeated else (
                number << 3 | VARINT,)
        return (number << 3 | LEN,)


class Message:
    """A message type: its fields by number.  (Plain classes, not dataclasses: this
    module is imported at every start of `report`.)"""

    __slots__ = ("name", "fields", "map_entry", "by_tag", "oneofs", "_scalars", "_lists",
                 "_maps")

    def __init__(self, name: str, fields: dict[int, Field], *, map_entry: bool = False
                 ) -> None:
        self.name = name
        self.fields = fields
        self.map_entry = map_entry  # the entry of a map<K, V>: key = 1, value = 2
        self.by_tag = {tag: f for number, f in fields.items() for tag in f.tags(number)}
        oneofs: list[str] = []
        self._scalars: Fields = {}  # the defaults of the fields that are not containers
        lists: list[str] = []
        maps: list[str] = []
        for f in fields.values():
            if isinstance(f.type, Message) and f.type.map_entry:
                maps.append(f.name)
            elif f.repeated:
                lists.append(f.name)
            elif f.optional or f.oneof or isinstance(f.type, Message):
                self._scalars[f.name] = None
            elif f.type == "string":
                self._scalars[f.name] = ""
            elif f.type == "bytes":
                self._scalars[f.name] = (0, 0)
            else:
                self._scalars[f.name] = 0
            if f.oneof and f.oneof not in oneofs:
                oneofs.append(f.oneof)
                self._scalars[f.oneof] = None
        self.oneofs = tuple(oneofs)
        self._lists = tuple(lists)
        self._maps = tuple(maps)

    def empty(self) -> Fields:
        """The fields of a message with nothing set."""
        out = self._scalars.copy()
        for name in self._lists:
            out[name] = []
        for name in self._maps:
            out[name] = {}
        return out


def decode(msg: Message, buf: bytes, start: int = 0, end: int | None = None) -> Fields:
    """The fields of the `msg` message encoded in buf[start:end]."""
    out = msg.empty()
    _parse_into(msg, buf, start, len(buf) if end is None else end, out)
    return out


def read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value cut to 64 bits, position after it) of the varint at buf[pos:end]."""
    value = shift = 0
    at = pos
    while pos < end:
        b = buf[pos]
        pos += 1
        if b < 0x80:
            return (value | b << shift) & _MASK64, pos
        value |= (b & 0x7F) << shift
        shift += 7
        if shift == 70:
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
    by_tag = msg.by_tag
    unknown = False
    while pos < end:
        at = pos
        tag = buf[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = _read_short(buf, pos, end, "tag")
        if tag < 8:
            raise WireError(f"field number 0 at byte {at}")
        f = by_tag.get(tag)
        wtype = tag & 7
        if wtype == VARINT:
            if pos < end and buf[pos] < 0x80:
                value = buf[pos]
                pos += 1
            else:
                value, pos = read_varint(buf, pos, end)
            if f is None:
                unknown = True
            elif f.repeated:
                out[f.name].append(value & f.mask)
            else:
                out[f.name] = value & f.mask
        elif wtype == LEN:
            if pos < end and buf[pos] < 0x80:
                size = buf[pos]
                pos += 1
            else:
                size, pos = _read_short(buf, pos, end, "length")
            start, pos = pos, pos + size
            if pos > end:
                raise WireError(f"field {tag >> 3} at byte {at}: {size} bytes run past the "
                                f"end")
            if f is None:
                unknown = True
                continue
            ftype = f.type
            if ftype == "string":
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
            elif isinstance(ftype, Message):
                _message_field(f, ftype, buf, start, pos, out)
            else:               # packed numbers
                _packed(buf, start, pos, out[f.name], f.mask)
        elif wtype == I64 or wtype == I32:
            pos += 8 if wtype == I64 else 4
            if pos > end:
                raise WireError(f"field {tag >> 3} at byte {at}: fixed-size value runs past "
                                f"the end")
            unknown = True      # no fixed-size fields in the schema
        elif wtype == SGROUP or wtype == EGROUP:
            raise WireError(f"field {tag >> 3} at byte {at} is a group (wire type {wtype})")
        else:
            raise WireError(f"field {tag >> 3} at byte {at} has wire type {wtype}")
    return unknown


def _message_field(f: Field, sub: Message, buf: bytes, start: int, end: int,
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


_varint_re: re.Pattern[bytes] | None = None
_LOW7 = bytes(b & 0x7F for b in range(256))


def _packed(buf: bytes, pos: int, end: int, values: list[int], mask: int) -> None:
    """Append the varints of buf[pos:end] to `values`.  Kernel pcs take 10 bytes each,
    so the varints are found by a regular expression and put together with whole-int
    operations rather than a Python loop over their bytes."""
    global _varint_re
    if _varint_re is None:
        _varint_re = re.compile(rb"[\x80-\xff]{0,9}[\x00-\x7f]")   # one varint, <= 10 bytes
    found = _varint_re.findall(buf, pos, end)
    if sum(map(len, found)) != end - pos:   # a varint too long or cut short: say which
        while pos < end:
            _value, pos = read_varint(buf, pos, end)
    append = values.append
    from_bytes = int.from_bytes
    for v in found:
        n = len(v)
        if n == 1:
            append(v[0])
            continue
        if n == 2:
            append(v[0] & 0x7F | v[1] << 7)
            continue
        # 7 bits in each byte of x, little-endian: close the gaps pairwise, in 16-, 32-,
        # 64- and 128-bit lanes, until the 70 bits are contiguous.
        x = from_bytes(v.translate(_LOW7), "little")
        x = x & 0x00FF00FF00FF00FF00FF | (x & 0xFF00FF00FF00FF00FF00) >> 1
        x = x & 0x0000FFFF0000FFFF0000FFFF | (x & 0xFFFF0000FFFF0000FFFF0000) >> 2
        x = x & 0x00000000FFFFFFFF00000000FFFFFFFF | (x & 0xFFFFFFFF00000000FFFFFFFF00000000) >> 4
        append((x & _MASK64 | x >> 64 << 56) & mask)


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
