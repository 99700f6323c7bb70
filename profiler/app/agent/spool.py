"""The spool: a bounded on-disk queue of payloads, one directory per network sink.

Every payload is written to the spool before anything tries to send it, so a profile
survives a sink outage, a slow sink and a restart of the agent (SIGKILL included): a
new agent finds the items and sends them first, oldest first.

* An item is one file, ``<window ms>-<run id>-<seq>.item``: names sort in send order
  (window start, then the run that made it, then its place in the window).  The file
  is ``SFSPOOL1\\n``, a 4-byte big-endian header length, a JSON header (where and how to
  send it) and the payload.  It is written to a temporary name, fsync'd and renamed,
  so a crash leaves either a whole item or a ``.tmp`` file that the next start
  deletes.
* The spool is bounded in bytes: an item that would exceed the budget drops the
  oldest items first; drops are counted (and logged by the agent).
* Delivery is at least once: an item is deleted only after the sink accepted it, so a
  crash between the two sends it again.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

MAGIC = b"SFSPOOL1\n"


@dataclass(frozen=True, slots=True)
class Item:
    name: str
    size: int


class SpoolError(Exception):
    pass


class Spool:
    def __init__(self, directory: str, max_bytes: int) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._items: deque[Item] = deque()
        self.bytes = 0
        self.dropped = 0          # items dropped to stay under max_bytes
        self.resumed = 0          # items found at start
        self.put_count = 0
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._resume()

    def _resume(self) -> None:
        items = []
        for name in os.listdir(self.dir):
            path = os.path.join(self.dir, name)
            if name.startswith(".tmp-"):
                try:
                    os.unlink(path)      # a write cut short by a crash
                except OSError:
                    pass
                continue
            if not name.endswith(".item"):
                continue
            try:
                size = os.stat(path).st_size
            except OSError:
                continue
            items.append(Item(name, size))
        items.sort(key=lambda it: it.name)
        self._items.extend(items)
        self.bytes = sum(it.size for it in items)
        self.resumed = len(items)

    def __len__(self) -> int:
        return len(self._items)

    def put(self, name: str, header: dict[str, Any], payload: bytes) -> int:
        """Store one payload durably; returns how many old items were dropped for room."""
        head = json.dumps(header, sort_keys=True).encode()
        blob = MAGIC + struct.pack(">I", len(head)) + head + payload
        final = os.path.join(self.dir, name + ".item")
        tmp = os.path.join(self.dir, f".tmp-{name}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(blob)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        dropped = 0
        with self._lock:
            self._items.append(Item(name + ".item", len(blob)))
            self.bytes += len(blob)
            self.put_count += 1
            while self.bytes > self.max_bytes and len(self._items) > 1:
                old = self._items.popleft()
                self.bytes -= old.size
                self._unlink(old)
                dropped += 1
            self.dropped += dropped
        return dropped

    def sync_dir(self) -> None:
        """fsync the directory, making the renames of put() durable (once per window)."""
        try:
            fd = os.open(self.dir, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def peek(self) -> Item | None:
        with self._lock:
            return self._items[0] if self._items else None

    def read(self, item: Item) -> tuple[dict[str, Any], bytes] | None:
        """The item's header and payload; None if it is gone or damaged (then removed)."""
        try:
            with open(os.path.join(self.dir, item.name), "rb") as f:
                blob = f.read()
        except FileNotFoundError:
            self._forget(item)
            return None
        try:
            if not blob.startswith(MAGIC):
                raise SpoolError("bad magic")
            (hlen,) = struct.unpack_from(">I", blob, len(MAGIC))
            start = len(MAGIC) + 4
            header = json.loads(blob[start:start + hlen])
            return header, blob[start + hlen:]
        except (SpoolError, struct.error, ValueError):
            self.remove(item)
            return None

    def remove(self, item: Item) -> None:
        """Delete an item the sink accepted (or that can never be sent)."""
        with self._lock:
            if self._forget_locked(item):
                self._unlink(item)

    def _forget(self, item: Item) -> None:
        with self._lock:
            self._forget_locked(item)

    def _forget_locked(self, item: Item) -> bool:
        try:
            self._items.remove(item)
        except ValueError:
            return False        # dropped for room meanwhile
        self.bytes -= item.size
        return True

    def _unlink(self, item: Item) -> None:
        try:
            os.unlink(os.path.join(self.dir, item.name))
        except FileNotFoundError:
            pass
