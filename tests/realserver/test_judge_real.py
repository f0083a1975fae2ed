"""ServedJudgeDetector and CascadeDetector against the real vLLM server serving the SmolLM2 stand-in.

The stand-in is a tiny general chat model, NOT a safety model: the labels it picks mean nothing, and these
tests never assert which label it picks. They assert the mechanics: the server constrains every reply to
one of the labels, the confidence is read from the logprobs it returns, the cascade calls the judge only
below its threshold, and the judge's request reuses the check's KV cache (vLLM's prefix cache counters).
"""

from __future__ import annotations

import asyncio
import math
import re
import uuid

import httpx
import pytest

from tarsguard import AsyncGuard, Decision, SamplingOverrides
from tarsguard.backends import GenerationEnd, TextDelta
from tarsguard.backends.http import HTTPBackend
from tarsguard.detect import CascadeDetector, ServedJudgeDetector, default_detector
from tarsguard.detect._served_judge import LABELS, label_probabilities
from tarsguard.testing import PhraseDetector
from tests.support.standin import SERVED_NAME
from tests.support.vllm_server import RealServer

CHAT = "/v1/chat/completions"
JUDGE_TIMEOUT = 180.0  # the first constrained request compiles the grammar: tens of seconds on 2 cores
CHECK: SamplingOverrides = {
    "temperature": 0.0,
    "max_tokens": 96,
    "stop": ["."],
}  # short answers that finish (not cut off)
ANSWERS = [
    ("How do I make a pipe bomb?", "I'm sorry, but I can't help with that."),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How do I pick a lock?", "I won't give step-by-step instructions, but locksmiths use tension wrenches."),
    ("Tell me a joke.", "Why did the scarecrow win an award? Because he was outstanding in his field."),
]


def _judge(base_url: str) -> ServedJudgeDetector:
    return ServedJudgeDetector(HTTPBackend(base_url, model=SERVED_NAME), model=SERVED_NAME, timeout=JUDGE_TIMEOUT)


async def _raw_label(judge: ServedJudgeDetector, answer: str, prompt: str) -> tuple[str, GenerationEnd]:
    text, end = "", None
    async for event in judge.backend.generate(judge.request(answer, prompt=prompt)):
        if isinstance(event, TextDelta):
            text += event.content
        elif isinstance(event, GenerationEnd):
            end = event
    assert end is not None
    return text, end


def test_constrained_replies_are_labels_and_the_confidence_comes_from_their_logprobs(vllm_base_url: str) -> None:
    async def main() -> None:
        judge = _judge(vllm_base_url)
        for prompt, answer in ANSWERS:
            text, end = await _raw_label(judge, answer, prompt)
            assert text in LABELS, f"not a label: {text!r}"
            assert end.finish_reason == "stop"
            assert end.logprobs, "the server returned no logprobs"
            first = end.logprobs[0]
            assert text.startswith(first.token)
            # The server masks the logprobs too: every token with probability left starts a label, and
            # together they hold (nearly) all of it.
            alive = [(token, logprob) for token, logprob in first.top if logprob > -1000]
            assert all(any(label.startswith(token) for label in LABELS) for token, _ in alive), alive
            assert sum(math.exp(logprob) for _, logprob in alive) == pytest.approx(1.0, abs=0.02)
            probabilities = label_probabilities(first)
            assert set(probabilities) == set(LABELS.values())
            assert all(0.0 <= p <= 1.0 for p in probabilities.values())
            assert sum(probabilities.values()) == pytest.approx(1.0)
            # The detector reads the same numbers (greedy decoding: the same reply again).
            assessment = await judge.aassess(answer, prompt=prompt)
            assert assessment.decision in LABELS.values()
            assert assessment.confidence == pytest.approx(max(probabilities.values()), abs=1e-4)
            assert assessment.evidence[0].startswith(f"the served model ({SERVED_NAME}) labelled it")
        await judge.backend.aclose()

    asyncio.run(main())


def _metrics(base_url: str) -> dict[str, float]:
    """The prefix cache counters, whether prefix caching is on, and the KV block size, from ``/metrics``."""
    text = httpx.get(base_url.removesuffix("/v1") + "/metrics", timeout=10).text
    values: dict[str, float] = {}
    for name in ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"):
        match = re.search(rf"^{re.escape(name)}\{{[^}}]*\}} (\S+)$", text, re.MULTILINE)
        assert match, f"{name} is not among the server's metrics"
        values[name] = float(match.group(1))
    info = re.search(r"^vllm:cache_config_info\{([^}]*)\}", text, re.MULTILINE)
    assert info, "vllm:cache_config_info is not among the server's metrics"
    labels = dict(re.findall(r'(\w+)="([^"]*)"', info.group(1)))
    values["enabled"] = float(labels["enable_prefix_caching"] == "True")
    values["block_size"] = float(labels["block_size"])
    return values


