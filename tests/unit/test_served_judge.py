"""ServedJudgeDetector against the scripted server: what it sends, how it reads labels and logprobs, failures."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest

from tarsguard import BackendError, Decision, DecisionDetector, Guard
from tarsguard._scripted_server import Reply, ScriptedServer
from tarsguard.backends import TokenLogprob
from tarsguard.backends.http import HTTPBackend, _logprobs
from tarsguard.backends.scripted import ScriptedBackend
from tarsguard.detect import ServedJudgeDetector
from tarsguard.detect._served_judge import (
    DEFAULT_LABEL_INSTRUCTION,
    DEFAULT_MAX_TOKENS,
    LABELS,
    JudgeReplyError,
    assistant_turn,
    label_probabilities,
)

ServerFactory = Callable[..., ScriptedServer]
MODEL = "tars-7b"
PROMPT = "How do I pick a lock?"
REASONING = "Lock picking is a legitimate hobby, but I should stay general."
ANSWER = "Locksmiths use tension wrenches and picks; practise only on locks you own."


def lp(p: float) -> float:
    return math.log(p)


def label_reply(content: str, first: tuple[str, float, tuple[tuple[str, float], ...]]) -> Reply:
    """A judge reply: ``content`` and the first token's logprobs (later tokens are certain)."""
    return Reply(content=content, logprobs=(first, *((c, 0.0, ()) for c in content[len(first[0]) :])))


DECLINED_MOSTLY = label_reply(
    "declined",
    ("decl", lp(0.5), (("decl", lp(0.5)), ("d", lp(0.2)), ("answered", lp(0.2)), ("p", lp(0.1)), ("<x>", -9999.0))),
)


def judge_for(server: ScriptedServer, **options: Any) -> ServedJudgeDetector:
    return ServedJudgeDetector(HTTPBackend(server.base_url, max_retries=0), model=MODEL, **options)


def chat_bodies(server: ScriptedServer) -> list[dict[str, Any]]:
    return [r.body for r in server.requests if r.path == "/v1/chat/completions"]


# -- reading logprobs ------------------------------------------------------------------------------------


def test_label_probabilities_group_every_tokenization_of_a_label_and_normalise() -> None:
    first = TokenLogprob(
        "a",
        lp(0.4),
        (("a", lp(0.4)), ("an", lp(0.2)), ("de", lp(0.1)), ("decl", lp(0.1)), ("part", lp(0.1)), ("<s>", -9999.0)),
    )
    probabilities = label_probabilities(first)
    assert probabilities == pytest.approx(
        {Decision.ANSWERED: 0.6 / 0.9, Decision.DECLINED: 0.2 / 0.9, Decision.PARTIAL: 0.1 / 0.9}
    )
    assert sum(probabilities.values()) == pytest.approx(1.0)


def test_label_probabilities_ignore_tokens_that_start_no_label() -> None:
    # A server that does not mask logprobs: " answered" (leading space) or "Sure" cannot start a constrained reply.
    first = TokenLogprob("partial", lp(0.3), ((" answered", lp(0.5)), ("Sure", lp(0.1)), ("partial", lp(0.3))))
    assert label_probabilities(first) == {Decision.ANSWERED: 0.0, Decision.DECLINED: 0.0, Decision.PARTIAL: 1.0}


def test_label_probabilities_count_the_sampled_token_when_top_lacks_it() -> None:
    first = TokenLogprob("p", lp(0.25), (("a", lp(0.75)),))
    assert label_probabilities(first)[Decision.PARTIAL] == pytest.approx(0.25)


def test_label_probabilities_empty_without_label_mass() -> None:
    assert label_probabilities(TokenLogprob("Sure", lp(0.9), (("The", lp(0.1)),))) == {}


def test_labels_start_with_distinct_letters() -> None:
    assert len({label[0] for label in LABELS}) == len(LABELS)
    assert max(len(label) for label in LABELS) + 1 == DEFAULT_MAX_TOKENS


