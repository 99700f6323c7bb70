"""profiler.capture.wire against protobuf itself: every message of proto/capture.proto,
decoded by hand, must give what capture_pb2 parses, or fail where it fails."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as PbMessage

from profiler import proto
from profiler.capture import wire
from profiler.capture.wire import EGROUP, I32, I64, LEN, SGROUP, VARINT, WireError
from profiler.proto import capture_pb2

PB = {name: getattr(capture_pb2, name) for name in wire.MESSAGES}


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out) + bytes([n])


def long_varint(n: int, size: int) -> bytes:
    """`n` as a varint of exactly `size` bytes (padded with continuation bytes)."""
    out = bytearray()
    for _ in range(size - 1):
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out) + bytes([n])


def tag(number: int, wtype: int) -> bytes:
    return varint(number << 3 | wtype)


def vf(number: int, value: int) -> bytes:
    return tag(number, VARINT) + varint(value)


def ld(number: int, body: bytes) -> bytes:
    return tag(number, LEN) + varint(len(body)) + body


def pb_fields(pb: PbMessage, msg: wire.Message) -> dict[str, Any]:
    """A parsed protobuf message in the shape wire.decode gives (bytes as bytes)."""
    out: dict[str, Any] = {}
    for f in msg.fields.values():
        value = getattr(pb, f.name)
        if isinstance(f.type, wire.Message):
            if f.type.map_entry:
                out[f.name] = dict(value)
            elif f.repeated:
                out[f.name] = [pb_fields(v, f.type) for v in value]
            else:
                out[f.name] = pb_fields(value, f.type) if pb.HasField(f.name) else None
        elif f.repeated:
            out[f.name] = list(value)
        elif f.optional:
            out[f.name] = value if pb.HasField(f.name) else None
        else:
            out[f.name] = value
    for name in msg.oneofs:
        out[name] = pb.WhichOneof(name)
    return out


def with_bytes(fields: dict[str, Any], msg: wire.Message, buf: bytes) -> dict[str, Any]:
    """wire.decode's result with its (start, end) spans replaced by the bytes."""
    out = dict(fields)
    for f in msg.fields.values():
        value = out[f.name]
        if value is None:
            continue
        if isinstance(f.type, wire.Message) and not f.type.map_entry:
            sub = f.type
            out[f.name] = ([with_bytes(v, sub, buf) for v in value] if f.repeated
                           else with_bytes(value, sub, buf))
        elif f.type == "bytes":
            out[f.name] = ([buf[s:e] for s, e in value] if f.repeated
                           else buf[value[0]:value[1]])
    return out


def check_same(msg: wire.Message, data: bytes, groups: bool = False) -> dict[str, Any] | None:
    """Decode `data` both ways: both fail, or both give the same fields (returned).
    With `groups`, the decoder may also refuse a group that protobuf skips."""
    try:
        want: dict[str, Any] | None = pb_fields(PB[msg.name].FromString(data), msg)
    except DecodeError:
        want = None
    try:
        got = with_bytes(wire.decode(msg, data), msg, data)
    except WireError as e:
        text = str(e)
        assert text and "\n" not in text
        assert want is None or (groups and "is a group" in text), (data, text, want)
        return None
    assert got == want, data
    return got


