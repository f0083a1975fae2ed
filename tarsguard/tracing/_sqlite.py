"""The SQLite trace sink (indexed by time, decision and model; written by a background thread) and its reader."""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import queue
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path

from .._types import Decision
from ._record import TraceRecord
from ._sink import SinkStatus

__all__ = ["SCHEMA", "SQLiteSink", "connect_readonly", "iter_sqlite", "sqlite_path"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    verdict_id   TEXT PRIMARY KEY,
    created_at   REAL NOT NULL,      -- Unix seconds (UTC) when the check started
    decision     TEXT NOT NULL,      -- answered | declined | partial | undetermined
    model        TEXT,
    backend      TEXT,
    confidence   REAL NOT NULL,
    allowed      INTEGER NOT NULL,   -- 1 when answered, or failed under on_error="allow"
    total_ms     REAL,
    error_type   TEXT,               -- set when the check failed
    error_policy TEXT,               -- "allow" marks a bypass (failed open)
    record       TEXT NOT NULL       -- the whole trace record as JSON
);
CREATE INDEX IF NOT EXISTS verdicts_by_time ON verdicts (created_at);
CREATE INDEX IF NOT EXISTS verdicts_by_decision ON verdicts (decision, created_at);
CREATE INDEX IF NOT EXISTS verdicts_by_model ON verdicts (model, created_at);
"""
_COLUMNS = (
    "verdict_id, created_at, decision, model, backend, confidence, allowed, total_ms, error_type, error_policy, record"
)
_ROWS_PER_INSERT = 80
"""Rows in one INSERT: 80 x 11 parameters stays under 999, the smallest limit SQLite builds have had."""


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert(rows: int) -> str:
    group = "(" + ", ".join("?" * len(_COLUMNS.split(", "))) + ")"
    return f"INSERT OR IGNORE INTO verdicts ({_COLUMNS}) VALUES {', '.join([group] * rows)}"


_PAGE_SIZE = 16384
_STOP = object()
_Row = tuple[object, ...]
"""A record as the values of the verdicts table's columns, in ``_COLUMNS`` order."""
_live_sinks: weakref.WeakSet[SQLiteSink] = weakref.WeakSet()


def sqlite_path(spec: str) -> Path:
    """The file of a ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` URL (or a plain path)."""
    path = spec[len("sqlite:///") :] if spec.startswith("sqlite:///") else spec
    return Path(path).expanduser()


