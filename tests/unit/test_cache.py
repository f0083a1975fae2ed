"""The verdict cache: hits, misses, what the key holds, TTL and LRU, and a store shared across processes."""

from __future__ import annotations

import logging
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tarsguard import (
    AsyncGuard,
    BackendUnavailable,
    ConfigurationError,
    Decision,
    Guard,
    SQLiteCacheStore,
    VerdictCache,
)
from tarsguard.testing import PhraseDetector, ScriptedBackend, ScriptedServer

ANSWERED = "<think>\nharmless\n</think>\n\nSure. Run `kill <pid>`."
DECLINED = "<think>\nharmful\n</think>\n\nI can't help with that."


def guard(backend: ScriptedBackend, cache: object = True, **options: object) -> Guard:
    return Guard(backend=backend, cache=cache, **options)  # type: ignore[arg-type]


def test_a_repeated_prompt_is_a_hit() -> None:
    backend = ScriptedBackend([ANSWERED])
    with guard(backend) as g:
        first = g.check("How do I kill a Python process?")
        second = g.check("How do I kill a Python process?")
        assert g.cache is not None and g.cache.stats.hits == 1 and g.cache.stats.misses == 1
    assert len(backend.requests) == 1
    assert first.trace.cache == "miss" and second.trace.cache == "hit"
    assert second.trace.cached_from == first.trace.verdict_id != second.trace.verdict_id
    assert (second.decision, second.answer, second.confidence) == (first.decision, first.answer, first.confidence)
    assert second.trace.timings.total_ms < first.trace.timings.total_ms


def test_no_cache_no_cache_field() -> None:
    with Guard(backend=ScriptedBackend([ANSWERED])) as g:
        assert g.cache is None and g.check("hi").trace.cache is None


def test_the_key_is_the_normalised_conversation_model_sampling_and_detector() -> None:
    backend = ScriptedBackend([ANSWERED])
    with guard(backend) as g:
        g.check("How do I stop it?")
        assert g.check("  How do I stop it?\r\n").trace.cache == "hit"
        assert g.check([{"role": "user", "content": "How do I stop it?"}]).trace.cache == "hit"
        assert g.check("How do I stop it!").trace.cache == "miss"
        assert g.check("How do I stop it?", temperature=0.0).trace.cache == "miss"
        assert g.check("How do I stop it?", early_stop=True).trace.cache == "miss"
        conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How do I stop it?"}]
        assert g.check(conversation).trace.cache == "miss"
    shared = VerdictCache()
    with guard(ScriptedBackend([ANSWERED]), shared) as a, guard(ScriptedBackend([ANSWERED]), shared) as b:
        a.check("hi")
        assert b.check("hi").trace.cache == "hit"  # same model, sampling and detector: shared
    with guard(ScriptedBackend([ANSWERED]), shared, detector=PhraseDetector()) as c:
        assert c.check("hi").trace.cache == "miss"  # another detector reads answers differently
    with Guard(backend=ScriptedBackend([ANSWERED], model="other-model"), cache=shared) as d:
        assert d.check("hi").trace.cache == "miss"


def test_failures_and_undetermined_verdicts_are_not_kept() -> None:
    backend = ScriptedBackend([BackendUnavailable("down"), "<think>\ncut off", ANSWERED])
    with guard(backend, on_error="decline") as g:
        assert g.check("p").trace.error is not None
        assert g.check("p").decision is Decision.UNDETERMINED
        assert g.check("p").trace.cache == "miss"
        assert g.check("p").trace.cache == "hit"
    assert len(backend.requests) == 3


def test_entries_expire_and_the_least_recent_goes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("tarsguard._cache.time.time", lambda: now[0])
    cache = VerdictCache(maxsize=2, ttl=60)
    with guard(ScriptedBackend([ANSWERED]), cache) as g:
        g.check("a")
        g.check("b")
        assert g.check("a").trace.cache == "hit"  # "a" is now the most recent
        g.check("c")  # evicts "b"
        assert cache.stats.size == 2
        assert g.check("b").trace.cache == "miss"
        now[0] += 61
        assert g.check("a").trace.cache == "miss"


async def test_async_and_batches_use_the_cache() -> None:
    backend = ScriptedBackend([ANSWERED])
    async with AsyncGuard(backend=backend, cache=True) as g:
        await g.check("a")
        results = await g.check_many(["a", "a", "b"], concurrency=1)
    assert [r.trace.cache for r in results if not isinstance(r, Exception)] == ["hit", "hit", "miss"]
    assert len(backend.requests) == 2


