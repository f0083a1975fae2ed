"""What sinks store: the verdict as the trace record, after redaction and sampling."""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from .._exceptions import ConfigurationError
from .._types import Decision, Message, Verdict
from ._redact import Redactor, redact_each

__all__ = ["ALWAYS_KEPT", "TraceRecord", "build_record", "keep_rate"]

ALWAYS_KEPT = frozenset({Decision.DECLINED, Decision.PARTIAL, Decision.UNDETERMINED})
"""Decisions kept whatever the sample rate: declines, partial declines, and undetermined (failed) checks."""


class TraceRecord(Verdict):
    """One stored trace: the verdict (redacted), the prompt when content capture is on, and its sample rate.

    Every record is a ``Verdict``; ``TraceRecord.model_validate_json(line)`` reads a line of a JSONL trace file.
    """

    prompt: tuple[Message, ...] | None = None
    """The checked messages (redacted); only recorded with ``capture_content=True``."""
    sample_rate: float = 1.0
    """The chance a verdict like this one was kept: 1.0 for declines, partial and undetermined verdicts."""


_VERDICT_FIELDS = tuple(Verdict.model_fields)
_RECORD_FIELDS = frozenset(TraceRecord.model_fields)
_TAGS_ONLY = re.compile(r"\s*(?:</?think>\s*)*")


def check_rate(sample: float | None) -> float:
    """The sample rate for answered verdicts, validated (``None`` means keep everything)."""
    if sample is None:
        return 1.0
    if isinstance(sample, bool) or not isinstance(sample, int | float) or not 0.0 <= sample <= 1.0:
        raise ConfigurationError(f"trace sample rate must be a number from 0 to 1; got {sample!r}")
    return float(sample)


def keep_rate(verdict: Verdict, rate: float) -> float | None:
    """The sample rate this verdict was kept at, or ``None`` if sampling drops it.

    The choice is a hash of the verdict id, so it is the same in every process and every sink.
    """
    if rate >= 1.0 or verdict.decision in ALWAYS_KEPT:
        return 1.0
    if rate <= 0.0:
        return None
    return rate if zlib.crc32(verdict.trace.verdict_id.encode()) < rate * 4294967296.0 else None


def build_record(
    verdict: Verdict,
    redactor: Redactor | None,
    sample_rate: float,
    prompt: Sequence[Mapping[str, Any]] | None,
) -> TraceRecord:
    """The record of ``verdict``: every free-text field passed through ``redactor`` first."""
    trace = verdict.trace
    prompt_messages = None
    if prompt is not None:
        prompt_messages = tuple(
            Message.model_construct(role=m["role"], content=redactor(m["content"]) if redactor else m["content"])
            for m in prompt
        )
    fields = verdict.__dict__.copy() if type(verdict) is Verdict else {n: verdict.__dict__[n] for n in _VERDICT_FIELDS}
    if redactor is not None:
        answer = redactor(verdict.answer)
        reasoning = None if verdict.reasoning is None else redactor(verdict.reasoning)
        updates: dict[str, Any] = {}
        if trace.raw_output is not None:
            raw = _redact_raw(trace.raw_output, verdict, answer, reasoning, redactor)
            if raw != trace.raw_output:
                updates["raw_output"] = raw
        if trace.error is not None:
            updates["error"] = trace.error.model_copy(update={"message": redactor(trace.error.message)})
        fields |= {
            "answer": answer,
            "reasoning": reasoning,
            "evidence": redact_each(verdict.evidence, redactor),
            "trace": trace.model_copy(update=updates) if updates else trace,
        }
    fields["prompt"] = prompt_messages
    fields["sample_rate"] = sample_rate
    return _new_record(fields)


def _new_record(fields: dict[str, Any]) -> TraceRecord:
    """``TraceRecord.model_construct(**fields)`` for a complete, valid ``fields``, without its per-field lookups.

    It sets what ``model_construct`` sets; TraceRecord has no private attributes, extras or post-init hook, and a
    test holds it to that.
    """
    record = TraceRecord.__new__(TraceRecord)
    object.__setattr__(record, "__dict__", fields)
    object.__setattr__(record, "__pydantic_fields_set__", set(_RECORD_FIELDS))
    object.__setattr__(record, "__pydantic_extra__", None)
    object.__setattr__(record, "__pydantic_private__", None)
    return record


def _redact_raw(raw: str, verdict: Verdict, answer: str, reasoning: str | None, redactor: Redactor) -> str:
    """``raw`` redacted, reusing the redacted reasoning and answer where the raw output holds them verbatim."""
    pieces: list[str] = []
    at = 0
    for original, redacted in ((verdict.reasoning, reasoning), (verdict.answer, answer)):
        if not original or redacted is None:
            continue
        found = _part_start(raw, original, at)
        if found == -1:
            continue
        pieces += (_redact_between(raw[at:found], redactor), redacted)
        at = found + len(original)
    if not pieces:
        return redactor(raw)
    pieces.append(_redact_between(raw[at:], redactor))
    return "".join(pieces)


def _part_start(raw: str, part: str, at: int) -> int:
    """Where ``part`` appears in ``raw`` from ``at`` on, or -1.

    It usually starts right after the tags and whitespace at ``at``: comparing there is cheaper than searching.
    """
    tags = _TAGS_ONLY.match(raw, at)
    if tags is not None and raw.startswith(part, tags.end()):
        return tags.end()
    return raw.find(part, at)


def _redact_between(text: str, redactor: Redactor) -> str:
    """``text`` redacted, unless it is only the ``<think>`` tags and whitespace around the parts."""
    return text if not text or _TAGS_ONLY.fullmatch(text) else redactor(text)
