"""The in-process backends (transformers, vLLM's async engine) and ``tarsguard demo`` on the real stand-in.

The stand-in (SmolLM2-135M-Instruct) is NOT a safety model: these tests check generation plumbing (streaming,
limits, stop strings, batching, cancellation, the guard pipeline), never which decision it gets.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tarsguard import AsyncGuard, BackendUnavailable, ConfigurationError, Guard, MemorySink, Timeout, Verdict
from tarsguard._types import SamplingParams
from tarsguard.backends import GenerationEnd, GenerationRequest, TextDelta, _embedded
from tarsguard.backends.transformers import TransformersBackend
from tarsguard.backends.vllm_engine import VLLMEngineBackend
from tests.support.standin import DEFAULT_DEST, REPO_ROOT, SERVED_NAME, build_standin, find_gguf

PROMPTS = (
    "Write a haiku about the sea.",
    "How do I kill a Python process?",
    "What is the capital of France?",
    "Give me a recipe for pancakes.",
)


def _request(prompt: str, *, max_tokens: int = 24, stop: tuple[str, ...] | None = None, stream: bool = True):
    sampling = SamplingParams(temperature=0.0, max_tokens=max_tokens, stop=stop)
    return GenerationRequest([{"role": "user", "content": prompt}], sampling, Timeout(total=600), stream=stream)


async def _generate(backend, request) -> tuple[list[TextDelta], GenerationEnd]:
    deltas: list[TextDelta] = []
    end = None
    async for event in backend.generate(request):
        assert end is None, "nothing may follow GenerationEnd"
        if isinstance(event, GenerationEnd):
            end = event
        else:
            deltas.append(event)
    assert end is not None
    return deltas, end


def _text(deltas: list[TextDelta]) -> str:
    return "".join(d.content for d in deltas)


@pytest.fixture(scope="module")
def standin() -> Path:
    return build_standin(DEFAULT_DEST)


# -- transformers ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tf(standin: Path) -> Iterator[TransformersBackend]:
    backend = TransformersBackend(standin, name=SERVED_NAME, batch_window=0.25, local_files_only=True, quiet=True)
    backend.load()
    yield backend
    asyncio.run(backend.aclose())


async def test_transformers_streams_one_delta_per_token(tf: TransformersBackend) -> None:
    deltas, end = await _generate(tf, _request(PROMPTS[1], max_tokens=24))
    assert end.model == SERVED_NAME and end.request_id and end.prompt_tokens and end.prompt_tokens > 10
    assert end.finish_reason in ("stop", "length")
    assert len(deltas) >= 10
    steps = sum(d.content_steps for d in deltas)
    # Each generated token is its own event; an end-of-sequence token adds to the count but has no text.
    assert steps in (end.completion_tokens, (end.completion_tokens or 0) - 1)
    assert sum(1 for d in deltas if d.content_steps == 1) >= len(deltas) - 2
    whole, whole_end = await _generate(tf, _request(PROMPTS[1], max_tokens=24, stream=False))
    assert len(whole) == 1 and _text(whole) == _text(deltas)
    assert whole_end.completion_tokens == end.completion_tokens


async def test_transformers_honours_max_tokens(tf: TransformersBackend) -> None:
    deltas, end = await _generate(tf, _request(PROMPTS[3], max_tokens=5))
    assert end.finish_reason == "length" and end.completion_tokens == 5
    assert _text(deltas)


async def test_transformers_honours_stop_strings(tf: TransformersBackend) -> None:
    full, _ = await _generate(tf, _request(PROMPTS[0], max_tokens=40))
    text = _text(full)
    stop = text[len(text) // 2 : len(text) // 2 + 4]
    assert stop.strip(), text
    deltas, end = await _generate(tf, _request(PROMPTS[0], max_tokens=40, stop=("never-appears-xyz", stop)))
    assert end.finish_reason == "stop"
    assert _text(deltas) == text[: text.index(stop)]


async def test_transformers_batches_concurrent_requests_with_unbatched_results(tf: TransformersBackend) -> None:
    alone = [await _generate(tf, _request(p, max_tokens=24)) for p in PROMPTS]
    before = tf.stats()
    together = await asyncio.gather(*(_generate(tf, _request(p, max_tokens=24)) for p in PROMPTS))
    after = tf.stats()
    assert after["batches"] == before["batches"] + 1 and after["largest_batch"] == len(PROMPTS)
    for (a, a_end), (b, b_end) in zip(alone, together, strict=True):
        assert _text(a) == _text(b)
        assert (a_end.finish_reason, a_end.completion_tokens) == (b_end.finish_reason, b_end.completion_tokens)
    assert after["prefix_hits"] > before["prefix_hits"]  # the chat template's shared start was computed once


async def test_rows_finishing_at_different_steps_leave_the_others_unchanged(tf: TransformersBackend) -> None:
    """Seven rows with budgets of 1 to 20 tokens: the batch shrinks (keeping finished rows as padding) as they end."""
    requests = [(PROMPTS[i % len(PROMPTS)], budget) for i, budget in enumerate((20, 1, 3, 6, 9, 13, 17))]
    alone = [await _generate(tf, _request(p, max_tokens=n)) for p, n in requests]
    before = tf.stats()
    together = await asyncio.gather(*(_generate(tf, _request(p, max_tokens=n)) for p, n in requests))
    after = tf.stats()
    assert after["batches"] == before["batches"] + 1 and after["largest_batch"] >= len(requests)
    for (a, a_end), (b, b_end) in zip(alone, together, strict=True):
        assert _text(a) == _text(b)
        assert (a_end.finish_reason, a_end.completion_tokens) == (b_end.finish_reason, b_end.completion_tokens)
    assert after["generated_tokens"] - before["generated_tokens"] == sum(
        end.completion_tokens or 0 for _, end in together
    )  # padding slots are not counted as generated


async def test_requests_sent_during_a_batch_join_it_with_unbatched_results(tf: TransformersBackend) -> None:
    """Requests sent while a batch decodes join it at a step's end (no batch of their own) and get the same text."""
    long_prompt = "Count from 1 to 100, separated by commas."
    late = list(zip(PROMPTS, (12, 1, 20, 6), strict=True))  # one finishes at its first token
    alone_long = await _generate(tf, _request(long_prompt, max_tokens=80))
    assert alone_long[1].completion_tokens == 80, "the long request must still run when the others are sent"
    alone = [await _generate(tf, _request(p, max_tokens=n)) for p, n in late]
    before = tf.stats()
    started = asyncio.Event()

    async def long_run() -> tuple[list[TextDelta], GenerationEnd]:
        deltas: list[TextDelta] = []
        async for event in tf.generate(_request(long_prompt, max_tokens=80)):
            if isinstance(event, GenerationEnd):
                return deltas, event
            deltas.append(event)
            started.set()
        raise AssertionError("no GenerationEnd")

    running = asyncio.create_task(long_run())
    await started.wait()
    joined = await asyncio.gather(*(_generate(tf, _request(p, max_tokens=n)) for p, n in late))
    long_deltas, long_end = await running
    after = tf.stats()
    assert after["batches"] == before["batches"] + 1
    assert after["joined"] == before["joined"] + len(late)
    assert after["largest_batch"] >= 2  # the long request and at least one that joined it
    assert (_text(long_deltas), long_end.completion_tokens) == (_text(alone_long[0]), 80)
    for (a, a_end), (b, b_end) in zip(alone, joined, strict=True):
        assert _text(a) == _text(b)
        assert (a_end.finish_reason, a_end.completion_tokens) == (b_end.finish_reason, b_end.completion_tokens)