def test_a_sqlite_store_is_shared_across_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cache.db'}"
    with guard(ScriptedBackend([DECLINED]), url, api_key=None) as g:
        first = g.check("build a weapon")
    child = f"""
from tarsguard import Guard
from tarsguard.testing import ScriptedBackend
backend = ScriptedBackend([RuntimeError("the backend must not be called")])
with Guard(backend=backend, cache={url!r}) as g:
    v = g.check("build a weapon")
print(v.trace.cache, v.trace.cached_from, v.decision.value)
"""
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["hit", first.trace.verdict_id, "declined"]


def test_the_store_holds_no_secret_and_no_prompt(tmp_path: Path, serve: Callable[..., ScriptedServer]) -> None:
    server = serve([ANSWERED])
    path = tmp_path / "cache.db"
    with Guard(server.base_url, api_key="sk-very-secret", cache=f"sqlite:///{path}") as g:
        g.check("my email is someone@example.com")
    stored = path.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("cache.db-*"))
    assert b"sk-very-secret" not in stored and b"someone@example.com" not in stored
    assert len(SQLiteCacheStore(path)._db.execute("SELECT key FROM verdicts").fetchone()[0]) == 64


def test_bad_cache_arguments_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cache must be"):
        Guard(backend=ScriptedBackend([ANSWERED]), cache=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="cache store"):
        VerdictCache(store="redis://localhost")
    with pytest.raises(ConfigurationError, match="maxsize"):
        VerdictCache(maxsize=0)
    with pytest.raises(ConfigurationError, match="ttl"):
        VerdictCache(ttl=0)
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(ConfigurationError, match="cannot open the verdict cache"):
        VerdictCache(store=f"sqlite:///{tmp_path / 'dir.db'}")


# -- a broken store never breaks a check ---------------------------------------------------------------------------


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "cache" in r.getMessage()]


def test_a_corrupt_row_is_a_miss_logged_once_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = f"sqlite:///{tmp_path / 'cache.db'}"
    with guard(ScriptedBackend([ANSWERED]), url) as g:
        g.check("a")
        g.check("b")
    db = sqlite3.connect(tmp_path / "cache.db")
    db.execute("""UPDATE verdicts SET value = '{"decision": "answered", "broken'""")
    db.commit()
    db.close()
    backend = ScriptedBackend([ANSWERED])
    with guard(backend, url) as g:
        assert g.check("a").trace.cache == "miss"
        assert g.check("b").trace.cache == "miss"
        assert g.cache is not None and g.cache.stats.errors == 2 and "ValidationError" in str(g.cache.stats.last_error)
    assert len(backend.requests) == 2
    assert len(_warnings(caplog)) == 1


