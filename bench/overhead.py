"""Per-check client overhead of tarsguard against raw httpx and the openai client, side by side.

Starts the scripted OpenAI-compatible server (tarsguard.testing) in its own process on 127.0.0.1, replying with
a TARS-format output of realistic length, then runs the same chat-completion request through three clients
in interleaved rounds:

- raw httpx: one pooled ``httpx.AsyncClient``, a POST, the response read and its JSON parsed (streamed: the
  SSE lines parsed and the deltas joined);
- openai: ``openai.AsyncOpenAI`` ``chat.completions.create`` (streamed: chunks iterated, deltas joined);
- tarsguard: ``AsyncGuard.check`` (parses reasoning and answer, detects the decision, builds the verdict).

Concurrency 1 reports the median latency per request; concurrency 64 reports throughput. Targets (issue 2):
tarsguard latency <= 1.10x raw httpx at c=1; throughput >= 0.9x raw httpx and >= 1.0x openai at c=64.

    .venv/bin/python bench/overhead.py [--rounds 5] [--requests 200] [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import openai

from tarsguard import AsyncGuard

MODEL = "scripted-tars"
REASONING = (
    "The user wants to know how to stop a running Python process. This is a routine system administration "
    "question: killing a process is something developers do every day, for example when a script hangs or "
    "leaks memory. There is no sign of intent to harm anyone, and the information is in every operating "
    "system manual. I should explain the common ways: Ctrl-C in the terminal, the kill command with a "
    "process id found through ps or pgrep, the taskkill command on Windows, and from Python itself with "
    "os.kill or the psutil library. I should mention the difference between SIGTERM and SIGKILL and suggest "
    "trying the gentle signal first so that the program can clean up. "
) * 2
ANSWER = (
    "Here are the usual ways to stop a Python process:\n\n1. In the terminal where it runs, press Ctrl-C; "
    "this raises KeyboardInterrupt.\n2. From another shell, find the process id with `pgrep -f script.py` or "
    "`ps aux | grep python`, then run `kill <pid>` (SIGTERM). If it does not exit, `kill -9 <pid>` sends "
    "SIGKILL, which cannot be caught.\n3. On Windows, use `taskkill /PID <pid>` or `taskkill /F /IM "
    "python.exe`.\n4. From Python: `os.kill(pid, signal.SIGTERM)`, or `psutil.Process(pid).terminate()`.\n\n"
    "Prefer SIGTERM first so the program can run its cleanup handlers and flush its files."
)
CONTENT = f"<think>\n{REASONING.strip()}\n</think>\n\n{ANSWER}"
MESSAGES = [{"role": "user", "content": "How do I kill a Python process?"}]
SAMPLING = {"temperature": 0.6, "top_p": 1.0, "max_tokens": 4096}


def start_server(replies: Path) -> tuple[subprocess.Popen[str], str]:
    """Start the scripted server in its own process and return it with its base URL."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tarsguard._scripted_server",
            "--port",
            "0",
            "--model",
            MODEL,
            "--replies",
            str(replies),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("ready "):
        proc.kill()
        raise RuntimeError(f"scripted server did not start: {line!r}")
    return proc, line.split(" ", 1)[1]


class RawHttpx:
    name = "raw httpx"

    def __init__(self, base_url: str, stream: bool) -> None:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        self.client = httpx.AsyncClient(base_url=base_url + "/", limits=limits, timeout=60)
        self.stream = stream
        self.body: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, **SAMPLING, "stream": stream}
        if stream:
            self.body["stream_options"] = {"include_usage": True}

    async def call(self) -> str:
        if not self.stream:
            response = await self.client.post("chat/completions", json=self.body)
            response.raise_for_status()
            return str(response.json()["choices"][0]["message"]["content"])
        parts: list[str] = []
        async with self.client.stream("POST", "chat/completions", json=self.body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if chunk["choices"]:
                    parts.append(chunk["choices"][0]["delta"].get("content") or "")
        return "".join(parts)

    async def close(self) -> None:
        await self.client.aclose()


class OpenAIClient:
    name = "openai"

    def __init__(self, base_url: str, stream: bool) -> None:
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
        self.stream = stream

    async def call(self) -> str:
        if not self.stream:
            completion = await self.client.chat.completions.create(
                model=MODEL,
                messages=MESSAGES,  # type: ignore[arg-type]
                **SAMPLING,  # type: ignore[arg-type]
            )
            return completion.choices[0].message.content or ""
        parts: list[str] = []
        stream = await self.client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
            **SAMPLING,  # type: ignore[arg-type]
        )
        async for chunk in stream:
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
        return "".join(parts)

    async def close(self) -> None:
        await self.client.close()


