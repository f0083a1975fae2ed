"""The trace sink interface, per-sink failure accounting, and the in-memory sink."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ._record import TraceRecord

__all__ = ["MemorySink", "SinkStats", "SinkStatus", "TraceSink", "logger"]

logger = logging.getLogger("tarsguard.tracing")


@runtime_checkable
class TraceSink(Protocol):
    """Somewhere trace records go.

    ``write`` is called once per kept verdict, on the thread (or event loop) that ran the check: it must return
    quickly, and may raise; the tracer counts and reports the failure and the check still returns its verdict.
    ``close`` flushes what is pending and releases files; writes after it may fail. A sink may also offer
    ``write_many(records)``, storing a batch as ``write`` stores one record; a tracer batches records only when
    every sink offers it (see ``Tracer``), and calls it from the event loop that ran the checks, or from the
    thread that flushes or closes the tracer.
    """

    def write(self, record: TraceRecord) -> None:
        """Store one record, or raise."""
        ...

    def close(self) -> None:
        """Flush and release resources."""
        ...


@dataclass(frozen=True, slots=True)
class SinkStats:
    """How one sink has fared: records stored, records lost to failures, records dropped while it fell behind."""

    sink: str
    written: int
    failed: int
    dropped: int
    last_error: str | None


class SinkStatus:
    """Counts one sink's writes and failures; reports its first failure (and first drop) once, as a warning."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._written = 0
        self._failed = 0
        self._dropped = 0
        self._last_error: str | None = None

    def wrote(self, count: int = 1) -> None:
        """Record ``count`` successful writes."""
        with self._lock:
            self._written += count

    def failed(self, error: BaseException, count: int = 1) -> None:
        """Record ``count`` records lost to ``error``; the first failure is logged, later ones only counted."""
        message = f"{type(error).__name__}: {error}"
        with self._lock:
            first = self._failed == 0
            self._failed += count
            self._last_error = message
        if first:
            logger.warning(
                "trace sink %s failed (%s); checks go on, and further failures are only counted (Tracer.stats())",
                self.name,
                message,
            )

    def dropped(self, count: int = 1) -> None:
        """Record ``count`` records dropped because the sink fell behind; the first drop is logged."""
        with self._lock:
            first = self._dropped == 0
            self._dropped += count
        if first:
            logger.warning(
                "trace sink %s is falling behind and drops records; further drops are only counted (Tracer.stats())",
                self.name,
            )

    def snapshot(self) -> SinkStats:
        """The counts as they are now."""
        with self._lock:
            return SinkStats(self.name, self._written, self._failed, self._dropped, self._last_error)


class MemorySink:
    """Keeps records in a list, for tests and notebooks; thread-safe; ``limit`` keeps only the newest."""

    def __init__(self, limit: int | None = None) -> None:
        if limit is not None and limit < 1:
            raise ValueError("limit must be >= 1 or None")
        self.name = "memory"
        self._limit = limit
        self._lock = threading.Lock()
        self._records: list[TraceRecord] = []

    def write(self, record: TraceRecord) -> None:
        """Keep ``record``."""
        with self._lock:
            self._records.append(record)
            if self._limit is not None and len(self._records) > self._limit:
                del self._records[0]

    @property
    def records(self) -> list[TraceRecord]:
        """A copy of the records kept, oldest first."""
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        """Forget every record."""
        with self._lock:
            self._records.clear()

    def close(self) -> None:
        """Nothing to release."""

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"MemorySink({len(self._records)} records)"
