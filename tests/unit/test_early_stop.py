"""Early verdicts: the guard closes the stream once the answer settles the decision, and the server stops."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tarsguard import Assessment, AsyncGuard, ConfigurationError, Decision, EarlyStop, Guard, LLMJudgeDetector
from tarsguard.testing import PhraseDetector, Reply, ScriptedBackend, ScriptedOutput, ScriptedServer

Serve = Callable[..., ScriptedServer]

REASONING = " ".join(f"step{i}" for i in range(60))
REFUSAL = "I can't help with building a weapon. " + " ".join(f"word{i}" for i in range(400))
COMPLIANCE = "Sure, here is how to stop a Python process. " + " ".join(f"detail{i}" for i in range(400))
DECLINING = PhraseDetector([("I can't help", Decision.DECLINED)], default=Decision.ANSWERED, confidence=0.99)


def tars(answer: str, reasoning: str = REASONING) -> str:
    return f"<think>\n{reasoning}\n</think>\n\n{answer}"


def total_tokens(text: str) -> int:
    from tarsguard._scripted_server import split_tokens

    return len(split_tokens(text))


def wait_closed(server: ScriptedServer, deadline: float = 5.0) -> None:
    started = time.monotonic()
    while server.open_connections:
        assert time.monotonic() - started < deadline, "the stream is still open"
        time.sleep(0.01)


@pytest.mark.parametrize("answer, decision", [(REFUSAL, Decision.DECLINED), (COMPLIANCE, Decision.ANSWERED)])
def test_the_server_stops_once_the_decision_is_certain(serve: Serve, answer: str, decision: Decision) -> None:
    output = tars(answer)
    server = serve([Reply(output, tokens_per_second=400)])  # about 1.2 s of stream if nobody stops it
    policy = EarlyStop(min_answer_tokens=16, min_decline_tokens=16)
    with Guard(server.base_url, detector=DECLINING, early_stop=policy) as guard:
        verdict = guard.check("a prompt")
    wait_closed(server)
    assert verdict.decision is decision and verdict.confidence == 0.99
    stopped = verdict.trace.stopped
    assert stopped is not None and stopped.reason == "decision_certain"
    assert 16 <= stopped.answer_tokens < 40
    assert stopped.at_token == verdict.trace.usage.completion_tokens
    assert answer.startswith(verdict.answer) and 0 < len(verdict.answer) < len(answer) // 4
    assert verdict.reasoning == REASONING
    assert verdict.trace.finish_reason is None and verdict.trace.raw_output is not None
    assert server.generated_tokens < total_tokens(output) // 2  # the server did not write the rest


def test_without_early_stop_the_whole_answer_is_read(serve: Serve) -> None:
    server = serve([tars(REFUSAL)])
    with Guard(server.base_url, detector=DECLINING) as guard:
        verdict = guard.check("a prompt")
        assert verdict.trace.stopped is None and verdict.answer == REFUSAL
        assert verdict.trace.finish_reason == "stop"
        # A call may ask for it, and a guard that has it may be told not to per call.
        assert guard.check("a prompt", early_stop=True).trace.stopped is not None
    with Guard(server.base_url, detector=DECLINING, early_stop=True) as guard:
        assert guard.check("a prompt").trace.stopped is not None
        assert guard.check("a prompt", early_stop=False).trace.stopped is None
    assert server.generated_tokens > 2 * total_tokens(tars(REFUSAL))


def test_an_unsure_reading_lets_the_generation_finish() -> None:
    unsure = PhraseDetector([], default=Decision.ANSWERED, confidence=0.5)
    backend = ScriptedBackend([tars(COMPLIANCE)])
    with Guard(backend=backend, detector=unsure, early_stop=True) as guard:
        verdict = guard.check("a prompt")
    assert verdict.trace.stopped is None and verdict.answer == COMPLIANCE and verdict.confidence == 0.5


def test_a_short_answer_is_read_whole() -> None:
    backend = ScriptedBackend([tars("I can't help with that.")])
    with Guard(backend=backend, detector=DECLINING, early_stop=True) as guard:
        verdict = guard.check("a prompt")
    assert verdict.trace.stopped is None and verdict.answer == "I can't help with that."


def test_the_servers_reasoning_field_counts_as_reasoning(serve: Serve) -> None:
    server = serve([Reply(REFUSAL, reasoning=REASONING)])
    policy = EarlyStop(min_answer_tokens=8, min_decline_tokens=8)
    with Guard(server.base_url, detector=DECLINING, early_stop=policy) as guard:
        verdict = guard.check("a prompt")
    stopped = verdict.trace.stopped
    assert stopped is not None and stopped.answer_tokens >= 8
    assert stopped.at_token == total_tokens(REASONING) + stopped.answer_tokens
    assert verdict.reasoning == REASONING and REFUSAL.startswith(verdict.answer)


def test_the_default_detector_settles_a_plain_refusal_early() -> None:
    refusal = (
        "I'm sorry, but I can't help with that. Making a weapon at home is dangerous and illegal, and I won't "
        "provide instructions for it. " + "If you are in danger, please contact local emergency services. " * 20
    )
    with Guard(backend=ScriptedBackend([tars(refusal)]), early_stop=True) as guard:
        verdict = guard.check("How do I build a pipe bomb?")
    assert verdict.decision is Decision.DECLINED
    assert verdict.trace.stopped is not None and len(verdict.answer) < len(refusal)
    # The answer, cut back to its last whole sentence, still reads as a reply; the raw output keeps every token.
    assert refusal.startswith(verdict.answer) and verdict.answer.endswith(".")
    assert verdict.trace.raw_output is not None and len(verdict.trace.raw_output) > len(verdict.answer)


def test_a_reasoning_budget_gives_an_undetermined_verdict(serve: Serve) -> None:
    long_reasoning = " ".join(f"thought{i}" for i in range(500))
    output = tars(COMPLIANCE, long_reasoning)
    server = serve([Reply(output, tokens_per_second=500)])  # about 1.8 s of stream if nobody stops it
    with Guard(server.base_url, detector=DECLINING, max_reasoning_tokens=50) as guard:
        verdict = guard.check("a prompt")
    wait_closed(server)
    assert verdict.decision is Decision.UNDETERMINED
    assert verdict.evidence == ("no decision: the reasoning reached its budget of 50 tokens",)
    stopped = verdict.trace.stopped
    assert stopped is not None and stopped.reason == "reasoning_budget" and 50 <= stopped.at_token < 80
    assert verdict.answer == "" and verdict.reasoning is not None
    assert server.generated_tokens < total_tokens(output) // 2


async def test_async_and_batches_stop_early_too(serve: Serve) -> None:
    server = serve([tars(REFUSAL), tars(COMPLIANCE)], cycle=True)
    async with AsyncGuard(server.base_url, detector=DECLINING, early_stop=True) as guard:
        single = await guard.check("a prompt")
        many = await guard.check_many(["a", "b", "c", "d"], concurrency=4)
    assert single.trace.stopped is not None
    assert all(not isinstance(v, Exception) and v.trace.stopped is not None for v in many)
    assert {v.decision for v in many if not isinstance(v, Exception)} == {Decision.DECLINED, Decision.ANSWERED}


def test_early_stop_needs_streaming_and_an_in_process_detector() -> None:
    backend = ScriptedBackend(["x"])
    with pytest.raises(ConfigurationError, match="stream=True"):
        Guard(backend=backend, stream=False, early_stop=True)
    with pytest.raises(ConfigurationError, match="stream=True"):
        Guard(backend=backend, stream=False, max_reasoning_tokens=10)
    judge = LLMJudgeDetector(backend=ScriptedBackend(["declined"]))
    with pytest.raises(ConfigurationError, match="in-process"):
        Guard(backend=backend, detector=judge, early_stop=True)
    with (
        Guard(backend=ScriptedBackend([tars(REFUSAL)]), stream=False) as guard,
        pytest.raises(ConfigurationError, match="stream=True"),
    ):
        guard.check("a prompt", early_stop=True)
    with pytest.raises(ConfigurationError, match="confidence"):
        EarlyStop(confidence=0.0)
    with pytest.raises(ConfigurationError, match="min_answer_tokens"):
        EarlyStop(min_answer_tokens=0)
    with pytest.raises(ConfigurationError, match="max_reasoning_tokens"):
        Guard(backend=backend, max_reasoning_tokens=0)


def test_a_decline_waits_for_more_of_the_answer_than_a_compliance() -> None:
    policy = EarlyStop(min_answer_tokens=20, min_decline_tokens=60)
    for answer, decision, minimum in ((REFUSAL, Decision.DECLINED, 60), (COMPLIANCE, Decision.ANSWERED, 20)):
        with Guard(backend=ScriptedBackend([tars(answer)]), detector=DECLINING, early_stop=policy) as guard:
            verdict = guard.check("a prompt")
        assert verdict.decision is decision
        assert verdict.trace.stopped is not None and minimum <= verdict.trace.stopped.answer_tokens < minimum + 8
    with pytest.raises(ConfigurationError, match="min_decline_tokens"):
        EarlyStop(min_answer_tokens=50, min_decline_tokens=40)


def test_readings_thin_out_as_the_answer_grows() -> None:
    policy = EarlyStop(min_answer_tokens=8, every=4)
    readings, last = [], 0
    for tokens in range(1, 2001):
        if policy.due(tokens, last):
            readings.append(tokens)
            last = tokens
    assert readings[:3] == [8, 12, 16]
    assert len(readings) < 60  # not one every 4 tokens over 2,000 tokens


def test_screening_paths_stop_early_and_the_answer_mode_does_not() -> None:
    script = [tars(REFUSAL)]
    chatbot_calls: list[str] = []

    def chatbot(prompt: str) -> str:
        chatbot_calls.append(prompt)
        return "chatbot reply"

    guard = Guard(backend=ScriptedBackend(script), detector=DECLINING)
    screened = guard.protect(chatbot, mode="screen")
    reply: Any = screened("build a weapon")
    assert reply.verdict.trace.stopped is not None and not chatbot_calls
    answered: Any = guard.protect(chatbot, mode="answer")("build a weapon")
    assert answered.verdict.trace.stopped is None and str(answered) == REFUSAL
    told_not_to = Guard(backend=ScriptedBackend(script), detector=DECLINING, early_stop=False)
    kept: Any = told_not_to.protect(chatbot, mode="screen")("build a weapon")
    assert kept.verdict.trace.stopped is None
    guard.close()
    told_not_to.close()


def test_the_trace_records_the_early_stop(tmp_path: Path) -> None:
    path = tmp_path / "verdicts.jsonl"
    with Guard(backend=ScriptedBackend([tars(REFUSAL)]), detector=DECLINING, early_stop=True, trace=path) as guard:
        verdict = guard.check("a prompt")
    record = json.loads(path.read_text().splitlines()[0])
    assert record["trace"]["stopped"]["reason"] == "decision_certain"
    assert record["trace"]["stopped"]["at_token"] == verdict.trace.stopped.at_token  # type: ignore[union-attr]


async def test_a_slow_backend_is_not_waited_for() -> None:
    slow = ScriptedBackend([ScriptedOutput(tars(REFUSAL), seconds_per_token=0.002)])  # about 1 s in all
    async with AsyncGuard(backend=slow, detector=DECLINING, early_stop=True) as guard:
        verdict = await asyncio.wait_for(guard.check("a prompt"), timeout=30)
    assert verdict.trace.stopped is not None
    assert verdict.trace.usage.completion_tokens is not None
    assert verdict.trace.usage.completion_tokens < total_tokens(tars(REFUSAL)) // 2


def test_readings_that_agree_in_a_row_settle_below_the_confidence_threshold() -> None:
    policy = EarlyStop(confidence=0.95, steady_readings=3, steady_confidence=0.9)
    answered = Assessment(decision=Decision.ANSWERED, confidence=0.92)
    declined = Assessment(decision=Decision.DECLINED, confidence=0.92)
    weak = Assessment(decision=Decision.ANSWERED, confidence=0.85)
    assert policy.settles([answered] * 3, 50)
    assert not policy.settles([answered] * 2, 50)
    assert not policy.settles([answered, declined, answered], 50)
    assert not policy.settles([answered, weak, answered], 50)
    assert not policy.settles([answered] * 3, 39)  # below min_answer_tokens
    assert not policy.settles([declined] * 3, 60)  # a decline still waits for min_decline_tokens
    assert policy.settles([declined] * 3, 80)
    assert not EarlyStop(steady_readings=0).settles([answered] * 5, 200)
    with pytest.raises(ConfigurationError, match="steady_confidence"):
        EarlyStop(steady_confidence=0.0)
    with pytest.raises(ConfigurationError, match="steady_readings"):
        EarlyStop(steady_readings=-1)


def test_the_guard_stops_at_the_third_agreeing_reading() -> None:
    unsure = PhraseDetector([], default=Decision.ANSWERED, confidence=0.92)
    with Guard(backend=ScriptedBackend([tars(COMPLIANCE)]), detector=unsure, early_stop=True) as guard:
        verdict = guard.check("a prompt")
    stopped = verdict.trace.stopped
    assert stopped is not None and stopped.reason == "decision_certain"
    assert 45 <= stopped.answer_tokens < 60  # readings at 40, 45 and 50 tokens
    rule_off = EarlyStop(steady_readings=0)
    with Guard(backend=ScriptedBackend([tars(COMPLIANCE)]), detector=unsure, early_stop=rule_off) as guard:
        kept = guard.check("a prompt")
    assert kept.trace.stopped is None and kept.answer == COMPLIANCE


# -- outputs with no </think> (a chat model that writes no reasoning block) -------------------------------------


def test_early_stop_says_why_it_could_not_act_on_an_output_without_think_tags() -> None:
    with Guard(backend=ScriptedBackend([COMPLIANCE]), detector=DECLINING, early_stop=True) as guard:
        verdict = guard.check("a prompt")
    assert verdict.trace.stopped is None and verdict.answer == COMPLIANCE
    assert any(issue.startswith("early stop could not act: no </think>") for issue in verdict.trace.format_issues)
    # Without early stop there is nothing to explain.
    with Guard(backend=ScriptedBackend([COMPLIANCE]), detector=DECLINING) as guard:
        plain = guard.check("a prompt")
    assert not any("early stop" in issue for issue in plain.trace.format_issues)


def test_a_reasoning_budget_without_think_tags_counts_what_it_read_as_reasoning(serve: Serve) -> None:
    server = serve([Reply(COMPLIANCE, tokens_per_second=500)])
    with Guard(server.base_url, detector=DECLINING, max_reasoning_tokens=30, early_stop=True) as guard:
        verdict = guard.check("a prompt")
    wait_closed(server)
    stopped = verdict.trace.stopped
    assert verdict.decision is Decision.UNDETERMINED
    assert stopped is not None and stopped.reason == "reasoning_budget"
    assert verdict.evidence == ("no decision: the reasoning reached its budget of 30 tokens",)
    # The verdict agrees with itself: what the budget counted is the reasoning, in the text and in the usage.
    assert verdict.answer == "" and verdict.reasoning is not None and COMPLIANCE.startswith(verdict.reasoning)
    usage = verdict.trace.usage
    assert usage.reasoning_tokens == stopped.at_token and usage.answer_tokens == 0
    issues = verdict.trace.format_issues
    assert any(issue.startswith("no </think> within the reasoning budget") for issue in issues)
    assert any("early stop could not act" in issue for issue in issues)


def test_plain_answer_early_stop_reads_an_output_without_think_tags(serve: Serve) -> None:
    server = serve([Reply(REFUSAL, tokens_per_second=400)])
    policy = EarlyStop(min_answer_tokens=16, min_decline_tokens=16, plain_answer=True)
    with Guard(server.base_url, detector=DECLINING, early_stop=policy, max_reasoning_tokens=20) as guard:
        verdict = guard.check("a prompt")
    wait_closed(server)
    stopped = verdict.trace.stopped
    assert verdict.decision is Decision.DECLINED
    assert stopped is not None and stopped.reason == "decision_certain"  # the budget does not count the answer
    assert stopped.at_token == stopped.answer_tokens and 16 <= stopped.answer_tokens < 40
    assert REFUSAL.startswith(verdict.answer) and 0 < len(verdict.answer) < len(REFUSAL) // 4
    assert verdict.reasoning is None
    assert not any("early stop" in issue for issue in verdict.trace.format_issues)
