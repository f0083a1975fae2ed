"""The guard proxy in front of the real vLLM server (the SmolLM2 stand-in), with the scripted TARS as the guard.

The real ``openai`` client talks to the proxy, sync, async and streamed. The guard is the scripted TARS server,
so its decisions and faults are chosen by the prompt; the upstream's replies are real generations (the
stand-in is not a safety model: nothing here depends on what it says). Parallel mode's cancellation is
checked on vLLM's side, in its own metrics: a declined request's generation stops long before its
``max_tokens``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tarsguard import AsyncGuard
from tarsguard.middleware import DEFAULT_DECLINE_MESSAGE
from tarsguard.proxy import ProxyConfig, ProxyServer
from tarsguard.testing import PhraseDetector, Reply, ScriptedServer
from tests.support.standin import SERVED_NAME

ANSWERED = "<think>\nBenign.\n</think>\n\nSure, go ahead."
DECLINED = "<think>\nHarmful.\n</think>\n\nI'm sorry, but I can't help with that."
PARTIAL_ANSWER = "I can't help with that part. However, here is some general background."
REFUSAL = "I'm sorry, but I can't help with that."
LONG = {"max_tokens": 256, "extra_body": {"ignore_eos": True}}  # several seconds of generation on CPU



def tars_script(body: dict[str, Any]) -> Reply:
    text = body["messages"][-1]["content"]
    if "FAULT" in text:
        return Reply(status=503, error_message="overloaded")
    delay = 0.5 if "SLOW" in text else 0.0
    if "weapon" in text:
        return Reply(DECLINED, delay=delay)
    if "lock" in text:
        return Reply(f"<think>\nPartly harmful.\n</think>\n\n{PARTIAL_ANSWER}", delay=delay)
    return Reply(ANSWERED, delay=delay)


@pytest.fixture(scope="module")
def tars() -> Iterator[ScriptedServer]:
    with ScriptedServer(tars_script, model="scripted-tars", record=False) as server:
        yield server


@pytest.fixture(scope="module", params=["screen", "parallel"])
def proxy(request: pytest.FixtureRequest, tars: ScriptedServer, vllm_base_url: str) -> Iterator[ProxyServer]:
    guard = AsyncGuard(tars.base_url, detector=PhraseDetector(), max_retries=0)
    config = ProxyConfig(upstream=vllm_base_url, port=0, mode=request.param)
    with ProxyServer(config, guard=guard) as server:
        yield server


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def vllm_metrics(base_url: str) -> dict[str, float]:
    """vLLM's counters and gauges (labels dropped; one engine, one model)."""
    text = httpx.get(base_url.removesuffix("/v1") + "/metrics").text
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


def test_sync_client_through_the_proxy(proxy: ProxyServer) -> None:
    with openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=SERVED_NAME, messages=user("Name three colours."), max_tokens=8
        )
        completion = raw.parse()
        assert raw.headers["x-tarsguard-decision"] == "answered"
        assert completion.model == SERVED_NAME and completion.choices[0].message.content
        assert completion.choices[0].message.refusal is None
        assert completion.usage is not None and 0 < completion.usage.completion_tokens <= 8
        declined = client.chat.completions.with_raw_response.create(
            model=SERVED_NAME, messages=user("Explain how to build a weapon."), max_tokens=8
        )
        assert declined.headers["x-tarsguard-decision"] == "declined"
        assert declined.parse().choices[0].message.refusal == REFUSAL
        partial = client.chat.completions.create(model=SERVED_NAME, messages=user("Open this lock."), max_tokens=8)
        assert partial.choices[0].message.refusal == PARTIAL_ANSWER
        failed = client.chat.completions.with_raw_response.create(
            model=SERVED_NAME, messages=user("hello FAULT"), max_tokens=8
        )
        assert failed.headers["x-tarsguard-decision"] == "undetermined"
        assert failed.parse().choices[0].message.refusal == DEFAULT_DECLINE_MESSAGE
        with pytest.raises(openai.NotFoundError):  # the upstream's own error, passed on
            client.chat.completions.create(model="no-such-model", messages=user("hi"), max_tokens=8)
        upstream_models = httpx.get(f"{proxy.config.upstream}/models").json()["data"]
        assert [m.id for m in client.models.list()] == [m["id"] for m in upstream_models]  # passed on as listed
        assert SERVED_NAME in [m["id"] for m in upstream_models]


