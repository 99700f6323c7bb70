"""Sinks against the loopback receiver: Pyroscope ingest and OTLP, retries, rejections,
auth headers, and the rotated directory sink."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import proc

from profiler.app.agent.procs import ProcInfo
from profiler.app.agent.receiver import Receiver, parse_pyroscope_name
from profiler.app.agent.sinks import DirectorySink, OtlpSink, PyroscopeSink, pyroscope_name
from profiler.app.agent.spool import Spool
from profiler.app.agent.windows import Shipment, Window, build_shipments, group_key
from profiler.symbolize.resolve import Resolver

WINDOW_NS = 10_000_000_000


def shipments(n_groups: int = 2, window: int = 177_000_000) -> list[Shipment]:
    win = Window(window, window * WINDOW_NS, (window + 1) * WINDOW_NS)
    for i in range(n_groups):
        info = ProcInfo(100 + i, exe=f"/usr/bin/app{i}", service=f"app{i}",
                        container_id="ab" * 32 if i else "")
        g = win.group(group_key(info, "pid"))
        g.exe[info.pid] = f"app{i}"
        for k in range(3 + i):
            g.agg.add(pid=info.pid, tid=info.pid, comm=f"app{i}", time_ns=k,
                      kernel=(0xFFFFFFFF81000000 + 16 * k,), stack=None, space=None)
    return build_shipments(win, Resolver(kallsyms=None), period_ns=52_631_578, host="h1",
                           version="9.9", extra_labels={"region": "eu"}, comments=["m"])


def wait_for(cond: Callable[[], object]) -> None:
    """Sinks ship within milliseconds here: poll often."""
    proc.wait_for(cond, timeout=10.0, interval=0.02)


def common() -> dict[str, object]:
    return {"timeout": 2.0, "retry_min": 0.05, "retry_max": 0.2, "run_id": "0000000000001"}


def test_name_is_a_label_set() -> None:
    name = pyroscope_name("my app", {"service": "my app", "host": "h,1", "pid": "7",
                                     "container_id": ""})
    assert name == "my_app{host=h_1,pid=7}"
    assert parse_pyroscope_name(name) == ("my_app", {"host": "h_1", "pid": "7"})


def test_pyroscope_delivers_in_order_with_auth(tmp_path: Path) -> None:
    recv = Receiver(token="tok", tenant="team-a").start()
    try:
        sink = PyroscopeSink(recv.url, Spool(str(tmp_path / "s"), 1 << 20), freq=19,
                             token="tok", tenant="team-a", **common())  # type: ignore[arg-type]
        sink.start()
        for s in shipments(3):
            sink.submit(s)
        sink.window_done()
        wait_for(lambda: sink.shipped == 3)
        sink.stop(time.monotonic() + 1)
        sink.join(2)
    finally:
        recv.stop()
    got = recv.received
    assert [(r["window"], r["group"], r["count"]) for r in got] == [
        (1_770_000_000_000, 1, 3), (1_770_000_000_000, 2, 3), (1_770_000_000_000, 3, 3)]
    first = got[0]
    assert first["app"] == "app0" and first["name_labels"]["host"] == "h1"
    assert first["name_labels"]["pid"] == "100" and first["name_labels"]["region"] == "eu"
    assert first["from"] == 1_770_000_000 and first["until"] == 1_770_000_010
    assert first["labels"]["service"] == ["app0"] and first["labels"]["agent_version"] == ["9.9"]
    assert got[1]["labels"]["container_id"] == ["ab" * 32]
    assert first["samples"] == 3 and not recv.rejected


def test_basic_auth_from_url_and_wrong_token_is_rejected(tmp_path: Path) -> None:
    recv = Receiver(user="u", password="p w").start()
    try:
        url = recv.url.replace("http://", "http://u:p%20w@")
        ok = PyroscopeSink(url, Spool(str(tmp_path / "a"), 1 << 20), freq=19, **common())  # type: ignore[arg-type]
        bad = PyroscopeSink(recv.url, Spool(str(tmp_path / "b"), 1 << 20), freq=19,
                            token="nope", **common())  # type: ignore[arg-type]
        for sink in (ok, bad):
            sink.start()
            sink.submit(shipments(1)[0])
            sink.window_done()
        wait_for(lambda: ok.shipped == 1 and bad.rejected == 1)
        assert len(bad.spool) == 0 and "401" in bad.last_error   # never retried
    finally:
        for sink in (ok, bad):
            sink.stop(time.monotonic())
        recv.stop()


def test_outage_keeps_windows_and_retries(tmp_path: Path) -> None:
    recv = Receiver()
    recv.start()
    port = recv.port
    recv.stop()                                   # the store is down
    sink = PyroscopeSink(f"http://127.0.0.1:{port}", Spool(str(tmp_path / "s"), 1 << 20),
                         freq=19, **common())  # type: ignore[arg-type]
    sink.start()
    try:
        for w in range(3):
            for s in shipments(2, 177_000_000 + w):
                sink.submit(s)
            sink.window_done()
        wait_for(lambda: sink.failures >= 3)
        assert sink.shipped == 0 and len(sink.spool) == 6 and sink.down_since
        recv = Receiver(port).start()             # back
        wait_for(lambda: sink.shipped == 6)
        windows = [(r["window"], r["group"]) for r in recv.received]
        assert windows == sorted(windows) and len(windows) == 6
        assert not sink.down_since
    finally:
        sink.stop(time.monotonic())
        recv.stop()


def test_server_error_is_retried_not_dropped(tmp_path: Path) -> None:
    recv = Receiver().start()
    calls = {"n": 0}
    original = recv.handle

    def flaky(h):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] <= 2:
            h.rfile.read(int(h.headers.get("Content-Length", "0")))
            return recv._answer(h, 503, "busy")
        return original(h)

    recv.handle = flaky  # type: ignore[method-assign]
    try:
        sink = PyroscopeSink(recv.url, Spool(str(tmp_path / "s"), 1 << 20), freq=19,
                             **common())  # type: ignore[arg-type]
        sink.start()
        sink.submit(shipments(1)[0])
        sink.window_done()
        wait_for(lambda: sink.shipped == 1)
        assert sink.failures == 2 and sink.rejected == 0
    finally:
        sink.stop(time.monotonic())
        recv.stop()


def test_otlp_sink(tmp_path: Path) -> None:
    recv = Receiver().start()
    try:
        sink = OtlpSink(recv.url, Spool(str(tmp_path / "s"), 1 << 20), version="9.9",
                        headers={"X-Extra": "1"}, **common())  # type: ignore[arg-type]
        assert sink.url.endswith("/v1development/profiles")
        sink.start()
        for s in shipments(2):
            sink.submit(s)
        sink.window_done()
        wait_for(lambda: sink.shipped == 2)
    finally:
        sink.stop(time.monotonic())
        recv.stop()
    assert not recv.rejected
    r = recv.received[0]
    assert r["kind"] == "otlp" and r["samples"] == 3
    assert r["resource"] == {"service.name": "app0", "host.name": "h1", "process.pid": 100,
                             "sframe_prof.agent_version": "9.9", "region": "eu"}


def test_stop_gives_up_at_the_deadline(tmp_path: Path) -> None:
    sink = PyroscopeSink("http://127.0.0.1:9", Spool(str(tmp_path / "s"), 1 << 20), freq=19,
                         **common())  # type: ignore[arg-type]
    sink.start()
    sink.submit(shipments(1)[0])
    sink.window_done()
    t0 = time.monotonic()
    sink.stop(t0 + 0.5)
    sink.join(5)
    assert not sink.thread.is_alive() and time.monotonic() - t0 < 3
    assert len(sink.spool) == 1          # kept for the next start


@pytest.mark.parametrize("budget", [1 << 30, 600])
def test_directory_sink_rotates(tmp_path: Path, budget: int) -> None:
    d = DirectorySink(str(tmp_path / "out"), budget)
    for w in range(4):
        for s in shipments(2, 177_000_000 + w):
            d.submit(s)
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert sum((tmp_path / "out" / f).stat().st_size for f in files) <= budget or len(files) == 1
    if budget > 1 << 20:
        assert len(files) == 8 and d.deleted == 0
        assert files[0].startswith("20260202T") and files[0].endswith("-app0-100-0001.pb.gz")
    else:
        assert d.deleted == 8 - len(files) and d.deleted > 0
        assert files[-1].endswith("0002.pb.gz")       # the newest are kept
    again = DirectorySink(str(tmp_path / "out"), budget)   # a restart knows the old files
    assert again.bytes == d.bytes


def test_directory_sink_keeps_at_most_max_files(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import profiler.app.agent.sinks as sinks_mod
    monkeypatch.setattr(sinks_mod, "MAX_FILES", 5)
    d = DirectorySink(str(tmp_path / "out"), 1 << 30)
    for w in range(6):
        for s in shipments(2, 177_000_000 + w):
            d.submit(s)
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(files) == 5 and len(d.files) == 5 and d.deleted == 12 - 5
    assert [name for name, _size in d.files] == files       # the newest five
    again = DirectorySink(str(tmp_path / "out"), 1 << 30)
    assert len(again.files) == 5
