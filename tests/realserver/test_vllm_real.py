"""tarsguard against a real vLLM server serving the SmolLM2 stand-in.

The stand-in is a tiny general chat model, NOT a safety model. Which decision it gets is
meaningless; these tests check the real plumbing: model auto-detection, streamed and whole
responses, usage and timings, error mapping and retry policy, concurrency, and the CLI.
The stand-in never writes ``<think>`` tags, so every output lacks a reasoning block.
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from tarsguard import AsyncGuard, BackendError, ContextLengthExceeded, Decision, Guard, Health, Verdict
from tests.support.standin import REPO_ROOT, SERVED_NAME
from tests.support.vllm_server import DEFAULT_MAX_MODEL_LEN as MAX_MODEL_LEN
from tests.support.vllm_server import RealServer

CHAT = "/v1/chat/completions"


def _assert_plain_answer_verdict(verdict: Verdict, *, max_tokens: int) -> None:
    """What every successful check of the stand-in must look like (no <think> block in its output)."""
    assert isinstance(verdict, Verdict)
    assert verdict.decision in Decision
    assert isinstance(verdict.answer, str) and verdict.answer.strip()
    trace = verdict.trace
    assert trace.error is None
    assert trace.model == SERVED_NAME
    assert trace.backend == "http"
    assert trace.request_id
    assert trace.retries == 0
    assert trace.sampling.max_tokens == max_tokens
    assert trace.finish_reason in ("stop", "length")
    # No <think>...</think>: the format is flagged, and there is no reasoning.
    assert trace.format_ok is False
    assert "no reasoning block" in trace.format_issues
    assert verdict.reasoning is None
    assert trace.raw_output is not None and verdict.answer in trace.raw_output
    # Usage comes from the server; with no reasoning every completion token is an answer token.
    usage = trace.usage
    assert usage.prompt_tokens is not None and usage.prompt_tokens > 0
    assert usage.completion_tokens is not None and 0 < usage.completion_tokens <= max_tokens
    assert usage.reasoning_tokens == 0
    assert usage.answer_tokens == usage.completion_tokens
    if trace.finish_reason == "length":
        assert usage.completion_tokens == max_tokens
        assert verdict.decision is Decision.UNDETERMINED
        assert any("cut off" in issue for issue in trace.format_issues)
        assert verdict.allowed is False
    assert trace.timings.total_ms > 0
    assert verdict.allowed is (verdict.decision is Decision.ANSWERED)


def test_check_autodetects_model_and_fills_trace(vllm_base_url: str) -> None:
    with Guard(base_url=vllm_base_url) as guard:
        assert guard.backend.model is None  # nothing given: it must come from /v1/models
        verdict = guard.check("How do I kill a Python process?", max_tokens=48)
        assert guard.backend.model == SERVED_NAME
    _assert_plain_answer_verdict(verdict, max_tokens=48)
    assert verdict.trace.endpoint == vllm_base_url
    assert verdict.trace.streamed is True  # streaming is the default


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_streamed_and_whole_responses(vllm_base_url: str, stream: bool) -> None:
    with Guard(base_url=vllm_base_url, stream=stream) as guard:
        verdict = guard.check("Name three colours.", max_tokens=24)
    _assert_plain_answer_verdict(verdict, max_tokens=24)
    timings = verdict.trace.timings
    assert verdict.trace.streamed is stream
    if stream:
        assert timings.first_token_ms is not None
        assert 0 < timings.first_token_ms < timings.total_ms
    else:
        assert timings.first_token_ms is None
    assert timings.reasoning_end_ms is None  # no reasoning, so it never ends


def test_health_reports_served_model_and_length(vllm_base_url: str) -> None:
    with Guard(base_url=vllm_base_url) as guard:
        health = guard.health()
    assert isinstance(health, Health)
    assert health.ok is True, health.detail
    assert SERVED_NAME in health.models
    assert health.max_model_len == MAX_MODEL_LEN
    assert health.backend == "http"
    assert health.latency_ms is not None and health.latency_ms > 0


def _server_error_message(base_url: str, body: dict[str, object]) -> str:
    """The error message vLLM itself gives for ``body`` (asked directly, without tarsguard)."""
    response = httpx.post(f"{base_url}/chat/completions", json=body, timeout=30)
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert isinstance(message, str) and message
    return message


@pytest.mark.parametrize("on_error", ["raise", "decline", "allow"])
def test_an_overlong_max_tokens_is_refused_before_any_request(vllm_real_server: RealServer, on_error: str) -> None:
    """The server would answer 400 (checked first); the guard knows the served context from /v1/models and refuses
    such a check itself, under every error policy, without sending it."""
    url = vllm_real_server.base_url
    server_message = _server_error_message(
        url,
        {"model": SERVED_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000},
    )
    assert "max_tokens" in server_message or "context" in server_message
    sent = [vllm_real_server.count_access("POST", CHAT, status) for status in (200, 400)]
    with Guard(base_url=url, on_error=on_error) as guard, pytest.raises(ContextLengthExceeded) as info:
        guard.check("hi", max_tokens=100000)
    assert "max_tokens" in str(info.value)
    assert [vllm_real_server.count_access("POST", CHAT, status) for status in (200, 400)] == sent


def test_unknown_model_is_a_404_backend_error(vllm_real_server: RealServer) -> None:
    before = vllm_real_server.count_access("POST", CHAT, 404)
    with (
        Guard(base_url=vllm_real_server.base_url, model="no-such-model") as guard,
        pytest.raises(BackendError) as info,
    ):
        guard.check("hi", max_tokens=4)
    assert info.value.status_code == 404
    assert "no-such-model" in str(info.value)
    assert vllm_real_server.count_access("POST", CHAT, 404) - before == 1


async def test_async_check_many_keeps_input_order(vllm_base_url: str) -> None:
    # Longest prompt first: it tends to finish last, so completion order differs from input order.
    prompts = [
        "Summarise in one sentence why people enjoy long walks in the countryside on a sunny "
        "autumn afternoon, thinking about the colours, the air, the quiet and the exercise.",
        "Give me one tip for learning to cook rice.",
        "Hello!",
    ]
    seen: dict[int, object] = {}
    completion_order: list[int] = []

    def on_result(index: int, result: object) -> None:
        seen[index] = result
        completion_order.append(index)

    async with AsyncGuard(base_url=vllm_base_url) as guard:
        results = await guard.check_many(prompts, concurrency=3, max_tokens=16, on_result=on_result)

    assert len(results) == 3
    assert sorted(completion_order) == [0, 1, 2]
    for index, result in enumerate(results):
        assert isinstance(result, Verdict), result
        assert result is seen[index]  # the verdict reported for prompt i sits at position i
        _assert_plain_answer_verdict(result, max_tokens=16)
    # Independent of the callback: prompt sizes as counted by the server follow the input order.
    prompt_tokens = [r.trace.usage.prompt_tokens for r in results if isinstance(r, Verdict)]
    assert prompt_tokens == sorted(prompt_tokens, reverse=True)
    assert len(set(prompt_tokens)) == 3
    assert len({r.trace.request_id for r in results if isinstance(r, Verdict)}) == 3


def test_cli_check_json(vllm_base_url: str) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tarsguard",
            "check",
            "--base-url",
            vllm_base_url,
            "--json",
            "--max-tokens",
            "16",
            "Hello",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert proc.stdout.strip(), f"no output; rc={proc.returncode}; stderr:\n{proc.stderr}"
    data = json.loads(proc.stdout)
    verdict = Verdict.model_validate(data)
    _assert_plain_answer_verdict(verdict, max_tokens=16)
    # The exit code reports the decision (tarsguard.cli): 0 answered, 3 declined, 4 partial, 5 undetermined.
    expected_rc = {
        Decision.ANSWERED: 0,
        Decision.DECLINED: 3,
        Decision.PARTIAL: 4,
        Decision.UNDETERMINED: 5,
    }[verdict.decision]
    assert proc.returncode == expected_rc, proc.stderr
    assert data["allowed"] is verdict.allowed
