"""Closing the stream early really stops vLLM: its own generation-token counter shows it.

The SmolLM2 stand-in (NOT a safety model) never writes ``</think>``, so all it writes counts as reasoning: the
reasoning budget is what ends its stream here. The early-decision path closes the stream the same way.
"""

from __future__ import annotations

import re

import httpx

from tarsguard import Decision, Guard
from tests.support.vllm_server import RealServer

PROMPT = "Write a very long story about a lighthouse keeper, with many chapters."


def generation_tokens(server: RealServer) -> float:
    """vLLM's running count of generated tokens, from its Prometheus endpoint."""
    text = httpx.get(server.base_url.removesuffix("/v1") + "/metrics", timeout=10).text
    return sum(float(m) for m in re.findall(r"^vllm:generation_tokens_total\{[^}]*\} ([0-9.e+]+)$", text, re.M))


def test_a_reasoning_budget_stops_the_server(vllm_real_server: RealServer) -> None:
    with Guard(vllm_real_server.base_url, temperature=0.0, max_tokens=400) as whole:
        before = generation_tokens(vllm_real_server)
        full = whole.check(PROMPT)
        full_tokens = generation_tokens(vllm_real_server) - before
    assert full.trace.stopped is None and full_tokens == full.trace.usage.completion_tokens
    assert full_tokens > 100, "the control run must write a long answer for the comparison to mean anything"

    with Guard(vllm_real_server.base_url, temperature=0.0, max_tokens=400, max_reasoning_tokens=16) as budgeted:
        before = generation_tokens(vllm_real_server)
        stopped = budgeted.check(PROMPT)
        # The server counts a request's tokens when it finishes or is aborted; a later request's completion
        # shows the abort has been processed.
        later = budgeted.check("Say hi.", max_tokens=4)
        stopped_tokens = generation_tokens(vllm_real_server) - before - (later.trace.usage.completion_tokens or 0)
    assert stopped.decision is Decision.UNDETERMINED
    assert stopped.trace.stopped is not None and stopped.trace.stopped.reason == "reasoning_budget"
    assert 16 <= stopped.trace.stopped.at_token < 40
    assert stopped_tokens < full_tokens / 2, (stopped_tokens, full_tokens)
