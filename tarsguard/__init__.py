"""tarsguard: route prompts through the TARS reasoner and get a structured verdict plus a trace.

    from tarsguard import Guard
    guard = Guard(base_url="http://localhost:8000/v1")
    verdict = guard.check("How do I kill a Python process?")
    verdict.decision, verdict.answer, verdict.reasoning, verdict.trace

Names load on first use (PEP 562), so ``import tarsguard`` itself costs almost nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_getattr
from ._version import __version__

if TYPE_CHECKING:
    from ._cache import CacheStats, CacheStore, SQLiteCacheStore, VerdictCache
    from ._config import Timeout
    from ._early import EarlyStop
    from ._exceptions import (
        BackendError,
        BackendTimeout,
        BackendUnavailable,
        ConfigurationError,
        ContextLengthExceeded,
        InvalidInput,
        ResponseTooLarge,
        TarsGuardError,
    )
    from ._guard import AsyncGuard, CheckResult, Guard, SamplingOverrides
    from ._input import Prompt
    from ._parse import ParsedOutput, parse_output
    from ._stream import TextChunk
    from ._types import (
        Assessment,
        Decision,
        ErrorInfo,
        Health,
        Message,
        SamplingParams,
        Stopped,
        Timings,
        Trace,
        Usage,
        Verdict,
    )
    from .backends import Backend
    from .detect import DecisionDetector, LinearDetector, LLMJudgeDetector, PatternDetector, classify
    from .middleware import Declined, GuardedText, protect, verdict_of, wrap_openai
    from .tracing import JsonlSink, MemorySink, OTelSpans, SQLiteSink, Tracer, TraceRecord, TraceSink, resolve_tracer

_SOURCES = {
    "._cache": ("CacheStats", "CacheStore", "SQLiteCacheStore", "VerdictCache"),
    "._config": ("Timeout",),
    "._early": ("EarlyStop",),
    "._exceptions": (
        "BackendError",
        "BackendTimeout",
        "BackendUnavailable",
        "ConfigurationError",
        "ContextLengthExceeded",
        "InvalidInput",
        "ResponseTooLarge",
        "TarsGuardError",
    ),
    "._guard": ("AsyncGuard", "CheckResult", "Guard", "SamplingOverrides"),
    "._input": ("Prompt",),
    "._parse": ("ParsedOutput", "parse_output"),
    "._stream": ("TextChunk",),
    "._types": (
        "Assessment",
        "Decision",
        "ErrorInfo",
        "Health",
        "Message",
        "SamplingParams",
        "Stopped",
        "Timings",
        "Trace",
        "Usage",
        "Verdict",
    ),
    ".backends": ("Backend",),
    ".detect": ("DecisionDetector", "LLMJudgeDetector", "LinearDetector", "PatternDetector", "classify"),
    ".middleware": ("Declined", "GuardedText", "protect", "verdict_of", "wrap_openai"),
    ".tracing": (
        "JsonlSink",
        "MemorySink",
        "OTelSpans",
        "SQLiteSink",
        "TraceRecord",
        "TraceSink",
        "Tracer",
        "resolve_tracer",
    ),
}
_MODULE_OF = {name: module for module, names in _SOURCES.items() for name in names}

__all__ = [
    "Assessment",
    "AsyncGuard",
    "Backend",
    "BackendError",
    "BackendTimeout",
    "BackendUnavailable",
    "CacheStats",
    "CacheStore",
    "CheckResult",
    "ConfigurationError",
    "ContextLengthExceeded",
    "Decision",
    "DecisionDetector",
    "Declined",
    "EarlyStop",
    "ErrorInfo",
    "Guard",
    "GuardedText",
    "Health",
    "InvalidInput",
    "JsonlSink",
    "LLMJudgeDetector",
    "LinearDetector",
    "MemorySink",
    "Message",
    "OTelSpans",
    "ParsedOutput",
    "PatternDetector",
    "Prompt",
    "ResponseTooLarge",
    "SQLiteCacheStore",
    "SQLiteSink",
    "SamplingOverrides",
    "SamplingParams",
    "Stopped",
    "TarsGuardError",
    "TextChunk",
    "Timeout",
    "Timings",
    "Trace",
    "TraceRecord",
    "TraceSink",
    "Tracer",
    "Usage",
    "Verdict",
    "VerdictCache",
    "__version__",
    "classify",
    "parse_output",
    "protect",
    "resolve_tracer",
    "verdict_of",
    "wrap_openai",
]


__getattr__ = lazy_getattr(__name__, _MODULE_OF)


def __dir__() -> list[str]:
    return __all__
