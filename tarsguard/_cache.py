"""The verdict cache: an in-process LRU with a time to live, optionally backed by a shared store."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
import unicodedata
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from ._exceptions import ConfigurationError
from ._types import Decision, SamplingParams, Timings, Verdict

__all__ = ["CacheStats", "CacheStore", "SQLiteCacheStore", "VerdictCache", "cache_key"]

SQLITE_PREFIX = "sqlite:///"


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
    """A ``CacheStore`` in one SQLite file, shared by every process that opens it (WAL mode)."""

    def __init__(self, path: str | Path, *, max_entries: int = 100_000) -> None:
        self.path = Path(path)
        self.max_entries = max_entries
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL NOT NULL)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS verdicts_expires ON verdicts (expires)")
        except (OSError, sqlite3.Error) as exc:
            raise ConfigurationError(f"cannot open the verdict cache at {self.path}: {exc}") from exc
        self._writes = 0

    def get(self, key: str, now: float) -> str | None:
        """The verdict stored under ``key`` unless it expired before ``now``."""
        with self._lock:
            row = self._db.execute("SELECT value FROM verdicts WHERE key = ? AND expires > ?", (key, now)).fetchone()
        return None if row is None else str(row[0])

    def set(self, key: str, value: str, expires_at: float) -> None:
        """Store ``value`` under ``key``; expired rows and the oldest beyond ``max_entries`` are pruned now and then."""
        with self._lock:
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

    def __repr__(self) -> str:
        return f"SQLiteCacheStore({str(self.path)!r})"


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Lookups a cache answered (``hits``) and did not (``misses``), and its in-process size."""

    hits: int
    misses: int
    size: int


class VerdictCache:
    """Verdicts by conversation, model, sampling parameters and detector: an LRU of ``maxsize`` with a TTL.

    Only settled verdicts (answered, declined, partial) are kept; failures and undetermined verdicts never
    are. A ``store`` (a ``CacheStore`` or ``"sqlite:///path.db"``) shares verdicts across processes. One
    cache may serve several guards. Thread-safe.
    """

    def __init__(self, maxsize: int = 1024, ttl: float = 3600.0, *, store: CacheStore | str | None = None) -> None:
        if maxsize < 1:
            raise ConfigurationError(f"VerdictCache maxsize must be >= 1; got {maxsize}")
        if ttl <= 0:
            raise ConfigurationError(f"VerdictCache ttl must be positive seconds; got {ttl}")
        self.maxsize = maxsize
        self.ttl = ttl
        self.store = _store(store)
        self._entries: OrderedDict[str, tuple[float, Verdict]] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    @property
    def stats(self) -> CacheStats:
        """Hit and miss counts since the cache was made, and its size."""
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._entries))

    def get(self, key: str) -> Verdict | None:
        """A fresh copy of the verdict cached under ``key``, marked as a hit; ``None`` (a miss) if none."""
        started = time.perf_counter()
        now = time.time()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] <= now:
                del self._entries[key]
                entry = None
            if entry is not None:
                self._entries.move_to_end(key)
        found = entry[1] if entry is not None else None
        if found is None and self.store is not None:
            text = self.store.get(key, now)
            if text is not None:
                found = Verdict.model_validate_json(text)
                self._remember(key, found, now + self.ttl)
        with self._lock:
            if found is None:
                self._misses += 1
                return None
            self._hits += 1
        return _as_hit(found, (time.perf_counter() - started) * 1000)

    def put(self, key: str, verdict: Verdict) -> bool:
        """Keep ``verdict`` under ``key`` if it is settled; returns whether it was kept."""
        if verdict.decision is Decision.UNDETERMINED or verdict.trace.error is not None:
            return False
        expires = time.time() + self.ttl
        self._remember(key, verdict, expires)
        if self.store is not None:
            self.store.set(key, verdict.model_dump_json(), expires)
        return True

    def clear(self) -> None:
        """Forget every in-process entry (a shared store keeps its own)."""
        with self._lock:
            self._entries.clear()

    def close(self) -> None:
        """Close the shared store, if any."""
        if self.store is not None:
            self.store.close()

    def _remember(self, key: str, verdict: Verdict, expires: float) -> None:
        with self._lock:
            self._entries[key] = (expires, verdict)
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def __repr__(self) -> str:
        return f"VerdictCache(maxsize={self.maxsize}, ttl={self.ttl:g}, store={self.store!r})"


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
