#!/usr/bin/env python3
"""OTLP encoding time: the generated classes (profiler.emit.otlp) against the old
hand-written encoder (profiler/agent/otlp.py, deleted in issue 12; read from git).

Both encode one realistic agent profile: 2,000 stacks over 500 distinct locations in 16
mappings, with kernel frames, unreliable stacks and fleet labels.  The old encoder read
a finished pprof message (built here once, untimed, as the agent built it anyway); the
new one reads the ProfileData.  Receiving is timed too: the old reader + check against
ParseFromString + check_request.  Prints the median of each and the ratios.

    .venv/bin/python scripts/bench_otlp.py [--old-rev REV | --old-file PATH] [-n 30]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from profiler.emit import otlp  # noqa: E402
from profiler.emit.pprof import build_profile  # noqa: E402
from profiler.model import Location, MappingInfo, ProfileData, StackSample  # noqa: E402

OLD_PATH = "profiler/agent/otlp.py"
OLD_REV = "c9cccda"     # the last commit of the hand-written encoder before issue 12
LABELS = {"region": "eu", "host": "h1", "service": "app", "pid": "1000",
          "agent_version": "0.1.0"}


def realistic(seed: int = 1, n_samples: int = 2000, n_locations: int = 500) -> ProfileData:
    rnd = random.Random(seed)
    maps = [MappingInfo(0x555500000000, 0x555500400000, 0, "/usr/bin/app", "ab" * 20, True)]
    for i in range(13):
        start = 0x7F0000000000 + i * 0x1000000
        maps.append(MappingInfo(start, start + 0x800000, 0x1000 * i, f"/usr/lib/lib{i}.so.1",
                                f"{i:02x}" * 20 if i % 3 else "", True))
    kmap = MappingInfo(0xFFFFFFFF81000000, 0xFFFFFFFF83000000, 0, "[kernel.kallsyms]")
    user = []
    for i in range(n_locations - 50):
        m = maps[rnd.randrange(len(maps))]
        user.append(Location(m.start + rnd.randrange(m.limit - m.start), m,
                             f"ns::function_{i}(int, char const*)" if rnd.random() < 0.85
                             else ""))
    kernel = [Location(kmap.start + rnd.randrange(kmap.limit - kmap.start),
                       kmap if i % 5 else None, f"kernel_fn_{i}", is_kernel=True)
              for i in range(46)]
    synthetic = [Location(0, None, f"[unreliable: {r}]", synthetic=True)
                 for r in ("stack-truncated", "no-unwind-info", "ra-mismatch", "pc-not-mapped")]
    samples = []
    for s in range(n_samples):
        tid = 1000 + s % 9
        locs = [user[rnd.randrange(len(user))] for _ in range(rnd.randrange(3, 40))]
        if rnd.random() < 0.3:
            locs = [kernel[rnd.randrange(len(kernel))]
                    for _ in range(rnd.randrange(1, 6))] + locs
        reliable = rnd.random() < 0.8
        reason = ""
        if not reliable:
            mark = synthetic[rnd.randrange(len(synthetic))]
            reason = mark.function[len("[unreliable: "):-1]
            locs.insert(rnd.randrange(len(locs) + 1), mark)
        count = rnd.randrange(1, 40)
        samples.append(StackSample(tuple(locs), 1000, tid, f"worker-{tid % 4}", reliable,
                                   reason, count, count * 52_631_578, "app"))
    return ProfileData(samples, 52_631_578, 1_765_000_000_000_000_000, 10_000_000_000,
                       ["sframe-prof agent 0.1.0 host=h1 window=1 group=1/1"], dict(LABELS))


def load_old(rev: str, path: str | None) -> ModuleType:
    if path is None:
        text = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{OLD_PATH}"],
                              check=True, capture_output=True, text=True).stdout
        tmp = Path(tempfile.mkdtemp()) / "old_otlp.py"
        tmp.write_text(text)
        path = str(tmp)
    spec = importlib.util.spec_from_file_location("old_otlp", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def median_ms(fn: Callable[[], object], n: int) -> float:
    fn()                                            # warm-up
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old-rev", default=OLD_REV, help="git revision holding " + OLD_PATH)
    ap.add_argument("--old-file", help="the old encoder as a file instead")
    ap.add_argument("-n", type=int, default=30, help="repetitions (median)")
    args = ap.parse_args()
    old = load_old(args.old_rev, args.old_file)

    data = realistic()
    profile = build_profile(data)                   # what the old encoder read
    plain = dataclasses.replace(data, labels={})
    locations = {id(loc) for s in data.samples for loc in s.locations}
    print(f"profile: {len(data.samples)} stacks, {len(locations)} locations, "
          f"{sum(len(s.locations) for s in data.samples)} frames, "
          f"{len(profile.mapping)} mappings")

    old_body = old.encode_request(profile, LABELS, scope_version="0.1.0")
    new_body = otlp.encode_request(plain, LABELS, scope_version="0.1.0")
    assert otlp.check_request(otlp.parse_request(old_body)) == []
    assert otlp.check_request(otlp.parse_request(new_body)) == []
    print(f"body: old {len(old_body)} bytes, new {len(new_body)} bytes")

    enc_old = median_ms(lambda: old.encode_request(profile, LABELS, scope_version="0.1.0"),
                        args.n)
    enc_new = median_ms(lambda: otlp.encode_request(plain, LABELS, scope_version="0.1.0"),
                        args.n)
    dec_old = median_ms(lambda: old.check_request(old.decode_request(new_body)), args.n)
    dec_new = median_ms(lambda: otlp.check_request(otlp.parse_request(new_body)), args.n)
    print(f"encode: old {enc_old:.1f} ms, new {enc_new:.1f} ms, "
          f"old/new = {enc_old / enc_new:.2f}x")
    print(f"decode+check: old {dec_old:.1f} ms, new {dec_new:.1f} ms, "
          f"old/new = {dec_old / dec_new:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