def full(name: str) -> PbMessage:
    """A message of type `name` with every field set (to values that are not defaults)."""
    ident = capture_pb2.FileIdentity(build_id="3f0b6c4e", dev=0x803, inode=1234567,
                                     size=20480)
    entry = capture_pb2.MapEntry(start=0x55D0C2A01000, end=0x55D0C2A05000, offset=0x1000,
                                 perms="r-xp", path="/usr/bin/ä p", identity=ident)
    sample = capture_pb2.Sample(pid=4100, tid=4103, cpu=3, time_ns=2**63 + 5, comm="héllo",
                                stack_base=0x7FFD5B01F000, stack=bytes(range(256)) * 3,
                                kernel_stack=[0xFFFFFFFF8142A1B0, 0xFFFFFFFF81C0F2E4, 1])
    sample.regs["pc"] = 0x55D0C2A03300
    sample.regs["sp"] = 0x7FFD5B01F000
    sample.regs["r12"] = 2**64 - 1
    messages: dict[str, PbMessage] = {
        "Header": capture_pb2.Header(
            version=2, arch="aarch64", hostname="build-7", kernel_release="6.12.38",
            start_time_ns=1_752_000_000_000_000_000, frequency_hz=99, period_ns=10_101_010,
            pac_mask=0xFF7F000000000000, pids=[4100, 733, 2**32 - 1],
            command=["sframe-prof", "record", "", "-p"], stack_bytes=16384),
        "FileIdentity": ident,
        "MapEntry": entry,
        "MapsSnapshot": capture_pb2.MapsSnapshot(
            pid=4100, time_ns=77, mappings=[entry, capture_pb2.MapEntry(start=1, end=2),
                                            entry]),
        "Sample": sample,
        "SampleBatch": capture_pb2.SampleBatch(count=2, packed=b"\x01\x02" * 70),
        "KernelSymbols": capture_pb2.KernelSymbols(
            pcs=[0xFFFFFFFF8142A1B0, 0, 5], names=["do_syscall_64", "", "x"],
            offsets=[0x30, 0, 2**64 - 1]),
        "MemoryBlob": capture_pb2.MemoryBlob(pid=1, start=0x7FFD5B3F2000,
                                             data=bytes(range(256)) * 8, name="[vdso]"),
        "FileBlob": capture_pb2.FileBlob(path="/opt/lib/libblob.so", identity=ident,
                                         data=b"\x7fELF" + bytes(100)),
        "Trailer": capture_pb2.Trailer(lost_samples=3, samples=7, end_time_ns=2**64 - 1),
    }
    if name == "Record":
        return capture_pb2.Record(maps=messages["MapsSnapshot"])
    return messages[name]


RECORDS = {kind: capture_pb2.Record(**{kind: full(name)})
           for kind, name in (("header", "Header"), ("maps", "MapsSnapshot"),
                              ("sample", "Sample"), ("memory", "MemoryBlob"),
                              ("file", "FileBlob"), ("trailer", "Trailer"),
                              ("samples", "SampleBatch"),
                              ("kernel_symbols", "KernelSymbols"))}


def field_parts(pb: PbMessage, msg: wire.Message) -> list[bytes]:
    """The encoding of `pb`, one piece per field set (each piece a valid message)."""
    parts = []
    for f in msg.fields.values():
        one = type(pb)()
        one.MergeFrom(pb)
        for other in msg.fields.values():
            if other is not f:
                one.ClearField(other.name)
        data = one.SerializeToString(deterministic=True)
        if data:
            parts.append(data)
    assert b"".join(parts) == pb.SerializeToString(deterministic=True)
    return parts


# -- the schema ------------------------------------------------------------------------


def test_tables_match_capture_proto(repo_root: Path) -> None:
    source = proto.source_schema((repo_root / "proto/capture.proto").read_text())
    mine: proto.Schema = {}
    for msg in wire.MESSAGES.values():
        fields = {}
        for number, f in msg.fields.items():
            ftype = f.type.name if isinstance(f.type, wire.Message) else f.type
            label = "repeated" if f.repeated else "optional" if f.optional else ""
            if isinstance(f.type, wire.Message) and f.type.map_entry:
                key, value = f.type.fields[1].type, f.type.fields[2].type
                ftype, label = f"map<{key},{value}>", ""
            fields[f.name] = proto.FieldSchema(number, label, str(ftype), f.oneof)
        mine[f"sframeprof.capture.{msg.name}"] = fields
    assert proto.schema_differences(source, mine) == []


# -- well-formed messages --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(wire.MESSAGES))
def test_empty_message_has_the_defaults(name: str) -> None:
    msg = wire.MESSAGES[name]
    got = check_same(msg, b"")
    assert got is not None
    assert all(v in (0, "", b"", None, [], {}) for v in got.values())


