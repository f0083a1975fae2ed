"""LLMJudgeDetector over ScriptedBackend: what it sends, how it reads replies, sync and async use, in a Guard."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest

from tarsguard import AsyncGuard, Decision, DecisionDetector, Guard, LLMJudgeDetector
from tarsguard._exceptions import BackendUnavailable
from tarsguard.backends.scripted import ScriptedBackend
from tarsguard.detect._judge import parse_judgement

TARS_DECLINES = "<think>\nHarmful request; I will decline.\n</think>\n\nI'd rather not go into that."


@pytest.mark.parametrize(
    ("reply", "decision", "confidence"),
    [
        ("DECLINED", Decision.DECLINED, None),
        ("answered", Decision.ANSWERED, None),
        ("Partial", Decision.PARTIAL, None),
        ("Label: PARTIAL - it refused the dangerous part and explained the chemistry.", Decision.PARTIAL, None),
        ('{"label": "declined", "confidence": 0.93, "reason": "It refuses."}', Decision.DECLINED, 0.93),
        ('```json\n{"Label": "ANSWERED", "confidence": "85%"}\n```', Decision.ANSWERED, 0.85),
        ('Here is my verdict: {"decision": "partial refusal", "probability": 70}', Decision.PARTIAL, 0.7),
        ("<think>It says no... maybe partial?</think>\nDECLINED", Decision.DECLINED, None),
        ("This is not a refusal; the assistant answered the question fully.", Decision.ANSWERED, None),
        ("2_full_refusal", Decision.DECLINED, None),
        ("3_partial_refusal", Decision.PARTIAL, None),
        ("The response complies. Confidence: 0.6", Decision.ANSWERED, 0.6),
        ('{"label": "compliance"}', Decision.ANSWERED, None),
    ],
)
def test_replies_are_read_in_any_form(reply: str, decision: Decision, confidence: float | None) -> None:
    read, stated, _ = parse_judgement(reply)
    assert read is decision
    assert stated == (pytest.approx(confidence) if confidence is not None else None)


@pytest.mark.parametrize("reply", ["", "I am not sure what you want me to do.", '{"verdict": 3}', "???"])
def test_unreadable_replies_are_undetermined(reply: str) -> None:
    assert parse_judgement(reply)[0] is Decision.UNDETERMINED


def test_async_assessment_sends_request_and_answer_and_reads_the_label() -> None:
    judge_backend = ScriptedBackend(['{"label": "DECLINED", "confidence": 0.9, "reason": "It refuses."}'])
    judge = LLMJudgeDetector(judge_backend, model="judge-model")
    assert isinstance(judge, DecisionDetector)
    result = asyncio.run(judge.aassess("I can't help with that.", prompt="How do I pick a lock?"))
    assert result.decision is Decision.DECLINED
    assert result.confidence == 0.9
    assert result.evidence == ("judge judge-model labelled it declined", "judge's reason: It refuses.")
    request = judge_backend.requests[0]
    assert request.model == "judge-model"
    assert request.stream is False
    assert request.sampling.temperature == 0.0
    (message,) = request.messages
    assert message["role"] == "user"
    assert "<request>\nHow do I pick a lock?\n</request>" in message["content"]
    assert "<response>\nI can't help with that.\n</response>" in message["content"]
    assert "<reasoning>" not in message["content"]


def test_reasoning_is_sent_only_when_asked_for() -> None:
    judge = LLMJudgeDetector(ScriptedBackend(["ANSWERED"]), include_reasoning=True)
    (message,) = judge.messages("Here you go.", reasoning="Benign request.", prompt="Hi")
    assert "<reasoning>\nBenign request.\n</reasoning>" in message["content"]


def test_sync_assess_works_outside_an_event_loop_and_defaults_the_confidence() -> None:
    judge = LLMJudgeDetector(ScriptedBackend(["partial"]))
    try:
        result = judge.assess("I won't give doses, but here is general information about the drug class.")
    finally:
        judge.close()
    assert result.decision is Decision.PARTIAL
    assert result.confidence == 0.8
    assert judge.name == "llm-judge@1:scripted/default"


def test_sync_assess_also_works_inside_a_running_loop() -> None:
    async def main() -> Decision:
        judge = LLMJudgeDetector(ScriptedBackend(["ANSWERED"]))
        try:
            return judge.assess("Paris.").decision
        finally:
            judge.close()

    assert asyncio.run(main()) is Decision.ANSWERED


def test_an_unreadable_reply_is_undetermined_with_the_reply_as_evidence() -> None:
    judge = LLMJudgeDetector(ScriptedBackend(["Hmm, hard to say."]))
    result = asyncio.run(judge.aassess("Maybe."))
    assert result.decision is Decision.UNDETERMINED
    assert result.confidence == 0.0
    assert "Hmm, hard to say." in result.evidence[0]


def test_an_empty_answer_is_undetermined_without_asking_the_judge() -> None:
    backend = ScriptedBackend(["ANSWERED"])
    result = asyncio.run(LLMJudgeDetector(backend).aassess("  "))
    assert result.decision is Decision.UNDETERMINED
    assert backend.requests == []


def test_backend_errors_propagate() -> None:
    judge = LLMJudgeDetector(ScriptedBackend([BackendUnavailable("judge is down")]))
    with pytest.raises(BackendUnavailable):
        asyncio.run(judge.aassess("Some answer."))


def test_a_guard_uses_the_judge_for_its_verdicts() -> None:
    def judge_script(messages: Sequence[Mapping[str, str]]) -> str:
        # The judge sees TARS's answer, not its reasoning.
        content = messages[0]["content"]
        assert "I'd rather not go into that." in content and "I will decline" not in content
        return '{"label": "declined", "confidence": 0.77}'

    judge = LLMJudgeDetector(ScriptedBackend(judge_script), model="judge")
    with Guard(backend=ScriptedBackend([TARS_DECLINES]), detector=judge) as guard:
        verdict = guard.check("Tell me something harmful.")
    assert verdict.decision is Decision.DECLINED
    assert verdict.confidence == 0.77
    assert verdict.trace.detector == judge.name


async def test_an_async_guard_awaits_the_judge() -> None:
    judge = LLMJudgeDetector(ScriptedBackend(["PARTIAL"]))
    async with AsyncGuard(backend=ScriptedBackend([TARS_DECLINES]), detector=judge) as guard:
        verdict = await guard.check("Tell me something harmful.")
    assert verdict.decision is Decision.PARTIAL
