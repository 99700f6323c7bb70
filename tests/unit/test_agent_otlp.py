"""OTLP profiles requests: what lands on the resource, the samples and the dictionary.

Every request is serialized and read back with the generated classes of PyPI
``opentelemetry-proto`` (the schema's own code, not ours), and its content is compared
with the pprof writer's output for the same ProfileData."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterable

import pytest
from opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2 import (
    ExportProfilesServiceRequest,
)

from profiler.app.agent.receiver import Receiver
from profiler.emit.otlp import (
    CONTENT_TYPE,
    OTLP_PATH,
    check_request,
    encode_request,
    parse_request,
    plain_value,
)
from profiler.emit.pprof import build_profile
from profiler.model import Location, MappingInfo, ProfileData, StackSample

EXE = MappingInfo(0x400000, 0x401000, 0, "/usr/bin/app", "abcd", True)
LIBC = MappingInfo(0x7F0000000000, 0x7F0000100000, 0x1000, "/lib/libc.so.6", "", False)


def data() -> ProfileData:
    main = Location(0x400456, EXE, "main")
    samples = [
        StackSample((Location(0x400123, EXE, "work"), main),
                    7, 8, "worker", True, "", 5, 5 * 1000, "app"),
        StackSample((Location(0x7F0000000010, LIBC, ""), main,
                     Location(0, None, "[unreliable: stack-truncated]", synthetic=True)),
                    7, 7, "app", False, "stack-truncated", 2, 2000, "app"),
        # kernel frames that came without a mapping, over a user frame
        StackSample((Location(0xFFFFFFFF81000010, None, "do_syscall_64", is_kernel=True),
                     Location(0xFFFFFFFF81000200, None, "", is_kernel=True), main),
                    9, 9, "", True, "", 1, 1000),
    ]
    return ProfileData(samples, 1000, 1_700_000_000_000_000_000, 10**10)


def request(labels: dict[str, str], d: ProfileData | None = None) -> ExportProfilesServiceRequest:
    body = encode_request(d or data(), labels, scope_version="9.9")
    req = ExportProfilesServiceRequest()
    req.ParseFromString(body)
    return req


def frames(req: ExportProfilesServiceRequest, sample_index: int) -> list[tuple[str, str, int]]:
    """(function or "", mapping file or "", address) per frame, leaf first."""
    d = req.dictionary
    st = d.string_table
    sample = req.resource_profiles[0].scope_profiles[0].profiles[0].samples[sample_index]
    out = []
    for li in d.stack_table[sample.stack_index].location_indices:
        loc = d.location_table[li]
        fn = st[d.function_table[loc.lines[0].function_index].name_strindex] if loc.lines else ""
        mapping = st[d.mapping_table[loc.mapping_index].filename_strindex]
        out.append((fn, mapping, loc.address))
    return out


def attributes(req: ExportProfilesServiceRequest, indices: Iterable[int]) -> dict[str, object]:
    d = req.dictionary
    return {d.string_table[d.attribute_table[i].key_strindex]:
            plain_value(d.attribute_table[i].value) for i in indices}


def test_request_shape() -> None:
    labels = {"host": "h1", "service": "app", "pid": "7", "container_id": "c" * 64,
              "agent_version": "9.9", "region": "eu"}
    req = request(labels)
    assert check_request(req) == []
    d = req.dictionary
    st = d.string_table
    assert st[0] == ""
    (rp,) = req.resource_profiles
    assert {kv.key: plain_value(kv.value) for kv in rp.resource.attributes} == {
        "host.name": "h1", "service.name": "app", "process.pid": 7,
        "container.id": "c" * 64, "sframe_prof.agent_version": "9.9", "region": "eu"}
    (sp,) = rp.scope_profiles
    assert (sp.scope.name, sp.scope.version) == ("sframe-prof", "9.9")
    (p,) = sp.profiles
    assert (st[p.sample_type.type_strindex], st[p.sample_type.unit_strindex]) == \
        ("samples", "count")
    assert (st[p.period_type.type_strindex], st[p.period_type.unit_strindex]) == \
        ("cpu", "nanoseconds")
    assert p.period == 1000 and p.time_unix_nano == 1_700_000_000_000_000_000
    assert p.duration_nano == 10**10
    assert [list(s.values) for s in p.samples] == [[5], [2], [1]]

    assert [f[0] or hex(f[2]) for f in frames(req, 0)] == ["work", "main"]
    assert [f[0] or hex(f[2]) for f in frames(req, 1)] == [
        "0x7f0000000010", "main", "[unreliable: stack-truncated]"]
    # a synthetic frame has no mapping and address 0
    assert frames(req, 1)[2] == ("[unreliable: stack-truncated]", "", 0)
    assert attributes(req, p.samples[1].attribute_indices) == {
        "thread.id": 7, "thread.name": "app", "process.executable.name": "app",
        "unwind": "unreliable", "unwind_reason": "stack-truncated", "unwind_doubt_frame": 2}

    exe = next(m for m in d.mapping_table if m.memory_start == 0x400000)
    assert st[exe.filename_strindex] == "/usr/bin/app"
    assert attributes(req, exe.attribute_indices) == {"process.executable.build_id.gnu": "abcd"}
    libc = next(x for x in d.location_table if x.address == 0x7F0000000010)
    assert d.mapping_table[libc.mapping_index].file_offset == 0x1000
    # kernel frames without a mapping share one spanning them, named as in pprof
    kernel = {d.location_table[i].mapping_index for i in
              d.stack_table[p.samples[2].stack_index].location_indices[:2]}
    (k,) = kernel
    assert st[d.mapping_table[k].filename_strindex] == "[kernel.kallsyms]"
    assert (d.mapping_table[k].memory_start, d.mapping_table[k].memory_limit) == \
        (0xFFFFFFFF81000010, 0xFFFFFFFF81000201)
    # the zero link: 16 and 8 zero bytes
    assert (d.link_table[0].trace_id, d.link_table[0].span_id) == (bytes(16), bytes(8))


def test_pid_is_a_sample_attribute_when_groups_span_processes() -> None:
    req = request({"host": "h", "service": "app"})
    p = req.resource_profiles[0].scope_profiles[0].profiles[0]
    assert [attributes(req, s.attribute_indices)["process.pid"] for s in p.samples] == [7, 7, 9]
    assert "process.pid" not in {kv.key for kv in req.resource_profiles[0].resource.attributes}


def test_otlp_agrees_with_pprof() -> None:
    """Two writers, one ProfileData: the same frames, mappings and labels per sample."""
    labels = {"host": "h", "service": "app", "region": "eu"}
    d = data()
    req = request(labels, d)
    prof = build_profile(d)
    st = prof.string_table
    names = {"tid": "thread.id", "thread": "thread.name", "pid": "process.pid",
             "process": "process.executable.name"}
    p = req.resource_profiles[0].scope_profiles[0].profiles[0]
    assert len(p.samples) == len(prof.sample) == len(d.samples)
    for i, ps in enumerate(prof.sample):
        want = []
        for lid in ps.location_id:
            loc = prof.location[lid - 1]
            fn = st[prof.function[loc.line[0].function_id - 1].name] if loc.line else ""
            mapping = st[prof.mapping[loc.mapping_id - 1].filename] if loc.mapping_id else ""
            want.append((fn, mapping, loc.address))
        assert frames(req, i) == want
        pprof_labels = {names.get(st[lab.key], st[lab.key]): st[lab.str] if lab.str else lab.num
                        for lab in ps.label}
        assert attributes(req, p.samples[i].attribute_indices) == pprof_labels
        assert list(p.samples[i].values) == [ps.value[0]]


def test_checker_finds_broken_dictionaries() -> None:
    req = request({"service": "a"})
    req.dictionary.string_table[0] = "x"
    req.dictionary.stack_table.add(location_indices=[999])
    req.dictionary.link_table[0].trace_id = b"\x01" * 16
    req.resource_profiles[0].scope_profiles[0].profiles[0].samples[0].values.append(3)
    problems = check_request(req)
    assert 'string_table[0] must be ""' in problems
    assert "link_table[0] must be the zero value" in problems
    assert f"stack {len(req.dictionary.stack_table) - 1}: location out of range" in problems
    assert "sample: expected one value" in problems


@pytest.mark.parametrize("body", [b"\xff\xff\xff", b"\x0a\x05ab"])
def test_garbage_is_one_clear_error(body: bytes) -> None:
    with pytest.raises(ValueError, match="^not an OTLP profiles request: ") as exc:
        parse_request(body)
    assert "\n" not in str(exc.value)


def test_receiver_answers_400_to_a_broken_request() -> None:
    req = request({"service": "a"})
    req.dictionary.location_table[1].mapping_index = 99
    recv = Receiver().start()
    try:
        for body, code in ((encode_request(data(), {"service": "a"}, scope_version="1"), 200),
                           (req.SerializeToString(), 400), (b"\xff\xff", 400)):
            post = urllib.request.Request(recv.url + OTLP_PATH, data=body, method="POST",
                                          headers={"Content-Type": CONTENT_TYPE})
            try:
                with urllib.request.urlopen(post, timeout=10) as resp:
                    status = resp.status
            except urllib.error.HTTPError as err:
                status = err.code
            assert status == code, body[:20]
    finally:
        recv.stop()
    assert recv.received[0]["samples"] == 8
    assert recv.received[0]["functions"] == [
        "[unreliable: stack-truncated]", "do_syscall_64", "main", "work"]
    assert "location 1: mapping out of range" in recv.rejected[0]
    assert recv.rejected[1].startswith("not an OTLP profiles request")
