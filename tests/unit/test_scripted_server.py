"""Tests of the scripted OpenAI-compatible server, driven by plain httpx and by the openai client."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tarsguard._scripted_server import DEFAULT_CONTENT, Reply, ScriptedServer, split_tokens

MODEL = "scripted-tars"
ANSWER = "<think>\nThe user wants to stop a stuck program. This is benign.\n</think>\n\nRun `kill <pid>`."
REPO_ROOT = Path(__file__).resolve().parents[2]

ServerFactory = Callable[..., ScriptedServer]


def chat(stream: bool = False, content: str = "How do I stop a stuck process?", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}
    if stream:
        body["stream"] = True
    return body


def sse_payloads(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.split("\n") if line.startswith("data: ")]


def chunks(payloads: list[str]) -> list[dict[str, Any]]:
    return [json.loads(p) for p in payloads if p != "[DONE]"]


def joined(chunk_list: list[dict[str, Any]], field: str) -> str:
    return "".join(c["choices"][0]["delta"].get(field) or "" for c in chunk_list if c["choices"])


def origin(server: ScriptedServer) -> str:
    return server.base_url.removesuffix("/v1")


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


# -- tokens ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "one", " lead", "trail  ", ANSWER, "a\n\n b\tc  \n", "   "])
def test_split_tokens_round_trips(text: str) -> None:
    tokens = split_tokens(text)
    assert "".join(tokens) == text
    assert all(t.strip() for t in tokens[:-1])


def test_reply_rejects_unknown_fault() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        Reply(fault="explode")  # type: ignore[arg-type]


# -- plain routes ---------------------------------------------------------------------------------


def test_health_and_models(serve: ServerFactory) -> None:
    server = serve(model="tars-7b", max_model_len=4096)
    sick = serve(health_status=503)
    with httpx.Client() as client:
        health = client.get(origin(server) + "/health")
        assert health.status_code == 200
        assert health.content == b""
        assert client.get(origin(sick) + "/health").status_code == 503
        models = client.get(server.base_url + "/models").json()
    assert models["object"] == "list"
    [entry] = models["data"]
    assert entry["id"] == entry["root"] == "tars-7b"
    assert entry["object"] == "model"
    assert entry["owned_by"] == "tarsguard-scripted"
    assert entry["max_model_len"] == 4096
    assert isinstance(entry["created"], int)


def test_unknown_route_is_a_json_404(serve: ServerFactory) -> None:
    server = serve()
    with httpx.Client(base_url=server.base_url) as client:
        response = client.get("/nothing/here")
        wrong_method = client.get("/chat/completions")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == 404
    assert wrong_method.status_code == 404


def test_base_url_before_start_raises() -> None:
    with pytest.raises(RuntimeError):
        _ = ScriptedServer().base_url


# -- chat completions with httpx ------------------------------------------------------------------


def test_non_streamed_completion(serve: ServerFactory) -> None:
    server = serve([ANSWER])
    with httpx.Client(base_url=server.base_url) as client:
        response = client.post("/chat/completions", json=chat())
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    assert data["id"].startswith("chatcmpl-")
    assert data["object"] == "chat.completion"
    assert data["model"] == MODEL
    [choice] = data["choices"]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["message"] == {"role": "assistant", "content": ANSWER, "reasoning": None}
    usage = data["usage"]
    assert usage["completion_tokens"] == len(split_tokens(ANSWER))
    assert usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_streamed_completion_events(serve: ServerFactory) -> None:
    reply = Reply(content="The answer.", reasoning="Short reasoning here.", finish_reason="length")
    server = serve([reply])
    with httpx.Client(base_url=server.base_url) as client:
        response = client.post("/chat/completions", json=chat(stream=True, stream_options={"include_usage": True}))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["transfer-encoding"] == "chunked"
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    assert payloads.count("[DONE]") == 1
    events = chunks(payloads)
    assert all(e["object"] == "chat.completion.chunk" and e["model"] == MODEL for e in events)
    assert len({e["id"] for e in events}) == 1
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    token_events = events[1:-2]
    assert all(e["choices"][0]["finish_reason"] is None for e in token_events)
    fields = [next(iter(e["choices"][0]["delta"])) for e in token_events]
    assert fields == ["reasoning"] * 3 + ["content"] * 2, "reasoning streams first, then content"
    assert joined(events, "reasoning") == reply.reasoning
    assert joined(events, "content") == reply.content
    final, usage = events[-2], events[-1]
    assert final["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "length"}
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == 5
    assert usage["usage"]["total_tokens"] == usage["usage"]["prompt_tokens"] + 5


def test_stream_without_include_usage_has_no_usage_chunk(serve: ServerFactory) -> None:
    server = serve([ANSWER])
    with httpx.Client(base_url=server.base_url) as client:
        payloads = sse_payloads(client.post("/chat/completions", json=chat(stream=True)).text)
    events = chunks(payloads)
    assert all(e["choices"] for e in events)
    assert joined(events, "content") == ANSWER
    assert payloads[-1] == "[DONE]"


def test_reasoning_content_variant(serve: ServerFactory) -> None:
    reply = Reply(content="Answer.", reasoning="Old style.", reasoning_field="reasoning_content")
    server = serve([reply])
    with httpx.Client(base_url=server.base_url) as client:
        message = client.post("/chat/completions", json=chat()).json()["choices"][0]["message"]
        events = chunks(sse_payloads(client.post("/chat/completions", json=chat(stream=True)).text))
    assert message["reasoning_content"] == "Old style."
    assert "reasoning" not in message
    assert joined(events, "reasoning_content") == "Old style."
    assert joined(events, "reasoning") == ""


def test_model_may_be_omitted(serve: ServerFactory) -> None:
    server = serve(["ok"])
    body = chat()
    del body["model"]
    with httpx.Client(base_url=server.base_url) as client:
        assert client.post("/chat/completions", json=body).json()["choices"][0]["message"]["content"] == "ok"


# -- validation errors ----------------------------------------------------------------------------


def test_unknown_model_is_404(serve: ServerFactory) -> None:
    server = serve(["never served"])
    with httpx.Client(base_url=server.base_url) as client:
        response = client.post("/chat/completions", json={**chat(), "model": "gpt-5"})
        served = client.post("/chat/completions", json=chat()).json()
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "The model `gpt-5` does not exist.",
            "type": "NotFoundError",
            "param": "model",
            "code": 404,
        }
    }
    assert served["choices"][0]["message"]["content"] == "never served", "a rejected request consumes no reply"


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_over_model_length_is_400(serve: ServerFactory, field: str) -> None:
    server = serve(max_model_len=1000)
    with httpx.Client(base_url=server.base_url) as client:
        response = client.post("/chat/completions", json={**chat(), field: 5000})
        fits = client.post("/chat/completions", json={**chat(), field: 500})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "BadRequestError"
    assert error["code"] == 400
    assert "maximum context length is 1000" in error["message"]
    assert fits.status_code == 200


def test_invalid_json_and_missing_messages_are_400(serve: ServerFactory) -> None:
    server = serve()
    with httpx.Client(base_url=server.base_url) as client:
        bad_json = client.post("/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
        no_messages = client.post("/chat/completions", json={"model": MODEL})
    assert bad_json.status_code == 400
    assert bad_json.json()["error"]["type"] == "BadRequestError"
    assert no_messages.status_code == 400


def test_body_without_content_length_is_refused(serve: ServerFactory) -> None:
    server = serve()

    def body_parts() -> Iterator[bytes]:
        yield json.dumps(chat()).encode()

    with httpx.Client(base_url=server.base_url) as client:
        chunked = client.post("/chat/completions", content=body_parts())
    assert chunked.status_code == 411

    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n\r\n")
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 411 ")


def test_scripted_error_with_retry_after(serve: ServerFactory) -> None:
    server = serve([Reply(status=429, error_message="slow down", retry_after=2), "ok"])
    with httpx.Client(base_url=server.base_url) as client:
        limited = client.post("/chat/completions", json=chat())
        ok = client.post("/chat/completions", json=chat())
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "2"
    assert limited.json() == {"error": {"message": "slow down", "type": "RateLimitError", "param": None, "code": 429}}
    assert ok.status_code == 200


def test_retry_after_fractional_and_http_date(serve: ServerFactory) -> None:
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    server = serve([Reply(status=503, retry_after=0.5), Reply(status=500, retry_after=date), Reply(status=500)])
    with httpx.Client(base_url=server.base_url) as client:
        responses = [client.post("/chat/completions", json=chat()) for _ in range(3)]
    assert responses[0].headers["retry-after"] == "0.5"
    assert responses[0].json()["error"]["type"] == "ServiceUnavailableError"
    assert responses[1].headers["retry-after"] == date
    assert "retry-after" not in responses[2].headers
    assert responses[2].json()["error"]["type"] == "InternalServerError"


def test_delay_holds_the_response(serve: ServerFactory) -> None:
    server = serve([Reply(content="late", delay=0.3)])
    with httpx.Client(base_url=server.base_url) as client:
        started = time.monotonic()
        response = client.post("/chat/completions", json=chat())
        elapsed = time.monotonic() - started
    assert response.json()["choices"][0]["message"]["content"] == "late"
    assert elapsed >= 0.3


# -- faults ---------------------------------------------------------------------------------------


def test_fault_drop(serve: ServerFactory) -> None:
    server = serve([Reply(fault="drop"), "after"])
    with httpx.Client(base_url=server.base_url) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/chat/completions", json=chat())
        assert client.post("/chat/completions", json=chat()).json()["choices"][0]["message"]["content"] == "after"
    assert len(server.requests) == 2


def test_fault_truncate_streamed(serve: ServerFactory) -> None:
    server = serve([Reply(content=ANSWER, fault="truncate")])
    received: list[str] = []
    with (
        httpx.Client(base_url=server.base_url) as client,
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("POST", "/chat/completions", json=chat(stream=True)) as response,
    ):
        assert response.status_code == 200
        received.extend(line for line in response.iter_lines() if line.startswith("data: "))
    assert 1 <= len(received) < len(split_tokens(ANSWER))
    assert "data: [DONE]" not in received


def test_fault_truncate_non_streamed(serve: ServerFactory) -> None:
    server = serve([Reply(content=ANSWER, fault="truncate")])
    with httpx.Client(base_url=server.base_url) as client, pytest.raises(httpx.RemoteProtocolError):
        client.post("/chat/completions", json=chat())


def test_fault_malformed(serve: ServerFactory) -> None:
    server = serve([Reply(content=ANSWER, fault="malformed")])
    with httpx.Client(base_url=server.base_url) as client:
        plain = client.post("/chat/completions", json=chat())
        streamed = client.post("/chat/completions", json=chat(stream=True))
    assert plain.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        plain.json()
    payloads = sse_payloads(streamed.text)
    with pytest.raises(json.JSONDecodeError):
        chunks(payloads)
    assert payloads[-1] == "[DONE]"


def test_fault_no_done(serve: ServerFactory) -> None:
    server = serve([Reply(content=ANSWER, fault="no_done"), "next"])
    with httpx.Client(base_url=server.base_url) as client:
        first = client.post("/chat/completions", json=chat(stream=True, stream_options={"include_usage": True}))
        second = client.post("/chat/completions", json=chat())
    payloads = sse_payloads(first.text)
    assert "[DONE]" not in payloads
    events = chunks(payloads)
    assert joined(events, "content") == ANSWER
    assert all(e["choices"][0]["finish_reason"] is None for e in events)
    assert second.json()["choices"][0]["message"]["content"] == "next"
    assert server.connections_accepted == 1, "the stream ended cleanly, so the connection is reused"


# -- connections ----------------------------------------------------------------------------------


def test_keep_alive_reuses_one_connection(serve: ServerFactory) -> None:
    server = serve([ANSWER])
    with httpx.Client(base_url=server.base_url) as client:
        for i in range(6):
            client.post("/chat/completions", json=chat(stream=i % 2 == 1)).raise_for_status()
        client.get("/models").raise_for_status()
        assert server.connections_accepted == 1
        client.post("/chat/completions", json=chat(), headers={"connection": "close"}).raise_for_status()
        client.post("/chat/completions", json=chat()).raise_for_status()
    assert server.connections_accepted == 2


def test_client_closing_mid_stream_is_quiet(serve: ServerFactory, caplog: pytest.LogCaptureFixture) -> None:
    server = serve([Reply(content="word " * 200, tokens_per_second=200)])
    body = json.dumps(chat(stream=True)).encode()
    request = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%b" % (
        len(body),
        body,
    )
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(request)
                assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
        wait_until(lambda: server.open_connections == 0)
        with httpx.Client(base_url=server.base_url) as client:
            assert client.get("/models").status_code == 200
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_stop_with_open_streaming_connection() -> None:
    server = ScriptedServer([Reply(content="word " * 500, tokens_per_second=50)]).start()
    with (
        httpx.Client(base_url=server.base_url) as client,
        client.stream("POST", "/chat/completions", json=chat(stream=True)) as response,
    ):
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        stopper.join(timeout=10)
        assert not stopper.is_alive(), "stop() must not wait for the stream to finish"
        with pytest.raises(httpx.HTTPError):
            for _ in lines:
                pass
    assert server.open_connections == 0
    with pytest.raises(httpx.ConnectError), httpx.Client() as client:
        client.get(f"http://127.0.0.1:{server.port}/health")


def test_restart_after_stop() -> None:
    server = ScriptedServer(["x"])
    with server:
        first_url = server.base_url
    with server, httpx.Client() as client:
        assert client.get(origin(server) + "/health").status_code == 200
    assert first_url.startswith("http://127.0.0.1:")


# -- script semantics -----------------------------------------------------------------------------


def contents(server: ScriptedServer, n: int) -> list[str]:
    with httpx.Client(base_url=server.base_url) as client:
        return [
            client.post("/chat/completions", json=chat()).json()["choices"][0]["message"]["content"] for _ in range(n)
        ]


def test_sequence_then_last_repeats_and_queue(serve: ServerFactory) -> None:
    server = serve(["a", Reply(content="b")])
    assert contents(server, 3) == ["a", "b", "b"]
    server.queue("c", Reply(content="d"))
    assert contents(server, 3) == ["c", "d", "d"]


def test_empty_script_gives_default_answer(serve: ServerFactory) -> None:
    server = serve()
    assert contents(server, 2) == [DEFAULT_CONTENT, DEFAULT_CONTENT]
    assert "\n</think>\n\n" in DEFAULT_CONTENT
    server.queue("queued")
    assert contents(server, 1) == ["queued"]


def test_cycle(serve: ServerFactory) -> None:
    server = serve(["a", "b"], cycle=True)
    assert contents(server, 5) == ["a", "b", "a", "b", "a"]


def test_callable_script(serve: ServerFactory) -> None:
    seen: list[dict[str, Any]] = []

    def script(body: dict[str, Any]) -> Reply | str:
        seen.append(body)
        text = body["messages"][-1]["content"]
        return Reply(content=f"echo: {text}") if body.get("stream") else text.upper()

    server = serve(script)
    with httpx.Client(base_url=server.base_url) as client:
        plain = client.post("/chat/completions", json=chat(content="hello")).json()
        events = chunks(sse_payloads(client.post("/chat/completions", json=chat(True, "again")).text))
    assert plain["choices"][0]["message"]["content"] == "HELLO"
    assert joined(events, "content") == "echo: again"
    assert [b["messages"][0]["content"] for b in seen] == ["hello", "again"]
    with pytest.raises(TypeError):
        server.queue("x")


def test_callable_that_raises_gives_500(serve: ServerFactory) -> None:
    def script(body: dict[str, Any]) -> str:
        raise KeyError("boom")

    server = serve(script)
    with httpx.Client(base_url=server.base_url) as client:
        response = client.post("/chat/completions", json=chat())
    assert response.status_code == 500
    assert "boom" in response.json()["error"]["message"]


def test_recorded_requests(serve: ServerFactory) -> None:
    server = serve(["ok"])
    with openai.OpenAI(base_url=server.base_url, api_key="sk-test-123", max_retries=0) as client:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=7)
    with httpx.Client() as plain:
        plain.get(origin(server) + "/health?probe=1", headers={"X-Custom": "yes"})
    post, health = server.requests
    assert post.method == "POST"
    assert post.path == "/v1/chat/completions"
    assert post.headers["authorization"] == "Bearer sk-test-123"
    assert post.body["messages"] == [{"role": "user", "content": "hi"}]
    assert post.body["max_tokens"] == 7
    assert (health.method, health.path, health.body) == ("GET", "/health", None)
    assert health.headers["x-custom"] == "yes"


def test_record_false_keeps_nothing(serve: ServerFactory) -> None:
    server = serve(["ok"], record=False)
    contents(server, 2)
    assert server.requests == []


# -- pacing ---------------------------------------------------------------------------------------


def test_tokens_per_second_paces_the_stream(serve: ServerFactory) -> None:
    text = "one two three four five six seven eight nine ten"
    rate = 40.0
    server = serve([Reply(content=text, tokens_per_second=rate)])
    with httpx.Client(base_url=server.base_url) as client:
        started = time.monotonic()
        arrivals: list[float] = []
        with client.stream("POST", "/chat/completions", json=chat(stream=True)) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    arrivals.append(time.monotonic() - started)
        elapsed = time.monotonic() - started
    assert elapsed >= 10 / rate * 0.98
    assert len(arrivals) == 1 + 10 + 1 + 1
    assert arrivals[5] >= 5 / rate * 0.98, "tokens arrive over time, not all at the end"


def test_tokens_per_second_delays_non_streamed_answer(serve: ServerFactory) -> None:
    server = serve(["one two three four five six"], tokens_per_second=30)
    with httpx.Client(base_url=server.base_url) as client:
        started = time.monotonic()
        client.post("/chat/completions", json=chat()).raise_for_status()
        elapsed = time.monotonic() - started
    assert elapsed >= 6 / 30 * 0.98


# -- the openai client ----------------------------------------------------------------------------


def test_openai_sync_non_streamed(serve: ServerFactory) -> None:
    server = serve([Reply(content="The answer.", reasoning="Some thought.")])
    with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client:
        completion = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "q"}])
    message = completion.choices[0].message
    assert message.content == "The answer."
    assert (message.model_extra or {})["reasoning"] == "Some thought."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 4


def test_openai_sync_streamed(serve: ServerFactory) -> None:
    server = serve([Reply(content=ANSWER, reasoning="Thinking it over.")])
    with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client:
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "q"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        received = list(stream)
    deltas = [c.choices[0].delta for c in received if c.choices]
    assert "".join(d.content or "" for d in deltas) == ANSWER
    assert "".join((d.model_extra or {}).get("reasoning") or "" for d in deltas) == "Thinking it over."
    assert received[-1].usage is not None
    assert received[-1].usage.completion_tokens == len(split_tokens(ANSWER)) + 3
    assert [c.choices[0].finish_reason for c in received if c.choices][-1] == "stop"


def test_openai_errors(serve: ServerFactory) -> None:
    server = serve([Reply(status=429, retry_after=1), Reply(fault="drop"), Reply(content="x", fault="malformed")])
    with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client:
        messages: list[Any] = [{"role": "user", "content": "q"}]
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="other", messages=messages)
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model=MODEL, messages=messages, max_tokens=10**6)
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model=MODEL, messages=messages)
        assert limited.value.response.headers["retry-after"] == "1"
        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(model=MODEL, messages=messages)
        with pytest.raises(json.JSONDecodeError):
            for _ in client.chat.completions.create(model=MODEL, messages=messages, stream=True):
                pass


async def test_openai_async_streamed_and_not() -> None:
    async with (
        ScriptedServer([Reply(content=ANSWER, reasoning="r1 r2", reasoning_field="reasoning_content")]) as srv,
        openai.AsyncOpenAI(base_url=srv.base_url, api_key="k", max_retries=0) as client,
    ):
        messages: list[Any] = [{"role": "user", "content": "q"}]
        completion = await client.chat.completions.create(model=MODEL, messages=messages)
        stream = await client.chat.completions.create(model=MODEL, messages=messages, stream=True)
        deltas = [c.choices[0].delta async for c in stream if c.choices]
    assert completion.choices[0].message.content == ANSWER
    assert (completion.choices[0].message.model_extra or {})["reasoning_content"] == "r1 r2"
    assert "".join(d.content or "" for d in deltas) == ANSWER
    assert "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas) == "r1 r2"


async def test_async_httpx_truncated_stream_raises() -> None:
    async with (
        ScriptedServer([Reply(content=ANSWER, fault="truncate")]) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("POST", "/chat/completions", json=chat(stream=True)) as response:
                async for _ in response.aiter_lines():
                    pass


# -- load (a sanity check, not a timing claim) ----------------------------------------------------


async def _hammer(base_url: str, concurrency: int, per_worker: int) -> list[str]:
    results: list[str] = []
    async with httpx.AsyncClient(
        base_url=base_url,
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        timeout=60,
    ) as client:

        async def worker(index: int) -> None:
            for i in range(per_worker):
                if (index + i) % 2:
                    response = await client.post("/chat/completions", json=chat(stream=True))
                    results.append(joined(chunks(sse_payloads(response.text)), "content"))
                else:
                    response = await client.post("/chat/completions", json=chat())
                    results.append(response.json()["choices"][0]["message"]["content"])

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return results


def test_many_concurrent_requests_from_a_separate_loop(serve: ServerFactory) -> None:
    server = serve([ANSWER], record=False)
    results = asyncio.run(_hammer(server.base_url, concurrency=32, per_worker=10))
    assert results == [ANSWER] * 320


# -- command line ---------------------------------------------------------------------------------


def test_command_line_serves_cycling_replies_until_sigterm(tmp_path: Path) -> None:
    replies = tmp_path / "replies.jsonl"
    replies.write_text(
        json.dumps({"content": "first"}) + "\n\n" + json.dumps({"content": "second", "reasoning": "why"}) + "\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tarsguard._scripted_server",
            "--port",
            "0",
            "--model",
            "m1",
            "--replies",
            str(replies),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("ready http://127.0.0.1:")
        base_url = line.split(" ", 1)[1]
        assert base_url.endswith("/v1")
        with httpx.Client(base_url=base_url) as client:
            got = [
                client.post("/chat/completions", json={**chat(), "model": "m1"}).json()["choices"][0]["message"]
                for _ in range(3)
            ]
        assert [m["content"] for m in got] == ["first", "second", "first"]
        assert got[1]["reasoning"] == "why"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
