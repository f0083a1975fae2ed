"""Guard, AsyncGuard: send a prompt to the reasoner, parse its output, read the decision, make a verdict."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Self, TypedDict, TypeVar, Unpack, overload

from ._config import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_SAMPLING,
    ENV_API_KEY,
    ENV_MODEL,
    ENV_TRACE,
    Timeout,
    merge_sampling,
    resolve,
    resolve_base_url,
    resolve_min_confidence,
    resolve_timeout,
)
from ._early import EarlyStop
from ._exceptions import (
    BackendError,
    BackendTimeout,
    ConfigurationError,
    ContextLengthExceeded,
    InvalidInput,
    TarsGuardError,
)
from ._input import Prompt, check_text, guard_messages
from ._parse import CLOSE_TAG, OPEN_TAG, ParsedOutput, parse_output
from ._stream import TextChunk, ThinkSplitter
from ._sync import LoopThread
from ._types import (
    Assessment,
    Decision,
    ErrorInfo,
    ErrorPolicy,
    Health,
    SamplingParams,
    Stopped,
    Timings,
    Trace,
    Usage,
    Verdict,
)
from ._version import __version__
from ._windows import (
    ASSUMED_FIT_TOKENS,
    DEFAULT_CONTEXT_TOKENS,
    LONG_PROMPTS,
    MIN_BUDGET_TOKENS,
    TYPICAL_BYTES_PER_TOKEN,
    WINDOW_CONCURRENCY,
    LongPrompts,
    combine,
    estimate_tokens,
    restrictiveness,
    windows,
)
from .backends._base import Backend, GenerationEnd, GenerationRequest, GenerationRestart
from .backends._retries import retries_so_far, start_counting
from .detect import DecisionDetector, default_detector

if TYPE_CHECKING:
    from ._cache import VerdictCache
    from .middleware import ProtectOptions
    from .tracing import Redactor, RedactSpec, Tracer, TraceSpec

__all__ = ["AsyncGuard", "CheckResult", "Guard", "SamplingOverrides"]

_F = TypeVar("_F", bound=Callable[..., Any])

logger = logging.getLogger("tarsguard")

_POLICIES: tuple[ErrorPolicy, ...] = ("raise", "decline", "allow")
_TAG_OVERLAP = len(CLOSE_TAG) - 1
CheckResult = Verdict | TarsGuardError
"""One item of ``check_many``: its verdict, or the error that replaced it."""


class SamplingOverrides(TypedDict, total=False):
    """Sampling parameters that a guard or a single call may override."""

    temperature: float
    top_p: float
    max_tokens: int
    seed: int
    stop: str | Sequence[str]


@dataclass
class _Collected:
    """What one generation produced, with the moments that matter for timings."""

    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    end: GenerationEnd | None = None
    first_token_ms: float | None = None
    reasoning_end_ms: float | None = None
    closed: bool = False
    """Whether a ``</think>`` was seen in the content."""
    field_steps: int = 0
    """Generation steps of the server's separate reasoning field."""
    before_close: int = 0
    """Content steps up to and including the one with ``</think>`` (all of them if none came)."""
    after_close: int = 0
    split_estimated: bool = False
    """Whether merged steps straddled ``</think>``, so the reasoning/answer token split is estimated."""
    stopped: Stopped | None = None
    """Set when the guard closed the stream itself (an early verdict or the reasoning budget)."""
    early: Assessment | None = None
    """The reading of the partial answer that settled an early verdict."""
    early_reading: ParsedOutput | None = None
    """The split of the output that reading was of, when the answer had more tags than the format has."""
    answer_parts: list[str] = field(default_factory=list)
    """The answer's text after ``</think>`` so far (kept only while early stop or a budget watches)."""
    reasoning_text: str | None = None
    """The finished reasoning, once the answer has started (kept only while watched)."""

    def restart(self) -> None:
        """Forget the text and counts of a generation the backend abandoned; timings to the first token stay."""
        fresh = _Collected(first_token_ms=self.first_token_ms)
        for item in dataclasses.fields(self):
            setattr(self, item.name, getattr(fresh, item.name))


