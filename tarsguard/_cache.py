"""The verdict cache: an in-process LRU with a time to live, optionally backed by a shared store."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
import unicodedata
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from ._exceptions import ConfigurationError
from ._types import Decision, SamplingParams, Timings, Verdict
from .tracing._redact import Redactor, redact_builtin

__all__ = ["CacheStats", "CacheStore", "SQLiteCacheStore", "VerdictCache", "cache_key"]

SQLITE_PREFIX = "sqlite:///"
DEFAULT_BUSY_TIMEOUT = 0.5
"""Seconds a SQLite store waits for a database another process holds locked before it gives up on a lookup or write."""

DEFAULT_STORE_TIMEOUT = 1.0
"""Seconds a check waits at most for the shared store to answer a lookup, or to take a write."""

logger = logging.getLogger("tarsguard")
_T = TypeVar("_T")


@runtime_checkable
class CacheStore(Protocol):
    """A shared place for cached verdicts (JSON text by key), for caches in several processes."""

    def get(self, key: str, now: float) -> str | None:
        """The verdict stored under ``key`` unless it expired before ``now`` (epoch seconds)."""
        ...

    def set(self, key: str, value: str, expires_at: float) -> None:
        """Store ``value`` under ``key`` until ``expires_at`` (epoch seconds)."""
        ...

    def close(self) -> None:
        """Release the store's resources."""
        ...