def test_defaults_and_presence() -> None:
    h = wire.decode(wire.HEADER, b"")
    assert (h["version"], h["arch"], h["pac_mask"], h["pids"], h["command"]) == (
        0, "", None, [], [])
    assert wire.decode(wire.HEADER, vf(8, 0))["pac_mask"] == 0     # set to 0: present
    rec = wire.decode(wire.RECORD, ld(2, b""))
    assert rec["kind"] == "maps" and rec["maps"]["mappings"] == [] and rec["header"] is None
    entry = wire.decode(wire.MAP_ENTRY, vf(1, 5))
    assert entry["identity"] is None
    assert wire.decode(wire.MAP_ENTRY, ld(6, b""))["identity"] == {
        "build_id": "", "dev": 0, "inode": 0, "size": 0}


@pytest.mark.parametrize("name", sorted(wire.MESSAGES))
def test_full_messages(name: str) -> None:
    msg = wire.MESSAGES[name]
    pb = full(name)
    got = check_same(msg, pb.SerializeToString())
    assert got == pb_fields(pb, msg) and got is not None
    assert all(v not in (0, "", b"", None, [], {}) for k, v in got.items()
               if k not in ("kind", "header", "sample", "memory", "file", "trailer",
                            "samples", "kernel_symbols"))


@pytest.mark.parametrize("kind", sorted(RECORDS))
def test_records_of_every_kind(kind: str) -> None:
    got = check_same(wire.RECORD, RECORDS[kind].SerializeToString())
    assert got is not None and got["kind"] == kind


def test_bytes_fields_are_spans_of_the_input() -> None:
    body = RECORDS["file"].SerializeToString()
    rec = wire.decode(wire.RECORD, b"xyz" + body, 3)
    start, end = rec["file"]["data"]
    assert (b"xyz" + body)[start:end] == b"\x7fELF" + bytes(100)


# -- field order, repetition, packing ---------------------------------------------------


@pytest.mark.parametrize("name", sorted(wire.MESSAGES))
def test_fields_in_any_order(name: str) -> None:
    msg, pb = wire.MESSAGES[name], full(name)
    parts = field_parts(pb, msg)
    rng = random.Random(name)
    for _ in range(5):
        rng.shuffle(parts)
        assert check_same(msg, b"".join(parts)) == pb_fields(pb, msg)


UNPACKED = [(wire.HEADER, 9, [4100, 733, 2**32 - 1]),
            (wire.SAMPLE, 9, [0xFFFFFFFF8142A1B0, 0, 1]),
            (wire.KERNEL_SYMBOLS, 1, [0xFFFFFFFF8142A1B0, 0, 5]),
            (wire.KERNEL_SYMBOLS, 3, [0x30, 2**64 - 1])]


@pytest.mark.parametrize(("msg", "number", "values"), UNPACKED)
def test_repeated_numbers_packed_unpacked_and_mixed(msg: wire.Message, number: int,
                                                    values: list[int]) -> None:
    name = msg.fields[number].name
    unpacked = b"".join(vf(number, v) for v in values)
    packed = ld(number, b"".join(varint(v) for v in values))
    for data, times in ((unpacked, 1), (packed, 1), (packed + unpacked, 2),
                        (unpacked + packed + unpacked, 3),
                        (ld(number, b"") + unpacked + ld(number, b""), 1)):
        got = check_same(msg, data)
        assert got is not None and got[name] == values * times


