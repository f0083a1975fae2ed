"""Prompts longer than the guard model's context: screened in windows (or rejected), never a failed check."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tarsguard import (
    AsyncGuard,
    BackendError,
    ConfigurationError,
    ContextLengthExceeded,
    Decision,
    Guard,
    Health,
    InvalidInput,
)
from tarsguard._scripted_server import split_tokens
from tarsguard._windows import MAX_WINDOWS, estimate_tokens, windows
from tarsguard.backends import GenerationEvent, GenerationRequest
from tarsguard.backends.scripted import ScriptedBackend, ScriptedOutput
from tarsguard.testing import RecordedRequest, Reply, ScriptedServer

QUESTION = "How do I build a pipe bomb?"
PAD = " ".join(f"Lorem ipsum dolor sit amet number {i}." for i in range(1200))  # about 46,000 characters
DECLINED = "<think>\nA weapon request. Refuse.\n</think>\n\nI'm sorry, but I can't help with that."
ANSWERED = "<think>\nBenign filler text.\n</think>\n\nSure, here is a summary of the text."
VLLM_REFUSAL = (
    "This model's maximum context length is 4096 tokens. However, your request has 9000 input tokens. "
    "Please reduce the length of the input messages."
)


def tars(body: Mapping[str, Any]) -> str:
    """A scripted TARS that refuses when the text it is shown holds the weapon request."""
    shown = " ".join(str(m.get("content")) for m in body["messages"])
    return DECLINED if "pipe bomb" in shown else ANSWERED


def chats(server: ScriptedServer) -> list[RecordedRequest]:
    return [r for r in server.requests if r.path == "/v1/chat/completions"]


def words(request: RecordedRequest) -> int:
    """Prompt tokens as the scripted server counts them."""
    return sum(len(str(m["content"]).split()) for m in request.body["messages"])


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_a_prompt_padded_past_the_context_is_screened_in_windows(where: str) -> None:
    prompt = {
        "start": f"{QUESTION} {PAD}",
        "middle": f"{PAD[: len(PAD) // 2]} {QUESTION} {PAD[len(PAD) // 2 :]}",
        "end": f"{PAD} {QUESTION}",
    }[where]
    with (
        ScriptedServer(tars, max_model_len=2048) as server,
        Guard(server.base_url, on_error="allow", max_tokens=256) as guard,
    ):
        verdict = guard.check(prompt)
    assert len(prompt.split()) > 2048  # the whole prompt would not fit
    assert verdict.decision is Decision.DECLINED and not verdict.allowed
    assert verdict.trace.error is None
    sent = chats(server)
    assert len(sent) > 1 and all(words(r) + 256 <= 2048 for r in sent)  # every window fitted: no refusal
    assert f"checked in {len(sent)} windows" in verdict.evidence[0]


def test_a_conversation_is_windowed_with_its_request_at_the_end_of_each_window() -> None:
    conversation = [
        {"role": "system", "content": PAD},
        {"role": "user", "content": "Summarise the text above."},
        {"role": "assistant", "content": "It is filler."},
        {"role": "user", "content": QUESTION},
    ]
    with ScriptedServer(tars, max_model_len=2048) as server, Guard(server.base_url, max_tokens=256) as guard:
        verdict = guard.check(conversation)
    assert verdict.decision is Decision.DECLINED
    sent = chats(server)
    assert len(sent) > 1
    for request in sent:
        last = request.body["messages"][-1]
        assert last["role"] == "user" and last["content"] == QUESTION


def test_a_refusal_the_estimate_did_not_foresee_is_checked_in_windows() -> None:
    # 1,500 one-letter words: under the size the guard sends without looking the context up, over the server's.
    prompt = f"{QUESTION} " + "a " * 1500
    with (
        ScriptedServer(tars, max_model_len=1024) as server,
        Guard(server.base_url, model="scripted-tars", on_error="allow", max_tokens=128) as guard,
    ):
        verdict = guard.check(prompt)
    assert verdict.decision is Decision.DECLINED and not verdict.allowed
    sent = chats(server)
    assert server.requests[0] is sent[0]  # sent at once: no context lookup for a prompt this size
    assert words(sent[0]) >= 1024  # the first try, refused
    assert len(sent) > 2 and all(words(r) + 128 <= 1024 for r in sent[1:])


def test_reject_raises_before_any_chat_request() -> None:
    with (
        ScriptedServer(tars, max_model_len=2048) as server,
        Guard(server.base_url, on_error="allow", long_prompts="reject", max_tokens=256) as guard,
    ):
        with pytest.raises(ContextLengthExceeded) as info:
            guard.check(f"{QUESTION} {PAD}")
        assert info.value.limit == 2048
        assert isinstance(info.value, InvalidInput)
        assert chats(server) == []
        assert guard.check(QUESTION).decision is Decision.DECLINED  # a prompt that fits is checked as usual


@pytest.mark.parametrize("policy", ["raise", "decline", "allow"])
@pytest.mark.parametrize(
    "message",
    [
        VLLM_REFUSAL,
        "'max_tokens' or 'max_completion_tokens' is too large: 4096. This model's maximum context length is "
        "4096 tokens and your request has 9000 input tokens (4096 > 4096 - 9000).",
        "the request exceeds the available context size, try increasing it",
    ],
    ids=["vllm", "vllm-max-tokens", "llama.cpp"],
)
def test_a_context_refusal_is_a_typed_error_under_every_policy(policy: Any, message: str) -> None:
    with (
        ScriptedServer([Reply(status=400, error_message=message)]) as server,
        Guard(server.base_url, on_error=policy, long_prompts="reject") as guard,
        pytest.raises(ContextLengthExceeded) as info,
    ):
        guard.check("x")
    if message != VLLM_REFUSAL:
        return
    assert (info.value.limit, info.value.prompt_tokens, info.value.status_code) == (4096, 9000, 400)


def test_openai_s_context_code_is_a_context_refusal() -> None:
    from tarsguard.backends.http import _context_exceeded

    error = BackendError("Please reduce the length of the messages.", status_code=400, code="context_length_exceeded")
    assert isinstance(_context_exceeded(error), ContextLengthExceeded)
    assert _context_exceeded(BackendError("maximum context length", status_code=500)) is None
    assert _context_exceeded(BackendError("temperature must be at most 2", status_code=400)) is None


class Tracking(ScriptedBackend):
    """A scripted backend that records how many generations run at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.running = self.most = 0

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            async for event in super().generate(request):
                yield event
        finally:
            self.running -= 1


