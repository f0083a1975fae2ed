"""Traces you can keep: sinks for verdicts (JSONL, SQLite, memory), OpenTelemetry spans, redaction, sampling.

    from tarsguard.tracing import JsonlSink, Tracer
    tracer = Tracer([JsonlSink("traces.jsonl")], sample=0.1)     # declines always kept, 10% of the rest
    with tracer.check() as scope:                                # what a guard does around each check
        scope.record(verdict, prompt=prompt)

Names load on first use: neither sqlite3 nor opentelemetry is imported until a SQLite sink or spans are used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from ._jsonl import JsonlFollower, JsonlSink, ReadProblem, iter_jsonl
    from ._otel import OTelSpans
    from ._record import ALWAYS_KEPT, TraceRecord
    from ._redact import BUILTIN_REDACTIONS, Redactor, RedactSpec, make_redactor, redact_builtin
    from ._sink import MemorySink, SinkStats, TraceSink
    from ._sqlite import SQLiteSink
    from ._store import TraceStore, TraceSummary, open_traces, summarize
    from ._tracer import ENV_TRACE, CheckScope, Tracer, TracerStats, TraceSpec, resolve_tracer

_SOURCES = {
    "._jsonl": ("JsonlFollower", "JsonlSink", "ReadProblem", "iter_jsonl"),
    "._otel": ("OTelSpans",),
    "._record": ("ALWAYS_KEPT", "TraceRecord"),
    "._redact": ("BUILTIN_REDACTIONS", "RedactSpec", "Redactor", "make_redactor", "redact_builtin"),
    "._sink": ("MemorySink", "SinkStats", "TraceSink"),
    "._sqlite": ("SQLiteSink",),
    "._store": ("TraceStore", "TraceSummary", "open_traces", "summarize"),
    "._tracer": ("ENV_TRACE", "CheckScope", "TraceSpec", "Tracer", "TracerStats", "resolve_tracer"),
}
_MODULE_OF = {name: module for module, names in _SOURCES.items() for name in names}

__all__ = [
    "ALWAYS_KEPT",
    "BUILTIN_REDACTIONS",
    "ENV_TRACE",
    "CheckScope",
    "JsonlFollower",
    "JsonlSink",
    "MemorySink",
    "OTelSpans",
    "ReadProblem",
    "RedactSpec",
    "Redactor",
    "SQLiteSink",
    "SinkStats",
    "TraceRecord",
    "TraceSink",
    "TraceSpec",
    "TraceStore",
    "TraceSummary",
    "Tracer",
    "TracerStats",
    "iter_jsonl",
    "make_redactor",
    "open_traces",
    "redact_builtin",
    "resolve_tracer",
    "summarize",
]


__getattr__ = lazy_getattr(__name__, _MODULE_OF)


def __dir__() -> list[str]:
    return __all__
