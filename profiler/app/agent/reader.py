"""The reader thread: takes samples from the BPF buffer and snapshots new processes.

A short-lived process must be read (maps, executable, files) while it lives.  The main
loop cannot promise that: building a window's profiles, or the first sample in a big
new binary (its unwind and symbol tables), can keep it busy for a second or more, and
a child started by a build tool lives for a few milliseconds.  So one thread does only
this: it waits on the buffer, and for every PID it has not seen it takes a
:class:`~profiler.unwind.process.Snapshot` at once -- /proc/PID/maps, stat, exe, cgroup, the
vDSO bytes, and open descriptors of the executable files that are not cached yet (an
open descriptor keeps a file reachable after its process is gone).  The records go to
the main loop in order; the main loop models a process from its snapshot.

The thread holds the GIL only briefly: it sleeps in the kernel (epoll) or reads /proc.
While the main loop runs Python code, the interpreter hands the GIL over within its
switch interval (5 ms), so a new process is read within milliseconds of its sample.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict, deque
from typing import Any

from profiler.unwind.process import ProcessTable, Snapshot

POLL_MS = 100
MAX_SNAPSHOTS = 128        # snapshots not consumed yet (each holds a few descriptors)
MAX_SNAPSHOT_BYTES = 8 << 20   # and their maps text (a browser's maps are ~200 KB)
MAX_SEEN = 65536


class Reader:
    """Poll `sampler` in a thread; hand out its records and the snapshots it took."""

    def __init__(self, sampler: Any, table: ProcessTable, *, poll_ms: int = POLL_MS,
                 files: tuple[str, ...] = ("cgroup",)) -> None:
        self.sampler = sampler
        self.table = table
        self.poll_ms = poll_ms
        self.files = files
        self._batches: deque[list[Any]] = deque()
        self._snaps: OrderedDict[int, list[Snapshot]] = OrderedDict()
        self._seen: dict[int, set[str]] = {}      # pid -> thread names seen
        self._exes: dict[int, str] = {}           # pid -> executable at its last snapshot
        self._bytes = 0
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stop = False
        self._finished = False
        self.error: BaseException | None = None
        self.snapshots = 0
        self.thread = threading.Thread(target=self._run, name="sframe-prof-reader",
                                       daemon=True)

    def start(self) -> Reader:
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop and join the thread; records still in the kernel buffer stay there
        (the caller polls the sampler itself from now on)."""
        self._stop = True
        self.thread.join(max(1.0, 4 * self.poll_ms / 1000))
        with self._lock:
            snaps = [s for queue in self._snaps.values() for s in queue]
            self._snaps.clear()
            self._bytes = 0
        for snap in snaps:
            snap.close()

    # -- the thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop:
                records = self.sampler.poll(self.poll_ms)
                if not records:
                    continue
                for r in records:
                    comms = self._seen.get(r.pid)
                    if comms is None:
                        if r.pid > 0:
                            self._take(r.pid, r.comm)
                    elif r.comm not in comms and len(comms) < 64:
                        # a new thread name: a new thread, or an exec (a forked child
                        # sampled before it exec'd).  Only an exec is snapshotted again.
                        comms.add(r.comm)
                        try:
                            exe = os.readlink(f"{self.table.proc}/{r.pid}/exe")
                        except OSError:
                            exe = ""
                        if exe and exe != self._exes.get(r.pid):
                            self._take(r.pid, r.comm)
                with self._lock:
                    self._batches.append(records)
                self._ready.set()
        except BaseException as exc:  # noqa: BLE001 - the main loop reports it
            self.error = exc
            self._ready.set()

    def _take(self, pid: int, comm: str) -> None:
        if pid not in self._seen:
            if len(self._seen) >= MAX_SEEN:
                self._seen.clear()
            self._seen[pid] = {comm}
        snap = self.table.snapshot(pid, self.files)
        self.snapshots += 1
        if len(self._exes) >= MAX_SEEN:
            self._exes.clear()
        self._exes[pid] = snap.exe
        old: list[Snapshot] = []
        with self._lock:
            queue = self._snaps.get(pid)
            if queue is None:
                queue = self._snaps[pid] = []
            queue.append(snap)
            self._bytes += _size(snap)
            if len(queue) > 4:
                old.append(queue.pop(0))
            while self._snaps and (len(self._snaps) > MAX_SNAPSHOTS
                                   or self._bytes > MAX_SNAPSHOT_BYTES):
                old.extend(self._snaps.popitem(last=False)[1])
            self._bytes -= sum(_size(s) for s in old)
        for s in old:
            s.close()

    # -- the main loop's side -----------------------------------------------------------

    # As the sampling loop's source (profiler.app.sampling.Source): a poll waits its
    # whole timeout, so the loop takes the reader's records in batches; after finish()
    # the sampler is polled directly.

    def poll(self, timeout_ms: int) -> list[Any]:
        if self._finished:
            records: list[Any] = self.sampler.poll(timeout_ms)
            return records
        time.sleep(timeout_ms / 1000)
        return self.get(0)

    def take_forks(self) -> list[tuple[int, int]]:
        """Forks are not followed here: the agent identifies every new pid itself."""
        return []

    def finish(self) -> list[Any]:
        """Stop the thread; the records it read and nobody took yet."""
        self.stop()
        self._finished = True
        return self.get(0)


    def get(self, timeout: float) -> list[Any]:
        """The records read since the last call, oldest first; waits up to `timeout`
        seconds for the first one."""
        if timeout > 0:
            self._ready.wait(timeout)
        with self._lock:
            self._ready.clear()
            batches = list(self._batches)
            self._batches.clear()
        if self.error is not None:
            err, self.error = self.error, None
            raise RuntimeError(f"the sample reader failed: {err!r}") from err
        if len(batches) == 1:
            return batches[0]
        return [r for b in batches for r in b]

    def snapshot(self, pid: int) -> Snapshot | None:
        """The oldest snapshot taken for `pid` not handed out yet (the caller closes
        it), if any: first the one of its first sample, then one per new thread name."""
        with self._lock:
            queue = self._snaps.get(pid)
            if not queue:
                return None
            snap = queue.pop(0)
            self._bytes -= _size(snap)
            if not queue:
                del self._snaps[pid]
            return snap

    def expire(self, max_age: float, now: float) -> int:
        """Close snapshots nobody took within `max_age` seconds (their PID was known
        already); returns how many."""
        with self._lock:
            old = [pid for pid, q in self._snaps.items() if now - q[-1].taken > max_age]
            snaps = [s for pid in old for s in self._snaps.pop(pid)]
            self._bytes -= sum(_size(s) for s in snaps)
        for s in snaps:
            s.close()
        return len(snaps)

    def forget(self, pid: int) -> None:
        """`pid` was dropped: its next sample gets a new snapshot (PID reuse)."""
        self._seen.pop(pid, None)
        self._exes.pop(pid, None)
        with self._lock:
            snaps = self._snaps.pop(pid, [])
            self._bytes -= sum(_size(s) for s in snaps)
        for snap in snaps:
            snap.close()


def _size(snap: Snapshot) -> int:
    return len(snap.maps or "") + sum(len(m) for _a, m in snap.memory) + 512
