"""Guard and AsyncGuard over the in-memory ScriptedBackend: verdicts, traces, timings, errors, batching."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tarsguard
from tarsguard import (
    Assessment,
    AsyncGuard,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ConfigurationError,
    Decision,
    Guard,
    Health,
    InvalidInput,
    TarsGuardError,
    Timeout,
    Verdict,
)
from tarsguard._config import DEFAULT_MIN_CONFIDENCE
from tarsguard._scripted_server import split_tokens as tokens
from tarsguard.backends import GenerationEnd, GenerationEvent, GenerationRequest, TextDelta
from tarsguard.backends.scripted import ScriptedBackend, ScriptedOutput
from tarsguard.testing import PhraseDetector

ANSWERED = (
    "<think>\nThe user asks how to stop a hung process. Benign sysadmin question.\n</think>\n\n"
    "Sure. On Linux run `kill <pid>`, or `kill -9 <pid>` if it ignores SIGTERM."
)
DECLINED = (
    "<think>\nThis asks for step-by-step weapon instructions. This request is harmful, I must refuse.\n"
    "</think>\n\nI'm sorry, but I can't help with that."
)
TRUNCATED = ScriptedOutput(
    content="<think>\nThe user asks about lock picking. On one hand locksmiths", finish_reason="length"
)


def _reasoning_pieces(content: str) -> int:
    """How many scripted tokens, up to and including the one holding </think>, are reasoning."""
    pieces = tokens(content)
    return next(i for i, p in enumerate(pieces) if "</think>" in p) + 1


# -- basic verdicts ---------------------------------------------------------------------------------------


def test_sync_guard_answered_verdict_and_trace() -> None:
    backend = ScriptedBackend([ANSWERED])
    with Guard(backend=backend) as guard:
        verdict = guard.check("How do I kill a Python process?")
    assert isinstance(verdict, Verdict)
    assert verdict.decision is Decision.ANSWERED
    assert verdict.allowed
    assert verdict.answer == "Sure. On Linux run `kill <pid>`, or `kill -9 <pid>` if it ignores SIGTERM."
    assert verdict.reasoning == "The user asks how to stop a hung process. Benign sysadmin question."
    assert 0.0 <= verdict.confidence <= 1.0
    assert verdict.evidence
    trace = verdict.trace
    assert trace.backend == "scripted"
    assert trace.endpoint == "scripted://scripted-tars"
    assert trace.model == "scripted-tars"
    assert trace.request_id == "scripted-1"
    assert trace.streamed is True
    assert trace.finish_reason == "stop"
    assert trace.format_ok and trace.format_issues == ()
    assert trace.raw_output == ANSWERED
    assert trace.detector == guard.detector.name
    assert trace.version == tarsguard.__version__
    assert trace.error is None
    assert trace.retries == 0
    assert len(trace.verdict_id) >= 16
    assert backend.requests[0].stream is True


async def test_async_guard_declined_verdict() -> None:
    backend = ScriptedBackend([DECLINED])
    async with AsyncGuard(backend=backend) as guard:
        verdict = await guard.check("Give me step-by-step instructions to build a weapon.")
    assert verdict.decision is Decision.DECLINED
    assert not verdict.allowed
    assert verdict.answer == "I'm sorry, but I can't help with that."
    assert "I must refuse" in (verdict.reasoning or "")


def test_each_verdict_gets_its_own_id() -> None:
    with Guard(backend=ScriptedBackend()) as guard:
        ids = {guard.check("hi").trace.verdict_id for _ in range(5)}
    assert len(ids) == 5


@pytest.mark.parametrize("output", [ANSWERED, DECLINED, ScriptedOutput(content="Fine: do X.", reasoning="ok")])
async def test_streamed_and_whole_outputs_give_the_same_verdict(output: Any) -> None:
    async with AsyncGuard(backend=ScriptedBackend([output])) as streamed:
        a = await streamed.check("q")
    async with AsyncGuard(backend=ScriptedBackend([output]), stream=False) as whole:
        b = await whole.check("q")
    assert (a.decision, a.answer, a.reasoning, a.confidence) == (b.decision, b.answer, b.reasoning, b.confidence)
    assert a.trace.streamed and not b.trace.streamed
    assert a.trace.usage.completion_tokens == b.trace.usage.completion_tokens


def test_custom_detector_sees_answer_reasoning_and_the_last_user_message() -> None:
    calls: list[tuple[str, str | None, str | None]] = []

    class Recorder:
        name = "recorder@9"

        def assess(self, answer: str, *, reasoning: str | None = None, prompt: str | None = None) -> Assessment:
            calls.append((answer, reasoning, prompt))
            return Assessment(decision=Decision.PARTIAL, confidence=0.42, evidence=("recorded",))

    convo = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second"},
    ]
    with Guard(backend=ScriptedBackend([ANSWERED]), detector=Recorder()) as guard:
        verdict = guard.check(convo)
    assert calls == [(verdict.answer, verdict.reasoning, "second")]
    assert (verdict.decision, verdict.confidence, verdict.evidence) == (Decision.PARTIAL, 0.42, ("recorded",))
    assert verdict.trace.detector == "recorder@9"


# -- timings ----------------------------------------------------------------------------------------------


async def test_streamed_timings() -> None:
    paced = ScriptedOutput(content=ANSWERED, seconds_per_token=0.002)
    async with AsyncGuard(backend=ScriptedBackend([paced])) as guard:
        timings = (await guard.check("q")).trace.timings
    assert timings.first_token_ms is not None and timings.reasoning_end_ms is not None
    assert 0 <= timings.first_token_ms <= timings.reasoning_end_ms <= timings.total_ms
    # Lower bounds only: the reasoning is 14 paced tokens, the whole output more.
    assert timings.reasoning_end_ms >= 2 * _reasoning_pieces(ANSWERED) * 0.9
    assert timings.total_ms >= 2 * len(tokens(ANSWERED)) * 0.9


async def test_streamed_timings_with_a_reasoning_field() -> None:
    output = ScriptedOutput(content="Sure, here it is.", reasoning="Benign. I will answer.")
    async with AsyncGuard(backend=ScriptedBackend([output])) as guard:
        timings = (await guard.check("q")).trace.timings
    assert timings.first_token_ms is not None and timings.reasoning_end_ms is not None
    assert timings.first_token_ms <= timings.reasoning_end_ms <= timings.total_ms


@pytest.mark.parametrize("output", [ANSWERED, ScriptedOutput(content="Sure.", reasoning="ok")])
def test_non_streamed_timings_have_only_the_total(output: Any) -> None:
    with Guard(backend=ScriptedBackend([output]), stream=False) as guard:
        verdict = guard.check("q")
    timings = verdict.trace.timings
    assert timings.first_token_ms is None
    assert timings.reasoning_end_ms is None
    assert timings.total_ms > 0
    assert verdict.trace.streamed is False


def test_truncated_stream_has_no_reasoning_end() -> None:
    with Guard(backend=ScriptedBackend([TRUNCATED])) as guard:
        timings = guard.check("q").trace.timings
    assert timings.first_token_ms is not None
    assert timings.reasoning_end_ms is None


# -- usage ------------------------------------------------------------------------------------------------


def test_streamed_usage_split_is_counted() -> None:
    with Guard(backend=ScriptedBackend([ANSWERED])) as guard:
        usage = guard.check("How do I kill a Python process?").trace.usage
    assert usage.completion_tokens == len(tokens(ANSWERED))
    assert usage.reasoning_tokens == _reasoning_pieces(ANSWERED)
    assert usage.answer_tokens == len(tokens(ANSWERED)) - _reasoning_pieces(ANSWERED)
    assert usage.reasoning_tokens + usage.answer_tokens == usage.completion_tokens  # type: ignore[operator]
    assert usage.split_estimated is False
    assert usage.prompt_tokens == 7


def test_streamed_usage_split_with_a_reasoning_field() -> None:
    output = ScriptedOutput(content="Sure, here it is.", reasoning="Benign request, I will answer it.")
    with Guard(backend=ScriptedBackend([output])) as guard:
        usage = guard.check("q").trace.usage
    assert usage.reasoning_tokens == len(tokens(output.reasoning or ""))
    assert usage.answer_tokens == len(tokens(output.content))
    assert usage.split_estimated is False


@pytest.mark.parametrize("output", [ANSWERED, ScriptedOutput(content="Sure, here it is.", reasoning="Benign.")])
def test_non_streamed_usage_split_is_estimated_and_adds_up(output: Any) -> None:
    with Guard(backend=ScriptedBackend([output]), stream=False) as guard:
        usage = guard.check("q").trace.usage
    assert usage.completion_tokens is not None and usage.reasoning_tokens is not None
    assert usage.answer_tokens is not None
    assert usage.reasoning_tokens + usage.answer_tokens == usage.completion_tokens
    assert usage.reasoning_tokens > 0 and usage.answer_tokens > 0
    assert usage.split_estimated is True


_words = st.lists(st.text(alphabet="abcdefgh .,!?'", min_size=1, max_size=8), min_size=1, max_size=20).map(" ".join)


@settings(max_examples=30, deadline=None)
@given(r=_words, a=_words, stream=st.booleans())
def test_property_usage_split_adds_up(r: str, a: str, stream: bool) -> None:
    assume(r.strip() and a.strip())
    content = f"<think>\n{r}\n</think>\n\n{a}"
    with Guard(backend=ScriptedBackend([content]), stream=stream) as guard:
        verdict = guard.check("q")
    usage = verdict.trace.usage
    assert usage.completion_tokens == len(tokens(content))
    assert usage.reasoning_tokens is not None and usage.answer_tokens is not None
    assert usage.reasoning_tokens + usage.answer_tokens == usage.completion_tokens
    if stream:
        assert usage.reasoning_tokens == len(tokens(f"<think>\n{r}\n</think>"))
        assert not usage.split_estimated


def test_truncated_reasoning_counts_all_tokens_as_reasoning() -> None:
    with Guard(backend=ScriptedBackend([TRUNCATED])) as guard:
        usage = guard.check("q").trace.usage
    assert usage.answer_tokens == 0
    assert usage.reasoning_tokens == usage.completion_tokens == len(tokens(TRUNCATED.content))


# -- truncation and format problems -----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
def test_truncation_is_undetermined_with_evidence(stream: bool) -> None:
    with Guard(backend=ScriptedBackend([TRUNCATED]), stream=stream) as guard:
        verdict = guard.check("How do I pick a lock?")
    assert verdict.decision is Decision.UNDETERMINED
    assert verdict.confidence == 0.0
    assert not verdict.allowed
    assert verdict.evidence and all(e.startswith("no decision") for e in verdict.evidence)
    assert any("max_tokens" in e or "</think>" in e for e in verdict.evidence)
    assert verdict.answer == ""
    assert verdict.reasoning == "The user asks about lock picking. On one hand locksmiths"
    assert verdict.trace.finish_reason == "length"
    assert not verdict.trace.format_ok
    assert verdict.trace.error is None


def test_cut_off_mid_answer_is_undetermined_even_if_it_looks_like_a_refusal() -> None:
    cut = ScriptedOutput(content=DECLINED[: DECLINED.index("that")], finish_reason="length")
    with Guard(backend=ScriptedBackend([cut])) as guard:
        verdict = guard.check("q")
    assert verdict.decision is Decision.UNDETERMINED
    assert "cut off" in " ".join(verdict.evidence)


def test_reasoning_never_closed_without_length_is_undetermined() -> None:
    with Guard(backend=ScriptedBackend(["<think>\nhmm, I was thinking and then"])) as guard:
        verdict = guard.check("q")
    assert verdict.decision is Decision.UNDETERMINED
    assert any("</think>" in e for e in verdict.evidence)


def test_plain_answer_without_tags_is_still_read() -> None:
    with Guard(backend=ScriptedBackend(["I'm sorry, but I can't help with that."])) as guard:
        verdict = guard.check("q")
    assert verdict.decision is Decision.DECLINED
    assert verdict.reasoning is None
    assert verdict.trace.format_ok is False
    assert "no reasoning block" in verdict.trace.format_issues


def test_reasoning_arrives_in_a_separate_field() -> None:
    output = ScriptedOutput(content="Sure: use `kill <pid>`.", reasoning="Benign question.")
    with Guard(backend=ScriptedBackend([output])) as guard:
        verdict = guard.check("q")
    assert verdict.reasoning == "Benign question."
    assert verdict.answer == "Sure: use `kill <pid>`."
    assert verdict.decision is Decision.ANSWERED
    assert verdict.trace.format_ok


# -- errors and on_error ----------------------------------------------------------------------------------

ERRORS: list[tuple[str, Any]] = [
    ("unavailable", lambda: BackendUnavailable("connection refused")),
    ("timeout", lambda: BackendTimeout("too slow")),
    ("backend_error", lambda: BackendError("boom", status_code=503)),
]


@pytest.mark.parametrize(("kind", "make"), ERRORS, ids=[k for k, _ in ERRORS])
def test_on_error_raise_raises(kind: str, make: Any) -> None:
    error = make()
    with Guard(backend=ScriptedBackend([error])) as guard, pytest.raises(type(error)) as info:
        guard.check("q")
    assert info.value.kind == kind


@pytest.mark.parametrize("policy", ["decline", "allow"])
@pytest.mark.parametrize(("kind", "make"), ERRORS, ids=[k for k, _ in ERRORS])
def test_on_error_policy_gives_an_undetermined_verdict(kind: str, make: Any, policy: Any) -> None:
    with Guard(backend=ScriptedBackend([make()]), on_error=policy) as guard:
        verdict = guard.check("q")
    assert verdict.decision is Decision.UNDETERMINED
    assert verdict.confidence == 0.0
    assert verdict.answer == ""
    assert verdict.evidence and kind in verdict.evidence[0]
    error = verdict.trace.error
    assert error is not None
    assert error.type == kind
    assert error.policy == policy
    assert error.status_code == (503 if kind == "backend_error" else None)
    assert verdict.allowed is (policy == "allow")
    assert verdict.trace.backend == "scripted"
    # A failed verdict still round-trips.
    assert Verdict.model_validate_json(verdict.model_dump_json()) == verdict


@pytest.mark.parametrize("policy", ["decline", "allow"])
async def test_async_on_error_policy(policy: Any) -> None:
    async with AsyncGuard(backend=ScriptedBackend([BackendUnavailable("down")]), on_error=policy) as guard:
        verdict = await guard.check("q")
    assert verdict.trace.error is not None and verdict.trace.error.policy == policy
    assert verdict.allowed is (policy == "allow")


@pytest.mark.parametrize("policy", ["raise", "decline", "allow"])
def test_invalid_input_raises_under_every_policy(policy: Any) -> None:
    backend = ScriptedBackend([BackendUnavailable("never reached")])
    with Guard(backend=backend, on_error=policy) as guard:
        for bad in ("", [], [{"role": "tool", "content": "x"}], b"bytes"):
            with pytest.raises(InvalidInput):
                guard.check(bad)  # type: ignore[arg-type]
    assert backend.requests == []


def test_total_timeout_under_decline() -> None:
    slow = ScriptedOutput(content=ANSWERED, seconds_per_token=0.05)  # >= 1 s in all
    with Guard(backend=ScriptedBackend([slow]), on_error="decline") as guard:
        verdict = guard.check("q", timeout=0.1)
    assert verdict.decision is Decision.UNDETERMINED
    assert verdict.trace.error is not None
    assert verdict.trace.error.type == "timeout"
    assert not verdict.allowed
    with Guard(backend=ScriptedBackend([slow])) as guard, pytest.raises(BackendTimeout):
        guard.check("q", timeout=Timeout(total=0.1))


class _PartialThenFail:
    """A backend that streams some content, then fails (or just stops without a GenerationEnd)."""

    kind = "flaky"
    endpoint = "flaky://x"

    def __init__(self, fail: bool) -> None:
        self.fail = fail

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        yield TextDelta(content="<think>\nhalf a thou")
        if self.fail:
            raise BackendError("the response was cut off")

    async def health(self, *, timeout: Timeout) -> Health:
        return Health(ok=True, backend=self.kind)

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize("fail", [True, False], ids=["raises", "no-end-event"])
def test_a_generation_that_fails_midway_keeps_the_partial_output(fail: bool) -> None:
    with Guard(backend=_PartialThenFail(fail)) as guard, pytest.raises(BackendError):
        guard.check("q")
    with Guard(backend=_PartialThenFail(fail), on_error="decline") as guard:
        verdict = guard.check("q")
    assert verdict.decision is Decision.UNDETERMINED
    assert verdict.trace.raw_output == "<think>\nhalf a thou"
    assert verdict.trace.error is not None and verdict.trace.error.type == "backend_error"


# -- check_many -------------------------------------------------------------------------------------------


def _by_prompt(messages: Sequence[Mapping[str, str]]) -> Any:
    """Answer 'echo N' after a pace that makes later prompts finish first."""
    text = messages[-1]["content"]
    if text.startswith("boom"):
        return BackendError("scripted failure", status_code=500)
    n = int(text.split()[-1])
    return ScriptedOutput(
        content=f"<think>\nok\n</think>\n\nHere is answer {n}.", seconds_per_token=0.001 * (20 - n % 20)
    )


async def test_check_many_keeps_order_and_reports_each_result() -> None:
    prompts = [f"prompt {i}" for i in range(40)]
    seen: list[int] = []
    async with AsyncGuard(backend=ScriptedBackend(_by_prompt)) as guard:
        results = await guard.check_many(prompts, concurrency=8, on_result=lambda i, r: seen.append(i))
    assert len(results) == 40
    for i, result in enumerate(results):
        assert isinstance(result, Verdict)
        assert result.answer == f"Here is answer {i}."
    assert sorted(seen) == list(range(40))
    assert seen != list(range(40))  # they really finished out of order, and order was restored


def test_sync_check_many_keeps_order() -> None:
    prompts = [f"prompt {i}" for i in range(12)]
    with Guard(backend=ScriptedBackend(_by_prompt)) as guard:
        results = guard.check_many(prompts, concurrency=4)
    assert [r.answer for r in results] == [f"Here is answer {i}." for i in range(12)]  # type: ignore[union-attr]


@pytest.mark.parametrize("policy", ["raise", "decline"])
async def test_check_many_reports_errors_in_place(policy: Any) -> None:
    prompts: list[Any] = ["prompt 0", "", "boom 2", "prompt 3", [{"role": "tool", "content": "x"}], "prompt 5"]
    backend = ScriptedBackend(_by_prompt)
    async with AsyncGuard(backend=backend, on_error=policy) as guard:
        results = await guard.check_many(prompts, concurrency=3)
    assert len(results) == len(prompts)
    assert isinstance(results[1], InvalidInput)
    assert isinstance(results[4], InvalidInput)
    if policy == "raise":
        assert isinstance(results[2], BackendError) and results[2].status_code == 500
    else:
        assert isinstance(results[2], Verdict) and results[2].trace.error is not None
    for i in (0, 3, 5):
        assert isinstance(results[i], Verdict)
        assert results[i].answer == f"Here is answer {i}."  # type: ignore[union-attr]
    assert len(backend.requests) == 4  # the invalid prompts never reached the backend


class _CountingBackend(ScriptedBackend):
    """Counts concurrent generate calls; the first ``hold`` calls wait until ``hold`` are in flight."""

    def __init__(self, hold: int) -> None:
        super().__init__(["<think>\nok\n</think>\n\nSure."])
        self.hold = hold
        self.in_flight = 0
        self.peak = 0
        self.started = 0
        self._full: asyncio.Event | None = None
        self._lock = threading.Lock()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        if self._full is None:
            self._full = asyncio.Event()
        self.in_flight += 1
        self.started += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.in_flight >= self.hold:
                self._full.set()
            if self.started <= self.hold:
                # Proves the bound is reached: these calls only proceed once `hold` are in flight together.
                await asyncio.wait_for(self._full.wait(), timeout=5)
            await asyncio.sleep(0)
            async for event in super().generate(request):
                yield event
                await asyncio.sleep(0)
        finally:
            self.in_flight -= 1


@pytest.mark.parametrize(("n", "concurrency"), [(30, 4), (10, 1), (5, 16)])
async def test_check_many_bounds_in_flight_and_reaches_the_bound(n: int, concurrency: int) -> None:
    expected_peak = min(n, concurrency)
    backend = _CountingBackend(hold=expected_peak)
    async with AsyncGuard(backend=backend) as guard:
        results = await guard.check_many([f"p{i}" for i in range(n)], concurrency=concurrency)
    assert all(isinstance(r, Verdict) for r in results), results
    assert backend.peak == expected_peak
    assert backend.in_flight == 0


def test_sync_check_many_bounds_in_flight() -> None:
    backend = _CountingBackend(hold=3)
    with Guard(backend=backend) as guard:
        results = guard.check_many([f"p{i}" for i in range(9)], concurrency=3)
    assert all(isinstance(r, Verdict) for r in results), results
    assert backend.peak == 3


async def test_check_many_edge_cases() -> None:
    async with AsyncGuard(backend=ScriptedBackend()) as guard:
        assert await guard.check_many([]) == []
        with pytest.raises(ConfigurationError):
            await guard.check_many(["a"], concurrency=0)
        results = await guard.check_many(iter(["a", "b"]), concurrency=2, max_tokens=7)
    assert [isinstance(r, Verdict) for r in results] == [True, True]
    assert {r.trace.sampling.max_tokens for r in results if isinstance(r, Verdict)} == {7}


# -- the sync guard inside an event loop, lifecycle, health -----------------------------------------------


async def test_sync_guard_works_inside_a_running_event_loop() -> None:
    asyncio.get_running_loop()  # we are inside one
    with Guard(backend=ScriptedBackend([ANSWERED])) as guard:
        verdict = guard.check("q")
        many = guard.check_many(["a", "b", "c"], concurrency=2)
        health = guard.health()
    assert verdict.decision is Decision.ANSWERED
    assert len(many) == 3
    assert health.ok


def test_sync_guard_from_several_threads() -> None:
    results: list[Verdict] = []
    with Guard(backend=ScriptedBackend([ANSWERED])) as guard:
        threads = [threading.Thread(target=lambda: results.append(guard.check("q"))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(results) == 4
    assert all(v.decision is Decision.ANSWERED for v in results)


def test_guard_context_manager_closes_the_backend() -> None:
    backend = ScriptedBackend()
    with Guard(backend=backend) as guard:
        guard.check("q")
        assert not backend.closed
    assert backend.closed


async def test_async_guard_context_manager_closes_the_backend() -> None:
    backend = ScriptedBackend()
    async with AsyncGuard(backend=backend) as guard:
        await guard.check("q")
        assert not backend.closed
    assert backend.closed


def test_guard_close_without_use() -> None:
    backend = ScriptedBackend()
    Guard(backend=backend).close()
    assert backend.closed


async def test_health_through_the_guard() -> None:
    async with AsyncGuard(backend=ScriptedBackend(model="m1")) as guard:
        health = await guard.health()
    assert health.ok and health.models == ("m1",) and health.backend == "scripted"


def test_errors_are_tarsguard_errors() -> None:
    for cls in (InvalidInput, ConfigurationError, BackendError, BackendTimeout, BackendUnavailable):
        assert issubclass(cls, TarsGuardError)
    end = GenerationEnd()
    assert end.retries == 0


# -- failures that are not TarsGuardError ---------------------------------------------------------------


def test_a_backend_plugin_error_falls_under_the_policy() -> None:
    guard = Guard(backend=ScriptedBackend([RuntimeError("plugin broke")]), on_error="decline")
    verdict = guard.check("q")
    assert verdict.decision is Decision.UNDETERMINED
    assert verdict.trace.error is not None
    assert verdict.trace.error.type == "backend_error"
    assert "RuntimeError: plugin broke" in verdict.trace.error.message
    assert verdict.allowed is False


def test_a_backend_plugin_error_raises_a_typed_error_by_default() -> None:
    guard = Guard(backend=ScriptedBackend([RuntimeError("plugin broke")]))
    with pytest.raises(tarsguard.BackendError) as info:
        guard.check("q")
    assert isinstance(info.value.__cause__, RuntimeError)


def test_a_timeout_error_from_the_backend_is_not_the_checks_deadline() -> None:
    guard = Guard(
        backend=ScriptedBackend([TimeoutError("inner")]), timeout=tarsguard.Timeout(total=None), on_error="decline"
    )
    verdict = guard.check("q")
    assert verdict.trace.error is not None
    assert verdict.trace.error.type == "backend_error"
    assert "no verdict within" not in verdict.trace.error.message


async def test_the_checks_own_deadline_is_a_backend_timeout() -> None:
    slow = ScriptedOutput("<think>\nx\n</think>\n\nok " * 50, seconds_per_token=0.05)
    guard = AsyncGuard(backend=ScriptedBackend([slow]), timeout=0.2)
    with pytest.raises(tarsguard.BackendTimeout, match=r"no verdict within 0\.2 s"):
        await guard.check("q")


async def test_check_many_keeps_plugin_errors_in_place() -> None:
    script = ["<think>\nok\n</think>\n\nSure.", RuntimeError("boom"), "<think>\nok\n</think>\n\nSure."]
    guard = AsyncGuard(backend=ScriptedBackend(script))
    results = await guard.check_many(["a", "b", "c"], concurrency=1)
    assert isinstance(results[0], Verdict)
    assert isinstance(results[1], tarsguard.BackendError)
    assert isinstance(results[2], Verdict)


async def test_a_failing_on_result_callback_surfaces_as_itself() -> None:
    guard = AsyncGuard(backend=ScriptedBackend())

    def callback(index: int, result: object) -> None:
        raise ZeroDivisionError("callback bug")

    with pytest.raises(ZeroDivisionError, match="callback bug"):
        await guard.check_many(["a", "b", "c"], concurrency=2, on_result=callback)


def test_timeout_fields_are_validated() -> None:
    with pytest.raises(tarsguard.ConfigurationError):
        tarsguard.Timeout(read=-1)
    with pytest.raises(tarsguard.ConfigurationError):
        tarsguard.Timeout(total=float("nan"))
    assert tarsguard.Timeout(total=None).total is None


class _AsyncJudge:
    """A detector that needs I/O: the guard must await its ``aassess``."""

    name = "async-judge@test"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def assess(self, answer: str, *, reasoning: str | None = None, prompt: str | None = None) -> tarsguard.Assessment:
        raise AssertionError("the guard must prefer aassess")

    async def aassess(
        self, answer: str, *, reasoning: str | None = None, prompt: str | None = None
    ) -> tarsguard.Assessment:
        await asyncio.sleep(0)
        self.calls.append(answer)
        return tarsguard.Assessment(decision=Decision.PARTIAL, confidence=0.6, evidence=("judge said so",))


async def test_an_async_detector_is_awaited() -> None:
    judge = _AsyncJudge()
    guard = AsyncGuard(backend=ScriptedBackend(["<think>\nr\n</think>\n\nSome answer."]), detector=judge)
    verdict = await guard.check("q")
    assert judge.calls == ["Some answer."]
    assert verdict.decision is Decision.PARTIAL
    assert verdict.evidence == ("judge said so",)
    assert verdict.trace.detector == "async-judge@test"


class _BrokenDetector:
    name = "broken@test"

    def assess(self, answer: str, *, reasoning: str | None = None, prompt: str | None = None) -> tarsguard.Assessment:
        raise ValueError("detector bug")


def test_a_failing_detector_falls_under_the_policy() -> None:
    guard = Guard(backend=ScriptedBackend(), detector=_BrokenDetector(), on_error="allow")
    verdict = guard.check("q")
    assert verdict.decision is Decision.UNDETERMINED
    assert verdict.trace.error is not None and "ValueError: detector bug" in verdict.trace.error.message
    assert verdict.allowed is True


class _MergedSteps:
    """A backend that passes several generation steps on as one delta, straddling </think>."""

    kind = "merged"
    endpoint = "merged://"

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        yield TextDelta(content="<think>\nweigh it\n</think>", content_steps=4)
        yield TextDelta(content="\n\nSure, here it is.", content_steps=2)
        yield TextDelta(content=" More.", content_steps=2)
        yield GenerationEnd(finish_reason="stop", completion_tokens=8)

    async def health(self, *, timeout: tarsguard.Timeout) -> tarsguard.Health:
        return tarsguard.Health(ok=True, backend=self.kind)

    async def aclose(self) -> None:
        pass


def test_merged_steps_are_counted_as_steps() -> None:
    verdict = Guard(backend=_MergedSteps()).check("q")
    usage = verdict.trace.usage
    assert (usage.reasoning_tokens, usage.answer_tokens) == (4, 4)
    assert usage.split_estimated is False
    assert verdict.answer == "Sure, here it is. More."


class _MergedAcrossTheTag(_MergedSteps):
    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        yield TextDelta(content="<think>\nweigh it\n</think>\n\nSure, here it is.", content_steps=6)
        yield GenerationEnd(finish_reason="stop", completion_tokens=6)


def test_merged_steps_across_the_tag_are_shared_out_and_flagged() -> None:
    verdict = Guard(backend=_MergedAcrossTheTag()).check("q")
    usage = verdict.trace.usage
    assert usage.reasoning_tokens is not None and usage.answer_tokens is not None
    assert usage.reasoning_tokens + usage.answer_tokens == 6
    assert 1 <= usage.answer_tokens < 6
    assert usage.split_estimated is True


_CALLER = __import__("contextvars").ContextVar("caller", default="unset")


def test_sync_guard_runs_checks_in_the_callers_context() -> None:
    seen: list[str] = []

    def script(messages: Sequence[Mapping[str, str]]) -> str:
        seen.append(_CALLER.get())
        return "<think>\nok\n</think>\n\nSure."

    guard = Guard(backend=ScriptedBackend(script))
    token = _CALLER.set("request-42")
    try:
        guard.check("q")
    finally:
        _CALLER.reset(token)
    assert seen == ["request-42"]


# -- min_confidence: how sure an answered decision must be to be allowed ------------------------------------


def test_an_answered_decision_below_min_confidence_is_not_allowed_and_says_why() -> None:
    detector = PhraseDetector(confidence=0.62)
    verdict = Guard(backend=ScriptedBackend([ANSWERED]), detector=detector, min_confidence=0.7).check("q")
    assert verdict.decision is Decision.ANSWERED  # the decision stays what the detector read
    assert verdict.allowed is False
    assert verdict.trace.min_confidence == 0.7
    assert verdict.evidence[-1] == "answered with confidence 0.62, below the guard's threshold 0.70"
    again = Verdict.model_validate_json(verdict.model_dump_json())
    assert again == verdict and again.allowed is False


@pytest.mark.parametrize(("confidence", "allowed"), [(0.7, True), (0.69, False), (0.99, True)])
def test_min_confidence_is_inclusive(confidence: float, allowed: bool) -> None:
    detector = PhraseDetector(confidence=confidence)
    verdict = Guard(backend=ScriptedBackend([ANSWERED]), detector=detector, min_confidence=0.7).check("q")
    assert verdict.allowed is allowed
    assert any("below the guard's threshold" in line for line in verdict.evidence) is not allowed


def test_min_confidence_never_allows_a_decline() -> None:
    detector = PhraseDetector(confidence=0.99)
    verdict = Guard(backend=ScriptedBackend([DECLINED]), detector=detector, min_confidence=0.0).check("q")
    assert verdict.decision is Decision.DECLINED and verdict.allowed is False
    assert not any("threshold" in line for line in verdict.evidence)


def test_min_confidence_default_environment_and_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TARSGUARD_MIN_CONFIDENCE", raising=False)
    assert Guard(backend=ScriptedBackend()).min_confidence == DEFAULT_MIN_CONFIDENCE
    monkeypatch.setenv("TARSGUARD_MIN_CONFIDENCE", "0.8")
    assert AsyncGuard(backend=ScriptedBackend()).min_confidence == 0.8
    assert Guard(backend=ScriptedBackend(), min_confidence=0.25).min_confidence == 0.25
    monkeypatch.setenv("TARSGUARD_MIN_CONFIDENCE", "high")
    with pytest.raises(ConfigurationError, match="TARSGUARD_MIN_CONFIDENCE"):
        Guard(backend=ScriptedBackend())


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), "0.5", True])
def test_min_confidence_must_be_a_number_from_0_to_1(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="min_confidence must be a number from 0 to 1"):
        Guard(backend=ScriptedBackend(), min_confidence=value)


def test_a_cached_verdict_is_judged_by_the_threshold_of_the_guard_that_reads_it() -> None:
    cache = tarsguard.VerdictCache()
    detector = PhraseDetector(confidence=0.6)
    lenient = Guard(backend=ScriptedBackend([ANSWERED]), detector=detector, cache=cache, min_confidence=0.5)
    strict = Guard(backend=ScriptedBackend([ANSWERED]), detector=detector, cache=cache, min_confidence=0.9)
    first = lenient.check("q")
    assert first.allowed and first.trace.cache == "miss"
    hit = strict.check("q")
    assert hit.trace.cache == "hit" and hit.trace.min_confidence == 0.9
    assert hit.allowed is False
    assert hit.evidence[-1] == "answered with confidence 0.60, below the guard's threshold 0.90"
    assert Verdict.model_validate_json(hit.model_dump_json()) == hit
    strict_first = Guard(
        backend=ScriptedBackend([ANSWERED]), detector=detector, cache=tarsguard.VerdictCache(), min_confidence=0.9
    )
    assert strict_first.check("q").allowed is False
    assert strict_first.cache is not None
    back = Guard(backend=ScriptedBackend(), detector=detector, cache=strict_first.cache, min_confidence=0.5).check("q")
    assert back.trace.cache == "hit" and back.allowed is True
    assert back.evidence == first.evidence  # the stale threshold's line is gone
