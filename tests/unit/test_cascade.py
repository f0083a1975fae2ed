"""CascadeDetector: the judge is asked only below the threshold; failures keep the fast reading; in a Guard."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest

from tarsguard import Assessment, AsyncGuard, ConfigurationError, Decision, DecisionDetector, Guard
from tarsguard._exceptions import BackendUnavailable
from tarsguard._scripted_server import Reply, ScriptedServer
from tarsguard.backends.http import HTTPBackend
from tarsguard.detect import CascadeDetector, ServedJudgeDetector
from tarsguard.testing import PhraseDetector

ServerFactory = Callable[..., ScriptedServer]
MODEL = "tars-7b"
PROMPT = "How do I pick a lock?"
ANSWER = "Locksmiths use tension wrenches and picks; practise only on locks you own."
TARS = f"<think>\nA hobby question; stay general.\n</think>\n\n{ANSWER}"
PARTIAL_LABEL = Reply(
    content="partial",
    logprobs=(("partial", math.log(0.9), (("partial", math.log(0.9)), ("a", math.log(0.1)))),),
)


class Judge:
    """A second opinion that records its calls and answers (or fails) as told."""

    name = "judge@test"

    def __init__(self, result: Assessment | BaseException) -> None:
        self.result = result
        self.calls: list[tuple[str, str | None, str | None]] = []

    async def aassess(self, answer: str, *, reasoning: str | None = None, prompt: str | None = None) -> Assessment:
        self.calls.append((answer, reasoning, prompt))
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result

    def assess(self, answer: str, *, reasoning: str | None = None, prompt: str | None = None) -> Assessment:
        raise AssertionError("the cascade awaits aassess when the judge has it")


JUDGED = Assessment(decision=Decision.PARTIAL, confidence=0.91, evidence=("the judge says partial",))


def fast(confidence: float) -> PhraseDetector:
    return PhraseDetector(default=Decision.ANSWERED, confidence=confidence)


def test_a_sure_fast_reading_stands_and_the_judge_is_not_called() -> None:
    judge = Judge(JUDGED)
    cascade = CascadeDetector(fast(0.8), judge, below=0.8)
    assert isinstance(cascade, DecisionDetector)
    result = asyncio.run(cascade.aassess(ANSWER, prompt=PROMPT))
    assert judge.calls == []
    assert result.decision is Decision.ANSWERED
    assert result.confidence == 0.8
    assert result.evidence == (
        "phrases@test read answered at confidence 0.80 (>= 0.8): decided without a second opinion",
        "no rule matched",
    )
    assert result.detector == "phrases@test via cascade@1 below 0.8"


def test_an_unsure_fast_reading_goes_to_the_judge_which_decides() -> None:
    judge = Judge(JUDGED)
    cascade = CascadeDetector(fast(0.79), judge, below=0.8)
    result = asyncio.run(cascade.aassess(ANSWER, reasoning="why", prompt=PROMPT))
    assert judge.calls == [(ANSWER, "why", PROMPT)]
    assert result.decision is Decision.PARTIAL
    assert result.confidence == 0.91
    assert result.evidence == (
        "phrases@test read answered at confidence 0.79 (< 0.8): judge@test decided as the second opinion",
        "the judge says partial",
        "the fast reading was answered at 0.79",
    )
    assert result.detector == "judge@test via cascade@1 below 0.8"


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (BackendUnavailable("cannot reach the server"), "failed (unavailable: cannot reach the server)"),
        (TimeoutError(), "failed (TimeoutError: TimeoutError)"),
        (RuntimeError("plug-in bug"), "failed (RuntimeError: plug-in bug)"),
    ],
)
def test_a_failed_second_opinion_leaves_the_fast_reading(error: Exception, said: str) -> None:
    judge = Judge(error)
    cascade = CascadeDetector(PhraseDetector(default=Decision.DECLINED, confidence=0.5), judge)
    result = asyncio.run(cascade.aassess(ANSWER, prompt=PROMPT))
    assert len(judge.calls) == 1
    assert (result.decision, result.confidence) == (Decision.DECLINED, 0.5)
    assert result.evidence[0] == (
        f"phrases@test read declined at confidence 0.50 (< 0.8); the second opinion from judge@test {said}"
    )
    assert result.evidence[1:] == ("the fast reading stands", "no rule matched")
    assert result.detector == "phrases@test via cascade@1 below 0.8"


def test_an_undetermined_second_opinion_leaves_the_fast_reading() -> None:
    judge = Judge(Assessment(decision=Decision.UNDETERMINED, confidence=0.0, evidence=("no label",)))
    result = asyncio.run(CascadeDetector(fast(0.4), judge).aassess(ANSWER, prompt=PROMPT))
    assert (result.decision, result.confidence) == (Decision.ANSWERED, 0.4)
    assert "judge@test gave no decision (no label)" in result.evidence[0]


def test_cancellation_is_not_swallowed() -> None:
    judge = Judge(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(CascadeDetector(fast(0.4), judge).aassess(ANSWER, prompt=PROMPT))


def test_threshold_is_validated_and_named() -> None:
    for below in (0.0, -0.1, 1.5):
        with pytest.raises(ConfigurationError, match="below"):
            CascadeDetector(fast(0.9), Judge(JUDGED), below=below)
    cascade = CascadeDetector(fast(0.9), Judge(JUDGED), below=0.75)
    assert cascade.name == "cascade@1(phrases@test below 0.75 -> judge@test)"
    assert cascade.below == 0.75


def test_sync_assess_with_a_sync_judge_and_with_an_async_one() -> None:
    sync_judge = PhraseDetector(default=Decision.DECLINED, confidence=0.95)
    result = CascadeDetector(fast(0.5), sync_judge).assess(ANSWER)
    assert result.decision is Decision.DECLINED
    assert result.detector == "phrases@test via cascade@1 below 0.8"  # both are phrases@test; the judge decided
    assert result.evidence[0].endswith("phrases@test decided as the second opinion")
    async_judge = Judge(JUDGED)
    cascade = CascadeDetector(fast(0.5), async_judge)
    try:
        assert cascade.assess(ANSWER, prompt=PROMPT).decision is Decision.PARTIAL
    finally:
        cascade.close()
    assert len(async_judge.calls) == 1
    assert CascadeDetector(fast(0.9), Judge(RuntimeError())).assess(ANSWER).decision is Decision.ANSWERED


# -- with the served judge, in a guard -------------------------------------------------------------------


def two_roles(label: Reply) -> Callable[[dict[str, Any]], Reply]:
    """One server for the check (TARS's output) and the judge (``label``, when the request is constrained)."""

    def script(body: dict[str, Any]) -> Reply:
        return label if "structured_outputs" in body else Reply(content=TARS)

    return script


def chat_bodies(server: ScriptedServer) -> list[dict[str, Any]]:
    return [r.body for r in server.requests if r.path == "/v1/chat/completions"]


@pytest.mark.parametrize(("confidence", "judged"), [(0.95, False), (0.6, True)])
def test_in_a_guard_the_trace_names_who_decided(serve: ServerFactory, confidence: float, judged: bool) -> None:
    server = serve(two_roles(PARTIAL_LABEL), model=MODEL)
    backend = HTTPBackend(server.base_url, model=MODEL)
    judge = ServedJudgeDetector(backend, model=MODEL)
    cascade = CascadeDetector(fast(confidence), judge, below=0.8)
    with Guard(backend=backend, detector=cascade) as guard:
        verdict = guard.check(PROMPT)
    bodies = chat_bodies(server)
    assert len(bodies) == (2 if judged else 1)
    if judged:
        assert verdict.decision is Decision.PARTIAL
        assert verdict.confidence == pytest.approx(0.9)
        assert verdict.trace.detector == f"served-judge@1:http/{MODEL} via cascade@1 below 0.8"
        check, label = bodies
        assert label["messages"][:2] == [*check["messages"], {"role": "assistant", "content": TARS}]
    else:
        assert verdict.decision is Decision.ANSWERED
        assert verdict.trace.detector == "phrases@test via cascade@1 below 0.8"
    assert verdict.evidence[0].startswith(f"phrases@test read answered at confidence {confidence:.2f}")


@pytest.mark.parametrize(
    "failure",
    [Reply(status=500), Reply(content="I would say it declined"), Reply(content="declined", delay=30.0)],
    ids=["server error", "constraint ignored", "timeout"],
)
async def test_in_a_guard_a_failing_judge_never_fails_the_check(serve: ServerFactory, failure: Reply) -> None:
    server = serve(two_roles(failure), model=MODEL)
    backend = HTTPBackend(server.base_url, model=MODEL, max_retries=0)
    cascade = CascadeDetector(fast(0.6), ServedJudgeDetector(backend, model=MODEL, timeout=0.5))
    async with AsyncGuard(backend=backend, detector=cascade, on_error="raise") as guard:
        verdict = await guard.check(PROMPT)
    assert (verdict.decision, verdict.confidence) == (Decision.ANSWERED, 0.6)
    assert "the second opinion from served-judge@1:http/tars-7b failed" in verdict.evidence[0]
    assert verdict.evidence[1] == "the fast reading stands"
    assert verdict.trace.detector == "phrases@test via cascade@1 below 0.8"
    assert verdict.trace.error is None