async def test_a_shared_prompt_prefix_changes_no_output(standin: Path) -> None:
    """Greedy text with another prompt's start reused equals the text of fresh backends that reuse nothing."""
    fresh = [TransformersBackend(standin, name=SERVED_NAME, local_files_only=True, quiet=True) for _ in PROMPTS]
    try:
        whole = [await _generate(b, _request(p, max_tokens=24)) for b, p in zip(fresh, PROMPTS, strict=True)]
        assert all(b.stats()["prefix_hits"] == 0 for b in fresh)
        shared = TransformersBackend(standin, name=SERVED_NAME, local_files_only=True, quiet=True)
        try:
            reused = [await _generate(shared, _request(p, max_tokens=24)) for p in PROMPTS]
            assert shared.stats()["prefix_hits"] == len(PROMPTS) - 1
        finally:
            await shared.aclose()
    finally:
        for b in fresh:
            await b.aclose()
    assert [_text(d) for d, _ in whole] == [_text(d) for d, _ in reused]


def test_transformers_is_safe_across_threads_and_loops(tf: TransformersBackend) -> None:
    expected = {p: _text(asyncio.run(_generate(tf, _request(p, max_tokens=16)))[0]) for p in PROMPTS[:2]}
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def run(prompt: str) -> None:
        try:
            results[prompt] = _text(asyncio.run(_generate(tf, _request(prompt, max_tokens=16)))[0])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(p,)) for p in PROMPTS[:2]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and results == expected