class _GuardCore:
    """Configuration and the check pipeline shared by ``Guard`` and ``AsyncGuard``."""

    def __init__(
        self,
        base_url: str | Sequence[str] | None = None,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float | Timeout | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        stream: bool = True,
        on_error: ErrorPolicy = "raise",
        detector: DecisionDetector | None = None,
        backend: Backend | None = None,
        headers: dict[str, str] | None = None,
        trace: TraceSpec | Tracer | bool | None = None,
        redact: RedactSpec = None,
        trace_sample: float | None = None,
        long_prompts: LongPrompts = "windows",
        context_tokens: int | None = None,
        early_stop: bool | EarlyStop | None = None,
        max_reasoning_tokens: int | None = None,
        cache: VerdictCache | bool | str | None = None,
        min_confidence: float | None = None,
        **sampling: Unpack[SamplingOverrides],
    ) -> None:
        if on_error not in _POLICIES:
            raise ConfigurationError(f"on_error must be one of {', '.join(_POLICIES)}; got {on_error!r}")
        self._model = resolve(model, ENV_MODEL)
        if backend is None:
            url = resolve_base_url(base_url)
            if url is None:
                # No server: the embedded default runs the model in-process; it loads on the first check.
                from .backends._embedded import embedded_backend

                backend = embedded_backend(self._model)
            else:
                from .backends.pool import http_backend

                backend = http_backend(
                    url,
                    api_key=resolve(api_key, ENV_API_KEY),
                    model=self._model,
                    max_retries=max_retries,
                    headers=headers,
                )
        elif base_url is not None or api_key is not None or headers is not None:
            raise ConfigurationError("pass either backend= or base_url=/api_key=/headers=, not both")
        self._backend: Backend = backend
        self._timeout = resolve_timeout(timeout)
        self._sampling = merge_sampling(DEFAULT_SAMPLING, dict(sampling))
        self._stream = stream
        self._on_error: ErrorPolicy = on_error
        self._min_confidence = resolve_min_confidence(min_confidence)
        self._detector = detector or default_detector()
        # A detector that needs I/O (an LLM judge) offers an async ``aassess``; the guard prefers it.
        self._aassess: Callable[..., Awaitable[Assessment]] | None = getattr(self._detector, "aassess", None)
        self._early_stop, self._early_stop_auto = self._resolve_early_stop(early_stop)
        if max_reasoning_tokens is not None and max_reasoning_tokens < 1:
            raise ConfigurationError(f"max_reasoning_tokens must be >= 1; got {max_reasoning_tokens}")
        if (early_stop or max_reasoning_tokens) and not stream:
            raise ConfigurationError("early_stop and max_reasoning_tokens need stream=True: they read the stream")
        self._max_reasoning_tokens = max_reasoning_tokens
        if long_prompts not in LONG_PROMPTS:
            raise ConfigurationError(f"long_prompts must be one of {', '.join(LONG_PROMPTS)}; got {long_prompts!r}")
        if context_tokens is not None and context_tokens < 1:
            raise ConfigurationError(f"context_tokens must be >= 1; got {context_tokens}")
        self._long_prompts: LongPrompts = long_prompts
        self._context_tokens = context_tokens
        self._context_limit: int | None = None
        self._context_reported = False
        """Whether that length is the server's own: such a server refuses a prompt too long for it, in words the
        HTTP backend recognises as ``ContextLengthExceeded``."""
        """The guard model's context length once looked up (or learnt from a refusal)."""
        self._cache: VerdictCache | None = None
        if cache is not None and cache is not False:
            from ._cache import resolve_cache

            self._cache = resolve_cache(cache)
        # Tracing costs nothing unless asked for: tarsguard.tracing is not even imported.
        self._tracer: Tracer | None = None
        if trace is not None or redact is not None or trace_sample is not None or os.environ.get(ENV_TRACE):
            from .tracing import resolve_tracer

            self._tracer = resolve_tracer(trace, redact=redact, sample=trace_sample)
        self._cache_redactor: Redactor | None = None
        if self._cache is not None:
            # The shared cache store keeps verdicts' text as traces do: through the same redaction.
            from .tracing._redact import make_redactor

            self._cache_redactor = self._tracer._redactor if self._tracer is not None else make_redactor(redact)

    @property
    def backend(self) -> Backend:
        """The backend generations come from."""
        return self._backend

    @property
    def detector(self) -> DecisionDetector:
        """The detector that reads decisions from answers."""
        return self._detector

    @property
    def early_stop(self) -> EarlyStop | None:
        """When checks end the generation early; ``None`` when they do not (unless a call asks)."""
        return self._early_stop

    @property
    def min_confidence(self) -> float:
        """The confidence an answered decision needs before a verdict allows the prompt."""
        return self._min_confidence

    @property
    def cache(self) -> VerdictCache | None:
        """The verdict cache (``cache=``), or ``None``."""
        return self._cache

    def _resolve_early_stop(self, spec: bool | EarlyStop | None) -> tuple[EarlyStop | None, bool]:
        """The guard's early-stop policy, and whether it was left to each path to decide (``None``)."""
        if spec is None:
            return None, True
        if spec is False:
            return None, False
        if self._aassess is not None:
            raise ConfigurationError(
                f"early_stop needs a detector that reads answers in-process; {self._detector.name} calls a model"
            )
        return (EarlyStop() if spec is True else spec), False

    def _early_policy(self, early_stop: bool | None) -> EarlyStop | None:
        """The early-stop policy of one call: its own choice (``True``/``False``), else the guard's."""
        if early_stop is None:
            return self._early_stop
        if not early_stop:
            return None
        if not self._stream or self._aassess is not None:
            raise ConfigurationError("early_stop needs stream=True and a detector that reads answers in-process")
        return self._early_stop or EarlyStop()

    @property
    def early_stop_when_screening(self) -> bool | None:
        """What to pass as ``check(..., early_stop=)`` where another model writes the reply: ``True`` unless the
        guard was given ``early_stop=`` itself (then ``None``: its own setting) or cannot stop early."""
        auto = self._early_stop_auto and self._stream and self._aassess is None
        return True if auto else None

    @property
    def tracer(self) -> Tracer | None:
        """Where verdicts are traced (``trace=`` or ``TARSGUARD_TRACE``), or ``None``."""
        return self._tracer

    @property
    def sampling(self) -> SamplingParams:
        """The guard's default sampling parameters."""
        return self._sampling

    def __repr__(self) -> str:
        return f"{type(self).__name__}(endpoint={self._backend.endpoint!r}, model={self._model!r})"

    @overload
    def protect(self, fn: _F, /, **options: Unpack[ProtectOptions]) -> _F: ...
    @overload
    def protect(self, fn: None = None, /, **options: Unpack[ProtectOptions]) -> Callable[[_F], _F]: ...
    def protect(self, fn: Callable[..., Any] | None = None, /, **options: Unpack[ProtectOptions]) -> Any:
        """Put this guard in front of a chatbot callable, or return a decorator that does; see ``protect``."""
        from .middleware import protect

        return protect(self, fn, **options)  # type: ignore[call-overload]

    # -- the pipeline: input -> backend -> parse -> detect -> verdict ----------------------------------

    async def _check(
        self,
        prompt: Prompt,
        timeout: float | Timeout | None,
        sampling: SamplingOverrides,
        early_stop: bool | None = None,
        on_text: Callable[[TextChunk], None] | None = None,
        model: str | None = None,
    ) -> Verdict:
        tracer = self._tracer
        if tracer is None:
            return await self._check_prompt(prompt, timeout, sampling, early_stop, on_text, model)
        with tracer.check(model or self._model) as scope:  # the check's span (when spans are on) covers this block
            verdict = await self._check_prompt(prompt, timeout, sampling, early_stop, on_text, model)
            scope.record(verdict, prompt=prompt)
        return verdict

    async def _check_prompt(
        self,
        prompt: Prompt,
        timeout: float | Timeout | None,
        sampling: SamplingOverrides,
        early_stop: bool | None,
        on_text: Callable[[TextChunk], None] | None,
        model: str | None,
    ) -> Verdict:
        """Validate the prompt and neutralise its tags, then check it whole, or in windows when it is longer
        than the guard model's context."""
        messages = guard_messages(prompt)
        params = merge_sampling(self._sampling, dict(sampling))
        check_text([model or self._model or "", *(params.stop or ())], "the model name or a stop sequence")
        estimate = estimate_tokens(messages)
        needed = estimate + params.max_tokens
        limit = self._context_limit
        if limit is None and needed > ASSUMED_FIT_TOKENS:
            limit = await self._context_length(timeout)
        # A server that reported its context refuses a prompt too long for it: a prompt likely to fit is sent whole,
        # and checked in windows only if the server refuses it (a round trip, no generation).
        likely = self._context_reported and limit is not None
        likely = likely and estimate // TYPICAL_BYTES_PER_TOKEN + params.max_tokens <= (limit or 0)
        if limit is None or needed <= limit or likely:
            try:
                return await self._check_once(messages, timeout, sampling, early_stop, on_text, model)
            except ContextLengthExceeded as exc:
                if self._long_prompts == "reject":
                    raise
                if exc.limit is not None:
                    self._context_limit, self._context_reported = exc.limit, True
                limit = exc.limit or await self._context_length(timeout)
                # Where even the bound fitted, the server's tokenizer or template needs more than estimated: halve.
                budget = (limit if needed > limit else min(limit, needed // 2)) - params.max_tokens
        elif self._long_prompts == "reject":
            raise ContextLengthExceeded(
                f"the prompt (up to {needed - params.max_tokens} tokens by a conservative estimate) and max_tokens "
                f"({params.max_tokens}) do not fit the guard model's context of {limit} tokens",
                limit=limit,
                prompt_tokens=needed - params.max_tokens,
            )
        else:
            budget = limit - params.max_tokens
        if budget < MIN_BUDGET_TOKENS and limit - params.max_tokens < MIN_BUDGET_TOKENS:
            raise ContextLengthExceeded(
                f"max_tokens ({params.max_tokens}) leaves {max(limit - params.max_tokens, 0)} of the guard model's "
                f"{limit} context tokens for the prompt; lower max_tokens to screen prompts",
                limit=limit,
            )
        started = time.perf_counter()
        gate = asyncio.Semaphore(WINDOW_CONCURRENCY)
        verdict = await self._check_windows(messages, budget, gate, limit, timeout, sampling, early_stop, model)
        verdict = verdict.model_copy(
            update={"trace": verdict.trace.model_copy(update={"timings": Timings(total_ms=_ms_since(started))})}
        )
        if on_text is not None:
            if verdict.reasoning:
                on_text(TextChunk("reasoning", verdict.reasoning))
            on_text(TextChunk("answer", verdict.answer))
        return verdict

    async def _check_windows(
        self,
        messages: list[dict[str, str]],
        budget: int,
        gate: asyncio.Semaphore,
        limit: int,
        timeout: float | Timeout | None,
        sampling: SamplingOverrides,
        early_stop: bool | None,
        model: str | None,
    ) -> Verdict:
        """The most restrictive verdict of ``messages``' windows of ``budget`` prompt tokens, at most
        ``WINDOW_CONCURRENCY`` checked at a time; a window the server still refuses is checked in halves."""
        started = time.perf_counter()
        parts = windows(messages, budget)

        async def one(window: list[dict[str, str]]) -> Verdict:
            async with gate:
                try:
                    return await self._check_once(window, timeout, sampling, early_stop, None, model)
                except ContextLengthExceeded:
                    pass
            return await self._check_windows(window, budget // 2, gate, limit, timeout, sampling, early_stop, model)

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(window)) for window in parts]
        except BaseExceptionGroup as failure:
            raise failure.exceptions[0] from None
        note = (
            f"the prompt is longer than the guard model's context ({limit} tokens): checked in {len(parts)} "
            f"windows of up to {budget} prompt tokens"
        )
        return combine([t.result() for t in tasks], note=note, total_ms=_ms_since(started))

    async def _context_length(self, timeout: float | Timeout | None) -> int:
        """The guard model's context length: the server's ``max_model_len``, else ``context_tokens``, else TARS's."""
        if self._context_limit is not None:
            return self._context_limit
        limits = self._timeout if timeout is None else Timeout.of(timeout)
        try:
            reported = (await self._backend.health(timeout=limits)).max_model_len
        except TarsGuardError:
            return self._context_tokens or DEFAULT_CONTEXT_TOKENS  # asked again next time
        self._context_limit = reported or self._context_tokens or DEFAULT_CONTEXT_TOKENS
        # Only an HTTP server's refusal is known to be recognised; an in-process engine may fail in its own way.
        self._context_reported = bool(reported) and self._backend.kind in ("http", "http-pool")
        return self._context_limit

    async def _check_once(
        self,
        messages: list[dict[str, str]],
        timeout: float | Timeout | None,
        sampling: SamplingOverrides,
        early_stop: bool | None,
        on_text: Callable[[TextChunk], None] | None,
        model: str | None,
    ) -> Verdict:
        params = merge_sampling(self._sampling, dict(sampling))
        limits = self._timeout if timeout is None else Timeout.of(timeout)
        early = self._early_policy(early_stop)
        request = GenerationRequest(messages, params, limits, stream=self._stream, model=model or self._model)
        cache, key = self._cache, None
        loop = asyncio.get_running_loop()
        ends_at = None if limits.total is None else loop.time() + limits.total
        if cache is not None:
            key = self._cache_key(request, early, None)  # None while the model is not yet known: no lookup
            spare = None if limits.total is None else limits.total / 2  # a slow store leaves the check time to run
            hit = None if key is None else await cache.aget(key, timeout=spare)
            if hit is not None:
                if on_text is not None:
                    if hit.reasoning:
                        on_text(TextChunk("reasoning", hit.reasoning))
                    on_text(TextChunk("answer", hit.answer))
                return self._thresholded(hit)
        verdict_id = uuid.uuid4().hex
        created_at = datetime.now(UTC)
        started = time.perf_counter()
        collected = _Collected()
        deadline = asyncio.timeout_at(ends_at)
        start_counting()
        try:
            async with deadline:
                await self._collect(request, collected, started, early, messages[-1]["content"], on_text)
                parsed = _unread_by_early_stop(_parsed(collected), collected, early)
                if collected.stopped is not None:
                    assessment = collected.early
                    parsed = collected.early_reading or parsed
                elif parsed.readings:
                    assessment, parsed = await self._assess_readings(parsed, messages[-1]["content"])
                elif parsed.complete:
                    assessment = await self._assess(parsed, messages[-1]["content"])
                else:
                    assessment = None
        except InvalidInput:
            raise  # the server refused the prompt itself (longer than its context): never a failed check
        except TarsGuardError as exc:
            return self._failed(exc, verdict_id, created_at, started, request, collected)
        except Exception as exc:
            if isinstance(exc, TimeoutError) and deadline.expired():
                error: TarsGuardError = BackendTimeout(f"no verdict within {limits.total:g} s")
                error.retries = retries_so_far()  # the retries the backend made before the deadline
            else:
                # A backend or detector plug-in failed in its own way: still an error of the check.
                error = BackendError(f"the check failed: {type(exc).__name__}: {exc}")
                error.__cause__ = exc
            return self._failed(error, verdict_id, created_at, started, request, collected)
        total_ms = (time.perf_counter() - started) * 1000
        verdict = self._verdict(request, parsed, assessment, collected, verdict_id, created_at, total_ms)
        if cache is not None:
            key = key or self._cache_key(request, early, verdict.trace.model)
            if key is not None:
                left = None if ends_at is None else ends_at - loop.time()
                await cache.aput(key, verdict, timeout=left, redactor=self._cache_redactor)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "verdict %s: %s (%.2f) model=%s total=%.1fms",
                verdict_id,
                verdict.decision.value,
                verdict.confidence,
                verdict.trace.model,
                total_ms,
            )
        return verdict

    async def _collect(
        self,
        request: GenerationRequest,
        out: _Collected,
        started: float,
        early: EarlyStop | None,
        prompt: str,
        on_text: Callable[[TextChunk], None] | None,
    ) -> None:
        contents = out.content
        splitter = ThinkSplitter() if on_text is not None else None
        tail = ""
        budget = self._max_reasoning_tokens
        watched = early is not None or budget is not None
        read_at = 0
        readings: list[Assessment] = []
        events = self._backend.generate(request)
        try:
            async for event in events:
                if isinstance(event, GenerationEnd):
                    out.end = event
                    continue
                if isinstance(event, GenerationRestart):
                    # The backend starts over elsewhere: nothing generated so far belongs to this verdict.
                    out.restart()
                    contents, tail, read_at = out.content, "", 0
                    readings.clear()
                    if on_text is not None:
                        on_text(TextChunk("restart", event.reason))
                        splitter = ThinkSplitter()
                    continue
                content, reasoning, content_steps, reasoning_steps = event
                if out.first_token_ms is None:
                    out.first_token_ms = (time.perf_counter() - started) * 1000
                if reasoning:
                    out.reasoning.append(reasoning)
                    out.field_steps += reasoning_steps
                if on_text is not None and splitter is not None:
                    if reasoning:
                        on_text(TextChunk("reasoning", reasoning))
                    for kind, text in splitter.feed(content):
                        on_text(TextChunk(kind, text))
                if content:
                    contents.append(content)
                    if out.closed:
                        out.after_close += content_steps
                        if watched:
                            out.answer_parts.append(content)
                    else:
                        if out.reasoning and out.reasoning_end_ms is None:
                            out.reasoning_end_ms = (time.perf_counter() - started) * 1000
                        window = tail + content
                        at = window.find(CLOSE_TAG)
                        if at == -1:
                            out.before_close += content_steps
                            tail = window[-_TAG_OVERLAP:]
                        else:
                            out.closed = True
                            out.reasoning_end_ms = out.reasoning_end_ms or (time.perf_counter() - started) * 1000
                            tag_end = at + len(CLOSE_TAG) - len(tail)
                            if content_steps == 1 or tag_end == len(content):
                                out.before_close += content_steps
                            else:
                                # Merged steps straddle </think>: share them out by where the tag ends.
                                before = max(1, round(content_steps * tag_end / len(content)))
                                out.before_close += before
                                out.after_close += content_steps - before
                                out.split_estimated = True
                            if watched:
                                out.answer_parts.append(content[tag_end:])
                if not watched:
                    continue
                answer_tokens = _answer_steps(out, plain=early is not None and early.plain_answer)
                if answer_tokens is None:
                    if budget is not None and _reasoning_steps(out) >= budget:
                        out.stopped = Stopped(reason="reasoning_budget", at_token=_reasoning_steps(out))
                        return
                elif early is not None and early.due(answer_tokens, read_at):
                    read_at = answer_tokens
                    answer, reasoning_so_far = _so_far(out)
                    parsed_so_far = _parsed(out) if OPEN_TAG in answer or CLOSE_TAG in answer or out.reasoning else None
                    if parsed_so_far is not None and parsed_so_far.readings:
                        # More tags than the format has: every split of the output so far is read.
                        assessments = [
                            self._detector.assess(r.answer, reasoning=r.reasoning, prompt=prompt) if r.answer else None
                            for r in parsed_so_far.readings
                        ]
                        reading, out.early_reading = _kept(parsed_so_far, assessments)
                    else:
                        reading = self._detector.assess(answer, reasoning=reasoning_so_far, prompt=prompt)
                        out.early_reading = None
                    readings.append(reading)
                    if early.settles(readings, answer_tokens):
                        out.early = reading
                        out.stopped = Stopped(
                            reason="decision_certain",
                            at_token=_reasoning_steps(out, plain=early.plain_answer) + answer_tokens,
                            answer_tokens=answer_tokens,
                        )
                        return
        finally:
            # Closing the stream is what tells the server to stop (early verdicts, errors, cancellation).
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
        if on_text is not None and splitter is not None and out.stopped is None:
            for kind, text in splitter.finish():
                on_text(TextChunk(kind, text))
        if out.end is None:
            raise BackendError(f"the {self._backend.kind} backend ended without finishing the generation")

    def _cache_key(self, request: GenerationRequest, early: EarlyStop | None, served: str | None) -> str | None:
        """The cache key of ``request``; ``None`` while the model is unknown (a backend that finds its model on the
        first check), so that a verdict is never kept or found under a model other than the one that made it."""
        from ._cache import cache_key

        model = request.model or getattr(self._backend, "model", None) or served
        if not model:
            return None
        variant = f"stream={request.stream} early={early} budget={self._max_reasoning_tokens}"
        return cache_key(request.messages, model, request.sampling, self._detector.name, variant)

    def _thresholded(self, verdict: Verdict) -> Verdict:
        """``verdict`` (a cached one, made under any threshold) judged against this guard's ``min_confidence``."""
        threshold, before = self._min_confidence, verdict.trace.min_confidence
        if threshold == before:
            return verdict
        evidence = verdict.evidence
        if before is not None:
            stale = _below_threshold(verdict.decision, verdict.confidence, before)
            evidence = tuple(line for line in evidence if line not in stale)
        evidence += _below_threshold(verdict.decision, verdict.confidence, threshold)
        trace = verdict.trace.model_copy(update={"min_confidence": threshold})
        return verdict.model_copy(update={"trace": trace, "evidence": evidence})

    async def _assess_readings(self, parsed: ParsedOutput, prompt: str) -> tuple[Assessment, ParsedOutput]:
        """The most restrictive reading of an output with several (see ``ParsedOutput.readings``), and that split."""
        assessments = [
            await self._assess(dataclasses.replace(parsed, reasoning=r.reasoning, answer=r.answer), prompt)
            if r.answer
            else None
            for r in parsed.readings
        ]
        return _kept(parsed, assessments)

    async def _assess(self, parsed: ParsedOutput, prompt: str) -> Assessment:
        if self._aassess is not None:
            return await self._aassess(parsed.answer, reasoning=parsed.reasoning, prompt=prompt)
        return self._detector.assess(parsed.answer, reasoning=parsed.reasoning, prompt=prompt)

    def _verdict(
        self,
        request: GenerationRequest,
        parsed: ParsedOutput,
        assessment: Assessment | None,
        collected: _Collected,
        verdict_id: str,
        created_at: datetime,
        total_ms: float,
    ) -> Verdict:
        end = collected.end or GenerationEnd()
        stopped = collected.stopped
        if assessment is not None:
            decision, confidence = assessment.decision, assessment.confidence
            evidence = assessment.evidence + _below_threshold(decision, confidence, self._min_confidence)
        elif stopped is not None:
            budget = f"the reasoning reached its budget of {self._max_reasoning_tokens} tokens"
            decision, confidence, evidence = Decision.UNDETERMINED, 0.0, (f"no decision: {budget}",)
        else:
            decision, confidence, evidence = Decision.UNDETERMINED, 0.0, _incomplete_evidence(parsed)
        trace = Trace(
            verdict_id=verdict_id,
            request_id=end.request_id,
            created_at=created_at,
            model=end.model or request.model or getattr(self._backend, "model", None),
            backend=self._backend.kind,
            endpoint=self._backend.endpoint,
            sampling=request.sampling,
            streamed=request.stream,
            usage=_usage(end, collected, parsed, request.stream),
            finish_reason=end.finish_reason,
            format_ok=parsed.format_ok,
            format_issues=parsed.issues,
            timings=Timings(
                total_ms=total_ms,
                first_token_ms=collected.first_token_ms if request.stream else None,
                reasoning_end_ms=collected.reasoning_end_ms if request.stream else None,
            ),
            retries=end.retries,
            detector=(assessment.detector if assessment is not None else None) or self._detector.name,
            raw_output="".join(collected.content),
            stopped=stopped,
            cache=None if self._cache is None else "miss",
            min_confidence=self._min_confidence,
            version=__version__,
        )
        return Verdict(
            decision=decision,
            answer=_whole_sentences(parsed.answer) if stopped is not None else parsed.answer,
            reasoning=parsed.reasoning,
            confidence=confidence,
            evidence=evidence,
            trace=trace,
        )

    def _failed(
        self,
        error: TarsGuardError,
        verdict_id: str,
        created_at: datetime,
        started: float,
        request: GenerationRequest,
        collected: _Collected,
    ) -> Verdict:
        if self._on_error == "raise":
            raise error
        logger.warning(
            "check %s failed (%s); on_error=%r gives an undetermined verdict",
            verdict_id,
            error.kind,
            self._on_error,
        )
        return error_verdict(
            error,
            policy=self._on_error,
            backend=self._backend,
            sampling=request.sampling,
            detector=self._detector.name,
            started=started,
            verdict_id=verdict_id,
            created_at=created_at,
            model=request.model,
            streamed=request.stream,
            raw_output="".join(collected.content) or None,
        )

    async def _stream_check(
        self,
        prompt: Prompt,
        timeout: float | Timeout | None,
        sampling: SamplingOverrides,
        early_stop: bool | None,
        model: str | None,
    ) -> AsyncGenerator[TextChunk | Verdict, None]:
        chunks: asyncio.Queue[TextChunk | None] = asyncio.Queue()
        task = asyncio.ensure_future(self._check(prompt, timeout, sampling, early_stop, chunks.put_nowait, model))
        task.add_done_callback(lambda _: chunks.put_nowait(None))
        try:
            while (chunk := await chunks.get()) is not None:
                yield chunk
            yield await task
        finally:
            if not task.done():
                # The caller stopped listening: stop the check, which closes the stream to the server.
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _check_many(
        self,
        prompts: Iterable[Prompt],
        concurrency: int,
        timeout: float | Timeout | None,
        on_result: Callable[[int, CheckResult], None] | None,
        sampling: SamplingOverrides,
        early_stop: bool | None = None,
        model: str | None = None,
    ) -> list[CheckResult]:
        if concurrency < 1:
            raise ConfigurationError("concurrency must be >= 1")
        items = list(prompts)
        results: list[CheckResult | None] = [None] * len(items)
        indices = iter(range(len(items)))

        async def worker() -> None:
            for i in indices:
                try:
                    result: CheckResult = await self._check(items[i], timeout, sampling, early_stop, None, model)
                except TarsGuardError as exc:
                    result = exc
                results[i] = result
                if on_result is not None:
                    on_result(i, result)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(concurrency, len(items))):
                    group.create_task(worker())
        except BaseExceptionGroup as failure:
            # Only a bug or a failing on_result callback gets here; surface it as it was raised.
            raise failure.exceptions[0] from None
        return [r for r in results if r is not None]

    async def _health(self, timeout: float | Timeout | None) -> Health:
        return await self._backend.health(timeout=self._timeout if timeout is None else Timeout.of(timeout))