class SQLiteCacheStore:
    """A ``CacheStore`` in one SQLite file, shared by every process that opens it (WAL mode).

    The file and its ``-wal`` and ``-shm`` companions are created readable by their owner only (0600). A lookup or
    write waits at most ``busy_timeout`` seconds (or its own ``timeout``, if shorter) for a database that another
    process holds locked, then fails with ``sqlite3.OperationalError``.
    """

    def __init__(
        self, path: str | Path, *, max_entries: int = 100_000, busy_timeout: float = DEFAULT_BUSY_TIMEOUT
    ) -> None:
        self.path = Path(path)
        self.max_entries = max_entries
        self.busy_timeout = busy_timeout
        self._lock = threading.Lock()
        try:
            if not self.path.exists():
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                # SQLite gives the -wal and -shm files the database file's permissions.
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
            self._db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=max(busy_timeout, 1.0)
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL NOT NULL)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS verdicts_expires ON verdicts (expires)")
        except (OSError, sqlite3.Error) as exc:
            raise ConfigurationError(f"cannot open the verdict cache at {self.path}: {exc}") from exc
        self._writes = 0

    def get(self, key: str, now: float, *, timeout: float | None = None) -> str | None:
        """The verdict stored under ``key`` unless it expired before ``now``."""
        with self._locked(timeout):
            row = self._db.execute("SELECT value FROM verdicts WHERE key = ? AND expires > ?", (key, now)).fetchone()
        return None if row is None else str(row[0])

    def set(self, key: str, value: str, expires_at: float, *, timeout: float | None = None) -> None:
        """Store ``value`` under ``key``; expired rows and the oldest beyond ``max_entries`` are pruned now and then."""
        with self._locked(timeout):
            self._db.execute("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?)", (key, value, expires_at))
            self._writes += 1
            if self._writes % 1000 == 0:
                self._db.execute("DELETE FROM verdicts WHERE expires <= ?", (time.time(),))
                oldest = "SELECT key FROM verdicts ORDER BY expires DESC LIMIT -1 OFFSET ?"
                self._db.execute(f"DELETE FROM verdicts WHERE key IN ({oldest})", (self.max_entries,))

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _locked(self, timeout: float | None) -> Iterator[None]:
        """Hold the connection, with SQLite's busy timeout set to the shorter of ``busy_timeout`` and ``timeout``."""
        wait = self.busy_timeout if timeout is None else max(0.0, min(self.busy_timeout, timeout))
        if not self._lock.acquire(timeout=wait):
            raise sqlite3.OperationalError(f"the cache store stayed busy for {wait:g} s")
        try:
            self._db.execute(f"PRAGMA busy_timeout={int(wait * 1000)}")
            yield
        finally:
            self._lock.release()

    def __repr__(self) -> str:
        return f"SQLiteCacheStore({str(self.path)!r})"


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Lookups a cache answered (``hits``) and did not (``misses``), its in-process size, and its store's failures.

    ``errors`` counts lookups and writes the shared store failed (or did not finish in time): each was skipped, and
    the check went on without it; ``last_error`` describes the latest.
    """

    hits: int
    misses: int
    size: int
    errors: int = 0
    last_error: str | None = None


class VerdictCache:
    """Verdicts by conversation, model, sampling parameters and detector: an LRU of ``maxsize`` with a TTL.

    Only settled verdicts (answered, declined, partial) are kept; failures and undetermined verdicts never
    are. A ``store`` (a ``CacheStore`` or ``"sqlite:///path.db"``) shares verdicts across processes; the text it
    keeps (answer, reasoning, evidence, raw output) is redacted first, as traces are. One cache may serve several
    guards. Thread-safe.

    A store that fails (a corrupt file, a full disk, a locked database, a row it cannot read) never fails a check:
    the lookup or write is skipped, the first failure is logged, and every one is counted (``stats``). A store
    lookup or write that takes longer than ``store_timeout`` seconds (or, in a guard's check, than the check can
    spare: half its remaining time for a lookup, what is left of it for a write) is given up the same way.
    """

    def __init__(
        self,
        maxsize: int = 1024,
        ttl: float = 3600.0,
        *,
        store: CacheStore | str | None = None,
        store_timeout: float = DEFAULT_STORE_TIMEOUT,
    ) -> None:
        if maxsize < 1:
            raise ConfigurationError(f"VerdictCache maxsize must be >= 1; got {maxsize}")
        if ttl <= 0:
            raise ConfigurationError(f"VerdictCache ttl must be positive seconds; got {ttl}")
        if not store_timeout > 0:
            raise ConfigurationError(f"VerdictCache store_timeout must be positive seconds; got {store_timeout}")
        self.store_timeout = store_timeout
        self.maxsize = maxsize
        self.ttl = ttl
        self.store = _store(store)
        self._entries: OrderedDict[str, tuple[float, Verdict]] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._errors = 0
        self._last_error: str | None = None

    @property
    def stats(self) -> CacheStats:
        """Hit and miss counts since the cache was made, its size, and the store's failures."""
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._entries), self._errors, self._last_error)

    def get(self, key: str) -> Verdict | None:
        """A fresh copy of the verdict cached under ``key``, marked as a hit; ``None`` (a miss) if none."""
        started = time.perf_counter()
        now = time.time()
        found = self._recall(key, now)
        if found is None and self.store is not None:
            found = self._load(key, now, None)
        return self._answer(key, found, started)

    async def aget(self, key: str, *, timeout: float | None = None) -> Verdict | None:
        """``get`` for a running event loop: the store is read on a worker thread, for at most ``timeout`` seconds
        (a lookup that takes longer is a miss)."""
        started = time.perf_counter()
        now = time.time()
        found = self._recall(key, now)
        if found is None and self.store is not None:
            found = await self._off_loop(self._load, (key, now, timeout), timeout, None)
        return self._answer(key, found, started)

    def put(self, key: str, verdict: Verdict, *, redactor: Redactor | None = redact_builtin) -> bool:
        """Keep ``verdict`` under ``key`` if it is settled; returns whether it was kept.

        The store receives it with its text passed through ``redactor`` (the built-in redactions unless given).
        """
        if not self._settled(verdict):
            return False
        expires = time.time() + self.ttl
        self._remember(key, verdict, expires)
        if self.store is not None:
            self._save(key, verdict, expires, redactor, None)
        return True

    async def aput(
        self, key: str, verdict: Verdict, *, timeout: float | None = None, redactor: Redactor | None = redact_builtin
    ) -> bool:
        """``put`` for a running event loop: the store is written on a worker thread, for at most ``timeout``
        seconds (a write that takes longer is skipped)."""
        if not self._settled(verdict):
            return False
        expires = time.time() + self.ttl
        self._remember(key, verdict, expires)
        if self.store is not None:
            await self._off_loop(self._save, (key, verdict, expires, redactor, timeout), timeout, None)
        return True

    def clear(self) -> None:
        """Forget every in-process entry (a shared store keeps its own)."""
        with self._lock:
            self._entries.clear()

    def close(self) -> None:
        """Close the shared store, if any."""
        if self.store is not None:
            self.store.close()

    @staticmethod
    def _settled(verdict: Verdict) -> bool:
        return verdict.decision is not Decision.UNDETERMINED and verdict.trace.error is None

    def _recall(self, key: str, now: float) -> Verdict | None:
        """The fresh in-process entry under ``key``, if any."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] <= now:
                del self._entries[key]
                entry = None
            if entry is not None:
                self._entries.move_to_end(key)
        return entry[1] if entry is not None else None

    def _answer(self, key: str, found: Verdict | None, started: float) -> Verdict | None:
        with self._lock:
            if found is None:
                self._misses += 1
                return None
            self._hits += 1
        return _as_hit(found, (time.perf_counter() - started) * 1000)

    def _load(self, key: str, now: float, timeout: float | None) -> Verdict | None:
        """The verdict the store holds under ``key``; ``None`` when it holds none or fails."""
        assert self.store is not None
        try:
            if isinstance(self.store, SQLiteCacheStore):
                text = self.store.get(key, now, timeout=timeout)
            else:
                text = self.store.get(key, now)
            if text is None:
                return None
            found = Verdict.model_validate_json(text)
        except Exception as exc:
            self._failed("read", exc)
            return None
        self._remember(key, found, now + self.ttl)
        return found

    def _save(
        self, key: str, verdict: Verdict, expires: float, redactor: Redactor | None, timeout: float | None
    ) -> None:
        """Write ``verdict`` (redacted) to the store; a failure is counted, not raised."""
        assert self.store is not None
        try:
            text = _stored_text(verdict, redactor)
            if isinstance(self.store, SQLiteCacheStore):
                self.store.set(key, text, expires, timeout=timeout)
            else:
                self.store.set(key, text, expires)
        except Exception as exc:
            self._failed("write", exc)

    async def _off_loop(
        self, work: Callable[..., _T], args: tuple[object, ...], timeout: float | None, default: _T
    ) -> _T:
        """``work(*args)`` on a worker thread, or ``default`` if it does not finish within ``timeout`` seconds (and
        ``store_timeout``)."""
        timeout = self.store_timeout if timeout is None else min(timeout, self.store_timeout)
        if timeout <= 0:
            self._failed("lookup or write", TimeoutError("no time was left for it"))
            return default
        try:
            return await asyncio.wait_for(asyncio.to_thread(work, *args), timeout)
        except TimeoutError:
            self._failed("lookup or write", TimeoutError(f"it did not finish within {timeout:g} s"))
            return default

    def _failed(self, what: str, error: BaseException) -> None:
        message = f"{type(error).__name__}: {error}"
        with self._lock:
            first = self._errors == 0
            self._errors += 1
            self._last_error = message
        if first:
            logger.warning(
                "verdict cache store %r failed a %s (%s); checks go on without it, and further failures are only "
                "counted (VerdictCache.stats)",
                self.store,
                what,
                message,
            )

    def _remember(self, key: str, verdict: Verdict, expires: float) -> None:
        with self._lock:
            self._entries[key] = (expires, verdict)
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def __repr__(self) -> str:
        return f"VerdictCache(maxsize={self.maxsize}, ttl={self.ttl:g}, store={self.store!r})"


def _stored_text(verdict: Verdict, redactor: Redactor | None) -> str:
    """The JSON a store keeps for ``verdict``: its text redacted as a trace's is."""
    if redactor is not None:
        from .tracing._record import build_record

        record = build_record(verdict, redactor, 1.0, None)
        return record.model_dump_json(exclude={"prompt", "sample_rate"})
    return verdict.model_dump_json()


