"""In-process backends on the SmolLM2 stand-in (NOT a safety model): batching gain and in-process vs HTTP.

1. TransformersBackend: the same 8 prompts one at a time, all 8 at once (a burst: rows that end early leave their
   slots empty until the longest ends), and 8 in flight (8 clients each sending its next request as soon as the
   last returns, 24 requests in all: a request joins the running batch as a slot frees up), tokens/s.
2. The same prompts through VLLMEngineBackend (vLLM in-process) and through a vLLM HTTP server on loopback
   (the realserver tier's server), in the same three ways: tokens/s and p50 latency.

Each backend runs every mode in --rounds rounds (default 3), rotating which runs first. tokens/s is each mode's
tokens over its time in all rounds; the transformers ratios are the median over rounds of the round's concurrent
tokens/s over its one-at-a-time tokens/s, so a slow spell of this shared machine during one round counts once.

Greedy, fixed token budget, every ratio measured side by side in one run. Prints a markdown table.

    .venv/bin/python bench/local_backends.py [--max-tokens 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tarsguard import Timeout  # noqa: E402
from tarsguard._types import SamplingParams  # noqa: E402
from tarsguard.backends import Backend, GenerationEnd, GenerationRequest  # noqa: E402
from tests.support.standin import DEFAULT_DEST, SERVED_NAME, build_standin  # noqa: E402
from tests.support.vllm_server import vllm_server  # noqa: E402

PROMPTS = [
    "How do I kill a Python process?",
    "Write a haiku about the sea.",
    "What's the best way to gut a fish?",
    "Explain TCP in two sentences.",
    "Give me a recipe for pancakes.",
    "What is the capital of France and why?",
    "How can I improve my sleep?",
    "Describe a cat to someone who has never seen one.",
]
IN_FLIGHT_ROUNDS = 3
TARGET = 4.0


async def _one(backend: Backend, prompt: str, max_tokens: int) -> tuple[int, float]:
    request = GenerationRequest(
        [{"role": "user", "content": prompt}],
        SamplingParams(temperature=0.0, max_tokens=max_tokens),
        Timeout(total=900, read=900),
        model=SERVED_NAME,
    )
    started = time.perf_counter()
    tokens = 0
    async for event in backend.generate(request):
        if isinstance(event, GenerationEnd):
            tokens = event.completion_tokens or 0
    return tokens, time.perf_counter() - started


async def _in_flight(backend: Backend, max_tokens: int) -> list[tuple[int, float]]:
    """``IN_FLIGHT_ROUNDS`` passes over the prompts by ``len(PROMPTS)`` clients, each sending its next request when
    the last returns."""
    waiting = iter(PROMPTS * IN_FLIGHT_ROUNDS)
    results: list[tuple[int, float]] = []

    async def client() -> None:
        for prompt in waiting:
            results.append(await _one(backend, prompt, max_tokens))

    await asyncio.gather(*(client() for _ in PROMPTS))
    return results


async def _measure(backend: Backend, max_tokens: int, rounds: int) -> dict[str, tuple[float, float, float]]:
    """Per mode (one at a time, all at once): tokens/s over every round, p50 latency, and the median over rounds of
    the round's tokens/s over one-at-a-time's in the same round (rounds alternate which mode runs first)."""
    await _one(backend, "Say hi.", 4)  # warm-up
    modes = ("one at a time", f"{len(PROMPTS)} at once", f"{len(PROMPTS)} in flight")
    tokens = dict.fromkeys(modes, 0)
    seconds = dict.fromkeys(modes, 0.0)
    latencies: dict[str, list[float]] = {mode: [] for mode in modes}
    per_round: dict[str, list[float]] = {mode: [] for mode in modes}
    for round_ in range(rounds):
        for mode in modes[round_ % len(modes) :] + modes[: round_ % len(modes)]:
            started = time.perf_counter()
            if mode == modes[0]:
                results = [await _one(backend, p, max_tokens) for p in PROMPTS]
            elif mode == modes[1]:
                results = list(await asyncio.gather(*(_one(backend, p, max_tokens) for p in PROMPTS)))
            else:
                results = await _in_flight(backend, max_tokens)
            elapsed = time.perf_counter() - started
            seconds[mode] += elapsed
            tokens[mode] += sum(t for t, _ in results)
            latencies[mode] += [s for _, s in results]
            per_round[mode].append(sum(t for t, _ in results) / elapsed)
    return {
        mode: (
            tokens[mode] / seconds[mode],
            statistics.median(latencies[mode]),
            statistics.median(a / b for a, b in zip(per_round[mode], per_round[modes[0]], strict=True)),
        )
        for mode in modes
    }


async def _transformers(model_dir: Path, max_tokens: int, rounds: int) -> dict[str, tuple[float, float, float]]:
    from tarsguard.backends.transformers import TransformersBackend

    backend = TransformersBackend(model_dir, name=SERVED_NAME, local_files_only=True, quiet=True)
    try:
        return await _measure(backend, max_tokens, rounds)
    finally:
        await backend.aclose()


async def _vllm_engine(model_dir: Path, max_tokens: int, rounds: int) -> dict[str, tuple[float, float, float]]:
    from tarsguard.backends.vllm_engine import VLLMEngineBackend

    backend = VLLMEngineBackend(
        model_dir,
        name=SERVED_NAME,
        max_model_len=2048,
        enforce_eager=True,
        engine_args={"kv_cache_memory_bytes": 2 << 30},
    )
    try:
        return await _measure(backend, max_tokens, rounds)
    finally:
        await backend.aclose()


async def _vllm_http(base_url: str, max_tokens: int, rounds: int) -> dict[str, tuple[float, float, float]]:
    from tarsguard.backends import HTTPBackend

    backend = HTTPBackend(base_url, model=SERVED_NAME)
    try:
        return await _measure(backend, max_tokens, rounds)
    finally:
        await backend.aclose()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every mode per backend")
    parser.add_argument("--transformers-only", action="store_true", help="skip the two vLLM backends")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    model_dir = build_standin(DEFAULT_DEST)
    rows: list[tuple[str, str, float, float, str]] = []

    tf = asyncio.run(_transformers(model_dir, args.max_tokens, args.rounds))
    for mode, (tps, p50, ratio) in tf.items():
        verdict = (
            "" if mode == "one at a time" else f" (target >= {TARGET:g}x: {'met' if ratio >= TARGET else 'MISSED'})"
        )
        rows.append(("transformers (in-process)", mode, tps, p50, f"{ratio:.2f}x vs one at a time{verdict}"))

    if args.transformers_only:
        _print(rows, args.max_tokens)
        return 0
    engine = asyncio.run(_vllm_engine(model_dir, args.max_tokens, args.rounds))
    log = REPO_ROOT / ".cache" / "bench-vllm-server.log"
    with vllm_server(model_dir, served_name=SERVED_NAME, max_model_len=2048, log_path=log) as url:
        http = asyncio.run(_vllm_http(url, args.max_tokens, args.rounds))
    for mode in engine:
        rows.append(("vLLM HTTP server (loopback)", mode, *http[mode][:2], "1.00x"))
        tps, p50, _ = engine[mode]
        rows.append(("vLLM in-process (AsyncLLM)", mode, tps, p50, f"{tps / http[mode][0]:.2f}x vs HTTP server"))

    _print(rows, args.max_tokens)
    return 0


def _print(rows: list[tuple[str, str, float, float, str]], max_tokens: int) -> None:
    print(
        f"\n{len(PROMPTS)} prompts ({IN_FLIGHT_ROUNDS} passes in flight), greedy, max_tokens={max_tokens}, "
        f"stand-in {SERVED_NAME} (NOT a safety model)\n"
    )
    print("| backend | requests | tokens/s | p50 latency | ratio |")
    print("|---|---|---:|---:|---:|")
    for backend, mode, tps, p50, ratio in rows:
        print(f"| {backend} | {mode} | {tps:.1f} | {p50 * 1000:.0f} ms | {ratio} |")


if __name__ == "__main__":
    sys.exit(main())
