"""Reading trace files back: JSONL files (with their rotated siblings) and SQLite databases, and summaries."""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from .._types import Decision
from ._jsonl import JsonlFollower, ReadProblem, iter_jsonl, jsonl_files
from ._record import TraceRecord

__all__ = ["TraceStore", "TraceSummary", "open_traces", "summarize"]

_SQLITE_MAGIC = b"SQLite format 3\x00"


class Follower(Protocol):
    """Follows a store from the moment it was made: what came just before, then what is added."""

    problems: list[ReadProblem]

    def backlog(self, count: int) -> list[TraceRecord]:
        """The last ``count`` records stored before the follower was made, oldest first."""
        ...

    def poll(self) -> list[TraceRecord]:
        """The records added since the last poll."""
        ...

    def close(self) -> None:
        """Stop following."""
        ...


class TraceStore(Protocol):
    """A trace file or database opened for reading."""

    path: Path
    problems: list[ReadProblem]
    """Lines that could not be read (JSONL), filled in as records are read."""

    def records(
        self, *, since: datetime | None = None, until: datetime | None = None, decision: Decision | None = None
    ) -> Iterator[TraceRecord]:
        """Records oldest first, filtered by time window and decision."""
        ...

    def find(self, verdict_id: str) -> list[TraceRecord]:
        """Records whose verdict id is ``verdict_id`` or starts with it."""
        ...

    def follow(self, *, from_start: bool = False) -> Follower:
        """A follower of the records added from now on (from the beginning with ``from_start``)."""
        ...

    def close(self) -> None:
        """Release the file or connection."""
        ...


def open_traces(path: str | os.PathLike[str]) -> TraceStore:
    """Open a JSONL trace file or a SQLite trace database (told apart by content, else by name)."""
    text = os.fspath(path)
    if text.startswith("sqlite:"):
        from ._sqlite import sqlite_path

        return _SQLiteStore(sqlite_path(text))
    resolved = Path(text).expanduser()
    try:
        with open(resolved, "rb") as handle:
            is_sqlite = handle.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    except (FileNotFoundError, IsADirectoryError):
        is_sqlite = resolved.suffix in (".db", ".sqlite", ".sqlite3")
    return _SQLiteStore(resolved) if is_sqlite else _JsonlStore(resolved)


def _in_window(record: TraceRecord, since: datetime | None, until: datetime | None, decision: Decision | None) -> bool:
    created = record.trace.created_at
    return (
        (since is None or created >= since)
        and (until is None or created < until)
        and (decision is None or record.decision is decision)
    )


class _JsonlStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[ReadProblem] = []
        if not any(p.exists() for p in jsonl_files(path)):
            raise FileNotFoundError(f"no trace file at {path}")

    def records(
        self, *, since: datetime | None = None, until: datetime | None = None, decision: Decision | None = None
    ) -> Iterator[TraceRecord]:
        for file in jsonl_files(self.path):
            if file.exists():
                for record in iter_jsonl(file, self.problems):
                    if _in_window(record, since, until, decision):
                        yield record

    def find(self, verdict_id: str) -> list[TraceRecord]:
        return [r for r in self.records() if r.trace.verdict_id.startswith(verdict_id)]

    def follow(self, *, from_start: bool = False) -> Follower:
        return JsonlFollower(self.path, from_start=from_start)

    def close(self) -> None:
        pass


class _SQLiteStore:
    def __init__(self, path: Path) -> None:
        from ._sqlite import connect_readonly

        if not path.exists():
            raise FileNotFoundError(f"no trace database at {path}")
        self.path = path
        self.problems: list[ReadProblem] = []
        self._conn = connect_readonly(path)

    def records(
        self, *, since: datetime | None = None, until: datetime | None = None, decision: Decision | None = None
    ) -> Iterator[TraceRecord]:
        from ._sqlite import iter_sqlite

        for _, record in iter_sqlite(self._conn, since=since, until=until, decision=decision):
            yield record

    def find(self, verdict_id: str) -> list[TraceRecord]:
        escaped = verdict_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._conn.execute(
            "SELECT record FROM verdicts WHERE verdict_id LIKE ? ESCAPE '\\' ORDER BY rowid", (escaped + "%",)
        )
        return [TraceRecord.model_validate_json(text) for (text,) in rows]

    def follow(self, *, from_start: bool = False) -> Follower:
        return _SQLiteFollower(self._conn, from_start=from_start)

    def close(self) -> None:
        self._conn.close()


class _SQLiteFollower:
    def __init__(self, conn: object, *, from_start: bool) -> None:
        import sqlite3

        assert isinstance(conn, sqlite3.Connection)
        self._conn = conn
        self.problems: list[ReadProblem] = []
        self._start = conn.execute("SELECT coalesce(max(rowid), 0) FROM verdicts").fetchone()[0]
        self._last = 0 if from_start else self._start

    def backlog(self, count: int) -> list[TraceRecord]:
        rows = self._conn.execute(
            "SELECT record FROM verdicts WHERE rowid <= ? ORDER BY rowid DESC LIMIT ?", (self._start, max(count, 0))
        ).fetchall()
        return [TraceRecord.model_validate_json(text) for (text,) in reversed(rows)]

    def poll(self) -> list[TraceRecord]:
        from ._sqlite import iter_sqlite

        records = []
        for rowid, record in iter_sqlite(self._conn, after_rowid=self._last):
            self._last = rowid
            records.append(record)
        return records

    def close(self) -> None:
        pass


@dataclass
class TraceSummary:
    """Counts and latency percentiles over a set of trace records."""

    total: int = 0
    estimated_total: float = 0.0
    """``total`` with each sampled record weighted by the inverse of its sample rate."""
    by_decision: Counter[str] = field(default_factory=Counter)
    by_model: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    """Checks that failed (an undetermined verdict recording the error)."""
    bypasses: int = 0
    """Failed checks let through by ``on_error="allow"``."""
    latency_ms: dict[str, float] = field(default_factory=dict)
    first: datetime | None = None
    last: datetime | None = None

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready view."""
        return {
            "total": self.total,
            "estimated_total": round(self.estimated_total, 1),
            "by_decision": {d.value: self.by_decision.get(d.value, 0) for d in Decision},
            "by_model": dict(self.by_model),
            "errors": self.errors,
            "bypasses": self.bypasses,
            "latency_ms": self.latency_ms,
            "first": self.first.isoformat() if self.first else None,
            "last": self.last.isoformat() if self.last else None,
        }


def summarize(records: Iterable[TraceRecord], percentiles: Iterable[int] = (50, 90, 99)) -> TraceSummary:
    """Counts by decision and model, error and bypass counts, and total-latency percentiles (nearest rank)."""
    summary = TraceSummary()
    latencies: list[float] = []
    for record in records:
        trace = record.trace
        summary.total += 1
        summary.estimated_total += 1 / record.sample_rate if record.sample_rate > 0 else 1
        summary.by_decision[record.decision.value] += 1
        summary.by_model[trace.model or "-"] += 1
        if trace.error is not None:
            summary.errors += 1
            summary.bypasses += trace.error.policy == "allow"
        latencies.append(trace.timings.total_ms)
        created = trace.created_at
        summary.first = created if summary.first is None or created < summary.first else summary.first
        summary.last = created if summary.last is None or created > summary.last else summary.last
    latencies.sort()
    for p in percentiles:
        if latencies:
            summary.latency_ms[f"p{p}"] = round(latencies[max(0, math.ceil(p / 100 * len(latencies)) - 1)], 3)
    return summary
