"""OpenTelemetry spans for checks, following the GenAI semantic conventions (``gen_ai.*``) plus ``tarsguard.*``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .._exceptions import ConfigurationError, TarsGuardError
from .._types import Verdict
from .._version import __version__
from ._record import TraceRecord
from ._redact import Redactor

if TYPE_CHECKING:
    from opentelemetry.trace import Span, TracerProvider

__all__ = ["OTelSpans"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class OTelSpans:
    """Emits one CLIENT span per check through ``tracer_provider`` (default: the global one).

    The span is named ``chat {model}`` and carries ``gen_ai.*`` attributes (operation, system, request and
    response model, sampling, token usage, finish reasons) and ``tarsguard.*`` ones (verdict id, decision,
    confidence, allowed, retries). The reasoning and answer phases, retries and the decision are events.
    Prompt, reasoning and answer text are attached only with content capture on, after redaction.
    ``system`` names the serving system of HTTP backends (``gen_ai.system``); other backends use their kind.
    """

    def __init__(self, tracer_provider: TracerProvider | None = None, *, system: str = "vllm") -> None:
        try:
            from opentelemetry import context, trace
        except ImportError:
            raise ConfigurationError(
                "OpenTelemetry spans need the opentelemetry-api package: pip install 'tarsguard[otel]'"
            ) from None
        self._trace = trace
        self._context = context
        self._tracer = trace.get_tracer("tarsguard", __version__, tracer_provider=tracer_provider)
        self.system = system

    def start(self, model: str | None) -> tuple[Span, object]:
        """Start the span of one check and make it current; returns it with the token that restores the context."""
        attributes: dict[str, Any] = {"gen_ai.operation.name": "chat"}
        if model:
            attributes["gen_ai.request.model"] = model
        span = self._tracer.start_span(
            f"chat {model}" if model else "chat",
            kind=self._trace.SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
        )
        token = self._context.attach(self._trace.set_span_in_context(span))
        return span, token

    def finish(
        self,
        span: Span,
        token: object,
        *,
        verdict: Verdict | None,
        record: TraceRecord | None,
        error: BaseException | None,
        redactor: Redactor | None,
    ) -> None:
        """Describe the check on its span (``record`` holds the redacted text, when content is captured), end it."""
        try:
            if verdict is not None:
                self._describe(span, verdict, record, redactor)
            if error is not None:
                self._failed(span, error, redactor)
        finally:
            span.end()
            self._context.detach(token)  # type: ignore[arg-type]

    def _describe(self, span: Span, verdict: Verdict, record: TraceRecord | None, redactor: Redactor | None) -> None:
        trace = verdict.trace
        usage = trace.usage
        sampling = trace.sampling
        system = self.system if trace.backend == "http" else trace.backend
        if trace.model:
            span.update_name(f"chat {trace.model}")
        attributes: dict[str, Any] = {
            "gen_ai.system": system,
            "gen_ai.provider.name": system,
            "gen_ai.request.model": trace.model,
            "gen_ai.response.model": trace.model,
            "gen_ai.response.id": trace.request_id,
            "gen_ai.request.temperature": sampling.temperature,
            "gen_ai.request.top_p": sampling.top_p,
            "gen_ai.request.max_tokens": sampling.max_tokens,
            "gen_ai.request.seed": sampling.seed,
            "gen_ai.request.stop_sequences": list(sampling.stop) if sampling.stop else None,
            "gen_ai.request.stream": trace.streamed,
            "gen_ai.usage.input_tokens": usage.prompt_tokens,
            "gen_ai.usage.output_tokens": usage.completion_tokens,
            "gen_ai.usage.reasoning.output_tokens": usage.reasoning_tokens,
            "gen_ai.response.finish_reasons": [trace.finish_reason] if trace.finish_reason else None,
            "gen_ai.response.time_to_first_chunk": (
                trace.timings.first_token_ms / 1000 if trace.timings.first_token_ms is not None else None
            ),
            "tarsguard.verdict_id": trace.verdict_id,
            "tarsguard.decision": verdict.decision.value,
            "tarsguard.confidence": verdict.confidence,
            "tarsguard.allowed": verdict.allowed,
            "tarsguard.retries": trace.retries,
            "tarsguard.format_ok": trace.format_ok,
            "tarsguard.detector": trace.detector,
            "tarsguard.backend": trace.backend,
            "tarsguard.usage.answer_tokens": usage.answer_tokens,
            "tarsguard.cache": trace.cache,
            "tarsguard.stopped": trace.stopped.reason if trace.stopped is not None else None,
            "tarsguard.stopped.at_token": trace.stopped.at_token if trace.stopped is not None else None,
        }
        if trace.endpoint and trace.backend == "http":
            url = urlsplit(trace.endpoint)
            attributes["server.address"] = url.hostname
            attributes["server.port"] = url.port or (443 if url.scheme == "https" else 80)
        if trace.error is not None:
            attributes["error.type"] = trace.error.type
            attributes["tarsguard.error.policy"] = trace.error.policy
        if record is not None:
            if record.prompt is not None:
                attributes["gen_ai.input.messages"] = json.dumps(
                    [{"role": m.role, "parts": [{"type": "text", "content": m.content}]} for m in record.prompt],
                    ensure_ascii=False,
                )
            parts = [{"type": "reasoning", "content": record.reasoning}] if record.reasoning else []
            parts.append({"type": "text", "content": record.answer})
            output = {"role": "assistant", "parts": parts, "finish_reason": trace.finish_reason or "error"}
            attributes["gen_ai.output.messages"] = json.dumps([output], ensure_ascii=False)
        span.set_attributes({k: v for k, v in attributes.items() if v is not None})

        started_ns = (trace.created_at - _EPOCH) // _MICROSECOND * 1000
        timings = trace.timings
        if timings.first_token_ms is not None:
            span.add_event(
                "tarsguard.reasoning.start" if verdict.reasoning is not None else "tarsguard.answer.start",
                timestamp=started_ns + int(timings.first_token_ms * 1e6),
            )
        if timings.reasoning_end_ms is not None:
            span.add_event(
                "tarsguard.answer.start",
                {"gen_ai.usage.reasoning.output_tokens": usage.reasoning_tokens or 0},
                timestamp=started_ns + int(timings.reasoning_end_ms * 1e6),
            )
        if trace.retries:
            span.add_event("tarsguard.retried", {"tarsguard.retries": trace.retries})
        evaluation: dict[str, Any] = {
            "gen_ai.evaluation.name": "tarsguard.decision",
            "gen_ai.evaluation.score.label": verdict.decision.value,
            "gen_ai.evaluation.score.value": verdict.confidence,
        }
        if record is not None and record.evidence:
            evaluation["gen_ai.evaluation.explanation"] = "; ".join(record.evidence)
        span.add_event("gen_ai.evaluation.result", evaluation)
        if trace.error is not None:
            message = trace.error.message
            self._error_status(span, message if redactor is None else redactor(message))

    def _failed(self, span: Span, error: BaseException, redactor: Redactor | None) -> None:
        kind = error.kind if isinstance(error, TarsGuardError) else type(error).__name__
        message = str(error) if redactor is None else redactor(str(error))
        span.set_attribute("error.type", kind)
        span.add_event("exception", {"exception.type": type(error).__qualname__, "exception.message": message})
        self._error_status(span, message)

    def _error_status(self, span: Span, description: str) -> None:
        span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, description))