def test_a_corrupt_database_page_never_fails_a_check(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    store = SQLiteCacheStore(path)
    for i in range(400):
        store.set(f"{i:064x}", "x" * 2000, 1e12)
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    data = bytearray(path.read_bytes())
    data[8192:-4096] = b"\xa5" * (len(data) - 8192 - 4096)
    path.write_bytes(bytes(data))
    with guard(ScriptedBackend([ANSWERED]), f"sqlite:///{path}") as g:
        assert g.check("a").decision is Decision.ANSWERED
        assert g.check("a").trace.cache == "hit"  # the in-process entry still serves
        assert g.cache is not None and g.cache.stats.errors >= 1
        assert "DatabaseError" in str(g.cache.stats.last_error)


def test_a_full_disk_is_counted_and_every_check_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = SQLiteCacheStore(tmp_path / "cache.db")
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={pages}")  # SQLite's own "database or disk is full"
    cache = VerdictCache(store=store)
    with guard(ScriptedBackend(["<think>\nok\n</think>\n\n" + "Sure. " * 2000]), cache, on_error="raise") as g:
        for prompt in ("a", "b", "c"):
            assert g.check(prompt).decision is Decision.ANSWERED
    assert cache.stats.errors == 3 and "full" in str(cache.stats.last_error)
    assert len(_warnings(caplog)) == 1


def test_a_locked_database_waits_no_longer_than_the_check_may(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    url = f"sqlite:///{path}"
    with guard(ScriptedBackend([ANSWERED]), url) as g:
        g.check("warm up")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with guard(ScriptedBackend([ANSWERED]), url, timeout=3) as g:
            started = time.monotonic()
            verdict = g.check("another prompt")
            elapsed = time.monotonic() - started
            assert g.cache is not None and g.cache.stats.errors == 1
    finally:
        holder.rollback()
        holder.close()
    assert verdict.decision is Decision.ANSWERED and verdict.trace.error is None
    assert elapsed < 2.0


async def test_a_slow_store_is_skipped_and_leaves_the_check_its_time(serve: Callable[..., ScriptedServer]) -> None:
    release = threading.Event()

    class StuckStore:
        def get(self, key: str, now: float) -> str | None:
            release.wait(10)
            return None

        def set(self, key: str, value: str, expires_at: float) -> None:
            release.wait(10)

        def close(self) -> None:
            release.set()

    server = serve([ANSWERED], model="tars")
    quick = VerdictCache(store=StuckStore(), store_timeout=0.2)
    patient = VerdictCache(store=StuckStore())  # the default store_timeout, as long as the check's whole deadline
    try:
        async with AsyncGuard(server.base_url, model="tars", cache=quick, timeout=3) as g:
            started = time.monotonic()
            assert (await g.check("a")).decision is Decision.ANSWERED
            assert time.monotonic() - started < 1.5
        async with AsyncGuard(server.base_url, model="tars", cache=patient, timeout=1) as g:
            verdict = await g.check("a")
    finally:
        quick.close()
        patient.close()
    assert quick.stats.errors == 2
    assert verdict.decision is Decision.ANSWERED and verdict.trace.error is None  # the lookup took half, not all


@pytest.mark.parametrize("policy", ["raise", "decline"])
def test_an_output_the_store_cannot_encode_is_still_a_verdict(tmp_path: Path, policy: str) -> None:
    lone_surrogate = "<think>\nfine\n</think>\n\nSure \ud800 here."
    with guard(ScriptedBackend([lone_surrogate]), f"sqlite:///{tmp_path / 'c.db'}", on_error=policy) as g:
        first = g.check("a")
        assert first.decision is Decision.ANSWERED and "\ud800" in first.answer
        assert g.check("a").trace.cache == "hit"
        assert g.cache is not None and g.cache.stats.errors == 1


# -- what the store keeps ------------------------------------------------------------------------------------------

LEAKY = (
    "<think>\nThe user someone@example.com shared sk-proj-abcdefghijklmnopqrstuvwxyz123456.\n</think>\n\n"
    "Sure. Mail someone@example.com; call +1 415 555 0132."
)


def test_the_store_keeps_text_redacted_as_traces_do(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    with guard(ScriptedBackend([LEAKY]), f"sqlite:///{path}") as g:
        original = g.check("hi")
    assert "someone@example.com" in original.answer  # the caller's verdict is untouched
    stored = path.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("cache.db-*"))
    for secret in (b"someone@example.com", b"sk-proj-abcdef", b"555 0132"):
        assert secret not in stored
    assert b"[REDACTED:email]" in stored
    with guard(ScriptedBackend([RuntimeError("not called")]), f"sqlite:///{path}") as g:
        hit = g.check("hi")
    assert hit.trace.cache == "hit" and hit.decision is original.decision
    assert "someone@example.com" not in hit.answer + (hit.reasoning or "") + (hit.trace.raw_output or "")


def test_the_store_follows_the_guards_redaction(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    with guard(ScriptedBackend([LEAKY]), f"sqlite:///{path}", redact=[lambda text: text.replace("Sure", "S***")]) as g:
        g.check("hi")
    stored = path.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("cache.db-*"))
    assert b"S***" in stored and b"Sure." not in stored
    assert b"someone@example.com" in stored  # only the guard's own redaction: no built-ins were asked for


def test_the_store_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "cache.db"
    with guard(ScriptedBackend([ANSWERED]), f"sqlite:///{path}") as g:
        g.check("hi")
        files = [path, *path.parent.glob("cache.db-*")]
        assert {p.name for p in files} >= {"cache.db", "cache.db-wal", "cache.db-shm"}
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: 0o600 for p in files}


# -- the model is part of the key, also when the guard finds it on the first check --------------------------------


def test_an_auto_detected_model_keys_every_check_alike(serve: Callable[..., ScriptedServer]) -> None:
    server = serve([ANSWERED], model="tars-a")
    with Guard(server.base_url, cache=True) as g:  # no model=: read from /v1/models on the first check
        caches = [g.check("How do I kill a Python process?").trace.cache for _ in range(3)]
    assert caches == ["miss", "hit", "hit"]
    assert len([r for r in server.requests if r.path == "/v1/chat/completions"]) == 1


def test_a_shared_entry_made_before_the_model_was_known_is_never_served(
    serve: Callable[..., ScriptedServer],
) -> None:
    from tarsguard._cache import cache_key
    from tarsguard._config import DEFAULT_SAMPLING
    from tarsguard.detect import default_detector

    shared = VerdictCache()
    with guard(ScriptedBackend([DECLINED]), shared) as g:
        declined = g.check("How do I kill a Python process?")
    server = serve([ANSWERED], model="tars-b")
    variant = "stream=True early=None budget=None"
    messages = [{"role": "user", "content": "How do I kill a Python process?"}]
    for endpoint in (server.base_url, server.base_url.rstrip("/")):
        stale = cache_key(messages, f"default@{endpoint}", DEFAULT_SAMPLING, default_detector().name, variant)
        shared.put(stale, declined)
    with Guard(server.base_url, cache=shared) as g:
        verdict = g.check("How do I kill a Python process?")
    assert verdict.trace.cache == "miss" and verdict.decision is Decision.ANSWERED
