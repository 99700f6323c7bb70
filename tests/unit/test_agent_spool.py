"""The spool: durable items, send order, resume after a crash, byte bound with counted drops."""

from __future__ import annotations

import os
from pathlib import Path

from profiler.app.agent.spool import Spool


def test_put_peek_read_remove(tmp_path: Path) -> None:
    sp = Spool(str(tmp_path), 1 << 20)
    sp.put("00000000000002-r-00001", {"n": 2}, b"two")
    sp.put("00000000000001-r-00001", {"n": 1}, b"one")   # out of order on purpose
    assert len(sp) == 2
    item = sp.peek()
    assert item is not None
    header, payload = sp.read(item)  # type: ignore[misc]
    assert header == {"n": 2} and payload == b"two"     # put order, until a restart
    sp.remove(item)
    assert len(sp) == 1 and not (tmp_path / item.name).exists()


def test_resume_sorts_by_name_and_cleans_partial_writes(tmp_path: Path) -> None:
    sp = Spool(str(tmp_path), 1 << 20)
    for n in (3, 1, 2):
        sp.put(f"{n:014d}-r-00001", {"n": n}, b"x" * n)
    (tmp_path / ".tmp-00000000000004-r-00001").write_bytes(b"half")  # a crash mid-write
    again = Spool(str(tmp_path), 1 << 20)
    assert again.resumed == 3
    order = []
    while (item := again.peek()) is not None:
        header, _ = again.read(item)  # type: ignore[misc]
        order.append(header["n"])
        again.remove(item)
    assert order == [1, 2, 3]
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())


def test_bounded_in_bytes_oldest_dropped_and_counted(tmp_path: Path) -> None:
    sp = Spool(str(tmp_path), 3000)
    for n in range(10):
        sp.put(f"{n:014d}-r-00001", {"n": n}, b"p" * 900)
    assert sp.bytes <= 3000
    assert sp.dropped == 10 - len(sp)
    first = sp.peek()
    assert first is not None and first.name.startswith(f"{sp.dropped:014d}")
    assert len(list(tmp_path.iterdir())) == len(sp)


def test_damaged_item_is_removed(tmp_path: Path) -> None:
    sp = Spool(str(tmp_path), 1 << 20)
    sp.put("00000000000001-r-00001", {}, b"ok")
    item = sp.peek()
    assert item is not None
    (tmp_path / item.name).write_bytes(b"garbage")
    assert sp.read(item) is None
    assert len(sp) == 0


def test_item_vanished_meanwhile(tmp_path: Path) -> None:
    sp = Spool(str(tmp_path), 1 << 20)
    sp.put("00000000000001-r-00001", {}, b"ok")
    item = sp.peek()
    assert item is not None
    os.unlink(tmp_path / item.name)
    assert sp.read(item) is None and len(sp) == 0