class SQLiteSink:
    """Stores records in a SQLite database (WAL mode), one row per verdict, queryable by time, decision, model.

    ``write`` serialises the record and queues the row; a background thread commits queued rows in batches
    (gathered for up to ``linger`` seconds; ``flush()`` and ``close()`` cut the wait short), so a check never waits
    for the disk. At most ``max_pending`` records wait; beyond that new ones are dropped and counted. Pending
    records are flushed by ``flush()``, ``close()`` and at interpreter exit; a process killed outright loses what
    was still queued (committed rows are safe). Many processes may write one database. ``pragmas`` are applied to
    each connection (e.g. ``{"synchronous": "FULL"}``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_pending: int = 10_000,
        batch_size: int = 512,
        busy_timeout: float = 30.0,
        linger: float = 0.05,
        pragmas: Mapping[str, str | int] | None = None,
    ) -> None:
        if max_pending < 1 or batch_size < 1:
            raise ValueError("max_pending and batch_size must be >= 1")
        self.path = sqlite_path(os.fspath(path))
        self.name = f"sqlite:{self.path}"
        self.status = SinkStatus(self.name)
        self._max_pending = max_pending
        self._batch_size = batch_size
        self._busy_timeout = busy_timeout
        self._linger = linger
        self._pragmas = dict(pragmas or {})
        self._start_lock = threading.Lock()
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._wake = threading.Event()
        """Set by ``flush()`` and ``close()``: the writer stops gathering a batch and commits at once."""
        self._thread: threading.Thread | None = None
        self._closed = False
        _live_sinks.add(self)

    def write(self, record: TraceRecord) -> None:
        """Queue ``record``'s row for the writer thread; drops it (counted) if too many are pending."""
        if self._closed:
            raise ValueError(f"{self.name} is closed")
        if self._queue.qsize() >= self._max_pending:
            self.status.dropped()
            return
        # Serialised here, not in the writer: the writer thread then holds the interpreter lock only briefly,
        # and each time it takes the lock it pauses the thread running the checks.
        self._queue.put(_row(record))
        if self._thread is None:
            self._start()

    def write_many(self, records: Sequence[TraceRecord]) -> None:
        """Queue each of ``records``, as ``write`` does."""
        for record in records:
            self.write(record)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record queued so far is committed (or has failed); ``False`` on timeout."""
        if self._thread is None:
            return True
        done = threading.Event()
        self._queue.put(done)
        self._wake.set()
        return done.wait(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Commit what is pending and stop the writer thread; later writes fail."""
        with self._start_lock:
            self._closed = True
            thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(_STOP)
            self._wake.set()
            thread.join(timeout)

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name=f"tarsguard-trace-{self.path.name}", daemon=True)
                self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False)
        try:
            # Only a new, empty database takes it: a record (~5 KB) then fits one page instead of spilling over
            # two, which makes an insert about a fifth cheaper.
            conn.execute(f"PRAGMA page_size={_PAGE_SIZE}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            for key, value in self._pragmas.items():
                if not key.replace("_", "").isalnum():
                    raise ValueError(f"invalid pragma name {key!r}")
                conn.execute(f"PRAGMA {key}={value!r}" if isinstance(value, str) else f"PRAGMA {key}={int(value)}")
            conn.executescript(f"BEGIN IMMEDIATE;{SCHEMA}COMMIT;")
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        stop = False
        while not stop:
            items = [self._queue.get()]
            if self._linger > 0 and isinstance(items[0], tuple):
                # Let a batch gather (one transaction and one wake-up for many records), unless a flush is waiting.
                self._wake.wait(self._linger)
            # A flush asked for after this point has its marker queued after what is taken now: it wakes the next
            # batch instead.
            self._wake.clear()
            while len(items) < self._batch_size:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            rows = [item for item in items if isinstance(item, tuple)]
            if rows:
                conn = self._commit(conn, rows)
            for item in items:
                if isinstance(item, threading.Event):
                    item.set()
                elif item is _STOP:
                    stop = True
        if conn is not None:
            conn.close()

    def _commit(self, conn: sqlite3.Connection | None, rows: list[_Row]) -> sqlite3.Connection | None:
        """Insert ``rows`` in one transaction; returns the connection to reuse (``None`` after a failure).

        SQLite can answer "database is locked" at once, without waiting, when several processes open or
        checkpoint a WAL database together; such a batch is tried again with backoff for up to the busy timeout.
        """
        deadline = time.monotonic() + self._busy_timeout
        pause = 0.01
        while True:
            try:
                if conn is None:
                    conn = self._connect()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    # Many rows per statement: each statement lets go of the interpreter lock and takes it back,
                    # and every take-back pauses the thread running the checks.
                    for start in range(0, len(rows), _ROWS_PER_INSERT):
                        chunk = rows[start : start + _ROWS_PER_INSERT]
                        conn.execute(_insert(len(chunk)), [value for row in chunk for value in row])
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:  # SQLite may already have rolled back (a full disk does)
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise
                self.status.wrote(len(rows))
                return conn
            except Exception as exc:  # a failing disk must not end the writer
                if conn is not None:
                    conn.close()
                    conn = None
                if _contended(exc) and time.monotonic() + pause < deadline:
                    time.sleep(pause)
                    pause = min(pause * 2, 1.0)
                    continue
                self.status.failed(exc, len(rows))
                return None

    def _after_fork(self) -> None:
        # The writer thread did not survive the fork; the child starts its own on its first write.
        self._start_lock = threading.Lock()
        self._queue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._thread = None

    def __repr__(self) -> str:
        return f"SQLiteSink({str(self.path)!r})"


def _contended(exc: Exception) -> bool:
    """Whether ``exc`` is SQLite reporting another connection's lock (worth trying again), not a real fault."""
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def _row(record: TraceRecord) -> _Row:
    trace = record.trace
    error = trace.error
    return (
        trace.verdict_id,
        trace.created_at.timestamp(),
        record.decision.value,
        trace.model,
        trace.backend,
        record.confidence,
        int(record.allowed),
        trace.timings.total_ms,
        None if error is None else error.type,
        None if error is None else error.policy,
        record.model_dump_json(),
    )


def _flush_all() -> None:
    for sink in list(_live_sinks):
        sink.close()


def _reset_after_fork() -> None:
    for sink in list(_live_sinks):
        sink._after_fork()


atexit.register(_flush_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


# -- reading ----------------------------------------------------------------------------------------------


def connect_readonly(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A read-only connection to a trace database."""
    uri = Path(path).expanduser().resolve().as_uri() + "?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=30.0)


def iter_sqlite(
    conn: sqlite3.Connection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    decision: Decision | None = None,
    after_rowid: int = 0,
) -> Iterator[tuple[int, TraceRecord]]:
    """``(rowid, record)`` pairs in insertion order, filtered through the indexes."""
    clauses = ["rowid > ?"]
    args: list[object] = [after_rowid]
    if since is not None:
        clauses.append("created_at >= ?")
        args.append(since.timestamp())
    if until is not None:
        clauses.append("created_at < ?")
        args.append(until.timestamp())
    if decision is not None:
        clauses.append("decision = ?")
        args.append(decision.value)
    query = f"SELECT rowid, record FROM verdicts WHERE {' AND '.join(clauses)} ORDER BY rowid"
    for rowid, text in conn.execute(query, args):
        yield rowid, TraceRecord.model_validate_json(text)
