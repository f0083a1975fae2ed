"""Public data types: decisions, verdicts, traces and their parts (pydantic v2)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

__all__ = [
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
]

ErrorPolicy = Literal["raise", "decline", "allow"]


class Decision(enum.StrEnum):
    """What the reasoner did with the prompt."""

    ANSWERED = "answered"
    """It helped with the request."""
    DECLINED = "declined"
    """It refused the request."""
    PARTIAL = "partial"
    """It declined the harmful part and helped only with a safe part, or gave a safe, general answer."""
    UNDETERMINED = "undetermined"
    """No decision could be read: the output was cut off, unparseable, or the check failed."""


class _Model(BaseModel):
    """Immutable result type; unknown keys are ignored so newer traces still load."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)


class _Options(BaseModel):
    """Immutable option type; unknown keys are an error, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class Message(_Options):
    """One chat turn with text content."""

    role: Literal["system", "user", "assistant"]
    content: str


class SamplingParams(_Options):
    """Sampling parameters sent with each generation request."""

    temperature: float = Field(0.6, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(4096, ge=1)
    seed: int | None = None
    stop: tuple[str, ...] | None = None


class Assessment(_Model):
    """A decision read from an answer, with how sure the detector is and why."""

    decision: Decision
    confidence: float = Field(ge=0.0, le=1.0)
    evidence: tuple[str, ...] = ()
    detector: str | None = None
    """Which detector made this reading, where a detector hands the decision to others (a cascade); a
    ``Guard`` records it as the verdict's ``trace.detector`` in place of its detector's own name."""


class Usage(_Model):
    """Token counts of one generation.

    ``reasoning_tokens`` and ``answer_tokens`` split ``completion_tokens`` between the reasoning and the
    answer; ``split_estimated`` says whether that split was estimated from text length rather than counted
    from streamed tokens.
    """

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    answer_tokens: int | None = None
    split_estimated: bool = False


class Timings(_Model):
    """Wall-clock timings of one check, in milliseconds."""

    total_ms: float
    first_token_ms: float | None = None
    """Time to the first generated text; streamed checks only."""
    reasoning_end_ms: float | None = None
    """Time until the reasoning was complete; streamed checks only."""


class ErrorInfo(_Model):
    """An error that replaced a verdict, and the policy that turned it into one."""

    type: str
    message: str
    status_code: int | None = None
    policy: ErrorPolicy


class Stopped(_Model):
    """Why tarsguard ended a generation before the model finished it, and where."""

    reason: Literal["decision_certain", "reasoning_budget"]
    """``decision_certain``: the answer so far already settled the decision (early verdict);
    ``reasoning_budget``: the reasoning reached its token budget before any answer."""
    at_token: int
    """Completion tokens generated when the stream was closed."""
    answer_tokens: int = 0
    """Of those, tokens of the answer (the verdict's ``answer`` is that partial answer)."""


class Trace(_Model):
    """Everything needed to understand, reproduce or audit one verdict. Never holds a secret."""

    verdict_id: str
    request_id: str | None = None
    created_at: datetime
    model: str | None = None
    backend: str
    endpoint: str | None = None
    sampling: SamplingParams
    streamed: bool = False
    usage: Usage = Usage()
    finish_reason: str | None = None
    format_ok: bool = False
    format_issues: tuple[str, ...] = ()
    timings: Timings
    retries: int = 0
    detector: str | None = None
    raw_output: str | None = None
    error: ErrorInfo | None = None
    stopped: Stopped | None = None
    """Set when tarsguard closed the stream early; the answer is then partial."""
    cache: Literal["hit", "miss"] | None = None
    """Whether the verdict came from the guard's verdict cache; ``None`` when the guard has none."""
    cached_from: str | None = None
    """On a cache hit, the id of the verdict that was reused."""
    min_confidence: float | None = Field(None, ge=0.0, le=1.0)
    """The confidence an answered decision needed to be allowed (the guard's ``min_confidence``); ``None``
    when the verdict was made without one (then any answered decision is allowed)."""
    version: str


class Verdict(_Model):
    """The structured result of one check: what the reasoner decided, its answer, and a trace."""

    decision: Decision
    answer: str
    reasoning: str | None = None
    confidence: float = Field(ge=0.0, le=1.0)
    evidence: tuple[str, ...] = ()
    trace: Trace

    @computed_field  # type: ignore[prop-decorator]
    @property
    def allowed(self) -> bool:
        """Whether a caller should let the prompt through: answered with a confidence of at least the guard's
        ``min_confidence``, or failed under the ``allow`` policy."""
        error = self.trace.error
        if error is not None:
            return error.policy == "allow"
        if self.decision is not Decision.ANSWERED:
            return False
        threshold = self.trace.min_confidence
        return threshold is None or self.confidence >= threshold

    def __repr__(self) -> str:
        return (
            f"Verdict(decision={self.decision.value!r}, confidence={self.confidence:.2f}, "
            f"answer={_clip(self.answer)!r}, verdict_id={self.trace.verdict_id!r})"
        )

    __str__ = __repr__


class Health(_Model):
    """The state of a backend: reachable, and which models it serves."""

    ok: bool
    endpoint: str | None = None
    backend: str
    models: tuple[str, ...] = ()
    max_model_len: int | None = None
    latency_ms: float | None = None
    detail: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
