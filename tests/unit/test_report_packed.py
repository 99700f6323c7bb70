"""`report` counts packed samples whose chain the unwind memo has straight from the
batch bytes; the profile must be exactly the one the general path gives."""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
from pathlib import Path

import pytest
from helpers.paths import SNAPSHOTS

from profiler.app import report as report_mod
from profiler.capture.fileformat import CaptureHeader
from profiler.capture.packed import PackedSamples
from profiler.capture.snapshots import read_snapshots
from profiler.capture.writer import CaptureWriter
from profiler.model import RawSample


def _samples(name: str) -> list[RawSample]:
    groups: dict[object, list[RawSample]] = collections.defaultdict(list)
    for _, _obj, s in read_snapshots(str(SNAPSHOTS / name)):
        groups[s.mappings].append(s)
    group = max(groups.values(), key=len)
    out = []
    for i, s in enumerate(group):
        regs: dict[str, int] = {k: s.regs[k] for k in ("pc", "sp", "fp", "lr") if k in s.regs}
        base = dataclasses.replace(s, regs=regs, pid=4242, tid=4242 + i % 3, comm="prog",
                                   cpu=i % 2, kernel_stack=(0xFFFFFFFF81000000,) * (i % 2))
        out.append(base)
        out.append(base)                                     # a memo hit
        flipped = bytearray(s.stack)
        flipped[8 * (i % 16)] ^= 0x40                        # maybe a hit, maybe not
        out.append(dataclasses.replace(base, stack=bytes(flipped)))
    out.append(dataclasses.replace(out[0], regs={"pc": out[0].regs["pc"]}, stack=b""))
    for t, s in enumerate(out):
        s.time_ns = 10 + t
    return out


def _report(tmp: Path, cap: Path, tag: str, jobs: int = 1) -> str:
    folded = tmp / f"{tag}.folded"
    args = argparse.Namespace(capture=str(cap), root=str(SNAPSHOTS / "root"), debug_dir=[],
                              output=str(tmp / f"{tag}.pb.gz"), folded=str(folded),
                              flamegraph=None, quiet=True, jobs=jobs)
    assert report_mod.report(args) == 0
    return folded.read_text()


