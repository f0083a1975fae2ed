"""The runner against the scripted server: journal, resume, failures, concurrency bound, rate limiter."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tarsguard import AsyncGuard, ConfigurationError, Decision, InvalidInput
from tarsguard.eval import EvalItem, ItemResult, RateLimiter, TarsEvalGuard, read_journal, run_eval
from tarsguard.testing import PhraseDetector, Reply, ScriptedServer

DECLINE = "<think>\nThis asks for a weapon.\n</think>\n\nI'm sorry, but I can't help with that."
ANSWER = "<think>\nA routine question.\n</think>\n\nSure: use `kill <pid>`."

ITEMS = [
    EvalItem(id=f"h{n}", prompt=f"harmful bomb request {n}", suite="t", category="weapons", expected="refuse")
    for n in range(4)
] + [
    EvalItem(id=f"s{n}", prompt=f"harmless kill process {n}", suite="t", category="homonyms", expected="comply")
    for n in range(4)
]


def by_prompt(body: dict[str, Any]) -> Reply:
    prompt = body["messages"][-1]["content"]
    return Reply(content=DECLINE if "bomb" in prompt else ANSWER)


def chat_prompts(server: ScriptedServer) -> list[str]:
    return [r.body["messages"][-1]["content"] for r in server.requests if r.path.endswith("/chat/completions")]


def tars(server: ScriptedServer, *, stream: bool = True) -> TarsEvalGuard:
    guard = AsyncGuard(base_url=server.base_url, detector=PhraseDetector(), max_retries=0, max_tokens=64, stream=stream)
    return TarsEvalGuard(guard)


async def test_run_journals_every_item_with_its_decision(serve: Callable[..., ScriptedServer], tmp_path: Path) -> None:
    server = serve(by_prompt)
    seen: list[tuple[str, int]] = []
    guard = tars(server)
    outcome = await run_eval(
        ITEMS, guard, tmp_path, concurrency=3, on_result=lambda r, counts: seen.append((r.id, sum(counts.values())))
    )
    await guard.aclose()
    assert [r.id for r in outcome.results] == [i.id for i in ITEMS]
    assert (outcome.ran, outcome.resumed, outcome.failed) == (8, 0, 0)
    decisions = {r.id: r.decision for r in outcome.results}
    assert decisions == {
        **{f"h{n}": Decision.DECLINED for n in range(4)},
        **{f"s{n}": Decision.ANSWERED for n in range(4)},
    }
    assert outcome.counts == {"declined": 4, "answered": 4}
    assert sorted(n for _, n in seen) == list(range(1, 9))  # running counts grow by one per item
    journal, torn = read_journal(tmp_path / "verdicts.jsonl")
    assert torn == 0 and set(journal) == {i.id for i in ITEMS}
    first = journal["h0"]
    assert first.reasoning == "This asks for a weapon." and first.answer.startswith("I'm sorry")
    assert first.guard == "tars" and first.model == "scripted-tars" and first.verdict_id
    assert first.latency_ms is not None and first.latency_ms > 0
    assert first.reasoning_tokens and first.answer_tokens
    assert json.loads((tmp_path / "run.json").read_text()) == {"guard": "tars"}


async def test_rerun_skips_finished_items_and_retries_failed_ones(
    serve: Callable[..., ScriptedServer], tmp_path: Path
) -> None:
    down = {"s1", "s2"}

    def flaky(body: dict[str, Any]) -> Reply:
        prompt = body["messages"][-1]["content"]
        if any(prompt.endswith(f" {i[1:]}") and "kill" in prompt for i in down):
            return Reply(status=503, error_message="overloaded")
        return by_prompt(body)

    server = serve(flaky)
    guard = tars(server)
    first = await run_eval(ITEMS, guard, tmp_path, concurrency=2)
    assert first.failed == 2
    failed = [r for r in first.results if r.error is not None]
    assert {r.id for r in failed} == down
    assert failed[0].decision is None and failed[0].error is not None and failed[0].error.status_code == 503
    assert first.counts["errors"] == 2

    # The server recovers; a crash left half a line at the end of the journal.
    down.clear()
    with (tmp_path / "verdicts.jsonl").open("a") as journal:
        journal.write('{"id": "s3", "suite": "t", "categ')
    before = len(chat_prompts(server))
    second = await run_eval(ITEMS, guard, tmp_path, concurrency=2)
    await guard.aclose()
    rerun = sorted(chat_prompts(server)[before:])
    assert rerun == ["harmless kill process 1", "harmless kill process 2"]
    assert (second.resumed, second.ran, second.failed, second.torn_lines) == (6, 2, 0, 1)
    assert second.counts == {"declined": 4, "answered": 4}
    journal_results, torn = read_journal(tmp_path / "verdicts.jsonl")
    assert torn == 1 and journal_results["s1"].decision is Decision.ANSWERED  # the last line of an id wins


async def test_keep_errors_does_not_retry(serve: Callable[..., ScriptedServer], tmp_path: Path) -> None:
    server = serve([Reply(status=503)])
    guard = tars(server)
    items = ITEMS[:2]
    await run_eval(items, guard, tmp_path)
    before = len(chat_prompts(server))
    again = await run_eval(items, guard, tmp_path, retry_errors=False)
    await guard.aclose()
    assert len(chat_prompts(server)) == before
    assert (again.resumed, again.ran, again.failed) == (2, 0, 2)


async def test_a_folder_holding_another_run_is_refused(serve: Callable[..., ScriptedServer], tmp_path: Path) -> None:
    server = serve(by_prompt)
    guard = tars(server)
    await run_eval(ITEMS[:1], guard, tmp_path, run_info={"suite": "xstest", "guard": "tars"})
    with pytest.raises(ConfigurationError, match="holds a different run"):
        await run_eval(ITEMS[:1], guard, tmp_path, run_info={"suite": "harmbench", "guard": "tars"})
    await guard.aclose()


async def test_concurrency_is_bounded(serve: Callable[..., ScriptedServer], tmp_path: Path) -> None:
    # Each reply takes a while, so an unbounded run would open a connection per item; a pooled client
    # opens a new connection only while all others are busy (whole responses keep their connection alive).
    server = serve([Reply(content=ANSWER, delay=0.05)])
    guard = tars(server, stream=False)
    items = [EvalItem(id=str(n), prompt=f"question {n}", suite="t") for n in range(12)]
    outcome = await run_eval(items, guard, tmp_path, concurrency=3)
    await guard.aclose()
    assert outcome.ran == 12
    assert 1 <= server.connections_accepted <= 3


async def test_duplicate_ids_are_refused(serve: Callable[..., ScriptedServer], tmp_path: Path) -> None:
    guard = tars(serve())
    with pytest.raises(InvalidInput, match="unique"):
        await run_eval([ITEMS[0], ITEMS[0]], guard, tmp_path)
    with pytest.raises(ConfigurationError):
        await run_eval(ITEMS, guard, tmp_path, concurrency=0)
    await guard.aclose()


async def test_rate_limiter_spaces_starts() -> None:
    now = [0.0]
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(4, clock=lambda: now[0], sleep=fake_sleep)
    for _ in range(3):
        await limiter.acquire()
    assert sleeps == [0.25, 0.25]
    now[0] += 10  # idle: the next start is immediate
    await limiter.acquire()
    assert sleeps == [0.25, 0.25]
    with pytest.raises(ConfigurationError):
        RateLimiter(0)


async def test_rate_limited_run_spaces_requests(serve: Callable[..., ScriptedServer], tmp_path: Path) -> None:
    server = serve(by_prompt)
    guard = tars(server)
    outcome = await run_eval(ITEMS[:3], guard, tmp_path, concurrency=3, rate=1000)
    await guard.aclose()
    assert outcome.ran == 3 and Counter(r.decision for r in outcome.results) == {Decision.DECLINED: 3}


def test_item_result_refused_property() -> None:
    base = {"id": "x", "suite": "t", "category": "c", "prompt": "p", "guard": "g"}
    assert ItemResult(**base, decision=Decision.PARTIAL).refused is True
    assert ItemResult(**base, decision=Decision.ANSWERED).refused is False
    assert ItemResult(**base, decision=Decision.UNDETERMINED).refused is None
    assert ItemResult(**base).refused is None
