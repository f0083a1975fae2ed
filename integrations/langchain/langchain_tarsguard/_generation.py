"""One TARS generation for ChatTARS: its reasoning and answer as they stream, then its verdict.

tarsguard's ``Guard.check`` returns a verdict only once the generation is over; a chat model must hand out
the text while it is generated, so ChatTARS drives the guard's backend itself and builds the same verdict
from what streamed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import tarsguard
from tarsguard import (
    Assessment,
    Backend,
    BackendError,
    BackendTimeout,
    Decision,
    DecisionDetector,
    TarsGuardError,
    Timings,
    Trace,
    Usage,
    Verdict,
    parse_output,
)
from tarsguard.backends import GenerationEnd, GenerationRequest, TextDelta

__all__ = ["Delta", "Finished", "ThinkSplitter", "generate"]

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"

Kind = Literal["reasoning", "answer"]


class ThinkSplitter:
    """Splits streamed ``<think>…</think>answer`` text into reasoning and answer pieces as they arrive.

    Text that might be the start of a tag is held back until the next piece settles it; whitespace around
    the tags is dropped, as ``parse_output`` drops it.
    """

    def __init__(self) -> None:
        self._state: Literal["start", "reasoning", "answer"] = "start"
        self._pending = ""
        self._lead = True
        self.closed = False
        """Whether ``</think>`` has been seen."""

    @property
    def state(self) -> Literal["start", "reasoning", "answer"]:
        """Where the splitter is: before the output settled, inside the reasoning, or in the answer."""
        return self._state

    def feed(self, text: str) -> list[tuple[Kind, str]]:
        """The reasoning and answer pieces that ``text`` completes."""
        pieces: list[tuple[Kind, str]] = []
        self._pending += text
        while self._pending:
            if self._lead:
                # Whitespace right after a tag (or at the very start) is layout, not text.
                self._pending = self._pending.lstrip()
                if not self._pending:
                    return pieces
                if self._state != "start":
                    self._lead = False
            if self._state == "start":
                head = self._pending.lstrip()
                if head.startswith(OPEN_TAG):
                    self._state, self._pending = "reasoning", head[len(OPEN_TAG) :]
                elif not head or OPEN_TAG.startswith(head):
                    return pieces  # not settled yet
                else:
                    self._state, self._pending, self._lead = "answer", head, False
            elif self._state == "reasoning":
                at = self._pending.find(CLOSE_TAG)
                if at != -1:
                    before = self._pending[:at].rstrip()
                    if before:
                        pieces.append(("reasoning", before))
                    self.closed = True
                    self._state, self._pending, self._lead = "answer", self._pending[at + len(CLOSE_TAG) :], True
                    continue
                keep = _held_back(self._pending)
                emit = self._pending[: len(self._pending) - keep]
                if emit:
                    pieces.append(("reasoning", emit))
                self._pending = self._pending[len(emit) :]
                return pieces
            else:
                pieces.append(("answer", self._pending))
                self._pending = ""
        return pieces

    def finish(self) -> list[tuple[Kind, str]]:
        """What is still held back once the generation is over."""
        pending, self._pending = self._pending, ""
        if self._state == "reasoning":
            pending = pending.rstrip()
            return [("reasoning", pending)] if pending else []
        pending = pending.strip() if self._state == "start" else pending
        return [("answer", pending)] if pending else []


def _held_back(text: str) -> int:
    """How many trailing characters of reasoning to hold: trailing whitespace and a possible partial tag."""
    for size in range(min(len(CLOSE_TAG) - 1, len(text)), 0, -1):
        if CLOSE_TAG.startswith(text[-size:]):
            rest = text[:-size]
            return size + len(rest) - len(rest.rstrip())
    return len(text) - len(text.rstrip())


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of reasoning or answer text, as generated."""

    kind: Kind
    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    """The end of a generation: the reasoning/answer split of all of it, and its verdict."""

    reasoning: str | None
    answer: str
    verdict: Verdict
    model: str | None
    """The model name the request asked for (a server may report another name of the same model), else the
    one the server reported."""


@dataclass
class _Progress:
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    reasoning_steps: int = 0
    answer_steps: int = 0
    undecided_steps: int = 0
    first_token_ms: float | None = None
    reasoning_end_ms: float | None = None
    end: GenerationEnd | None = None


async def generate(
    backend: Backend,
    request: GenerationRequest,
    detector: DecisionDetector,
    *,
    on_verdict: Callable[[Verdict], None] | None = None,
) -> AsyncIterator[Delta | Finished]:
    """Stream ``request`` from ``backend``: reasoning and answer deltas, then one ``Finished`` with the verdict.

    Backend failures raise their ``TarsGuardError``; going past ``request.timeout.total`` raises
    ``BackendTimeout``.
    """
    verdict_id = uuid.uuid4().hex
    created_at = datetime.now(UTC)
    started = time.perf_counter()
    progress = _Progress()
    splitter = ThinkSplitter()
    total = request.timeout.total
    deadline = None if total is None else asyncio.get_running_loop().time() + total
    events = backend.generate(request)
    try:
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    event = await anext(events)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise BackendTimeout(f"no complete generation within {total:g} s") from None
            except TarsGuardError:
                raise
            except Exception as exc:
                raise BackendError(f"the {backend.kind} backend failed: {type(exc).__name__}: {exc}") from exc
            if isinstance(event, GenerationEnd):
                progress.end = event
                continue
            for delta in _deltas(event, progress, splitter, started):
                yield delta
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    for kind, text in splitter.finish():
        yield Delta(kind, text)
    if progress.end is None:
        raise BackendError(f"the {backend.kind} backend ended without finishing the generation")
    finished = await _finish(backend, request, detector, progress, verdict_id, created_at, started)
    if on_verdict is not None:
        on_verdict(finished.verdict)
    yield finished


