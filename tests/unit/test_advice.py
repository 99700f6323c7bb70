"""The summary's advice names what would help for each kind of binary.

Real files: a Go binary of the wild panel (unwound from .gopclntab), Debian's
python3.11 (.eh_frame only), one of our SFrame-built programs, and a copy of a
program with its unwind sections stripped by binutils (no tables at all).  Their
ground-truth snapshots are unwound and aggregated as a run would, and the summary
must give a Go binary Go advice, never "rebuild with -Wa,--gsframe".
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

from helpers.paths import TESTS

from profiler.aggregate import Aggregator
from profiler.app.summary import ADVICE, summary
from profiler.capture.snapshots import read_snapshots
from profiler.unwind.objfile import ObjectCache, ObjectFile
from profiler.unwind.unwinder import Unwinder

GO = TESTS / "snapshots/wild/root/opt/sframe-prof-wild/go1.24.4/amd64/goroutines.stripped"
GO_SNAPS = TESTS / "snapshots/wild/x86_64-go1.24.4-goroutines-stripped.jsonl.gz"
SFRAME = TESTS / "targets/v3sid-x86_64-O2/prog"


def test_unwind_tables_by_kind(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    subprocess.run(["objcopy", "--remove-section=.eh_frame", "--remove-section=.eh_frame_hdr",
                    "--remove-section=.sframe", "--remove-section=.debug_frame", str(SFRAME),
                    str(bare)], check=True)
    assert ObjectFile.open(str(GO)).unwind_tables() == "gopclntab"
    assert ObjectFile.open("/usr/bin/python3.11").unwind_tables() == "eh_frame"
    assert ObjectFile.open(str(SFRAME)).unwind_tables() == "sframe"
    assert ObjectFile.open(str(bare)).unwind_tables() == "none"


def test_go_binary_gets_go_advice() -> None:
    u = Unwinder(ObjectCache(str(TESTS / "snapshots/wild/root")))
    agg = Aggregator()
    for _, _obj, s in read_snapshots(str(GO_SNAPS)):
        st = u.unwind(s)
        agg.add(pid=1, tid=1, comm="go", time_ns=0, kernel=(), stack=st, space=None)
    path = str(s.mappings[0].path)
    stats = agg.binaries[next(p for p in agg.binaries if p.endswith("goroutines.stripped"))]
    out = io.StringIO()
    summary(agg, 0, 1.0, out, dict.fromkeys(agg.binaries, "gopclntab"))
    text = out.getvalue()
    assert "gsframe" not in text
    assert "gopclntab" in text                     # the share of the unwind source
    if 100 * stats.reliable / stats.samples < 90:
        assert ADVICE["gopclntab"] in text, (text, path)
    out = io.StringIO()
    summary(agg, 0, 1.0, out, dict.fromkeys(agg.binaries, "none"))
    assert ADVICE["none"] in out.getvalue()