async def test_closing_a_stream_stops_its_generation(tf: TransformersBackend) -> None:
    before = tf.stats()
    stream = tf.generate(_request(PROMPTS[3], max_tokens=2000))
    for _ in range(3):
        assert isinstance(await anext(stream), TextDelta)
    await stream.aclose()
    # The next request can only start once the first one's batch has ended (it is alone in it).
    _, end = await _generate(tf, _request(PROMPTS[2], max_tokens=5))
    after = tf.stats()
    assert after["dropped"] == before["dropped"] + 1
    assert after["generated_tokens"] - before["generated_tokens"] < 3 + 5 + 5  # not the 2000 asked for
    assert end.completion_tokens is not None and end.completion_tokens <= 5


def test_guard_on_transformers_end_to_end(standin: Path) -> None:
    sink = MemorySink()
    backend = TransformersBackend(standin, name=SERVED_NAME, local_files_only=True, quiet=True)
    with Guard(backend=backend, trace=sink, temperature=0.0, max_tokens=32) as guard:
        verdict = guard.check("What is the capital of France?")
        results = guard.check_many(PROMPTS, concurrency=4)
    assert all(isinstance(r, Verdict) for r in [verdict, *results])
    trace = verdict.trace
    assert trace.backend == "transformers" and trace.model == SERVED_NAME
    assert trace.endpoint == f"transformers://{standin}"
    assert trace.error is None and trace.finish_reason in ("stop", "length") and trace.request_id
    assert verdict.answer.strip() and verdict.reasoning is None  # the stand-in writes no <think> block
    assert trace.timings.first_token_ms is not None and trace.timings.first_token_ms <= trace.timings.total_ms
    assert trace.usage.prompt_tokens and trace.usage.completion_tokens
    assert [r.trace.backend for r in sink.records] == ["transformers"] * (1 + len(PROMPTS))
    with pytest.raises(BackendUnavailable):
        asyncio.run(_generate(backend, _request("hi")))  # closed with the guard


def test_embedded_default_runs_the_model_named_in_process(
    standin: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_embedded, "cuda_available", lambda: False)
    monkeypatch.setenv("TARSGUARD_MODEL", str(standin))
    with Guard(max_tokens=8, temperature=0.0) as guard:
        assert isinstance(guard.backend, TransformersBackend) and not guard.backend.loaded
        verdict = guard.check("Say hello.")
    assert verdict.trace.backend == "transformers" and verdict.trace.model == standin.name
    assert verdict.trace.usage.completion_tokens and verdict.trace.usage.completion_tokens <= 8
    err = capfd.readouterr().err
    assert "tarsguard: loading" in err and "loaded in" in err


def test_gguf_file_loads_directly() -> None:
    gguf = find_gguf(DEFAULT_DEST.parent / "downloads")
    backend = TransformersBackend(gguf, local_files_only=True, quiet=True)
    try:
        deltas, end = asyncio.run(_generate(backend, _request("What is the capital of France?", max_tokens=8)))
    finally:
        asyncio.run(backend.aclose())
    assert end.model == gguf.name and _text(deltas).strip()


def test_missing_weights_in_a_local_folder_is_one_clear_configuration_error(tmp_path: Path) -> None:
    backend = TransformersBackend(tmp_path, quiet=True)
    with pytest.raises(ConfigurationError) as info:
        backend.load()
    assert str(tmp_path) in str(info.value) and "model=" in str(info.value)
    with Guard(backend=backend) as guard, pytest.raises(ConfigurationError):
        guard.check("hi")


def test_hub_failure_is_one_clear_error_saying_how_to_use_local_weights() -> None:
    backend = TransformersBackend("CMU-AIRe/TARS-no-such-model", local_files_only=True, quiet=True)
    with Guard(backend=backend) as guard, pytest.raises(BackendUnavailable) as info:
        guard.check("hi")
    message = str(info.value)
    assert "hf download CMU-AIRe/TARS-no-such-model" in message and "TARSGUARD_MODEL" in message
    assert "\n" not in message


