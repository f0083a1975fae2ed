"""The verdict cache: hits, misses, what the key holds, TTL and LRU, and a store shared across processes."""

from __future__ import annotations

import subprocess
import sys
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