class TarsGuardClient:
    name = "tarsguard"

    def __init__(self, base_url: str, stream: bool) -> None:
        self.guard = AsyncGuard(base_url, model=MODEL, stream=stream, max_retries=0)

    async def call(self) -> str:
        verdict = await self.guard.check(MESSAGES)
        return verdict.answer

    async def close(self) -> None:
        await self.guard.aclose()


async def run_batch(call: Callable[[], Awaitable[str]], requests: int, concurrency: int) -> list[float]:
    """Run ``requests`` calls with ``concurrency`` in flight; return each call's latency in seconds."""
    latencies: list[float] = []
    remaining = iter(range(requests))

    async def worker() -> None:
        for _ in remaining:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def measure(base_url: str, stream: bool, rounds: int, requests: int) -> dict[str, dict[str, float]]:
    clients = [RawHttpx(base_url, stream), OpenAIClient(base_url, stream), TarsGuardClient(base_url, stream)]
    for client in clients:
        out = await client.call()
        assert ANSWER in out, f"{client.name} returned {out[:80]!r}"
        await run_batch(client.call, 256, 64)  # warm the pools
    latency: dict[str, list[float]] = {c.name: [] for c in clients}
    throughput: dict[str, list[float]] = {c.name: [] for c in clients}
    for _ in range(rounds):
        # Concurrency 1: the clients take turns request by request, in rotating order, so drift and the
        # garbage one client leaves for the next hit them alike.
        for i in range(requests):
            for client in clients[i % 3 :] + clients[: i % 3]:
                started = time.perf_counter()
                await client.call()
                latency[client.name].append(time.perf_counter() - started)
        for client in clients:
            started = time.perf_counter()
            await run_batch(client.call, requests * 2, 64)
            throughput[client.name].append(requests * 2 / (time.perf_counter() - started))
    for client in clients:
        await client.close()
    return {
        name: {"p50_ms": statistics.median(latency[name]) * 1000, "rps": statistics.median(throughput[name])}
        for name in latency
    }


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [
        "| mode | client | c=1 p50 latency | vs raw httpx | c=64 throughput | vs raw httpx | vs openai |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for mode, by_client in results.items():
        raw, oai = by_client["raw httpx"], by_client["openai"]
        for name, r in by_client.items():
            lines.append(
                f"| {mode} | {name} | {r['p50_ms']:.2f} ms | {r['p50_ms'] / raw['p50_ms']:.2f}x "
                f"| {r['rps']:.0f} req/s | {r['rps'] / raw['rps']:.2f}x | {r['rps'] / oai['rps']:.2f}x |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--requests", type=int, default=200, help="per round and client: this many at c=1, twice as many at c=64"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        replies = Path(tmp) / "replies.jsonl"
        replies.write_text(json.dumps({"content": CONTENT}) + "\n")
        proc, base_url = start_server(replies)
        try:
            results = {
                "streamed": asyncio.run(measure(base_url, True, args.rounds, args.requests)),
                "not streamed": asyncio.run(measure(base_url, False, args.rounds, args.requests)),
            }
        finally:
            proc.terminate()
            proc.wait(10)
    tokens = len(CONTENT.split())
    print(f"scripted server on loopback, reply of ~{tokens} words in TARS format, {args.rounds} interleaved rounds")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