def _deltas(event: TextDelta, progress: _Progress, splitter: ThinkSplitter, started: float) -> list[Delta]:
    content, reasoning, content_steps, reasoning_steps = event
    if (content or reasoning) and progress.first_token_ms is None:
        progress.first_token_ms = (time.perf_counter() - started) * 1000
    out: list[Delta] = []
    if reasoning:
        progress.reasoning.append(reasoning)
        progress.reasoning_steps += reasoning_steps
        out.append(Delta("reasoning", reasoning))
    if content:
        progress.content.append(content)
        if progress.reasoning and progress.reasoning_end_ms is None:
            progress.reasoning_end_ms = (time.perf_counter() - started) * 1000
        before, closed_before = splitter.state, splitter.closed
        out.extend(Delta(kind, text) for kind, text in splitter.feed(content))
        if before == "answer":
            progress.answer_steps += content_steps
            return out
        progress.undecided_steps += content_steps
        if splitter.closed and not closed_before:
            # The step holding </think> still belongs to the reasoning, as tarsguard counts it.
            progress.reasoning_steps += progress.undecided_steps
            progress.undecided_steps = 0
            progress.reasoning_end_ms = progress.reasoning_end_ms or (time.perf_counter() - started) * 1000
        elif splitter.state == "reasoning":
            progress.reasoning_steps += progress.undecided_steps
            progress.undecided_steps = 0
        elif splitter.state == "answer":
            progress.answer_steps += progress.undecided_steps
            progress.undecided_steps = 0
    return out


async def _finish(
    backend: Backend,
    request: GenerationRequest,
    detector: DecisionDetector,
    progress: _Progress,
    verdict_id: str,
    created_at: datetime,
    started: float,
) -> Finished:
    end = progress.end
    assert end is not None
    content = "".join(progress.content)
    parsed = parse_output(content, "".join(progress.reasoning) or None, finish_reason=end.finish_reason)
    assessment: Assessment | None = None
    if parsed.complete:
        prompt = request.messages[-1]["content"]
        aassess: Callable[..., Awaitable[Assessment]] | None = getattr(detector, "aassess", None)
        try:
            if aassess is not None:
                assessment = await aassess(parsed.answer, reasoning=parsed.reasoning, prompt=prompt)
            else:
                assessment = detector.assess(parsed.answer, reasoning=parsed.reasoning, prompt=prompt)
        except TarsGuardError:
            raise
        except Exception as exc:
            raise BackendError(f"the decision detector failed: {type(exc).__name__}: {exc}") from exc
    if assessment is None:
        issues = [issue for issue in parsed.issues if issue != "no reasoning block"]
        evidence = tuple(f"no decision: {issue}" for issue in issues) or ("no decision: the output is incomplete",)
        assessment = Assessment(decision=Decision.UNDETERMINED, confidence=0.0, evidence=evidence)
    trace = Trace(
        verdict_id=verdict_id,
        request_id=end.request_id,
        created_at=created_at,
        model=end.model or request.model or getattr(backend, "model", None),
        backend=backend.kind,
        endpoint=backend.endpoint,
        sampling=request.sampling,
        streamed=request.stream,
        usage=_usage(end, progress, parsed.reasoning, parsed.answer),
        finish_reason=end.finish_reason,
        format_ok=parsed.format_ok,
        format_issues=parsed.issues,
        timings=Timings(
            total_ms=(time.perf_counter() - started) * 1000,
            first_token_ms=progress.first_token_ms if request.stream else None,
            reasoning_end_ms=progress.reasoning_end_ms if request.stream else None,
        ),
        retries=end.retries,
        detector=detector.name,
        raw_output=content,
        version=tarsguard.__version__,
    )
    verdict = Verdict(
        decision=assessment.decision,
        answer=parsed.answer,
        reasoning=parsed.reasoning,
        confidence=assessment.confidence,
        evidence=assessment.evidence,
        trace=trace,
    )
    return Finished(parsed.reasoning, parsed.answer, verdict, request.model or trace.model)


def _usage(end: GenerationEnd, progress: _Progress, reasoning: str | None, answer: str) -> Usage:
    completion = end.completion_tokens
    if completion is None:
        return Usage(prompt_tokens=end.prompt_tokens)
    counted = progress.reasoning_steps + progress.answer_steps + progress.undecided_steps
    if counted:
        reasoning_tokens = round(completion * progress.reasoning_steps / counted)
        estimated = counted != completion
    else:
        chars = len(reasoning or "") + len(answer)
        reasoning_tokens = round(completion * len(reasoning or "") / chars) if chars else 0
        estimated = True
    return Usage(
        prompt_tokens=end.prompt_tokens,
        completion_tokens=completion,
        reasoning_tokens=reasoning_tokens,
        answer_tokens=completion - reasoning_tokens,
        split_estimated=estimated,
    )