def test_last_value_wins_and_messages_merge() -> None:
    data = (vf(1, 1) + ld(2, b"x86_64") + vf(8, 7) + vf(1, 2) + ld(2, b"aarch64")
            + vf(8, 0) + ld(10, b"a") + ld(10, b"b"))
    got = check_same(wire.HEADER, data)
    assert got is not None
    assert (got["version"], got["arch"], got["pac_mask"], got["command"]) == (
        2, "aarch64", 0, ["a", "b"])
    # bytes: the last occurrence; a message field: merged
    got = check_same(wire.MEMORY_BLOB, ld(3, b"old") + vf(1, 5) + ld(3, b"new"))
    assert got is not None and got["data"] == b"new" and got["pid"] == 5
    got = check_same(wire.FILE_BLOB, ld(2, ld(1, b"ab") + vf(2, 3)) + ld(1, b"/x")
                     + ld(2, vf(3, 4) + vf(2, 9)))
    assert got is not None
    assert got["identity"] == {"build_id": "ab", "dev": 9, "inode": 4, "size": 0}


def test_record_kind_is_the_last_member_seen() -> None:
    header = ld(1, vf(1, 1) + ld(2, b"x"))
    trailer = ld(6, vf(2, 5))
    got = check_same(wire.RECORD, header + ld(1, vf(11, 9)))     # merged
    assert got is not None and got["kind"] == "header"
    assert got["header"]["version"] == 1 and got["header"]["stack_bytes"] == 9
    got = check_same(wire.RECORD, header + trailer)
    assert got is not None and got["kind"] == "trailer" and got["header"] is None
    got = check_same(wire.RECORD, header + trailer + ld(1, ld(2, b"y")))   # starts afresh
    assert got is not None and got["kind"] == "header" and got["trailer"] is None
    assert (got["header"]["version"], got["header"]["arch"]) == (0, "y")
    # A member that does not decode fails the record even if another one follows.
    assert check_same(wire.RECORD, ld(1, ld(2, b"\xff")) + trailer) is None
    # Not a member at all: no kind.
    got = check_same(wire.RECORD, vf(1, 5) + ld(9, b"abc"))
    assert got is not None and got["kind"] is None


def test_map_entries() -> None:
    pc, sp = ld(1, b"pc"), ld(1, b"sp")
    cases = {
        ld(6, pc + vf(2, 5)) + ld(6, sp + vf(2, 6)): {"pc": 5, "sp": 6},
        ld(6, pc + vf(2, 5)) + ld(6, pc + vf(2, 7)): {"pc": 7},       # last wins
        ld(6, vf(2, 5) + pc): {"pc": 5},                              # any order
        ld(6, vf(2, 5)) + ld(6, pc): {"": 5, "pc": 0},                # defaults
        ld(6, pc + vf(2, 5) + sp): {"sp": 5},                         # key twice
        ld(6, pc + vf(2, 5) + vf(3, 1)): {},         # unknown field: not in the map
        ld(6, ld(2, b"pc") + vf(2, 5)): {},          # value with a wrong wire type
        ld(6, pc + vf(2, 5) + tag(4, I32) + bytes(4)): {},
    }
    for data, regs in cases.items():
        got = check_same(wire.SAMPLE, data)
        assert got is not None and got["regs"] == regs, data
    assert check_same(wire.SAMPLE, ld(6, ld(1, b"\xc3") + vf(2, 5))) is None


# -- unknown fields and wire types --------------------------------------------------------


UNKNOWN = [vf(15, 1), vf(1000, 2**64 - 1), tag(536870911, VARINT) + b"\x00",
           tag(16, I64) + bytes(range(8)), tag(17, I32) + b"\xff" * 4,
           ld(18, b""), ld(19, b"\xff\xfe anything \x00" * 10), ld(2047, ld(1, b"x"))]


@pytest.mark.parametrize("name", sorted(wire.MESSAGES))
def test_unknown_fields_are_skipped(name: str) -> None:
    msg, pb = wire.MESSAGES[name], full(name)
    parts = field_parts(pb, msg)
    rng = random.Random(name)
    want = pb_fields(pb, msg)
    for extra in UNKNOWN:
        for at in range(len(parts) + 1):
            data = b"".join(parts[:at]) + extra + b"".join(parts[at:])
            assert check_same(msg, data) == want
    mixed = list(parts) + rng.sample(UNKNOWN, len(UNKNOWN))
    rng.shuffle(mixed)
    assert check_same(msg, b"".join(mixed)) == want