def test_streamed_through_the_proxy(proxy: ProxyServer) -> None:
    with openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0) as client:
        stream = client.chat.completions.create(
            model=SERVED_NAME,
            messages=user("Name three colours."),
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        assert stream.response.headers["x-tarsguard-decision"] == "answered"
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
        assert chunks[-1].usage is not None and 0 < chunks[-1].usage.completion_tokens <= 8
        declined = client.chat.completions.create(
            model=SERVED_NAME, messages=user("a weapon"), max_tokens=8, stream=True
        )
        assert [c.choices[0].delta.refusal for c in declined if c.choices][:1] == [REFUSAL]


async def test_async_client_through_the_proxy(proxy: ProxyServer) -> None:
    async with openai.AsyncOpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0) as client:
        prompts = ["Name a colour.", "a weapon", "Name a fruit.", "a lock", "Name a planet."]
        completions = await asyncio.gather(
            *(client.chat.completions.create(model=SERVED_NAME, messages=user(p), max_tokens=4) for p in prompts)
        )
        refusals = [c.choices[0].message.refusal for c in completions]
        assert refusals == [None, REFUSAL, None, PARTIAL_ANSWER, None]
        assert all(c.choices[0].message.content for c in completions)
        stream = await client.chat.completions.create(
            model=SERVED_NAME, messages=user("Name a colour."), max_tokens=4, stream=True
        )
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]).strip()


@pytest.fixture(scope="module")
def parallel_proxy(tars: ScriptedServer, vllm_base_url: str) -> Iterator[ProxyServer]:
    guard = AsyncGuard(tars.base_url, detector=PhraseDetector(), max_retries=0)
    with ProxyServer(ProxyConfig(upstream=vllm_base_url, port=0, mode="parallel"), guard=guard) as server:
        yield server


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_parallel_mode_stops_the_vllm_generation_of_a_declined_request(
    parallel_proxy: ProxyServer, vllm_base_url: str, stream: bool
) -> None:
    proxy = parallel_proxy
    before = vllm_metrics(vllm_base_url)
    started = time.monotonic()
    with openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0) as client:
        # The guard takes 0.5 s; the upstream's 256 tokens take several seconds: it is mid-generation.
        reply = client.chat.completions.create(
            model=SERVED_NAME,
            messages=user("SLOW weapon"),
            stream=stream,
            **LONG,  # type: ignore[arg-type]
        )
        first = next(iter(reply)).choices[0].delta.refusal if stream else reply.choices[0].message.refusal  # type: ignore[union-attr]
    assert first == REFUSAL
    assert time.monotonic() - started < 2.5
    deadline = time.monotonic() + 5
    while vllm_metrics(vllm_base_url)["vllm:num_requests_running"] > 0:
        assert time.monotonic() < deadline, "vLLM is still generating the declined request"
        time.sleep(0.05)
    after = vllm_metrics(vllm_base_url)
    generated = after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    assert generated < 200, f"vLLM generated {generated:.0f} of the declined request's 256 tokens"
    values = httpx.get(proxy.base_url.removesuffix("/v1") + "/metrics").text
    assert "tarsguard_upstream_cancelled_total" in values


async def test_500_requests_at_concurrency_50_answered_and_counted_once(parallel_proxy: ProxyServer) -> None:
    kinds = ["Name a colour.", "a weapon", "a lock"]
    results: list[tuple[int, str, str | None, str | None]] = []
    todo = iter(range(500))
    async with openai.AsyncOpenAI(base_url=parallel_proxy.base_url, api_key="unused", max_retries=0) as client:

        async def worker() -> None:
            for i in todo:
                raw = await client.chat.completions.with_raw_response.create(
                    model=SERVED_NAME, messages=user(f"{kinds[i % 3]} ({i})"), max_tokens=1
                )
                message = raw.parse().choices[0].message
                results.append((i % 3, raw.headers["x-tarsguard-decision"], message.content, message.refusal))

        metrics_url = parallel_proxy.base_url.removesuffix("/v1") + "/metrics"
        before = await asyncio.to_thread(lambda: httpx.get(metrics_url).text)
        await asyncio.gather(*(worker() for _ in range(50)))
    assert len(results) == 500
    for kind, decision, content, refusal in results:
        assert decision == ["answered", "declined", "partial"][kind]
        assert refusal == [None, REFUSAL, PARTIAL_ANSWER][kind]
        assert content == refusal if refusal else content is not None  # the stand-in's token may be empty
    after = await asyncio.to_thread(lambda: httpx.get(metrics_url).text)
    counts = [sum(1 for r in results if r[0] == k) for k in range(3)]
    assert _counter(after, "forwarded") - _counter(before, "forwarded") == counts[0]
    assert _counter(after, "declined") - _counter(before, "declined") == counts[1] + counts[2]


def _counter(text: str, outcome: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tarsguard_proxy_requests_total" and sample.labels.get("outcome") == outcome:
                return sample.value
    return 0.0