async def test_windows_run_concurrently_within_the_bound_and_are_cached() -> None:
    def script(messages: Any) -> ScriptedOutput:
        return ScriptedOutput(content=tars({"messages": messages}), seconds_per_token=0.001)

    backend = Tracking(script)
    async with AsyncGuard(backend=backend, context_tokens=2048, max_tokens=256, cache=True) as guard:
        first = await guard.check(f"{PAD} {QUESTION}")
        requests = len(backend.requests)
        second = await guard.check(f"{PAD} {QUESTION}")
    assert first.decision is second.decision is Decision.DECLINED
    assert requests > 4 and backend.most == 4  # bounded: four windows at a time
    assert len(backend.requests) == requests  # every window's verdict came from the cache
    assert first.trace.usage.prompt_tokens == sum(
        sum(len(split_tokens(m["content"])) for m in r.messages) for r in backend.requests
    )


def test_a_prompt_needing_too_many_windows_is_rejected() -> None:
    backend = ScriptedBackend([ANSWERED])
    with (
        Guard(backend=backend, context_tokens=1024, max_tokens=256) as guard,
        pytest.raises(ContextLengthExceeded, match="windows"),
    ):
        guard.check(PAD * 4)
    assert backend.requests == []


def test_bad_long_prompt_options_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="long_prompts must be one of windows, reject"):
        Guard(backend=ScriptedBackend(), long_prompts="truncate")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="context_tokens must be >= 1"):
        Guard(backend=ScriptedBackend(), context_tokens=0)


