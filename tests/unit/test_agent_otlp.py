"""OTLP profiles encoding: wire format, dictionary rules, and what lands where.

The encoder was also checked once against the generated classes of PyPI
``opentelemetry-proto`` 1.45.2 (docs/agent.md says how); these tests pin the wire format
with the module's own reader, which is written separately from the encoder."""

from __future__ import annotations

import pytest

from profiler.agent.otlp import (
    Writer,
    _varint,
    check_request,
    decode_request,
    encode_request,
    read_fields,
    unpack_varints,
)
from profiler.model import Location, MappingInfo, ProfileData, StackSample


def profile():  # type: ignore[no-untyped-def]
    from profiler.emit.pprof import build_profile
    exe = MappingInfo(0x400000, 0x401000, 0, "/usr/bin/app", "abcd", True)
    libc = MappingInfo(0x7F0000000000, 0x7F0000100000, 0x1000, "/lib/libc.so.6", "", False)
    samples = [
        StackSample((Location(0x400123, exe, "work"), Location(0x400456, exe, "main")),
                    7, 8, "worker", True, "", 5, 5 * 1000, "app"),
        StackSample((Location(0x7F0000000010, libc, ""), Location(0x400456, exe, "main"),
                     Location(0, None, "[unreliable: stack-truncated]", synthetic=True)),
                    7, 7, "app", False, "stack-truncated", 2, 2000, "app"),
    ]
    return build_profile(ProfileData(samples, 1000, 1_700_000_000_000_000_000, 10**10))


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 2**32, 2**63 - 1])
def test_varint_round_trip(n: int) -> None:
    assert unpack_varints(_varint(n)) == [n]


def test_negative_is_ten_bytes() -> None:
    assert len(_varint(-1)) == 10


def test_writer_leaves_out_zero_scalars_but_keeps_empty_messages() -> None:
    w = Writer().uint(1, 0).uint(2, 5).string(3, "").message(4, Writer()).fixed64(5, 0)
    assert read_fields(bytes(w.buf)) == [(2, 0, 5), (4, 2, b"")]


def test_truncated_input_raises() -> None:
    data = bytes(Writer().string(1, "hello").buf)
    with pytest.raises(ValueError):
        read_fields(data[:-1])


def test_request_shape() -> None:
    labels = {"host": "h1", "service": "app", "pid": "7", "container_id": "c" * 64,
              "agent_version": "9.9", "region": "eu"}
    req = decode_request(encode_request(profile(), labels, scope_version="9.9"))
    assert check_request(req) == []
    d = req["dictionary"]
    strings = d["string_table"]
    assert strings[0] == ""
    (rp,) = req["resource_profiles"]
    assert rp["resource"] == {"host.name": "h1", "service.name": "app", "process.pid": 7,
                              "container.id": "c" * 64, "sframe_prof.agent_version": "9.9",
                              "region": "eu"}
    (sp,) = rp["scope_profiles"]
    assert sp["scope"] == {"name": "sframe-prof", "version": "9.9"}
    (p,) = sp["profiles"]
    assert [strings[i] for i in p["sample_type"]] == ["samples", "count"]
    assert [strings[i] for i in p["period_type"]] == ["cpu", "nanoseconds"]
    assert p["period"] == 1000 and p["time_unix_nano"] == 1_700_000_000_000_000_000
    assert p["duration_nano"] == 10**10
    assert [s["values"] for s in p["samples"]] == [[5], [2]]

    def names(sample):  # type: ignore[no-untyped-def]
        out = []
        for li in d["stack_table"][sample["stack_index"]]:
            loc = d["location_table"][li]
            fn = d["function_table"][loc["lines"][0]] if loc["lines"] else None
            out.append(strings[fn["name_strindex"]] if fn else hex(loc["address"]))
        return out

    assert names(p["samples"][0]) == ["work", "main"]
    assert names(p["samples"][1]) == ["0x7f0000000010", "main", "[unreliable: stack-truncated]"]

    def attrs(sample):  # type: ignore[no-untyped-def]
        return {strings[d["attribute_table"][i]["key_strindex"]]:
                d["attribute_table"][i]["value"] for i in sample["attribute_indices"]}

    assert attrs(p["samples"][1]) == {"thread.id": 7, "thread.name": "app",
                                      "process.executable.name": "app",
                                      "unwind": "unreliable",
                                      "unwind_reason": "stack-truncated",
                                      "unwind_doubt_frame": 2}
    exe = next(m for m in d["mapping_table"] if m["memory_start"] == 0x400000)
    assert strings[exe["filename_strindex"]] == "/usr/bin/app"
    (bid,) = exe["attribute_indices"]
    assert strings[d["attribute_table"][bid]["key_strindex"]] == "process.executable.build_id.gnu"
    assert d["attribute_table"][bid]["value"] == "abcd"
    loc = next(x for x in d["location_table"] if x["address"] == 0x7F0000000010)
    assert d["mapping_table"][loc["mapping_index"]]["file_offset"] == 0x1000


def test_pid_is_a_sample_attribute_when_groups_span_processes() -> None:
    req = decode_request(encode_request(profile(), {"host": "h", "service": "app"},
                                        scope_version="1"))
    d = req["dictionary"]
    keys = {d["string_table"][a["key_strindex"]] for a in d["attribute_table"][1:]}
    assert "process.pid" in keys
    assert "process.pid" not in req["resource_profiles"][0]["resource"]


def test_checker_finds_broken_dictionaries() -> None:
    req = decode_request(encode_request(profile(), {"service": "a"}, scope_version="1"))
    req["dictionary"]["string_table"][0] = "x"
    req["dictionary"]["stack_table"].append([999])
    problems = check_request(req)
    assert any("string_table[0]" in p for p in problems)
    assert any("stack" in p for p in problems)