class AsyncGuard(_GuardCore):
    """Screens prompts with the TARS reasoner, asynchronously.

    ``base_url`` (else ``TARSGUARD_BASE_URL``) points at a vLLM or OpenAI-compatible server; ``model``
    (else ``TARSGUARD_MODEL``, else the first model the server lists); ``api_key`` (else
    ``TARSGUARD_API_KEY``) is sent as a Bearer token; ``timeout`` (seconds for the whole check, or a
    ``Timeout``; else ``TARSGUARD_TIMEOUT``); ``on_error`` chooses between raising (default), failing closed
    (``"decline"``) and failing open (``"allow"``) with an undetermined verdict; ``min_confidence`` (else
    ``TARSGUARD_MIN_CONFIDENCE``, else ``DEFAULT_MIN_CONFIDENCE``) is the confidence an answered decision needs
    before the verdict allows the prompt; sampling defaults follow the TARS authors (temperature 0.6, top_p 1.0,
    max_tokens 4096) and may be overridden here or per call.

    A prompt longer than the guard model's context (``max_model_len`` from the server's ``/v1/models``, else
    ``context_tokens``, else 32,768) is checked in overlapping windows that each fit, and the most restrictive
    window's verdict is kept (``long_prompts="windows"``, the default); ``long_prompts="reject"`` raises
    ``ContextLengthExceeded`` instead. A prompt the guard model cannot read is never a failed check: invalid
    text and prompts the server refuses as too long raise ``InvalidInput`` under every ``on_error`` policy.
    """

    async def check(
        self,
        prompt: Prompt,
        *,
        timeout: float | Timeout | None = None,
        early_stop: bool | None = None,
        model: str | None = None,
        **sampling: Unpack[SamplingOverrides],
    ) -> Verdict:
        """Check one prompt (a string, or chat messages ending with a user turn) and return its verdict.

        ``early_stop=True`` ends the generation as soon as the answer settles the decision (the verdict's
        answer is then partial); ``False`` never does; ``None`` follows the guard's ``early_stop``. ``model``
        asks for another model of the same server than the guard's.
        """
        return await self._check(prompt, timeout, sampling, early_stop, None, model)

    def stream(
        self,
        prompt: Prompt,
        *,
        timeout: float | Timeout | None = None,
        early_stop: bool | None = None,
        model: str | None = None,
        **sampling: Unpack[SamplingOverrides],
    ) -> AsyncIterator[TextChunk | Verdict]:
        """Check one prompt, yielding the reasoning and answer as ``TextChunk``s while they are generated, then
        the ``Verdict`` last. Leaving the loop early stops the generation."""
        return self._stream_check(prompt, timeout, sampling, early_stop, model)

    async def check_many(
        self,
        prompts: Iterable[Prompt],
        *,
        concurrency: int = 8,
        timeout: float | Timeout | None = None,
        on_result: Callable[[int, CheckResult], None] | None = None,
        early_stop: bool | None = None,
        model: str | None = None,
        **sampling: Unpack[SamplingOverrides],
    ) -> list[CheckResult]:
        """Check many prompts with at most ``concurrency`` in flight.

        Results keep the input order; a prompt that failed has its error in its place, and the others are
        kept. ``on_result(index, result)`` is called as each finishes.
        """
        return await self._check_many(prompts, concurrency, timeout, on_result, sampling, early_stop, model)

    async def health(self, *, timeout: float | Timeout | None = None) -> Health:
        """Whether the backend is up, and which models it serves."""
        return await self._health(timeout)

    async def aclose(self) -> None:
        """Close the backend's connections and flush the trace sinks."""
        await self._backend.aclose()
        if self._tracer is not None:
            await asyncio.to_thread(self._tracer.close)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Guard(_GuardCore):
    """Screens prompts with the TARS reasoner; the blocking twin of ``AsyncGuard``, same arguments.

    Safe to call from inside a running event loop: the work runs on the guard's own loop thread.
    """

    @cached_property
    def _loop(self) -> LoopThread:
        return LoopThread()

    def check(
        self,
        prompt: Prompt,
        *,
        timeout: float | Timeout | None = None,
        early_stop: bool | None = None,
        model: str | None = None,
        **sampling: Unpack[SamplingOverrides],
    ) -> Verdict:
        """Check one prompt (a string, or chat messages ending with a user turn); see ``AsyncGuard.check``."""
        return self._loop.run(self._check(prompt, timeout, sampling, early_stop, None, model))

    def stream(
        self,
        prompt: Prompt,
        *,
        timeout: float | Timeout | None = None,
        early_stop: bool | None = None,
        model: str | None = None,
        **sampling: Unpack[SamplingOverrides],
    ) -> Iterator[TextChunk | Verdict]:
        """Check one prompt, yielding ``TextChunk``s as they are generated, then the ``Verdict``; see
        ``AsyncGuard.stream``."""
        events = self._stream_check(prompt, timeout, sampling, early_stop, model)

        async def step() -> TextChunk | Verdict | None:
            return await anext(events, None)

        try:
            while (event := self._loop.run(step())) is not None:
                yield event
        finally:
            self._loop.run(events.aclose())

    def check_many(
        self,
        prompts: Iterable[Prompt],
        *,
        concurrency: int = 8,
        timeout: float | Timeout | None = None,
        on_result: Callable[[int, CheckResult], None] | None = None,
        early_stop: bool | None = None,
        model: str | None = None,
        **sampling: Unpack[SamplingOverrides],
    ) -> list[CheckResult]:
        """Check many prompts concurrently; see ``AsyncGuard.check_many``."""
        return self._loop.run(self._check_many(prompts, concurrency, timeout, on_result, sampling, early_stop, model))

    def health(self, *, timeout: float | Timeout | None = None) -> Health:
        """Whether the backend is up, and which models it serves."""
        return self._loop.run(self._health(timeout))

    def close(self) -> None:
        """Close the backend's connections, stop the guard's loop thread and flush the trace sinks."""
        self._loop.run(self._backend.aclose())
        self._loop.close()
        if self._tracer is not None:
            self._tracer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _kept(parsed: ParsedOutput, assessments: Sequence[Assessment | None]) -> tuple[Assessment, ParsedOutput]:
    """The most restrictive of the readings' assessments (``None``: an empty answer, no decision), and ``parsed``
    as that reading splits it. An output with no readings to compare reads no decision."""
    read = [
        a or Assessment(decision=Decision.UNDETERMINED, confidence=0.0, evidence=(f"no answer {r.split}",))
        for a, r in zip(assessments, parsed.readings, strict=True)
    ]
    if not read:
        return Assessment(decision=Decision.UNDETERMINED, confidence=0.0, evidence=parsed.issues), parsed
    # Among equally restrictive readings, the shortest answer: the least text that is not the model's own.
    index = min(range(len(read)), key=lambda i: (*restrictiveness(read[i]), len(parsed.readings[i].answer)))
    reading, chosen = parsed.readings[index], read[index]
    note = f"read {len(read)} splits of the output's tags; kept the most restrictive, the answer {reading.split}"
    kept = dataclasses.replace(
        parsed, reasoning=reading.reasoning, answer=reading.answer, complete=bool(reading.answer)
    )
    return chosen.model_copy(update={"evidence": (note, *chosen.evidence)}), kept


