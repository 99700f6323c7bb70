"""The one sampling loop, run by the CLI's live run, `record` and the agent.

A source hands out the BPF records read since the last poll; a consumer takes them in
batches and, between batches, does its periodic work (the status line, re-reading
maps, closing the agent's windows) and says whether the run goes on.  SIGINT and
SIGTERM end the loop cleanly; at the end the source is drained, so the samples still
in the kernel's buffer are counted too.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from profiler.capture.bcc_source import BpfRecord

DRAIN_POLLS = 3          # polls after the end, for what is still in the buffer
DRAIN_POLL_MS = 20


class Source(Protocol):
    def poll(self, timeout_ms: int) -> Sequence[BpfRecord]: ...

    def take_forks(self) -> list[tuple[int, int]]: ...

    def finish(self) -> Sequence[BpfRecord]: ...


class Consumer(Protocol):
    def consume(self, records: Sequence[BpfRecord]) -> None: ...

    def note_fork(self, parent: int, child: int) -> None: ...

    def tick(self, now: float) -> bool: ...


class SamplerSource:
    """A BpfSampler polled in this thread (the CLI: it unwinds after sampling)."""

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler

    def poll(self, timeout_ms: int) -> Sequence[BpfRecord]:
        records: Sequence[BpfRecord] = self.sampler.poll(timeout_ms)
        return records

    def take_forks(self) -> list[tuple[int, int]]:
        forks: list[tuple[int, int]] = self.sampler.take_forks()
        return forks

    def finish(self) -> Sequence[BpfRecord]:
        return ()


class SamplingLoop:
    """Poll `source` every `poll_ms` and feed `consumer` until the deadline, a signal,
    or the consumer's tick() says the run is over."""

    def __init__(self, source: Source, consumer: Consumer, *, poll_ms: int,
                 duration: float | None = None) -> None:
        self.source = source
        self.consumer = consumer
        self.poll_ms = poll_ms
        self.duration = duration
        self.stopped = False

    def stop(self, *_args: object) -> None:
        """End the loop after the current batch (also the SIGINT/SIGTERM handler)."""
        self.stopped = True

    def run(self) -> None:
        old = {sig: signal.signal(sig, self.stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        deadline = time.monotonic() + self.duration if self.duration else None
        try:
            while not self.stopped:
                self._batch(self.poll_ms)
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                if not self.consumer.tick(now):
                    break
            self.consumer.consume(self.source.finish())
            for _ in range(DRAIN_POLLS):
                self._batch(DRAIN_POLL_MS)
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def _batch(self, timeout_ms: int) -> None:
        records = self.source.poll(timeout_ms)
        for parent, child in self.source.take_forks():
            self.consumer.note_fork(parent, child)
        self.consumer.consume(records)
