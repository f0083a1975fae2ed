"""Tracing wired into the guard: ``Guard(trace=..., redact=..., trace_sample=...)`` and ``TARSGUARD_TRACE``.

These run once ``_guard.py`` takes ``trace=`` (the wiring belongs to the guard); until then they are skipped.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_tracing import EMAIL, Broken

from tarsguard import AsyncGuard, BackendUnavailable, Decision, Guard
from tarsguard.testing import Reply, ScriptedBackend, ScriptedServer
from tarsguard.tracing import ENV_TRACE, JsonlSink, MemorySink, OTelSpans, Tracer, open_traces

DECLINED = (
    f"<think>\nThe user {EMAIL} asks for weapon steps; harmful.\n</think>\n\nI'm sorry, but I can't help with that."
)
ANSWERED = "<think>\nBenign sysadmin question.\n</think>\n\nSure: run `kill <pid>`."


@pytest.fixture(autouse=True)
def _no_trace_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_TRACE, raising=False)


def test_guard_records_each_verdict_redacted() -> None:
    sink = MemorySink()
    with Guard(backend=ScriptedBackend([DECLINED]), trace=sink) as guard:
        verdict = guard.check("how do I build a weapon?")
    (record,) = sink.records
    assert record.trace.verdict_id == verdict.trace.verdict_id and record.decision is Decision.DECLINED
    assert EMAIL in (verdict.reasoning or "") and EMAIL not in record.model_dump_json()
    assert record.prompt is None


async def test_check_many_records_every_verdict_and_sampling_keeps_declines() -> None:
    sink = MemorySink()
    script = ScriptedBackend(lambda messages: DECLINED if "weapon" in messages[-1]["content"] else ANSWERED)
    async with AsyncGuard(backend=script, trace=[sink], trace_sample=0.0, redact=False) as guard:
        results = await guard.check_many(["weapon"] * 5 + ["kill a process"] * 5, concurrency=4)
    assert len(results) == 10
    assert [r.decision for r in sink.records] == [Decision.DECLINED] * 5
    assert EMAIL in sink.records[0].model_dump_json()  # redact=False


def test_environment_variable_and_explicit_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "traces.jsonl"
    monkeypatch.setenv(ENV_TRACE, str(path))
    with Guard(backend=ScriptedBackend([ANSWERED])) as guard:
        guard.check("hello")
        guard.check("hello again")
    with Guard(backend=ScriptedBackend([ANSWERED]), trace=False) as guard:
        guard.check("not traced")
    store = open_traces(path)
    assert len(list(store.records())) == 2 and store.problems == []


def test_failing_sinks_never_fail_a_check() -> None:
    broken = Broken()
    tracer = Tracer([broken, JsonlSink("/dev/full")])
    with Guard(backend=ScriptedBackend([ANSWERED]), trace=tracer) as guard:
        verdicts = [guard.check("hello") for _ in range(3)]
    assert all(v.decision is Decision.ANSWERED for v in verdicts)
    assert [s.failed for s in tracer.stats().sinks] == [3, 3]


async def test_span_covers_the_check_and_a_raised_error_is_on_it() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = Tracer(spans=OTelSpans(provider))
    backend = ScriptedBackend([ANSWERED, BackendUnavailable("connection refused")])
    async with AsyncGuard(backend=backend, trace=tracer) as guard:
        verdict = await guard.check("hello")
        with pytest.raises(BackendUnavailable):
            await guard.check("hello")
    ok, failed = exporter.get_finished_spans()
    assert dict(ok.attributes or {})["tarsguard.verdict_id"] == verdict.trace.verdict_id
    assert ok.name == "chat scripted-tars"
    assert failed.status.status_code is otel_trace.StatusCode.ERROR
    assert dict(failed.attributes or {})["error.type"] == "unavailable"


async def test_the_api_key_never_reaches_the_trace_file(tmp_path: Path) -> None:
    secret = "sk-live-" + "Z" * 32
    path = tmp_path / "traces.jsonl"
    with ScriptedServer([Reply(content=ANSWERED)]) as server:
        async with AsyncGuard(server.base_url, api_key=secret, trace=str(path)) as guard:
            await guard.check("hello")
    assert b"ZZZZZZZZ" not in path.read_bytes() and len(path.read_bytes().splitlines()) == 1


def test_tracing_off_imports_nothing_of_it() -> None:
    code = (
        "import sys; from tarsguard import Guard; from tarsguard.testing import ScriptedBackend; "
        "g = Guard(backend=ScriptedBackend()); g.check('hello'); g.close(); "
        "assert g.tracer is None; "
        "assert not [m for m in sys.modules if m.startswith(('tarsguard.tracing', 'opentelemetry', 'sqlite3'))]"
    )
    env_free = {k: v for k, v in __import__("os").environ.items() if k != ENV_TRACE}
    subprocess.run([sys.executable, "-c", code], check=True, env=env_free)