def read_output(output: str, detector: DecisionDetector) -> Assessment:
    """The decision a guard reads from one complete generated ``output`` (reasoning and answer as the model wrote
    them): undetermined when it has no readable answer, the most restrictive reading when its tags allow several."""
    parsed = parse_output(output, finish_reason="stop")
    if parsed.readings:
        answers = [detector.assess(r.answer, reasoning=r.reasoning) if r.answer else None for r in parsed.readings]
        return _kept(parsed, answers)[0]
    if not parsed.complete:
        return Assessment(decision=Decision.UNDETERMINED, confidence=0.0, evidence=_incomplete_evidence(parsed))
    return detector.assess(parsed.answer, reasoning=parsed.reasoning)


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _usage(end: GenerationEnd, collected: _Collected, parsed: ParsedOutput, streamed: bool) -> Usage:
    completion = end.completion_tokens
    if collected.closed:
        reasoning_steps_total, answer_steps = (
            collected.field_steps + collected.before_close,
            collected.after_close,
        )
    elif parsed.reasoning is not None and not collected.field_steps:
        # An unfinished <think> block: all the content was reasoning.
        reasoning_steps_total, answer_steps = collected.before_close, 0
    else:
        reasoning_steps_total, answer_steps = collected.field_steps, collected.before_close
    counted = reasoning_steps_total + answer_steps
    if streamed and counted:
        if completion is None:
            completion = counted
        reasoning = round(completion * reasoning_steps_total / counted)
        exact = counted == completion and not collected.split_estimated
    else:
        reasoning_chars = len(parsed.reasoning or "")
        total_chars = reasoning_chars + len(parsed.answer)
        if completion is None or not total_chars:
            return Usage(prompt_tokens=end.prompt_tokens, completion_tokens=completion)
        reasoning = round(completion * reasoning_chars / total_chars)
        exact = False
    return Usage(
        prompt_tokens=end.prompt_tokens,
        completion_tokens=completion,
        reasoning_tokens=reasoning,
        answer_tokens=completion - reasoning,
        split_estimated=not exact,
    )


