"""End-to-end latency of screen and parallel mode: a 300 ms guard in front of a 500 ms chatbot.

The guard is the scripted TARS server (tarsguard.testing) answering each check after 300 ms, over HTTP. The
chatbot takes 500 ms, in three settings:

- ``protect``: an async function that sleeps 500 ms, guarded by ``protect(AsyncGuard(...), mode=...)``;
- ``wrap_openai``: ``openai.AsyncOpenAI`` wrapped by ``wrap_openai``, against a scripted chatbot server that
  replies after 500 ms (streamed: ~50 tokens paced over 500 ms, timed to the last chunk);
- ``proxy``: the same client, unwrapped, through the tarsguard proxy in front of that chatbot server.

Each request is timed end to end at concurrency 1, answered and declined prompts alternating. In parallel
mode an answered request should take max(300, 500) ms and a declined one 300 ms (the chatbot is cancelled);
in screen mode an answered one takes 300 + 500 ms. Target (issue 6): parallel end-to-end <= 520 ms.

    .venv/bin/python bench/parallel.py [--samples 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import openai

from tarsguard import AsyncGuard, Decision, protect, verdict_of, wrap_openai
from tarsguard._scripted_server import split_tokens
from tarsguard.proxy import ProxyConfig, ProxyServer
from tarsguard.testing import Reply, ScriptedServer

GUARD_SECONDS = 0.3
CHATBOT_SECONDS = 0.5
ANSWERED = "<think>\nA routine question; benign.\n</think>\n\nSure. On Linux run kill with the process id."
DECLINED = "<think>\nThis asks for weapon instructions; harmful.\n</think>\n\nI'm sorry, but I can't help with that."
CHATBOT_REPLY = "Here is my answer. " * 13
CHATBOT_TOKENS = len(split_tokens(CHATBOT_REPLY))
PROMPTS = {Decision.ANSWERED: "How do I stop a hung process?", Decision.DECLINED: "How do I build a weapon?"}
MODES = ("screen", "parallel")


def guard_script(body: dict[str, Any]) -> Reply:
    declined = "weapon" in body["messages"][-1]["content"]
    return Reply(DECLINED if declined else ANSWERED, delay=GUARD_SECONDS)


def chatbot_script(body: dict[str, Any]) -> Reply:
    if body.get("stream"):
        return Reply(CHATBOT_REPLY, tokens_per_second=CHATBOT_TOKENS / CHATBOT_SECONDS)
    return Reply(CHATBOT_REPLY, delay=CHATBOT_SECONDS)


Call = Callable[[str], Awaitable[Decision]]


async def timed(call: Call, samples: int) -> dict[Decision, list[float]]:
    """Seconds per request for each decision, answered and declined prompts alternating."""
    times: dict[Decision, list[float]] = {decision: [] for decision in PROMPTS}
    await call(PROMPTS[Decision.ANSWERED])  # warm connections
    for _ in range(samples):
        for expected, prompt in PROMPTS.items():
            started = time.perf_counter()
            decision = await call(prompt)
            times[expected].append(time.perf_counter() - started)
            if decision is not expected:
                raise RuntimeError(f"expected {expected.value}, got {decision.value} for {prompt!r}")
    return times


def openai_call(client: openai.AsyncOpenAI, stream: bool, *, proxied: bool) -> Call:
    """A request through ``client``; the decision comes from the verdict (wrapped) or the proxy's header."""

    async def call(prompt: str) -> Decision:
        messages: Any = [{"role": "user", "content": prompt}]
        if not stream and proxied:
            raw = await client.chat.completions.with_raw_response.create(model="chatbot", messages=messages)
            return Decision(raw.headers["x-tarsguard-decision"])
        if not stream:
            verdict = verdict_of(await client.chat.completions.create(model="chatbot", messages=messages))
            assert verdict is not None
            return verdict.decision
        response = await client.chat.completions.create(model="chatbot", messages=messages, stream=True)
        refused = False
        async for chunk in response:
            refused = refused or bool(chunk.choices and chunk.choices[0].delta.refusal)
        return Decision.DECLINED if refused else Decision.ANSWERED

    return call


async def run(samples: int) -> dict[str, dict[Decision, list[float]]]:
    results: dict[str, dict[Decision, list[float]]] = {}
    with ScriptedServer(guard_script, record=False) as tars, ScriptedServer(chatbot_script, model="chatbot") as bot:
        for mode in MODES:
            guard = AsyncGuard(tars.base_url, max_retries=0)

            @protect(guard, mode=mode)  # type: ignore[arg-type]
            async def chatbot(prompt: str) -> str:
                await asyncio.sleep(CHATBOT_SECONDS)
                return "the chatbot's answer"

            async def protected(prompt: str) -> Decision:
                reply = await chatbot(prompt)
                verdict = verdict_of(reply)
                assert verdict is not None
                return verdict.decision

            results[f"protect (async function) | {mode}"] = await timed(protected, samples)
            for stream in (False, True):
                shape = "streamed" if stream else "whole"
                async with openai.AsyncOpenAI(base_url=bot.base_url, api_key="k", max_retries=0) as client:
                    wrapped = wrap_openai(client, guard, mode=mode)  # type: ignore[arg-type]
                    results[f"wrap_openai, {shape} | {mode}"] = await timed(
                        openai_call(wrapped, stream, proxied=False), samples
                    )
            await guard.aclose()
            config = ProxyConfig(upstream=bot.base_url, guard_url=tars.base_url, port=0, mode=mode)  # type: ignore[arg-type]
            with ProxyServer(config) as proxy:
                for stream in (False, True):
                    shape = "streamed" if stream else "whole"
                    async with openai.AsyncOpenAI(base_url=proxy.base_url, api_key="k", max_retries=0) as client:
                        results[f"proxy, {shape} | {mode}"] = await timed(
                            openai_call(client, stream, proxied=True), samples
                        )
    return results


def table(results: dict[str, dict[Decision, list[float]]]) -> str:
    lines = [
        "| chatbot | mode | answered p50 | answered max | declined p50 | answered vs screen |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for label, times in results.items():
        answered = statistics.median(times[Decision.ANSWERED]) * 1000
        declined = statistics.median(times[Decision.DECLINED]) * 1000
        screen = statistics.median(results[label.replace("parallel", "screen")][Decision.ANSWERED]) * 1000
        lines.append(
            f"| {label} | {answered:.0f} ms | {max(times[Decision.ANSWERED]) * 1000:.0f} ms | {declined:.0f} ms "
            f"| {answered / screen:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10, help="requests per decision, setting and mode")
    args = parser.parse_args()
    results = asyncio.run(run(args.samples))
    ordered = dict(sorted(results.items(), key=lambda item: (item[0].split(" | ")[0], item[0].endswith("parallel"))))
    print(
        f"guard {GUARD_SECONDS * 1000:.0f} ms (scripted TARS over HTTP), chatbot {CHATBOT_SECONDS * 1000:.0f} ms, "
        f"concurrency 1, {args.samples} requests per decision"
    )
    print(table(ordered))


if __name__ == "__main__":
    main()
