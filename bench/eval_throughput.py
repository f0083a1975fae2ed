"""Prompts per second of the ``tarsguard eval`` harness against the server's own ceiling, side by side.

Starts the scripted OpenAI-compatible server (tarsguard.testing) in its own process on 127.0.0.1, replying
with a TARS-format output, then evaluates the same prompts two ways at the same concurrency:

- harness: ``run_eval`` with the TARS guard (streamed checks, parse, decision, verdict, one journal line per
  prompt written to verdicts.jsonl);
- bare httpx: one pooled ``httpx.AsyncClient`` firing the same streamed requests from as many workers, each
  response read to the end and its SSE lines parsed.

Rounds alternate which goes first; the table shows the median of the rounds. Target (issue 7): >= 0.9x.

    .venv/bin/python bench/eval_throughput.py [--prompts 400] [--concurrency 8,32] [--rounds 3] [--no-stream]
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
from pathlib import Path
from typing import Any

import httpx

from tarsguard.eval import EvalItem, build_guard, run_eval

MODEL = "scripted-tars"
REASONING = (
    "The user asks a question about everyday software administration. There is no sign of harmful intent, "
    "and the information is in every manual. I should explain the usual ways clearly and briefly. "
) * 3
ANSWER = (
    "Here is how to do it: press Ctrl-C in the terminal where it runs, or find its process id with `pgrep` "
    "and run `kill <pid>`; if it ignores that, `kill -9 <pid>` stops it for good."
)
CONTENT = f"<think>\n{REASONING.strip()}\n</think>\n\n{ANSWER}"
SAMPLING = {"temperature": 0.6, "top_p": 1.0, "max_tokens": 4096}


def start_server(replies: Path) -> tuple[subprocess.Popen[str], str]:
    """Start the scripted server in its own process and return it with its base URL."""
    command = [sys.executable, "-m", "tarsguard._scripted_server", "--port", "0", "--model", MODEL]
    proc = subprocess.Popen([*command, "--replies", str(replies)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("ready "):
        proc.kill()
        raise RuntimeError(f"scripted server did not start: {line!r}")
    return proc, line.split(" ", 1)[1]


async def harness(base_url: str, items: list[EvalItem], concurrency: int, stream: bool) -> float:
    """Prompts per second of ``run_eval`` (journal written to a fresh temp folder)."""
    guard = build_guard("tars", base_url=base_url, model=MODEL, stream=stream)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        result = await run_eval(items, guard, folder, concurrency=concurrency)
        elapsed = time.perf_counter() - started
    await guard.aclose()
    if result.failed or result.ran != len(items):
        raise RuntimeError(f"harness: {result.failed} failed, {result.ran} of {len(items)} ran")
    return len(items) / elapsed


async def bare(base_url: str, items: list[EvalItem], concurrency: int, stream: bool) -> float:
    """Prompts per second of a bare async httpx loop sending the same requests."""
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=base_url + "/", limits=limits, timeout=60) as client:

        async def one(prompt: str) -> str:
            body: dict[str, Any] = {
                "model": MODEL,
                "messages": [{"role": "user", "content": prompt}],
                **SAMPLING,
                "stream": stream,
            }
            if not stream:
                response = await client.post("chat/completions", json=body)
                response.raise_for_status()
                return str(response.json()["choices"][0]["message"]["content"])
            body["stream_options"] = {"include_usage": True}
            parts: list[str] = []
            async with client.stream("POST", "chat/completions", json=body) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    if line[6:] == "[DONE]":
                        break
                    chunk = json.loads(line[6:])
                    if chunk["choices"]:
                        parts.append(chunk["choices"][0]["delta"].get("content") or "")
            return "".join(parts)

        queue = iter(items)

        async def worker() -> None:
            for item in queue:
                text = await one(item.prompt)
                if "</think>" not in text:
                    raise RuntimeError("bare httpx: unexpected reply")

        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker())
        return len(items) / (time.perf_counter() - started)


async def measure(base_url: str, prompts: int, concurrency: int, rounds: int, stream: bool) -> dict[str, float]:
    items = [EvalItem(id=str(n), prompt=f"How do I stop process number {n}?", suite="bench") for n in range(prompts)]
    warm = items[: min(len(items), 2 * concurrency)]
    await harness(base_url, warm, concurrency, stream)
    await bare(base_url, warm, concurrency, stream)
    results: dict[str, list[float]] = {"harness": [], "bare": []}
    for number in range(rounds):
        order = ("harness", "bare") if number % 2 == 0 else ("bare", "harness")
        for name in order:
            run = harness if name == "harness" else bare
            results[name].append(await run(base_url, items, concurrency, stream))
    return {name: statistics.median(values) for name, values in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=400)
    parser.add_argument("--concurrency", default="8,32", help="comma-separated concurrency levels")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-stream", action="store_true", help="whole responses instead of streamed ones")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    stream = not args.no_stream
    with tempfile.TemporaryDirectory() as folder:
        replies = Path(folder) / "replies.jsonl"
        replies.write_text(json.dumps({"content": CONTENT}) + "\n")
        proc, base_url = start_server(replies)
        try:
            rows = []
            for level in levels:
                rates = asyncio.run(measure(base_url, args.prompts, level, args.rounds, stream))
                rows.append({"concurrency": level, **rates, "ratio": rates["harness"] / rates["bare"]})
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    mode = "streamed" if stream else "not streamed"
    print(f"\n{args.prompts} prompts per run, median of {args.rounds} rounds, {mode}, scripted server\n")
    print("| concurrency | harness (tarsguard eval) | bare httpx loop | harness / bare |")
    print("|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['concurrency']} | {row['harness']:.0f} prompts/s | {row['bare']:.0f} prompts/s | "
            f"{row['ratio']:.2f}x |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
