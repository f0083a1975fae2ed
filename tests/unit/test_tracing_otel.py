"""OpenTelemetry spans of checks, read back through the OTel SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_tracing import API_KEY, CARD, EMAIL, PHONE, leaked, make_verdict

from tarsguard import AsyncGuard, BackendError, Decision, ErrorInfo, Verdict
from tarsguard.testing import ScriptedBackend
from tarsguard.tracing import MemorySink, OTelSpans, Tracer

DECLINED = "<think>\nThis asks for weapon instructions; harmful.\n</think>\n\nI'm sorry, but I can't help with that."


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def spans_text(span: ReadableSpan) -> str:
    """Everything a span exports, as text."""
    return span.to_json()


def only_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = exporter.get_finished_spans()
    return span


def test_one_span_per_check_with_gen_ai_and_tarsguard_attributes(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = Tracer(spans=OTelSpans(provider))
    verdict = make_verdict(Decision.DECLINED)
    with tracer.check(model="tars-7b") as scope:
        scope.record(verdict)
    span = only_span(exporter)
    attributes: dict[str, Any] = dict(span.attributes or {})
    assert span.name == "chat tars-7b" and span.kind is otel_trace.SpanKind.CLIENT
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.system"] == "vllm" and attributes["gen_ai.provider.name"] == "vllm"
    assert attributes["gen_ai.request.model"] == attributes["gen_ai.response.model"] == "tars-7b"
    assert attributes["gen_ai.response.id"] == "req-1"
    assert attributes["gen_ai.usage.input_tokens"] == 10 and attributes["gen_ai.usage.output_tokens"] == 20
    assert attributes["gen_ai.usage.reasoning.output_tokens"] == 15
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["gen_ai.request.temperature"] == 0.6 and attributes["gen_ai.request.seed"] == 7
    assert attributes["server.address"] == "127.0.0.1" and attributes["server.port"] == 8000
    assert attributes["tarsguard.decision"] == "declined" and attributes["tarsguard.confidence"] == 0.8
    assert attributes["tarsguard.verdict_id"] == verdict.trace.verdict_id
    assert attributes["tarsguard.allowed"] is False and attributes["tarsguard.retries"] == 1
    assert span.status.status_code is otel_trace.StatusCode.UNSET  # a decline is a result, not an error
    events = {event.name: event for event in span.events}
    assert {
        "tarsguard.reasoning.start",
        "tarsguard.answer.start",
        "tarsguard.retried",
        "gen_ai.evaluation.result",
    } <= set(events)
    started = int(verdict.trace.created_at.timestamp() * 1e9)
    assert abs(events["tarsguard.answer.start"].timestamp - (started + 8_000_000)) < 1_000
    evaluation = dict(events["gen_ai.evaluation.result"].attributes or {})
    assert evaluation["gen_ai.evaluation.score.label"] == "declined"
    assert evaluation["gen_ai.evaluation.score.value"] == 0.8
    assert dict(events["tarsguard.retried"].attributes or {}) == {"tarsguard.retries": 1}
    # Without content capture: no prompt, reasoning, answer or evidence text at all.
    assert "gen_ai.input.messages" not in attributes and "gen_ai.output.messages" not in attributes
    assert "gen_ai.evaluation.explanation" not in evaluation
    assert not leaked(spans_text(span)) and "pay with" not in spans_text(span)


def test_content_capture_attaches_redacted_messages(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    sink = MemorySink()
    tracer = Tracer([sink], spans=OTelSpans(provider), capture_content=True)
    with tracer.check() as scope:
        scope.record(make_verdict(), prompt=f"I am {EMAIL}; my card is {CARD}")
    span = only_span(exporter)
    attributes = dict(span.attributes or {})
    (given,) = json.loads(str(attributes["gen_ai.input.messages"]))
    assert given == {
        "role": "user",
        "parts": [{"type": "text", "content": "I am [REDACTED:email]; my card is [REDACTED:card]"}],
    }
    (output,) = json.loads(str(attributes["gen_ai.output.messages"]))
    assert [part["type"] for part in output["parts"]] == ["reasoning", "text"]
    assert output["parts"][1]["content"] == "Call [REDACTED:phone] and pay with [REDACTED:card]."
    assert output["finish_reason"] == "stop"
    text = spans_text(span)
    assert not leaked(text) and "[REDACTED:api_key]" in text and "[REDACTED:email]" in text
    # The span and the sink saw the same redacted record.
    assert sink.records[0].answer == output["parts"][1]["content"]


def test_sampled_out_verdicts_still_get_their_span(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    sink = MemorySink()
    tracer = Tracer([sink], spans=OTelSpans(provider), sample=0.0, capture_content=True)
    with tracer.check() as scope:
        scope.record(make_verdict())
    assert len(sink) == 0
    assert "[REDACTED:phone]" in str(dict(only_span(exporter).attributes or {})["gen_ai.output.messages"])


def test_failed_check_verdict_marks_the_span_as_an_error(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = Tracer(spans=OTelSpans(provider))
    error = ErrorInfo(type="server", message=f"500 from upstream: key {API_KEY}", status_code=500, policy="allow")
    with tracer.check() as scope:
        scope.record(make_verdict(Decision.UNDETERMINED, error=error))
    span = only_span(exporter)
    attributes = dict(span.attributes or {})
    assert span.status.status_code is otel_trace.StatusCode.ERROR
    assert span.status.description == "500 from upstream: key [REDACTED:api_key]"
    assert attributes["error.type"] == "server" and attributes["tarsguard.error.policy"] == "allow"
    assert attributes["tarsguard.allowed"] is True
    assert not leaked(spans_text(span))


def test_an_exception_leaving_the_check_is_recorded_redacted_and_not_swallowed(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = Tracer(spans=OTelSpans(provider))
    with pytest.raises(BackendError), tracer.check(model="tars-7b"):
        raise BackendError(f"server said: contact {EMAIL} or {PHONE}")
    span = only_span(exporter)
    assert span.status.status_code is otel_trace.StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == "backend_error"
    (event,) = span.events
    assert event.name == "exception"
    assert (
        dict(event.attributes or {})["exception.message"] == "server said: contact [REDACTED:email] or [REDACTED:phone]"
    )
    assert not leaked(spans_text(span))
    assert tracer.stats().failed == 0


async def test_the_span_covers_the_check_and_is_current_inside_it(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    seen: list[otel_trace.Span] = []

    def script(messages: Any) -> str:
        seen.append(otel_trace.get_current_span())
        return DECLINED

    tracer = Tracer(spans=OTelSpans(provider))
    parent_tracer = provider.get_tracer("app")
    async with AsyncGuard(backend=ScriptedBackend(script)) as guard:

        async def one(prompt: str) -> Verdict:
            with parent_tracer.start_as_current_span("request"), tracer.check() as scope:
                verdict = await guard.check(prompt)
                scope.record(verdict)
            return verdict

        verdicts = await asyncio.gather(*(one(f"prompt {i}") for i in range(5)))
    spans = exporter.get_finished_spans()
    checks = [s for s in spans if s.name.startswith("chat")]
    requests = {s.context.span_id: s for s in spans if s.name == "request"}
    assert len(checks) == 5 and len(requests) == 5
    # Each check span is the child of its own request span, and was current while the backend ran.
    assert {c.parent.span_id for c in checks if c.parent} == set(requests)
    assert {s.get_span_context().span_id for s in seen} == {c.context.span_id for c in checks}
    for check in checks:
        assert check.start_time is not None and check.end_time is not None
        verdict_id = dict(check.attributes or {})["tarsguard.verdict_id"]
        verdict = next(v for v in verdicts if v.trace.verdict_id == verdict_id)
        assert (check.end_time - check.start_time) / 1e6 >= verdict.trace.timings.total_ms
    assert otel_trace.get_current_span() is otel_trace.INVALID_SPAN


def test_spans_off_means_no_opentelemetry_import_and_no_span() -> None:
    here = str(Path(__file__).parent)
    code = (
        f"import sys; sys.path.insert(0, {here!r}); "
        "from test_tracing import make_verdict; from tarsguard.tracing import MemorySink, Tracer; "
        "sink = MemorySink(); tracer = Tracer([sink]); "
        "scope = tracer.check(); scope.__enter__(); scope.record(make_verdict()); scope.__exit__(None, None, None); "
        "assert len(sink) == 1 and tracer.spans is None; "
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_each_retry_is_an_event_of_the_checks_span(
    provider: TracerProvider, exporter: InMemorySpanExporter, serve: Any
) -> None:
    from tarsguard.testing import Reply

    script = [Reply(status=503, error_message="busy"), Reply(status=429, retry_after=0), "<think>ok</think>Sure."]
    server = serve(script)
    async with AsyncGuard(server.base_url, trace=OTelSpans(provider), max_retries=3) as guard:
        verdict = await guard.check("hello")
    assert verdict.trace.retries == 2
    span = only_span(exporter)
    retries = [event for event in span.events if event.name == "tarsguard.retry"]
    assert [dict(event.attributes or {})["tarsguard.retry.attempt"] for event in retries] == [1, 2]
    assert [dict(event.attributes or {})["http.response.status_code"] for event in retries] == [503, 429]
    assert all(dict(event.attributes or {})["error.type"] for event in retries)
    assert span.start_time is not None and span.end_time is not None
    assert all(span.start_time <= event.timestamp <= span.end_time for event in retries)
    assert retries[0].timestamp < retries[1].timestamp