@pytest.mark.parametrize("name", sorted(wire.MESSAGES))
def test_known_fields_with_another_wire_type_are_unknown(name: str) -> None:
    msg = wire.MESSAGES[name]
    for number in msg.fields:
        for encoded in (vf(number, 300), tag(number, I64) + bytes(8),
                        tag(number, I32) + bytes(4), ld(number, b"\x80\x01"),
                        ld(number, b"\x08\x96\x01")):
            check_same(msg, encoded)


# -- integers ----------------------------------------------------------------------------


def test_varints_up_to_10_bytes_cut_to_64_bits() -> None:
    for value_bytes in (b"\xff" * 9 + b"\x01", b"\xff" * 9 + b"\x7f", b"\x80" * 9 + b"\x00",
                        long_varint(5, 10)):
        got = check_same(wire.HEADER, tag(5, VARINT) + value_bytes)
        assert got is not None and got["start_time_ns"] < 2**64
    assert wire.decode(wire.HEADER, tag(5, VARINT) + b"\xff" * 9 + b"\x7f")[
        "start_time_ns"] == 2**64 - 1
    for data in (tag(5, VARINT) + b"\xff" * 10 + b"\x01",
                 tag(5, VARINT) + b"\x80" * 10 + b"\x00",
                 tag(99, VARINT) + long_varint(0, 11)):
        assert check_same(wire.HEADER, data) is None
    with pytest.raises(WireError, match="longer than 10 bytes"):
        wire.decode(wire.HEADER, tag(5, VARINT) + b"\xff" * 11)


def test_uint32_fields_keep_the_low_32_bits() -> None:
    got = check_same(wire.HEADER, vf(1, 2**32 + 1) + vf(11, 2**64 - 1)
                     + ld(9, varint(2**32 + 5) + varint(2**40 + 7)) + vf(9, 2**35 + 3))
    assert got is not None
    assert (got["version"], got["stack_bytes"], got["pids"]) == (1, 2**32 - 1, [5, 7, 3])


def test_tags() -> None:
    ok = [long_varint(1 << 3, 5) + b"\x01",             # 5 bytes
          tag(2**29 - 1, VARINT) + b"\x01",             # the largest field number
          long_varint((2**29 - 1) << 3 | I32, 5) + bytes(4)]
    for data in ok:
        assert check_same(wire.HEADER, data) is not None
    bad = [long_varint(1 << 3, 6) + b"\x01",            # 6 bytes
           varint(2**32 + 8) + b"\x01",                 # more than 32 bits
           b"\x00\x01", b"\x02\x00",                    # field number 0
           tag(1, 6) + b"\x01", tag(20, 7) + b"\x01",   # wire types 6 and 7
           tag(5, EGROUP), b"\x80", b"\xff\xff"]        # end of group; cut short
    for data in bad:
        assert check_same(wire.HEADER, data) is None, data


def test_groups_are_refused() -> None:
    """proto2 groups are not in the schema: refused even where protobuf skips them."""
    for data in (tag(15, SGROUP) + tag(15, EGROUP), tag(1, SGROUP) + vf(2, 1) + tag(1, EGROUP)):
        PB["Header"].FromString(data)      # protobuf skips an unknown group
        with pytest.raises(WireError, match=r"is a group \(wire type 3\)"):
            wire.decode(wire.HEADER, data)