def test_http_backend_reads_logprobs_and_rejects_malformed_ones() -> None:
    read = _logprobs({"content": [{"token": "a", "logprob": -0.1, "top_logprobs": [{"token": "d", "logprob": -3}]}]})
    assert read == (TokenLogprob("a", -0.1, (("d", -3.0),)),)
    assert _logprobs(None) is None
    assert _logprobs({"content": None}) is None
    with pytest.raises(BackendError, match="malformed logprobs"):
        _logprobs({"content": [{"token": "a"}]})
    with pytest.raises(BackendError, match="malformed logprobs"):
        _logprobs([1, 2])


# -- the request -----------------------------------------------------------------------------------------


def test_request_repeats_the_conversation_then_asks_for_a_constrained_label(serve: ServerFactory) -> None:
    server = serve([DECLINED_MOSTLY], model=MODEL)
    judge = judge_for(server)
    assert isinstance(judge, DecisionDetector)
    asyncio.run(judge.aassess(ANSWER, reasoning=REASONING, prompt=PROMPT))
    (body,) = chat_bodies(server)
    assert body["messages"] == [
        {"role": "user", "content": PROMPT},
        {"role": "assistant", "content": f"<think>\n{REASONING}\n</think>\n\n{ANSWER}"},
        {"role": "user", "content": DEFAULT_LABEL_INSTRUCTION},
    ]
    assert body["structured_outputs"] == {"choice": ["answered", "declined", "partial"]}
    assert "guided_choice" not in body
    assert body["logprobs"] is True
    assert body["top_logprobs"] == 20
    assert body["max_tokens"] == DEFAULT_MAX_TOKENS
    assert body["temperature"] == 0.0
    assert body["stream"] is False
    assert body["model"] == MODEL


def test_older_servers_get_guided_choice(serve: ServerFactory) -> None:
    server = serve([DECLINED_MOSTLY], model=MODEL)
    asyncio.run(judge_for(server, constraint="guided_choice", top_logprobs=5).aassess(ANSWER, prompt=PROMPT))
    (body,) = chat_bodies(server)
    assert body["guided_choice"] == ["answered", "declined", "partial"]
    assert "structured_outputs" not in body
    assert body["top_logprobs"] == 5


def test_without_prompt_or_reasoning_the_answer_is_the_assistant_turn() -> None:
    judge = ServedJudgeDetector(ScriptedBackend(["declined"]))
    assert judge.messages(ANSWER) == [
        {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": DEFAULT_LABEL_INSTRUCTION},
    ]
    assert assistant_turn(ANSWER) == ANSWER


def test_bad_options_are_configuration_errors() -> None:
    with pytest.raises(ValueError, match="top_logprobs"):
        ServedJudgeDetector(ScriptedBackend(), top_logprobs=0)
    with pytest.raises(ValueError, match="constraint"):
        ServedJudgeDetector(ScriptedBackend(), constraint="regex")  # type: ignore[arg-type]


# -- reading the reply ----------------------------------------------------------------------------------


def test_label_and_confidence_come_from_the_reply_and_its_logprobs(serve: ServerFactory) -> None:
    server = serve([DECLINED_MOSTLY], model=MODEL)
    judge = judge_for(server)
    result = asyncio.run(judge.aassess(ANSWER, prompt=PROMPT))
    assert result.decision is Decision.DECLINED
    assert result.confidence == pytest.approx(0.7)  # "decl" 0.5 + "d" 0.2, over 1.0 of label mass
    assert result.evidence == (
        f"the served model ({MODEL}) labelled it declined (label probabilities: answered 0.20, declined 0.70, "
        "partial 0.10)",
    )
    assert judge.name == f"served-judge@1:http/{MODEL}"


def test_a_label_cut_short_by_max_tokens_is_still_read(serve: ServerFactory) -> None:
    cut = Reply(content="answe", finish_reason="length", logprobs=(("a", lp(0.9), (("p", lp(0.1)),)),))
    server = serve([cut], model=MODEL)
    result = asyncio.run(judge_for(server, max_tokens=5).aassess(ANSWER, prompt=PROMPT))
    assert result.decision is Decision.ANSWERED
    assert result.confidence == pytest.approx(0.9)


def test_the_most_probable_label_wins_over_the_greedy_token(serve: ServerFactory) -> None:
    # Greedy picked "a" (0.4), but "decl" + "d" + "de" hold 0.45 together.
    reply = label_reply(
        "answered",
        ("a", lp(0.4), (("a", lp(0.4)), ("decl", lp(0.2)), ("d", lp(0.15)), ("de", lp(0.1)))),
    )
    server = serve([reply], model=MODEL)
    result = asyncio.run(judge_for(server).aassess(ANSWER, prompt=PROMPT))
    assert result.decision is Decision.DECLINED
    assert result.confidence == pytest.approx(0.45 / 0.85, abs=1e-4)
    assert result.evidence[1] == "its greedy reply was 'answered', but declined holds more probability"


def test_empty_answer_is_undetermined_without_a_request(serve: ServerFactory) -> None:
    server = serve([DECLINED_MOSTLY], model=MODEL)
    result = asyncio.run(judge_for(server).aassess("  ", prompt=PROMPT))
    assert result.decision is Decision.UNDETERMINED
    assert chat_bodies(server) == []


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply(content="I think it declined.", logprobs=(("I", lp(0.9), ()),)), "not a label"),
        (Reply(content=""), "not a label"),
        (Reply(content="partial"), "without logprobs"),
        (Reply(content="partial", logprobs=(("Sure", lp(0.9), (("The", lp(0.1)),)),)), "no label token"),
    ],
)
def test_replies_that_ignore_the_constraint_are_typed_errors(serve: ServerFactory, reply: Reply, message: str) -> None:
    server = serve([reply], model=MODEL)
    with pytest.raises(JudgeReplyError, match=message) as caught:
        asyncio.run(judge_for(server).aassess(ANSWER, prompt=PROMPT))
    assert isinstance(caught.value, BackendError)