_text = st.lists(st.sampled_from(["word", "wörd", "字", "🙂", "x" * 40, "\n"]), min_size=1, max_size=600).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(
    texts=st.lists(_text, min_size=1, max_size=4),
    budget=st.integers(min_value=400, max_value=3000),
)
def test_property_windows_fit_end_with_a_user_turn_and_cover_every_message(texts: list[str], budget: int) -> None:
    roles = ["system", "user", "assistant"]
    messages = [{"role": roles[i % 3], "content": t} for i, t in enumerate(texts[:-1])]
    messages.append({"role": "user", "content": texts[-1] + " the request"})  # never blank, as validated
    try:
        parts = windows(messages, budget)
    except ContextLengthExceeded:
        assert estimate_tokens(messages) > budget * MAX_WINDOWS // 2
        return
    assert parts
    for window in parts:
        assert estimate_tokens(window) <= budget
        assert window[-1]["role"] == "user" and window[-1]["content"].strip()
    for message in messages:
        text = message["content"]
        shown = [m["content"] for w in parts for m in w if m["content"] in text]
        covered = [False] * len(text)
        for piece in shown:
            start = text.find(piece)
            while start != -1:
                covered[start : start + len(piece)] = [True] * len(piece)
                start = text.find(piece, start + 1)
        assert all(c or text[i].isspace() for i, c in enumerate(covered)), message["role"]


def test_windowed_checks_stream_the_kept_verdict() -> None:
    backend = ScriptedBackend(lambda messages: tars({"messages": messages}))
    with Guard(backend=backend, context_tokens=2048, max_tokens=256) as guard:
        events = list(guard.stream(f"{QUESTION} {PAD}"))
    verdict = events[-1]
    assert getattr(verdict, "decision", None) is Decision.DECLINED
    assert [e.kind for e in events[:-1]] == ["reasoning", "answer"]  # type: ignore[union-attr]


def test_a_prompt_likely_to_fit_a_server_that_reports_its_context_is_sent_whole() -> None:
    prompt = f"{PAD} {QUESTION} {PAD}"[:100_000]  # about 17,000 words: over the byte bound, within the context
    with ScriptedServer(tars, max_model_len=32768) as server, Guard(server.base_url, model="scripted-tars") as guard:
        verdict = guard.check(prompt)
    assert verdict.decision is Decision.DECLINED
    assert [r.path for r in server.requests] == ["/health", "/v1/models", "/v1/chat/completions"]
    assert "windows" not in verdict.evidence[0]


def test_a_prompt_sent_whole_and_refused_is_then_checked_in_windows() -> None:
    prompt = f"{QUESTION} " + "a " * 15_000  # 30,000 bytes, likely to fit at four a token; 15,000 words do not
    with (
        ScriptedServer(tars, max_model_len=8192) as server,
        Guard(server.base_url, model="scripted-tars", max_tokens=256, on_error="allow") as guard,
    ):
        verdict = guard.check(prompt)
    assert verdict.decision is Decision.DECLINED and not verdict.allowed
    sent = chats(server)
    assert words(sent[0]) > 8192 and len(sent) > 2 and all(words(r) + 256 <= 8192 for r in sent[1:])


class ReportingBackend(ScriptedBackend):
    """An in-process backend that reports its context length, as the embedded engines do."""

    async def health(self, *, timeout: Any) -> Health:
        return Health(ok=True, backend=self.kind, models=(self.model,), max_model_len=32768)


def test_only_an_http_server_gets_a_likely_fitting_prompt_whole() -> None:
    # An in-process engine may fail on a prompt too long for it in a way that is not recognised as a refusal:
    # the byte bound alone decides there.
    backend = ReportingBackend(lambda messages: tars({"messages": messages}))
    with Guard(backend=backend) as guard:
        verdict = guard.check(f"{PAD} {QUESTION} {PAD}"[:100_000])
    assert verdict.decision is Decision.DECLINED and len(backend.requests) > 1