def error_verdict(
    error: TarsGuardError,
    *,
    policy: ErrorPolicy,
    backend: Backend,
    sampling: SamplingParams,
    detector: str,
    started: float,
    verdict_id: str | None = None,
    created_at: datetime | None = None,
    model: str | None = None,
    streamed: bool = False,
    raw_output: str | None = None,
) -> Verdict:
    """The undetermined verdict that stands for a check that failed with ``error`` under ``policy``."""
    status = error.status_code if isinstance(error, BackendError) else None
    trace = Trace(
        verdict_id=verdict_id or uuid.uuid4().hex,
        created_at=created_at or datetime.now(UTC),
        model=model or getattr(backend, "model", None),
        backend=backend.kind,
        endpoint=backend.endpoint,
        sampling=sampling,
        streamed=streamed,
        timings=Timings(total_ms=(time.perf_counter() - started) * 1000),
        retries=error.retries,
        detector=detector,
        raw_output=raw_output,
        error=ErrorInfo(type=error.kind, message=str(error), status_code=status, policy=policy),
        version=__version__,
    )
    return Verdict(
        decision=Decision.UNDETERMINED,
        answer="",
        confidence=0.0,
        evidence=(f"the check failed ({error.kind}): {error}",),
        trace=trace,
    )


def _parsed(collected: _Collected) -> ParsedOutput:
    """The output so far: the whole generation once it ended, a partial one while it streams."""
    reasoning = "".join(collected.reasoning) or None
    finish_reason = collected.end.finish_reason if collected.end is not None else None
    return parse_output("".join(collected.content), reasoning, finish_reason=finish_reason)