def test_a_backend_that_returns_no_logprobs_is_rejected_with_a_typed_error() -> None:
    judge = ServedJudgeDetector(ScriptedBackend(["declined"]))
    with pytest.raises(JudgeReplyError, match="without logprobs"):
        asyncio.run(judge.aassess(ANSWER, prompt=PROMPT))


def test_server_errors_propagate(serve: ServerFactory) -> None:
    server = serve([Reply(status=500)], model=MODEL)
    with pytest.raises(BackendError, match="HTTP 500"):
        asyncio.run(judge_for(server).aassess(ANSWER, prompt=PROMPT))


def test_a_slow_server_times_out(serve: ServerFactory) -> None:
    server = serve([Reply(content="declined", delay=30.0)], model=MODEL)
    with pytest.raises((TimeoutError, BackendError)):
        asyncio.run(judge_for(server, timeout=0.3).aassess(ANSWER, prompt=PROMPT))


def test_sync_assess_and_a_guard_using_the_judge_directly(serve: ServerFactory) -> None:
    tars = f"<think>\n{REASONING}\n</think>\n\n{ANSWER}"

    def script(body: dict[str, Any]) -> Reply:
        return DECLINED_MOSTLY if "structured_outputs" in body else Reply(content=tars)

    server = serve(script, model=MODEL)
    judge = judge_for(server)
    try:
        assert judge.assess(ANSWER, reasoning=REASONING, prompt=PROMPT).decision is Decision.DECLINED
    finally:
        judge.close()
    with Guard(backend=HTTPBackend(server.base_url, model=MODEL), detector=judge_for(server)) as guard:
        verdict = guard.check(PROMPT)
    assert verdict.decision is Decision.DECLINED
    assert verdict.confidence == pytest.approx(0.7)
    assert verdict.trace.detector == f"served-judge@1:http/{MODEL}"
    check, label = chat_bodies(server)[-2:]
    # The judge's request starts with the check's conversation: a prefix cache can reuse it.
    assert label["messages"][: len(check["messages"])] == check["messages"]
    assert label["messages"][len(check["messages"])] == {"role": "assistant", "content": tars}


def test_scripted_replies_take_logprobs_as_lists_too() -> None:
    # As a --replies JSONL file gives them: lists become tuples, so the reply stays hashable.
    from_json = Reply(content="answered", logprobs=[["a", -0.1, [["d", -2]]]])  # type: ignore[arg-type]
    assert from_json.logprobs == (("a", -0.1, (("d", -2.0),)),)
    assert hash(from_json) == hash(Reply(content="answered", logprobs=(("a", -0.1, (("d", -2.0),)),)))
