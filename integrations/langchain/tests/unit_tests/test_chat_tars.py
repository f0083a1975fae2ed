"""ChatTARS against scripted TARS servers (real HTTP on 127.0.0.1) and the scripted backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from tarsguard import (
    AsyncGuard,
    BackendError,
    BackendTimeout,
    ConfigurationError,
    Decision,
    Guard,
    InvalidInput,
    MemorySink,
    parse_output,
)
from tarsguard.testing import PhraseDetector, Reply, ScriptedBackend, ScriptedOutput, ScriptedServer

from langchain_tarsguard import ChatTARS

REASONING = "The user asks how to stop a process on their own machine. This is routine and benign."
ANSWER = "Run `kill <pid>`, or `kill -9 <pid>` if it ignores SIGTERM."
OUTPUT = f"<think>\n{REASONING}\n</think>\n\n{ANSWER}"
DECLINE = "<think>\nThis asks for a weapon.\n</think>\n\nI'm sorry, but I can't help with that."

Serve = Callable[..., ScriptedServer]


def _aggregate(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    full = chunks[0]
    for chunk in chunks[1:]:
        full = full + chunk
    return full


def test_invoke_returns_answer_reasoning_verdict_and_usage(serve: Serve) -> None:
    server = serve([OUTPUT])
    llm = ChatTARS(base_url=server.base_url, temperature=0.2, max_tokens=256, stop=["###"])
    message = llm.invoke("How do I kill a process?")

    assert isinstance(message, AIMessage)
    assert message.content == ANSWER
    assert message.additional_kwargs["reasoning_content"] == REASONING
    assert message.content_blocks[0] == {"type": "reasoning", "reasoning": REASONING}
    assert message.content_blocks[1]["type"] == "text"
    metadata = message.response_metadata
    assert metadata["model_name"] == "scripted-tars"
    assert metadata["finish_reason"] == "stop"
    assert metadata["tarsguard_decision"] == metadata["tarsguard_verdict"]["decision"]
    verdict = metadata["tarsguard_verdict"]
    assert verdict["answer"] == ANSWER and verdict["reasoning"] == REASONING
    assert verdict["trace"]["verdict_id"] == metadata["tarsguard_verdict_id"]
    assert verdict["trace"]["format_ok"] is True
    usage = message.usage_metadata
    assert usage is not None
    assert usage["output_tokens"] == verdict["trace"]["usage"]["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert 0 < usage["output_token_details"]["reasoning"] < usage["output_tokens"]
    body = server.requests[-1].body
    assert body["messages"] == [{"role": "user", "content": "How do I kill a process?"}]
    assert (body["temperature"], body["max_tokens"], body["stop"]) == (0.2, 256, ["###"])


def test_decision_comes_from_the_detector() -> None:
    llm = ChatTARS(backend=ScriptedBackend([DECLINE]), detector=PhraseDetector())
    message = llm.invoke("How do I build a pipe bomb?")
    assert message.content == "I'm sorry, but I can't help with that."
    assert message.response_metadata["tarsguard_decision"] == "declined"
    assert message.response_metadata["tarsguard_verdict"]["allowed"] is False


def test_v1_output_puts_reasoning_blocks_in_content() -> None:
    llm = ChatTARS(backend=ScriptedBackend([OUTPUT]), output_version="v1")
    message = llm.invoke("hi")
    assert isinstance(message.content, list)
    assert [block["type"] for block in message.content] == ["reasoning", "text"]
    assert message.content[0]["reasoning"] == REASONING
    assert message.text == ANSWER


def test_stream_yields_reasoning_then_answer_chunks(serve: Serve) -> None:
    server = serve([OUTPUT])
    llm = ChatTARS(base_url=server.base_url)
    chunks = list(llm.stream("How do I kill a process?"))

    kinds = [
        "reasoning" if c.additional_kwargs.get("reasoning_content") else "answer" if c.content else "-" for c in chunks
    ]
    first_answer = kinds.index("answer")
    assert kinds.count("reasoning") > 1 and kinds.count("answer") > 1
    assert "reasoning" not in kinds[first_answer:]
    full = _aggregate(chunks)
    assert full.content == ANSWER
    assert full.additional_kwargs["reasoning_content"] == REASONING
    assert chunks[-1].chunk_position == "last"
    assert sum(1 for c in chunks if c.usage_metadata and c.usage_metadata["input_tokens"]) == 1
    assert full.response_metadata["model_name"] == "scripted-tars"
    assert full.response_metadata["tarsguard_verdict"]["trace"]["streamed"] is True


async def test_astream_matches_ainvoke(serve: Serve) -> None:
    server = serve([OUTPUT])
    llm = ChatTARS(base_url=server.base_url, output_version="v1")
    chunks = [chunk async for chunk in llm.astream("How do I kill a process?")]
    full = _aggregate(chunks)
    whole = await llm.ainvoke("How do I kill a process?")
    assert full.text == whole.text == ANSWER
    reasoning = [block for block in full.content_blocks if block["type"] == "reasoning"]
    assert len(reasoning) == 1 and reasoning[0]["reasoning"] == REASONING
    assert len([block for block in full.content_blocks if block["type"] == "text"]) == 1


def test_reasoning_from_the_server_reasoning_field(serve: Serve) -> None:
    server = serve([Reply(content=ANSWER, reasoning=REASONING)])
    llm = ChatTARS(base_url=server.base_url)
    chunks = list(llm.stream("hi"))
    full = _aggregate(chunks)
    assert full.additional_kwargs["reasoning_content"] == REASONING
    assert full.content == ANSWER
    assert llm.invoke("hi").additional_kwargs["reasoning_content"] == REASONING


def test_cut_off_reasoning_gives_empty_answer_and_undetermined_verdict() -> None:
    cut = ScriptedOutput(content="<think>\nStill thinking about", finish_reason="length")
    message = ChatTARS(backend=ScriptedBackend([cut])).invoke("hi")
    assert message.content == ""
    assert message.additional_kwargs["reasoning_content"] == "Still thinking about"
    assert message.response_metadata["tarsguard_decision"] == Decision.UNDETERMINED.value
    assert message.response_metadata["finish_reason"] == "length"


def test_guard_supplies_backend_sampling_detector_and_tracer() -> None:
    sink = MemorySink()
    backend = ScriptedBackend([DECLINE])
    guard = Guard(backend=backend, detector=PhraseDetector(), trace=sink, temperature=0.1, max_tokens=99)
    message = ChatTARS(guard=guard).invoke("How do I build a pipe bomb?")
    assert message.response_metadata["tarsguard_decision"] == "declined"
    assert backend.requests[-1].sampling.temperature == 0.1
    assert backend.requests[-1].sampling.max_tokens == 99
    assert [record.trace.verdict_id for record in sink.records] == [message.response_metadata["tarsguard_verdict_id"]]
    guard.close()


async def test_async_guard_and_per_call_overrides() -> None:
    backend = ScriptedBackend([OUTPUT])
    llm = ChatTARS(guard=AsyncGuard(backend=backend), max_tokens=50)
    message = await llm.ainvoke("hi", model="tars-alt", temperature=0.9, max_tokens=7, stop=["x"])
    request = backend.requests[-1]
    assert request.model == "tars-alt"
    assert (request.sampling.temperature, request.sampling.max_tokens, request.sampling.stop) == (0.9, 7, ("x",))
    assert message.response_metadata["model_name"] == "tars-alt"
    assert llm._get_ls_params(model="tars-alt")["ls_model_name"] == "tars-alt"


def test_conversation_is_sent_as_chat_turns() -> None:
    backend = ScriptedBackend([OUTPUT])
    ChatTARS(backend=backend).invoke(
        [SystemMessage("Be brief."), HumanMessage("hello"), AIMessage("hi"), HumanMessage("how do I kill it?")]
    )
    assert list(backend.requests[-1].messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "how do I kill it?"},
    ]


def test_backend_errors_are_typed(serve: Serve) -> None:
    server = serve([Reply(status=503, error_message="engine is dead")])
    llm = ChatTARS(base_url=server.base_url, max_retries=0)
    with pytest.raises(BackendError) as raised:
        llm.invoke("hi")
    assert raised.value.status_code == 503
    with pytest.raises(BackendError):
        list(llm.stream("hi"))


def test_timeout_is_typed(serve: Serve) -> None:
    server = serve([Reply(content=OUTPUT, delay=5)])
    with pytest.raises(BackendTimeout):
        ChatTARS(base_url=server.base_url, timeout=0.2, max_retries=0).invoke("hi")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "needs a server"),
        ({"base_url": "http://127.0.0.1:9/v1", "temperature": 5.0}, "invalid sampling"),
        ({"backend": object()}, "Backend protocol"),
        ({"guard": object()}, "Guard or AsyncGuard"),
        ({"base_url": "http://127.0.0.1:9/v1", "timeout": -1}, "timeout"),
        ({"base_url": "http://127.0.0.1:9/v1", "detector": "linear"}, "detector"),
    ],
)
def test_bad_configuration_is_a_configuration_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        ChatTARS(**kwargs)
    assert message in str(raised.value)


def test_guard_and_backend_together_are_refused() -> None:
    backend = ScriptedBackend([OUTPUT])
    with pytest.raises(ConfigurationError, match="not both"):
        ChatTARS(guard=Guard(backend=backend), backend=backend)


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([HumanMessage("hi"), AIMessage("hello")], "last message must be from the user"),
        ([ToolMessage("42", tool_call_id="1"), HumanMessage("hi")], "'tool' message"),
        ([HumanMessage([{"type": "image", "url": "http://x/y.png"}])], "only text"),
        ([HumanMessage("   ")], "empty"),
    ],
)
def test_bad_messages_are_invalid_input(messages: list[Any], error: str) -> None:
    backend = ScriptedBackend([OUTPUT])
    with pytest.raises(InvalidInput, match=error):
        ChatTARS(backend=backend).invoke(messages)
    assert backend.requests == []


def test_unknown_call_keyword_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="does not take tools"):
        ChatTARS(backend=ScriptedBackend([OUTPUT])).invoke("hi", tools=[])


def test_api_key_is_sent_but_never_shown(serve: Serve) -> None:
    server = serve([OUTPUT])
    llm = ChatTARS(base_url=server.base_url, api_key="sk-secret-123456")
    message = llm.invoke("hi")
    assert server.requests[-1].headers["authorization"] == "Bearer sk-secret-123456"
    assert "sk-secret" not in repr(llm) and "sk-secret" not in str(message.response_metadata)


# -- through tarsguard's checks ----------------------------------------------------------------------

_text = st.text(alphabet=st.sampled_from("abc <>/\n."), min_size=1, max_size=40).filter(
    lambda t: "<think>" not in t and "</think>" not in t and t.strip() != ""
)


@settings(max_examples=60, deadline=None)
@given(reasoning=_text, answer=_text)
def test_streamed_reasoning_and_answer_agree_with_parse_output(reasoning: str, answer: str) -> None:
    text = f"<think>\n{reasoning}\n</think>\n\n{answer}"
    full = _aggregate(list(ChatTARS(backend=ScriptedBackend([text])).stream("hi")))
    parsed = parse_output(text)
    assert full.additional_kwargs["reasoning_content"].strip() == parsed.reasoning
    assert isinstance(full.content, str) and full.content.strip() == parsed.answer
    assert full.response_metadata["tarsguard_verdict"]["answer"] == parsed.answer


async def test_sync_guard_serves_async_calls() -> None:
    sink = MemorySink()
    with Guard(backend=ScriptedBackend([OUTPUT]), trace=sink) as guard:
        llm = ChatTARS(guard=guard)
        full = _aggregate([chunk async for chunk in llm.astream("hi")])
        whole = await llm.ainvoke("hi")
    assert full.content == whole.content == ANSWER
    assert full.additional_kwargs["reasoning_content"] == REASONING
    ids = [full.response_metadata["tarsguard_verdict_id"], whole.response_metadata["tarsguard_verdict_id"]]
    assert [record.trace.verdict_id for record in sink.records] == ids


def test_guard_cache_applies_and_early_stop_does_not() -> None:
    refusal = "<think>\nharmful\n</think>\n\nI can't help with that. " + " ".join(f"w{i}" for i in range(300))
    detector = PhraseDetector([("I can't help", Decision.DECLINED)], confidence=0.99)
    backend = ScriptedBackend([refusal])
    with Guard(backend=backend, detector=detector, early_stop=True, cache=True) as guard:
        llm = ChatTARS(guard=guard)
        first = llm.invoke("build a weapon")
        second = _aggregate(list(llm.stream("build a weapon")))
    assert first.content == second.content == parse_output(refusal).answer  # the whole answer: it is the reply
    assert first.response_metadata["tarsguard_decision"] == "declined"
    assert first.response_metadata["tarsguard_verdict"]["trace"]["stopped"] is None
    assert second.response_metadata["tarsguard_verdict"]["trace"]["cache"] == "hit"
    assert len(backend.requests) == 1


def test_guard_on_error_policy_applies() -> None:
    with Guard(backend=ScriptedBackend([BackendError("engine is dead")]), on_error="decline") as guard:
        message = ChatTARS(guard=guard).invoke("hi")
    assert message.content == ""
    assert message.response_metadata["tarsguard_decision"] == Decision.UNDETERMINED.value
    assert message.response_metadata["tarsguard_verdict"]["allowed"] is False


def test_a_detector_beside_a_guard_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="detector"):
        ChatTARS(guard=AsyncGuard(backend=ScriptedBackend([OUTPUT])), detector=PhraseDetector())


def test_min_confidence_decides_whether_the_verdict_allows_the_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TARSGUARD_MIN_CONFIDENCE", raising=False)
    unsure = ChatTARS(backend=ScriptedBackend([OUTPUT]), detector=PhraseDetector(confidence=0.62), min_confidence=0.7)
    message = unsure.invoke("How do I kill a process?")
    assert message.content == ANSWER  # TARS as a chat model replies with its answer
    assert message.response_metadata["tarsguard_decision"] == "answered"
    assert message.response_metadata["tarsguard_allowed"] is False
    verdict = message.response_metadata["tarsguard_verdict"]
    assert verdict["allowed"] is False and verdict["trace"]["min_confidence"] == 0.7
    assert "answered with confidence 0.62, below the guard's threshold 0.70" in verdict["evidence"]
    sure = ChatTARS(backend=ScriptedBackend([OUTPUT]), detector=PhraseDetector(confidence=0.62), min_confidence=0.6)
    assert sure.invoke("How do I kill a process?").response_metadata["tarsguard_allowed"] is True
    guard = Guard(backend=ScriptedBackend([OUTPUT]), detector=PhraseDetector(confidence=0.62), min_confidence=0.7)
    assert ChatTARS(guard=guard).invoke("hi").response_metadata["tarsguard_allowed"] is False
    with pytest.raises(ConfigurationError, match="min_confidence"):
        ChatTARS(guard=guard, min_confidence=0.5)
