"""The guard runnable, ChatTARS streaming and the examples against a real vLLM server (SmolLM2 stand-in).

The stand-in is not a safety model: which decision it gets is meaningless. These tests check that each path
acts consistently with whatever verdict came back.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from tarsguard import AsyncGuard, Guard, GuardedText, verdict_of
from tests.support.standin import SERVED_NAME

from langchain_tarsguard import ChatTARS, with_guard

from .conftest import REPO_ROOT

PROMPT = ChatPromptTemplate.from_messages([("human", "{question}")])


async def test_guarded_chain_follows_the_verdict(vllm_base_url: str) -> None:
    llm = ChatTARS(base_url=vllm_base_url, model=SERVED_NAME, max_tokens=24, temperature=0.0)
    async with AsyncGuard(base_url=vllm_base_url, max_tokens=24) as guard:
        chain = with_guard(PROMPT | llm | StrOutputParser(), guard, screen_output=True)
        replies = await chain.abatch([{"question": "Name three colours."}, {"question": "Say hello."}])
        chunks = [chunk async for chunk in chain.astream({"question": "Count to five."})]
    for reply in replies:
        assert isinstance(reply, str) and reply.strip()
        verdict = verdict_of(reply)
        if isinstance(reply, GuardedText):  # blocked: the guard's own answer (or the default message)
            assert verdict is not None and not verdict.allowed
        else:
            assert reply.assessment.decision.value in {"answered", "declined", "partial", "undetermined"}
    assert chunks and "".join(chunks).strip()


def test_chat_tars_streams_and_reports_its_verdict(vllm_base_url: str) -> None:
    llm = ChatTARS(base_url=vllm_base_url, max_tokens=32, temperature=0.0)  # model auto-detected
    chunks = list(llm.stream("Tell me a fact about the sea."))
    assert len(chunks) > 2
    full = chunks[0]
    for chunk in chunks[1:]:
        full = full + chunk
    metadata = full.response_metadata
    assert metadata["model_name"] == SERVED_NAME
    verdict = metadata["tarsguard_verdict"]
    assert verdict["answer"] == full.content.strip()
    assert verdict["trace"]["usage"]["completion_tokens"] == full.usage_metadata["output_tokens"] <= 32
    assert "no reasoning block" in verdict["trace"]["format_issues"]  # the stand-in writes no <think>


def test_sync_guard_in_front_of_a_real_chat_model(vllm_base_url: str) -> None:
    with Guard(base_url=vllm_base_url, max_tokens=24) as guard:
        chain = with_guard(PROMPT | ChatTARS(base_url=vllm_base_url, max_tokens=24), guard)
        reply: Any = chain.invoke({"question": "What is two plus two?"})
    assert isinstance(reply, AIMessage) and reply.text.strip()


def _example(name: str, url: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(Path(REPO_ROOT) / "examples" / name), "--base-url", url, "--max-tokens", "32"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_examples_run_against_a_real_url(vllm_base_url: str) -> None:
    rag = _example("langchain_rag.py", vllm_base_url)
    assert rag.count("Q: ") == 3 and "== stream" in rag and "scripted" not in rag
    agent = _example("langchain_agent.py", vllm_base_url)
    assert agent.count("user: ") == 2 and "scripted" not in agent
