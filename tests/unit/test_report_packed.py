"""`report` counts packed samples whose chain the unwind memo has straight from the
batch bytes; the profile must be exactly the one the general path gives."""

from __future__ import annotations

import argparse
import collections
import dataclasses
from pathlib import Path

import pytest

from profiler import report as report_mod
from profiler.capture.recording import CaptureHeader, CaptureWriter, PackedSamples
from profiler.model import RawSample
from profiler.snapshots import read_snapshots

SNAPSHOTS = Path(__file__).parent.parent / "snapshots"


def _samples(name: str) -> list[RawSample]:
    groups: dict[object, list[RawSample]] = collections.defaultdict(list)
    for _, _obj, s in read_snapshots(str(SNAPSHOTS / name)):
        groups[s.mappings].append(s)
    group = max(groups.values(), key=len)
    out = []
    for i, s in enumerate(group):
        regs = {k: s.regs[k] for k in ("pc", "sp", "fp", "lr") if k in s.regs}
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


def _report(tmp: Path, cap: Path, tag: str) -> str:
    folded = tmp / f"{tag}.folded"
    args = argparse.Namespace(capture=str(cap), root=str(SNAPSHOTS / "root"), debug_dir=[],
                              output=str(tmp / f"{tag}.pb.gz"), folded=str(folded),
                              flamegraph=None, quiet=True)
    assert report_mod.report(args) == 0
    return folded.read_text()


@pytest.mark.parametrize("name", ["v3sid-x86_64-O2.jsonl.gz",
                                  "v2trixie-aarch64-O2-pacret.jsonl.gz"])
def test_packed_fast_path_gives_the_general_profile(tmp_path: Path, name: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    samples = _samples(name)
    cap = tmp_path / "run.sfcap"
    s0 = samples[0]
    with CaptureWriter(cap, CaptureHeader(s0.arch, period_ns=10**7, pac_mask=s0.pac_mask,
                                          hostname="elsewhere")) as w:
        w.add_maps(4242, s0.mappings, time_ns=1)
        for start, blob in s0.memory:
            w.add_memory(4242, start, blob, "[vdso]")
        for s in samples:
            w.add_sample(s)
    fast = _report(tmp_path, cap, "fast")

    calls = []

    def general(batch: PackedSamples, cap_: object, pipeline: object, spaces: object,
                add: object, counted: object) -> None:
        calls.append(batch.n)
        for sample in cap_._unpack_batch(batch):  # type: ignore[attr-defined]
            add(sample)  # type: ignore[operator]

    monkeypatch.setattr(report_mod, "_add_packed", general)
    slow = _report(tmp_path, cap, "slow")
    assert sum(calls) == len(samples)
    assert fast == slow
    assert sum(int(line.rsplit(" ", 1)[1]) for line in fast.splitlines()) == len(samples)