_SENTENCE_END = re.compile(r"(?:(?<![0-9])\.|[!?])(?=[\s\"')\]]|$)|[\u3002\uff01\uff1f]|\n\n")


def _whole_sentences(text: str) -> str:
    """``text`` cut back to its last complete sentence (all of it if none ends), for an answer stopped midway."""
    end = 0
    for match in _SENTENCE_END.finditer(text):
        end = match.end()
    return text[:end].rstrip() if end else text


def _so_far(collected: _Collected) -> tuple[str, str | None]:
    """The answer so far and the finished reasoning, for a reading while the answer streams."""
    if collected.reasoning_text is None:
        if collected.closed:
            reasoning = parse_output("".join(collected.content), "".join(collected.reasoning) or None).reasoning
        else:
            reasoning = "".join(collected.reasoning).strip()
        collected.reasoning_text = reasoning or ""
    parts = collected.answer_parts if collected.closed else collected.content
    return "".join(parts).strip(), collected.reasoning_text or None


def _answer_steps(collected: _Collected, *, plain: bool = False) -> int | None:
    """Generation steps of the answer so far; ``None`` while the reasoning is still going (or never ended).

    ``plain``: the model writes no ``<think>`` block, so all of its content is the answer."""
    if collected.closed:
        return collected.after_close
    if (collected.field_steps or plain) and collected.before_close:
        return collected.before_close  # reasoning split off by the server (or none written): the content is the answer
    return None


