"""Guard and AsyncGuard with the HTTP backend against the scripted OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import functools
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from tarsguard import (
    AsyncGuard,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ContextLengthExceeded,
    Decision,
    Guard,
    InvalidInput,
    ResponseTooLarge,
    Timeout,
    Verdict,
)
from tarsguard._config import DEFAULT_MAX_RESPONSE_BYTES
from tarsguard._scripted_server import RecordedRequest, Reply, ScriptedServer, split_tokens
from tarsguard.backends.http import HTTPBackend

MODEL = "tars-7b"
SECRET = "sk-SECRET-do-not-leak-7f3a9c"
ANSWER = (
    "<think>\nThe user wants to stop a stuck program. This is benign.\n</think>\n\n"
    "Sure: run `kill <pid>`, or `kill -9 <pid>` if it ignores SIGTERM."
)
REFUSAL = (
    "<think>\nThis asks for weapon instructions; I must refuse.\n</think>\n\nI'm sorry, but I can't help with that."
)
FAST_RETRY = 0  # Retry-After: 0 keeps retry tests quick without changing what they prove

ServerFactory = Callable[..., ScriptedServer]


@pytest.fixture
def serve(serve: ServerFactory) -> ServerFactory:
    """The shared factory, serving MODEL unless a test names another."""
    return functools.partial(serve, model=MODEL)


def chats(server: ScriptedServer) -> list[RecordedRequest]:
    return [r for r in server.requests if r.path == "/v1/chat/completions"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- model, headers, secrets ------------------------------------------------------------------------------


def test_model_is_detected_once_from_v1_models(serve: ServerFactory) -> None:
    server = serve([ANSWER])
    with Guard(base_url=server.base_url) as guard:
        first = guard.check("How do I kill a stuck process?")
        second = guard.check("And on Windows?")
    paths = [r.path for r in server.requests]
    assert paths.count("/v1/models") == 1
    assert paths.index("/v1/models") < paths.index("/v1/chat/completions")
    assert [r.body["model"] for r in chats(server)] == [MODEL, MODEL]
    assert first.trace.model == second.trace.model == MODEL
    assert first.decision is Decision.ANSWERED
    assert first.trace.backend == "http"
    assert first.trace.endpoint == server.base_url
    assert (first.trace.request_id or "").startswith("chatcmpl-")
    assert "tars-7b" in repr(guard.backend) or guard.backend.model == MODEL  # type: ignore[attr-defined]


def test_explicit_model_skips_detection(serve: ServerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve([ANSWER])
    with Guard(base_url=server.base_url, model=MODEL) as guard:
        guard.check("q")
    assert "/v1/models" not in [r.path for r in server.requests]
    assert chats(server)[0].body["model"] == MODEL
    monkeypatch.setenv("TARSGUARD_MODEL", MODEL)
    monkeypatch.setenv("TARSGUARD_BASE_URL", server.base_url)
    with Guard() as guard:
        guard.check("q")
    assert "/v1/models" not in [r.path for r in server.requests]


def test_unknown_model_is_a_backend_error_never_retried(serve: ServerFactory) -> None:
    server = serve([ANSWER])
    with Guard(base_url=server.base_url, model="no-such-model") as guard, pytest.raises(BackendError) as info:
        guard.check("q")
    assert info.value.status_code == 404
    assert "no-such-model" in info.value.message
    assert len(chats(server)) == 1


def test_authorization_header_sent_only_with_a_key(serve: ServerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve([ANSWER])
    with Guard(base_url=server.base_url, model=MODEL, api_key=SECRET) as guard:
        guard.check("q")
    with Guard(base_url=server.base_url, model=MODEL) as guard:
        guard.check("q")
    monkeypatch.setenv("TARSGUARD_API_KEY", "env-key")
    with Guard(base_url=server.base_url, model=MODEL) as guard:
        guard.check("q")
    with Guard(base_url=server.base_url, model=MODEL, api_key="arg-key") as guard:
        guard.check("q")
    auth = [r.headers.get("authorization") for r in chats(server)]
    assert auth == [f"Bearer {SECRET}", None, "Bearer env-key", "Bearer arg-key"]


def test_the_key_never_leaks(serve: ServerFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server = serve([ANSWER, Reply(status=401, error_message="invalid api key")])
    with Guard(base_url=server.base_url, api_key=SECRET, on_error="decline") as guard:
        ok = guard.check("How do I kill a stuck process?")
        failed = guard.check("again")
        health = guard.health()
        texts = [
            ok.model_dump_json(),
            failed.model_dump_json(),
            repr(ok),
            repr(guard),
            str(guard),
            repr(guard.backend),
            health.model_dump_json(),
        ]
    assert ok.decision is Decision.ANSWERED
    assert failed.trace.error is not None and failed.trace.error.status_code == 401
    with Guard(base_url=server.base_url, api_key=SECRET) as guard, pytest.raises(BackendError) as info:
        guard.check("q")
    texts += [str(info.value), repr(info.value), info.value.message]
    texts += [record.getMessage() for record in caplog.records]
    texts += [repr(record.args) for record in caplog.records]
    assert caplog.records, "expected some log records at DEBUG"
    for text in texts:
        assert SECRET not in text
    assert all(r.headers.get("authorization") == f"Bearer {SECRET}" for r in chats(server))


# -- streamed and whole responses -------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
def test_streamed_and_whole(serve: ServerFactory, stream: bool) -> None:
    server = serve([ANSWER])
    with Guard(base_url=server.base_url, stream=stream) as guard:
        verdict = guard.check("How do I kill a stuck process?")
    body = chats(server)[0].body
    assert body["stream"] is stream
    assert ("stream_options" in body) is stream
    if stream:
        assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "user", "content": "How do I kill a stuck process?"}]
    assert verdict.decision is Decision.ANSWERED
    assert verdict.reasoning == "The user wants to stop a stuck program. This is benign."
    assert verdict.answer == "Sure: run `kill <pid>`, or `kill -9 <pid>` if it ignores SIGTERM."
    assert verdict.trace.streamed is stream
    usage = verdict.trace.usage
    assert usage.completion_tokens == len(split_tokens(ANSWER))
    assert usage.prompt_tokens == 7
    assert usage.reasoning_tokens is not None and usage.answer_tokens is not None
    assert usage.reasoning_tokens + usage.answer_tokens == usage.completion_tokens
    assert usage.split_estimated is not stream
    timings = verdict.trace.timings
    if stream:
        assert timings.first_token_ms is not None and timings.reasoning_end_ms is not None
        assert timings.first_token_ms <= timings.reasoning_end_ms <= timings.total_ms
    else:
        assert timings.first_token_ms is None and timings.reasoning_end_ms is None


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
async def test_separate_reasoning_fields(serve: ServerFactory, field: str, stream: bool) -> None:
    reply = Reply(content="I'm sorry, but I can't help with that.", reasoning="Harmful; refuse.", reasoning_field=field)
    server = serve([reply])
    async with AsyncGuard(base_url=server.base_url, stream=stream) as guard:
        verdict = await guard.check("q")
    assert verdict.reasoning == "Harmful; refuse."
    assert verdict.answer == "I'm sorry, but I can't help with that."
    assert verdict.decision is Decision.DECLINED
    assert verdict.trace.format_ok


@pytest.mark.parametrize("stream", [True, False])
def test_length_cut_is_undetermined(serve: ServerFactory, stream: bool) -> None:
    server = serve([Reply(content="<think>\nThe user asks about locks. On one hand", finish_reason="length")])
    with Guard(base_url=server.base_url, stream=stream) as guard:
        verdict = guard.check("q")
    assert verdict.decision is Decision.UNDETERMINED
    assert verdict.trace.finish_reason == "length"
    assert verdict.evidence


def test_sampling_reaches_the_request_body(serve: ServerFactory) -> None:
    server = serve([ANSWER])
    with Guard(base_url=server.base_url, model=MODEL) as guard:
        guard.check("defaults")
    with Guard(base_url=server.base_url, model=MODEL, temperature=0.1, seed=3, stop="###") as guard:
        guard.check("guard overrides")
        guard.check("call overrides", top_p=0.5, max_tokens=100, seed=4, stop=["a", "b"], temperature=1.2)
    defaults, per_guard, per_call = (r.body for r in chats(server))
    assert (defaults["temperature"], defaults["top_p"], defaults["max_tokens"]) == (0.6, 1.0, 4096)
    assert "seed" not in defaults and "stop" not in defaults
    assert (per_guard["temperature"], per_guard["seed"], per_guard["stop"]) == (0.1, 3, ["###"])
    assert (per_guard["top_p"], per_guard["max_tokens"]) == (1.0, 4096)
    assert per_call["temperature"] == 1.2
    assert per_call["top_p"] == 0.5
    assert per_call["max_tokens"] == 100
    assert per_call["seed"] == 4
    assert per_call["stop"] == ["a", "b"]


@pytest.mark.parametrize(
    "prompt",
    [
        "",
        "   ",
        [],
        [{"role": "tool", "content": "x"}],
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
        b"x",
        3,
    ],
)
def test_invalid_input_sends_nothing(serve: ServerFactory, prompt: Any) -> None:
    server = serve([ANSWER])
    with Guard(base_url=server.base_url, on_error="allow") as guard, pytest.raises(InvalidInput):
        guard.check(prompt)
    assert server.requests == []


# -- retries and errors -----------------------------------------------------------------------------------


def test_500_then_success_is_retried(serve: ServerFactory) -> None:
    server = serve([Reply(status=500, error_message="engine hiccup", retry_after=FAST_RETRY), ANSWER])
    with Guard(base_url=server.base_url, model=MODEL) as guard:
        verdict = guard.check("q")
    assert verdict.decision is Decision.ANSWERED
    assert verdict.trace.retries == 1
    assert len(chats(server)) == 2


def test_500_then_success_with_backoff(serve: ServerFactory) -> None:
    # No Retry-After: the jittered exponential backoff applies.
    server = serve([Reply(status=502), ANSWER])
    with Guard(base_url=server.base_url, model=MODEL, stream=False) as guard:
        verdict = guard.check("q")
    assert verdict.trace.retries == 1
    assert len(chats(server)) == 2


def test_429_retry_after_is_honoured(serve: ServerFactory) -> None:
    server = serve([Reply(status=429, error_message="slow down", retry_after=1), ANSWER])
    with Guard(base_url=server.base_url, model=MODEL) as guard:
        started = time.perf_counter()
        verdict = guard.check("q")
        elapsed = time.perf_counter() - started
    assert elapsed >= 1.0
    assert verdict.trace.retries == 1
    assert verdict.decision is Decision.ANSWERED
    assert len(chats(server)) == 2


@pytest.mark.parametrize("stream", [True, False])
def test_400_is_never_retried(serve: ServerFactory, stream: bool) -> None:
    server = serve([Reply(status=400, error_message="temperature must be >= 0"), ANSWER])
    with Guard(base_url=server.base_url, model=MODEL, stream=stream) as guard, pytest.raises(BackendError) as info:
        guard.check("q")
    assert info.value.status_code == 400
    assert info.value.message == "temperature must be >= 0"
    assert info.value.error_type == "BadRequestError"
    assert info.value.retries == 0
    assert len(chats(server)) == 1


def test_max_tokens_over_the_model_length_is_a_400(serve: ServerFactory) -> None:
    server = serve([ANSWER], max_model_len=1024)
    with (
        Guard(base_url=server.base_url, model=MODEL, on_error="allow") as guard,
        pytest.raises(ContextLengthExceeded) as info,
    ):
        guard.check("q")  # the default max_tokens, 4096, does not fit: no prompt can be screened
    assert info.value.limit == 1024
    assert "max_tokens" in str(info.value)
    assert len(chats(server)) == 1


@pytest.mark.parametrize("status", [500, 503, 429])
def test_retries_exhausted(serve: ServerFactory, status: int) -> None:
    server = serve([Reply(status=status, error_message="still down", retry_after=FAST_RETRY)])
    with Guard(base_url=server.base_url, model=MODEL, max_retries=3) as guard, pytest.raises(BackendError) as info:
        guard.check("q")
    assert info.value.status_code == status
    assert info.value.retries == 3
    assert len(chats(server)) == 4


def test_retries_exhausted_under_decline(serve: ServerFactory) -> None:
    server = serve([Reply(status=503, retry_after=FAST_RETRY)])
    with Guard(base_url=server.base_url, model=MODEL, max_retries=2, on_error="decline") as guard:
        verdict = guard.check("q")
    error = verdict.trace.error
    assert error is not None
    assert (error.type, error.status_code, error.policy) == ("backend_error", 503, "decline")
    assert verdict.trace.retries == 2
    assert not verdict.allowed


def test_max_retries_zero_means_one_attempt(serve: ServerFactory) -> None:
    server = serve([Reply(status=500, retry_after=FAST_RETRY), ANSWER])
    with Guard(base_url=server.base_url, model=MODEL, max_retries=0) as guard, pytest.raises(BackendError):
        guard.check("q")
    assert len(chats(server)) == 1


@pytest.mark.parametrize("stream", [True, False])
def test_dropped_connection_then_success(serve: ServerFactory, stream: bool) -> None:
    server = serve([Reply(fault="drop"), ANSWER])
    with Guard(base_url=server.base_url, model=MODEL, stream=stream) as guard:
        verdict = guard.check("q")
    assert verdict.decision is Decision.ANSWERED
    assert verdict.trace.retries == 1
    assert len(chats(server)) == 2


def test_dropped_connections_exhaust_retries(serve: ServerFactory) -> None:
    server = serve([Reply(fault="drop")])
    with (
        Guard(base_url=server.base_url, model=MODEL, max_retries=1) as guard,
        pytest.raises(BackendUnavailable) as info,
    ):
        guard.check("q")
    assert info.value.retries == 1
    assert len(chats(server)) == 2


def test_connection_refused_is_unavailable() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    with Guard(base_url=url, model=MODEL, max_retries=1) as guard, pytest.raises(BackendUnavailable) as info:
        guard.check("q")
    assert info.value.retries == 1
    with Guard(base_url=url, max_retries=0, on_error="allow") as guard:  # model detection fails the same way
        verdict = guard.check("q")
    assert verdict.trace.error is not None and verdict.trace.error.type == "unavailable"
    assert verdict.allowed


@pytest.mark.parametrize("stream", [True, False])
def test_slow_first_byte_beyond_the_read_timeout(serve: ServerFactory, stream: bool) -> None:
    server = serve([Reply(content=ANSWER, delay=3.0)])
    limits = Timeout(total=None, connect=2.0, read=0.3)
    with Guard(base_url=server.base_url, model=MODEL, stream=stream, timeout=limits) as guard:
        started = time.perf_counter()
        with pytest.raises(BackendTimeout) as info:
            guard.check("q")
        assert time.perf_counter() - started >= 0.3
    assert info.value.retries == 0
    assert len(chats(server)) == 1  # a timeout is not retried


def test_slow_stream_beyond_the_read_timeout(serve: ServerFactory) -> None:
    # Tokens arrive every 0.5 s; the read timeout between bytes is 0.2 s.
    server = serve([Reply(content=ANSWER, tokens_per_second=2)])
    limits = Timeout(total=None, read=0.2)
    with Guard(base_url=server.base_url, model=MODEL, timeout=limits) as guard, pytest.raises(BackendTimeout):
        guard.check("q")


def test_slow_response_beyond_the_total_timeout(serve: ServerFactory) -> None:
    server = serve([Reply(content=ANSWER, delay=3.0)])
    with Guard(base_url=server.base_url, model=MODEL) as guard:
        started = time.perf_counter()
        with pytest.raises(BackendTimeout):
            guard.check("q", timeout=Timeout(total=0.3, connect=2.0, read=None))
        assert time.perf_counter() - started >= 0.3
    with Guard(base_url=server.base_url, model=MODEL, timeout=0.3, on_error="decline") as guard:
        verdict = guard.check("q")
    assert verdict.decision is Decision.UNDETERMINED
    assert verdict.trace.error is not None and verdict.trace.error.type == "timeout"
    assert not verdict.allowed


@pytest.mark.parametrize("stream", [True, False])
def test_malformed_responses_are_backend_errors(serve: ServerFactory, stream: bool) -> None:
    server = serve([Reply(content=ANSWER, fault="malformed")])
    with Guard(base_url=server.base_url, model=MODEL, stream=stream) as guard, pytest.raises(BackendError):
        guard.check("q")
    assert len(chats(server)) == 1


@pytest.mark.parametrize("stream", [True, False])
def test_a_connection_dropped_mid_response_is_retried_from_the_start(serve: ServerFactory, stream: bool) -> None:
    partial = "<think>\nPARTIAL reasoning of a reply whose connection drops half way.\n</think>\n\nSure, PARTIAL."
    server = serve([Reply(content=partial, fault="truncate"), ANSWER])
    with Guard(base_url=server.base_url, model=MODEL, stream=stream) as guard:
        verdict = guard.check("q")
    assert verdict.trace.error is None and verdict.trace.retries == 1
    assert verdict.trace.raw_output == ANSWER and "PARTIAL" not in (verdict.reasoning or "") + verdict.answer
    assert len(chats(server)) == 2
    server = serve([Reply(content=partial, fault="truncate")])
    with (
        Guard(base_url=server.base_url, model=MODEL, stream=stream, max_retries=1) as guard,
        pytest.raises(BackendUnavailable, match="cut off") as info,
    ):
        guard.check("q")
    assert info.value.retries == 1 and len(chats(server)) == 2


def test_stream_without_done_or_finish_reason_is_a_backend_error(serve: ServerFactory) -> None:
    server = serve([Reply(content=ANSWER, fault="no_done")])
    with Guard(base_url=server.base_url, model=MODEL, on_error="decline") as guard:
        verdict = guard.check("q")
    assert verdict.decision is Decision.UNDETERMINED
    assert verdict.trace.error is not None and verdict.trace.error.type == "backend_error"
    assert verdict.trace.raw_output == ANSWER  # what did arrive is kept for the audit


# -- health -----------------------------------------------------------------------------------------------


def test_health_ok(serve: ServerFactory) -> None:
    server = serve([], max_model_len=8192)
    with Guard(base_url=server.base_url) as guard:
        health = guard.health()
    assert health.ok
    assert health.models == (MODEL,)
    assert health.max_model_len == 8192
    assert health.endpoint == server.base_url
    assert health.backend == "http"
    assert health.latency_ms is not None and health.latency_ms >= 0
    assert {"/health", "/v1/models"} <= {r.path for r in server.requests}


async def test_health_not_ok_when_the_engine_is_dead(serve: ServerFactory) -> None:
    server = serve([], health_status=503)
    async with AsyncGuard(base_url=server.base_url) as guard:
        health = await guard.health()
    assert not health.ok
    assert health.detail and "503" in health.detail


def test_health_not_ok_when_nothing_listens() -> None:
    with Guard(base_url=f"http://127.0.0.1:{closed_port()}/v1") as guard:
        health = guard.health()
    assert not health.ok
    assert health.detail


# -- many at once -----------------------------------------------------------------------------------------


def _echo(body: dict[str, Any]) -> Reply:
    n = int(body["messages"][-1]["content"].split()[-1])
    # Later prompts are generated faster, so they finish out of order.
    return Reply(content=f"<think>\nfine\n</think>\n\nAnswer number {n}.", delay=0.001 * ((64 - n) % 16))


async def test_async_check_many_over_http_keeps_order(serve: ServerFactory) -> None:
    server = serve(_echo)
    async with AsyncGuard(base_url=server.base_url, model=MODEL) as guard:
        results = await guard.check_many([f"prompt {i}" for i in range(64)], concurrency=16)
    assert len(results) == 64
    for i, result in enumerate(results):
        assert isinstance(result, Verdict), result
        assert result.answer == f"Answer number {i}."
    assert len(chats(server)) == 64


async def test_sync_guard_over_http_inside_an_event_loop(serve: ServerFactory) -> None:
    server = serve([REFUSAL])
    with Guard(base_url=server.base_url) as guard:
        verdict = guard.check("q")
    assert verdict.decision is Decision.DECLINED


def test_base_url_with_a_trailing_slash(serve: ServerFactory) -> None:
    server = serve([ANSWER])
    with Guard(base_url=server.base_url + "/") as guard:
        assert guard.check("q").decision is Decision.ANSWERED
        assert guard.health().ok


def test_base_url_without_v1_gets_a_hint(serve: ServerFactory) -> None:
    server = serve([ANSWER])
    root = server.base_url.removesuffix("/v1")
    with Guard(base_url=root) as guard, pytest.raises(BackendError) as info:
        guard.check("q")
    assert info.value.status_code == 404
    assert "/v1" in str(info.value)
    with Guard(base_url=root, model=MODEL) as guard, pytest.raises(BackendError) as info:
        guard.check("q")
    assert info.value.status_code == 404 and "/v1" in str(info.value)
    assert chats(server) == []  # nothing reached the real chat endpoint


async def test_whole_responses_reuse_one_connection(serve: Callable[..., ScriptedServer]) -> None:
    server = serve(["<think>\nfine\n</think>\n\nSure."])
    async with AsyncGuard(server.base_url, stream=False) as guard:
        for _ in range(5):
            assert (await guard.check("hello")).decision is Decision.ANSWERED
    assert server.connections_accepted == 1


# -- limits: response size, retries under a deadline, model detection ----------------------------------------


@pytest.mark.parametrize("stream", [True, False])
def test_a_response_past_the_size_limit_is_a_typed_error(
    serve: ServerFactory, stream: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = "<think>\nok\n</think>\n\n" + "word " * 60_000  # about 300 kB of text
    server = serve([big])
    backend = HTTPBackend(server.base_url, model=MODEL, max_response_bytes=100_000)
    with Guard(backend=backend, stream=stream) as guard, pytest.raises(ResponseTooLarge) as info:
        guard.check("q")
    assert isinstance(info.value, BackendError) and info.value.limit == 100_000
    assert len(chats(server)) == 1  # the same reply would be as long again: not retried
    monkeypatch.setenv("TARSGUARD_MAX_RESPONSE_BYTES", "150000")
    with Guard(base_url=server.base_url, model=MODEL, stream=stream, on_error="decline") as guard:
        verdict = guard.check("q")
    assert verdict.trace.error is not None and "150000 bytes" in verdict.trace.error.message
    assert HTTPBackend(server.base_url).max_response_bytes == 150_000
    monkeypatch.delenv("TARSGUARD_MAX_RESPONSE_BYTES")
    assert HTTPBackend(server.base_url).max_response_bytes == DEFAULT_MAX_RESPONSE_BYTES == 16 * 1024 * 1024


@pytest.mark.parametrize("stream", [True, False])
def test_a_deadline_during_a_retry_wait_reports_the_retries(serve: ServerFactory, stream: bool) -> None:
    server = serve([Reply(status=429, retry_after=30)])  # the deadline comes while the guard waits to retry
    with (
        Guard(base_url=server.base_url, model=MODEL, stream=stream, timeout=2) as guard,
        pytest.raises(BackendTimeout) as info,
    ):
        guard.check("q")
    assert info.value.retries == 1 and len(chats(server)) == 1


def test_model_detection_is_retried_on_connect_errors(serve: ServerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    placeholder = socket.socket()
    placeholder.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    port = placeholder.getsockname()[1]
    started: list[ScriptedServer] = []

    def first_retry_starts_the_server(exc: Exception, attempt: int) -> float:
        if not started:
            placeholder.close()
            started.append(serve([ANSWER], port=port))
        return 0.0

    monkeypatch.setattr("tarsguard.backends.http._delay", first_retry_starts_the_server)
    with Guard(base_url=f"http://127.0.0.1:{port}/v1", max_retries=2) as guard:  # no model: detected
        verdict = guard.check("q")
    assert started and verdict.trace.model == MODEL and verdict.trace.error is None