def resolve_cache(spec: VerdictCache | bool | str | None) -> VerdictCache | None:
    """The cache a ``Guard(cache=...)`` argument asks for: ``True``, a ``sqlite:///`` URL, or a ``VerdictCache``."""
    if spec is None or spec is False:
        return None
    if spec is True:
        return VerdictCache()
    if isinstance(spec, VerdictCache):
        return spec
    if isinstance(spec, str):
        return VerdictCache(store=spec)
    raise ConfigurationError(f"cache must be True, a VerdictCache or 'sqlite:///path.db'; got {spec!r}")


def cache_key(
    messages: Sequence[Mapping[str, str]], model: str, sampling: SamplingParams, detector: str, variant: str
) -> str:
    """A digest of what decides a verdict: the normalised conversation, model, sampling, detector and options.

    Normalising keeps meaning: Unicode NFC, line endings, and whitespace around each turn. Nothing secret
    goes in (no keys, headers or endpoints' credentials), and only the digest is stored.
    """
    turns = [[m["role"], unicodedata.normalize("NFC", m["content"].replace("\r\n", "\n")).strip()] for m in messages]
    document = [turns, model, sampling.model_dump(mode="json"), detector, variant]
    return hashlib.sha256(json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


def _store(store: CacheStore | str | None) -> CacheStore | None:
    if store is None or isinstance(store, CacheStore):
        return store
    if store.startswith(SQLITE_PREFIX):
        return SQLiteCacheStore(store.removeprefix(SQLITE_PREFIX))
    raise ConfigurationError(f"a cache store is a CacheStore or 'sqlite:///path.db'; got {store!r}")


def _as_hit(verdict: Verdict, lookup_ms: float) -> Verdict:
    trace = verdict.trace.model_copy(
        update={
            "verdict_id": uuid.uuid4().hex,
            "created_at": datetime.now(UTC),
            "cache": "hit",
            "cached_from": verdict.trace.cached_from or verdict.trace.verdict_id,
            "timings": Timings(total_ms=lookup_ms),
            "retries": 0,
        }
    )
    return verdict.model_copy(update={"trace": trace})