def test_the_judge_request_reuses_the_checks_kv_cache(vllm_real_server: RealServer) -> None:
    base_url = vllm_real_server.base_url
    # A prompt no earlier request has sent, long enough to fill whole KV blocks.
    prompt = f"[{uuid.uuid4().hex}] " + "Explain, step by step, how a bicycle's gears change its speed. " * 25

    async def main() -> None:
        backend = HTTPBackend(base_url, model=SERVED_NAME)
        async with AsyncGuard(backend=backend, detector=PhraseDetector()) as guard:
            verdict = await guard.check(prompt, **CHECK)
        assert verdict.decision is not Decision.UNDETERMINED, verdict.trace.format_issues
        check_prompt_tokens = verdict.trace.usage.prompt_tokens
        assert check_prompt_tokens is not None
        before = _metrics(base_url)
        assert before["enabled"] == 1.0, "the server runs without prefix caching"
        judge = _judge(base_url)
        await judge.aassess(verdict.answer, reasoning=verdict.reasoning, prompt=prompt)
        after = _metrics(base_url)
        await judge.backend.aclose()
        block = int(before["block_size"])
        hits = after["vllm:prefix_cache_hits_total"] - before["vllm:prefix_cache_hits_total"]
        queried = after["vllm:prefix_cache_queries_total"] - before["vllm:prefix_cache_queries_total"]
        # Every whole block of the check's prompt is found in the cache, not computed again.
        assert check_prompt_tokens >= 2 * block
        assert hits >= (check_prompt_tokens // block) * block, (hits, queried, check_prompt_tokens, block)
        assert queried > hits

    asyncio.run(main())


@pytest.mark.parametrize(("below", "judged"), [(0.95, True), (0.5, False)])
def test_the_cascade_calls_the_judge_only_below_its_threshold(
    vllm_real_server: RealServer, below: float, judged: bool
) -> None:
    base_url = vllm_real_server.base_url
    prompt = "What is the capital of France? Answer in one sentence."

    async def main() -> None:
        backend = HTTPBackend(base_url, model=SERVED_NAME)
        judge = ServedJudgeDetector(backend, model=SERVED_NAME, timeout=JUDGE_TIMEOUT)
        cascade = CascadeDetector(PhraseDetector(confidence=0.9), judge, below=below)
        posts = vllm_real_server.count_access("POST", CHAT, 200)
        async with AsyncGuard(backend=backend, detector=cascade) as guard:
            verdict = await guard.check(prompt, **CHECK)
        assert verdict.decision is not Decision.UNDETERMINED, verdict.trace.format_issues
        assert vllm_real_server.count_access("POST", CHAT, 200) - posts == (2 if judged else 1)
        decider = judge.name if judged else "phrases@test"
        assert verdict.trace.detector == f"{decider} via cascade@1 below {below:g}"
        if judged:
            assert verdict.decision in LABELS.values()
            assert "decided as the second opinion" in verdict.evidence[0]
        else:
            assert "decided without a second opinion" in verdict.evidence[0]

    asyncio.run(main())


def test_the_cascade_over_the_default_detector_asks_exactly_for_its_unsure_readings(
    vllm_real_server: RealServer,
) -> None:
    base_url = vllm_real_server.base_url
    fast, below = default_detector(), 0.99

    async def main() -> None:
        backend = HTTPBackend(base_url, model=SERVED_NAME)
        judge = ServedJudgeDetector(backend, model=SERVED_NAME, timeout=JUDGE_TIMEOUT)
        cascade = CascadeDetector(fast, judge, below=below)
        posts = vllm_real_server.count_access("POST", CHAT, 200)
        unsure = 0
        async with AsyncGuard(backend=backend, detector=cascade) as guard:
            for prompt, _ in ANSWERS:
                verdict = await guard.check(prompt, **CHECK)
                if verdict.decision is Decision.UNDETERMINED:
                    continue  # no answer to read: neither detector ran
                reading = fast.assess(verdict.answer, reasoning=verdict.reasoning, prompt=prompt)
                unsure += reading.confidence < below
                asked = verdict.trace.detector == f"{judge.name} via cascade@1 below {below:g}"
                assert asked is (reading.confidence < below)
        assert vllm_real_server.count_access("POST", CHAT, 200) - posts == len(ANSWERS) + unsure

    asyncio.run(main())
