"""The built wheel carries everything the installed profiler reads at run time."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from helpers.paths import REPO


def test_wheel_contents(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("sframe_prof-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("profiler/bpf/sample.bpf.c", "profiler/bpf/sample.h",
                   "profiler/emit/flamegraph_template.html", "profiler/proto/profile_pb2.py",
                   "profiler/proto/capture_pb2.py", "profiler/app/cli.py"):
        assert needed in names, needed
    entry = [n for n in names if n.endswith("entry_points.txt")]
    assert entry
    text = zipfile.ZipFile(wheel).read(entry[0]).decode()
    assert "sframe-prof = profiler.app.cli:main" in text