def _unread_by_early_stop(parsed: ParsedOutput, collected: _Collected, early: EarlyStop | None) -> ParsedOutput:
    """``parsed`` with the reason the guard could not read its answer as it streamed, where that was so: an output
    that never closed its reasoning was watched (early stop, a reasoning budget) as reasoning from start to end."""
    if collected.stopped is not None and collected.stopped.reason == "reasoning_budget":
        if parsed.reasoning is None and not collected.field_steps:
            # No </think> came within the budget: all of it was reasoning as far as the guard could tell.
            text = "".join(collected.content).replace(OPEN_TAG, "").strip()
            issue = f"{NO_CLOSE_IN_BUDGET}; {EARLY_STOP_NO_ANSWER}" if early is not None else NO_CLOSE_IN_BUDGET
            return dataclasses.replace(parsed, reasoning=text, answer="", issues=(*parsed.issues, issue))
        return parsed
    if early is not None and collected.stopped is None and _answer_steps(collected, plain=early.plain_answer) is None:
        return dataclasses.replace(parsed, issues=(*parsed.issues, EARLY_STOP_NO_ANSWER))
    return parsed


EARLY_STOP_NO_ANSWER = (
    "early stop could not act: no </think> came, so no answer was read as it streamed "
    "(EarlyStop(plain_answer=True) reads a model that writes no <think> block)"
)
NO_CLOSE_IN_BUDGET = "no </think> within the reasoning budget: the output so far counts as reasoning"


def _reasoning_steps(collected: _Collected, *, plain: bool = False) -> int:
    """Generation steps of the reasoning so far (``plain``: the model writes no ``<think>`` block)."""
    if plain and not collected.closed:
        return collected.field_steps
    if collected.closed or not collected.field_steps:
        return collected.field_steps + collected.before_close
    return collected.field_steps


def _below_threshold(decision: Decision, confidence: float, threshold: float) -> tuple[str, ...]:
    """The evidence line of an answered decision read with less confidence than ``threshold`` (else none)."""
    if decision is not Decision.ANSWERED or confidence >= threshold:
        return ()
    shown, limit = f"{confidence:.2f}", f"{threshold:.2f}"
    if shown == limit:
        shown, limit = f"{confidence:.4f}", f"{threshold:.4f}"
    return (f"answered with confidence {shown}, below the guard's threshold {limit}",)


def _incomplete_evidence(parsed: ParsedOutput) -> tuple[str, ...]:
    reasons = [issue for issue in parsed.issues if issue != "no reasoning block"]
    return tuple(f"no decision: {reason}" for reason in reasons) or ("no decision: the output is incomplete",)