def test_lengths() -> None:
    for size in range(1, 6):
        got = check_same(wire.HEADER, tag(2, LEN) + long_varint(2, size) + b"ab")
        assert got is not None and got["arch"] == "ab"
    for data in (tag(2, LEN) + long_varint(2, 6) + b"ab",     # 6 bytes
                 tag(2, LEN) + long_varint(2 + 2**32, 5) + b"ab",
                 tag(2, LEN) + varint(3) + b"ab",             # past the end
                 tag(2, LEN) + varint(2**31 - 1) + b"ab",
                 tag(40, LEN) + varint(3) + b"ab",            # unknown, past the end
                 tag(16, I64) + bytes(7), tag(17, I32) + bytes(3),
                 ld(9, b"\x80"), ld(9, b"\x01\xff")):        # packed varint cut short
        assert check_same(wire.HEADER, data) is None, data
    with pytest.raises(WireError, match="run past the end"):
        wire.decode(wire.HEADER, tag(2, LEN) + varint(3) + b"ab")


# -- strings -------------------------------------------------------------------------------


STRING_FIELDS = [(msg, number) for msg in wire.MESSAGES.values()
                 for number, f in msg.fields.items() if f.type == "string"]


@pytest.mark.parametrize(("msg", "number"), STRING_FIELDS,
                         ids=[f"{m.name}.{m.fields[n].name}" for m, n in STRING_FIELDS])
def test_strings_must_be_utf8(msg: wire.Message, number: int) -> None:
    for good in (b"", b"abc", "héllo wörld ✓ 𝄞".encode(), b"\x00", b"\xef\xbb\xbf"):
        got = check_same(msg, ld(number, good))
        assert got is not None and got[msg.fields[number].name] in (good.decode(),
                                                                    [good.decode()])
    for bad in (b"\xff", b"ab\xc3", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                b"\xe2\x82", b"\x80abc"):
        assert check_same(msg, ld(number, bad)) is None
        with pytest.raises(WireError, match=f"{msg.name}.{msg.fields[number].name} at "
                                            f"byte 0 is not valid UTF-8"):
            wire.decode(msg, ld(number, bad))


def test_utf8_validation_is_protobufs() -> None:
    """Every 1- and 2-byte string, and 3- and 4-byte ones around the edges of the
    valid ranges (overlong forms, surrogates, past U+10FFFF), both ways."""
    strings = [bytes([a]) for a in range(256)]
    strings += [bytes([a, b]) for a in range(0x80, 0x100) for b in range(256)]
    strings += [bytes([a, b, c]) for a in (0xE0, 0xE1, 0xED, 0xEE, 0xEF)
                for b in range(0x70, 0xD0) for c in (0x7F, 0x80, 0xBF, 0xC0)]
    strings += [bytes([a, b, 0x80, c]) for a in (0xF0, 0xF1, 0xF4, 0xF5)
                for b in range(0x70, 0xD0) for c in (0x7F, 0x80, 0xBF)]
    for s in strings:
        check_same(wire.TRAILER, ld(3, b"") + ld(1000, s))        # unknown: no check
        check_same(wire.MEMORY_BLOB, ld(4, s))


# -- corrupt input ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(RECORDS))
def test_every_cut_of_a_record(kind: str) -> None:
    body = RECORDS[kind].SerializeToString()
    for cut in range(len(body)):
        got = check_same(wire.RECORD, body[:cut])
        assert got is None or got["kind"] is None, cut


def test_random_damage_agrees_with_protobuf() -> None:
    rng = random.Random(20250601)
    bodies = [r.SerializeToString() for r in RECORDS.values()]
    bodies += [full(name).SerializeToString() for name in ("Header", "MapsSnapshot")]
    decoded = failed = 0
    for i in range(4000):
        data = bytearray(rng.choice(bodies))
        for _ in range(rng.choice((1, 1, 2, 4))):
            at = rng.randrange(len(data))
            op = rng.randrange(4)
            if op == 0:
                data[at] = rng.randrange(256)
            elif op == 1:
                data[at] ^= 1 << rng.randrange(8)
            elif op == 2:
                del data[at:at + rng.randrange(1, 4)]
            else:
                data[at:at] = rng.randbytes(rng.randrange(1, 4))
        if check_same(wire.RECORD, bytes(data), groups=True) is None:
            failed += 1
        else:
            decoded += 1
    assert decoded > 500 and failed > 500     # both sides of the fence were reached