# -- vLLM in-process ------------------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(standin: Path) -> AsyncIterator[VLLMEngineBackend]:
    pytest.importorskip("vllm")
    backend = VLLMEngineBackend(
        standin,
        name=SERVED_NAME,
        dtype="float32",  # bf16 results depend on the batch's shape; fp32 lets batched equal unbatched
        max_model_len=1024,
        enforce_eager=True,
        engine_args={"kv_cache_memory_bytes": 1 << 30},
        quiet=True,
    )
    await backend.start()
    yield backend
    await backend.aclose()


@pytest.mark.asyncio(loop_scope="module")
async def test_vllm_engine_streams_and_honours_limits(engine: VLLMEngineBackend) -> None:
    deltas, end = await _generate(engine, _request(PROMPTS[1], max_tokens=24))
    assert end.model == SERVED_NAME and end.request_id and end.prompt_tokens and end.prompt_tokens > 10
    assert len(deltas) >= 10 and sum(d.content_steps for d in deltas) <= (end.completion_tokens or 0)
    _, short = await _generate(engine, _request(PROMPTS[3], max_tokens=5))
    assert short.finish_reason == "length" and short.completion_tokens == 5
    whole, whole_end = await _generate(engine, _request(PROMPTS[1], max_tokens=24, stream=False))
    assert len(whole) == 1 and _text(whole) == _text(deltas) and whole_end.completion_tokens == end.completion_tokens
    text = _text(deltas)
    stop = text[len(text) // 2 : len(text) // 2 + 4]
    stopped, stop_end = await _generate(engine, _request(PROMPTS[1], max_tokens=24, stop=(stop,)))
    assert stop_end.finish_reason == "stop" and _text(stopped) == text[: text.index(stop)]


@pytest.mark.asyncio(loop_scope="module")
async def test_vllm_engine_batched_equals_one_at_a_time(engine: VLLMEngineBackend) -> None:
    alone = [await _generate(engine, _request(p, max_tokens=24)) for p in PROMPTS]
    together = await asyncio.gather(*(_generate(engine, _request(p, max_tokens=24)) for p in PROMPTS))
    for (a, a_end), (b, b_end) in zip(alone, together, strict=True):
        assert _text(a) == _text(b) and a_end.completion_tokens == b_end.completion_tokens


@pytest.mark.asyncio(loop_scope="module")
async def test_vllm_engine_closing_a_stream_aborts_the_request(engine: VLLMEngineBackend) -> None:
    stream = engine.generate(_request(PROMPTS[3], max_tokens=900))
    for _ in range(3):
        assert isinstance(await anext(stream), TextDelta)
    assert engine.engine.get_num_unfinished_requests() == 1
    await stream.aclose()
    assert engine.engine.get_num_unfinished_requests() == 0


@pytest.mark.asyncio(loop_scope="module")
async def test_guard_on_vllm_engine_end_to_end(engine: VLLMEngineBackend) -> None:
    guard = AsyncGuard(backend=engine, temperature=0.0, max_tokens=32)  # not closed: the fixture owns the engine
    verdict = await guard.check("What is the capital of France?")
    trace = verdict.trace
    assert trace.backend == "vllm" and trace.model == SERVED_NAME and trace.error is None
    assert trace.timings.first_token_ms is not None and trace.usage.completion_tokens
    health = await guard.health()
    assert health.ok and health.models == (SERVED_NAME,) and health.max_model_len == 1024


# -- tarsguard demo --------------------------------------------------------------------------------------------


def test_demo_runs_and_says_what_it_must(standin: Path, tmp_path: Path) -> None:
    trace = tmp_path / "demo.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "tarsguard", "demo", "--trace", str(trace)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "COLUMNS": "200"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "NOT a safety model" in out
    assert "guard = Guard()" in out and "TARS" in out
    for kind in ("harmless", "borderline", "harmful"):
        assert kind in out
    assert "a safety model would" in out and out.count("decline (harmful)") == 2
    assert out.count("loaded in") == 1 and out.count("first token") == 6 and out.count("total") >= 6
    assert f"6 verdicts appended to {trace}" in out
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert len(records) == 6
    # The pipeline decides: at least five rows end answered, declined or partial (early stop, sampling, a budget).
    decisions = [record["decision"] for record in records]
    assert sum(d in ("answered", "declined", "partial") for d in decisions) >= 5, decisions
    assert "early stop at token" in out