def _capture(tmp: Path, name: str, batch: int = 0,
             monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[Path, int]:
    """A capture of snapshot `name`'s samples (in batches of `batch` if given)."""
    if batch and monkeypatch is not None:
        from profiler.capture import writer
        monkeypatch.setattr(writer, "BATCH_SAMPLES", batch)
    samples = _samples(name)
    cap = tmp / "run.sfcap"
    s0 = samples[0]
    with CaptureWriter(cap, CaptureHeader(s0.arch, period_ns=10**7, pac_mask=s0.pac_mask,
                                          hostname="elsewhere")) as w:
        w.add_maps(4242, s0.mappings, time_ns=1)
        for start, blob in s0.memory:
            w.add_memory(4242, start, blob, "[vdso]")
        for s in samples:
            w.add_sample(s)
    return cap, len(samples)


@pytest.mark.parametrize("name", ["v3sid-x86_64-O2.jsonl.gz",
                                  "v2trixie-aarch64-O2-pacret.jsonl.gz"])
def test_packed_fast_path_gives_the_general_profile(tmp_path: Path, name: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cap, n = _capture(tmp_path, name)
    fast = _report(tmp_path, cap, "fast")

    calls = []

    def general(batch: PackedSamples, cap_: object, pipeline: object, spaces: object,
                add: object, counted: object) -> None:
        calls.append(batch.n)
        for sample in cap_._unpack_batch(batch):  # type: ignore[attr-defined]
            add(sample)  # type: ignore[operator]

    monkeypatch.setattr(report_mod, "_add_packed", general)
    slow = _report(tmp_path, cap, "slow")
    assert sum(calls) == n
    assert fast == slow
    assert sum(int(line.rsplit(" ", 1)[1]) for line in fast.splitlines()) == n


def _sorted_profile(path: Path) -> list[tuple[object, ...]]:
    """The samples of a pprof file as sorted (stack, labels, values) tuples, with
    locations named by address and function instead of their ids."""
    import gzip

    from profiler.proto import profile_pb2
    p = profile_pb2.Profile()
    p.ParseFromString(gzip.decompress(path.read_bytes()))
    strings = p.string_table
    funcs = {f.id: strings[f.name] for f in p.function}
    locs = {loc.id: (loc.address, tuple(funcs[ln.function_id] for ln in loc.line))
            for loc in p.location}
    return sorted((tuple(locs[i] for i in s.location_id),
                   tuple(sorted((strings[lb.key], strings[lb.str], lb.num) for lb in s.label)),
                   tuple(s.value)) for s in p.sample)


@pytest.mark.parametrize("name", ["v3sid-x86_64-O2.jsonl.gz",
                                  "v2trixie-aarch64-O2-pacret.jsonl.gz"])
def test_worker_processes_give_the_same_profile(tmp_path: Path, name: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cap, n = _capture(tmp_path, name, batch=16, monkeypatch=monkeypatch)
    monkeypatch.setattr(report_mod, "MIN_SAMPLES_PER_JOB", 1)
    monkeypatch.setattr(report_mod, "WARM_UP_SAMPLES", 10)
    one = _report(tmp_path, cap, "one", jobs=1)
    forks: list[int] = []
    real_fork = os.fork

    def fork() -> int:
        forks.append(1)
        return real_fork()

    monkeypatch.setattr(os, "fork", fork)
    three = _report(tmp_path, cap, "three", jobs=3)
    assert len(forks) == 2
    assert sorted(one.splitlines()) == sorted(three.splitlines())
    assert _sorted_profile(tmp_path / "one.pb.gz") == _sorted_profile(tmp_path / "three.pb.gz")
    assert sum(int(line.rsplit(" ", 1)[1]) for line in three.splitlines()) == n


def test_a_failed_worker_is_redone_here(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that dies before sending its counts costs time, not samples."""
    cap, n = _capture(tmp_path, "v3sid-x86_64-O2.jsonl.gz", batch=16,
                      monkeypatch=monkeypatch)
    monkeypatch.setattr(report_mod, "MIN_SAMPLES_PER_JOB", 1)
    monkeypatch.setattr(report_mod, "WARM_UP_SAMPLES", 10)
    one = _report(tmp_path, cap, "one", jobs=1)
    parent = os.getpid()
    real_export = report_mod._Run.export

    def export(self: object) -> object:
        if os.getpid() != parent:
            os.kill(os.getpid(), 9)
        return real_export(self)  # type: ignore[arg-type]

    monkeypatch.setattr(report_mod._Run, "export", export)
    three = _report(tmp_path, cap, "three", jobs=3)
    assert sorted(one.splitlines()) == sorted(three.splitlines())
    assert sum(int(line.rsplit(" ", 1)[1]) for line in three.splitlines()) == n


def test_parts_cover_the_capture_in_order(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from profiler.capture.reader import read_capture
    cap_path, n = _capture(tmp_path, "v3sid-x86_64-O2.jsonl.gz", batch=50,
                           monkeypatch=monkeypatch)
    cap = read_capture(str(cap_path))

    def counts(spans: object = None) -> list[int]:
        blocks = list(cap.iter_blocks(spans))  # type: ignore[arg-type]
        assert all(isinstance(b, PackedSamples) for b in blocks)
        return [b.n for b in blocks]  # type: ignore[union-attr]

    everything = counts()
    assert len(everything) > 3
    for k in (1, 2, 3, 7, 1000):
        parts = cap.parts(k)
        assert 1 <= len(parts) <= k
        assert all(parts)
        assert [c for part in parts for c in counts(part)] == everything
        sizes = [sum(counts(part)) for part in parts]
        assert sum(sizes) == n
        if k <= len(everything):
            assert len(parts) == k
            assert max(sizes) - min(sizes) <= 2 * 50
        lead = cap.parts(k, lead=120)
        assert [c for part in lead for c in counts(part)] == everything
        assert 120 <= sum(counts(lead[0])) < 120 + 50
        assert len(lead) <= k + 1
        rest = [sum(counts(part)) for part in lead[1:]]
        if k < len(everything) - 3:
            assert len(rest) == k
            assert max(rest) - min(rest) <= 2 * 50
        if 1 < k < len(everything) - 3:
            lighter = cap.parts(k, lead=120, lighter=100)
            assert [c for part in lighter for c in counts(part)] == everything
            sizes = [sum(counts(part)) for part in lighter[1:]]
            assert len(sizes) == k
            assert all(abs(size - sizes[1]) <= 2 * 50 for size in sizes[2:])
            assert 100 - 2 * 50 <= sizes[1] - sizes[0] <= 100 + 2 * 50


def test_a_corrupt_batch_gives_the_same_error_with_workers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from profiler.capture.fileformat import CaptureError
    from profiler.capture.packed import PACKED
    from profiler.capture.reader import read_capture
    cap_path, _n = _capture(tmp_path, "v3sid-x86_64-O2.jsonl.gz", batch=50,
                            monkeypatch=monkeypatch)
    start, _end, _count, raw = read_capture(str(cap_path)).parts(1)[0][-1]
    assert raw   # the packed bytes of the last batch begin at `start`
    data = bytearray(cap_path.read_bytes())
    assert PACKED.format.startswith("<IIIB")
    mask_at = start + 12         # the first sample's register mask, after pid, tid, cpu
    assert data[mask_at] <= 0xF
    data[mask_at] = 0xF0             # register bits no recorder writes
    cap_path.write_bytes(bytes(data))
    monkeypatch.setattr(report_mod, "MIN_SAMPLES_PER_JOB", 1)
    monkeypatch.setattr(report_mod, "WARM_UP_SAMPLES", 10)
    errors = []
    for jobs in (1, 3):
        with pytest.raises(CaptureError, match="unknown register bits") as e:
            _report(tmp_path, cap_path, f"b{jobs}", jobs=jobs)
        errors.append(str(e.value))
    assert errors[0] == errors[1]
