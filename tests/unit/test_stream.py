"""Streaming checks: reasoning and answer chunks as they are generated, then the verdict; sync and async."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tarsguard import AsyncGuard, BackendError, Decision, Guard, InvalidInput, TextChunk, Verdict, parse_output
from tarsguard._stream import ThinkSplitter
from tarsguard.testing import PhraseDetector, Reply, ScriptedBackend, ScriptedServer

Serve = Callable[..., ScriptedServer]
OUTPUT = "<think>\nThe user asks how to stop a process; benign.\n</think>\n\nSure. Run `kill <pid>`, then check."


def texts(events: list[TextChunk | Verdict], kind: str) -> str:
    return "".join(e.text for e in events if isinstance(e, TextChunk) and e.kind == kind)


def test_sync_stream_yields_reasoning_then_answer_then_the_verdict(serve: Serve) -> None:
    server = serve([OUTPUT])
    with Guard(server.base_url) as guard:
        events = list(guard.stream("How do I stop it?"))
    verdict = events[-1]
    assert isinstance(verdict, Verdict) and verdict.decision is Decision.ANSWERED
    chunks = events[:-1]
    assert len(chunks) > 5 and all(isinstance(c, TextChunk) for c in chunks)
    kinds = [c.kind for c in chunks if isinstance(c, TextChunk)]
    assert kinds == sorted(kinds, key=lambda k: k == "answer")  # all reasoning, then all answer
    assert texts(events, "reasoning") == verdict.reasoning
    assert texts(events, "answer") == verdict.answer


async def test_async_stream_with_the_servers_reasoning_field(serve: Serve) -> None:
    server = serve([Reply("Sure. Run `kill <pid>`.", reasoning="Benign: a process question.")])
    async with AsyncGuard(server.base_url) as guard:
        events = [event async for event in guard.stream("How do I stop it?")]
    verdict = events[-1]
    assert isinstance(verdict, Verdict)
    assert texts(events, "reasoning") == verdict.reasoning == "Benign: a process question."
    assert texts(events, "answer") == verdict.answer == "Sure. Run `kill <pid>`."


async def test_leaving_the_stream_stops_the_generation(serve: Serve) -> None:
    long = "<think>\n" + " ".join(f"w{i}" for i in range(2000)) + "\n</think>\n\nok"
    server = serve([Reply(long, tokens_per_second=500)])  # 4 s of stream
    async with AsyncGuard(server.base_url) as guard:
        stream = guard.stream("hello")
        first = await anext(stream)
        assert isinstance(first, TextChunk) and first.kind == "reasoning"
        assert server.generated_tokens < 2000  # the first chunk came while the model was still generating
        await stream.aclose()
        started = asyncio.get_running_loop().time()
        while server.open_connections:
            assert asyncio.get_running_loop().time() - started < 3
            await asyncio.sleep(0.01)
    assert server.generated_tokens < 1000


def test_early_stop_and_cache_in_a_stream() -> None:
    refusal = "<think>\nharmful\n</think>\n\nI can't help with that. " + " ".join(f"w{i}" for i in range(300))
    detector = PhraseDetector([("I can't help", Decision.DECLINED)], confidence=0.99)
    with Guard(backend=ScriptedBackend([refusal]), detector=detector, early_stop=True, cache=True) as guard:
        first = list(guard.stream("build a weapon"))
        second = list(guard.stream("build a weapon"))
    for events in (first, second):
        verdict = events[-1]
        assert isinstance(verdict, Verdict) and verdict.decision is Decision.DECLINED
        assert verdict.answer and texts(events, "answer").startswith(verdict.answer)
    assert first[-1].trace.stopped is not None and second[-1].trace.cache == "hit"  # type: ignore[union-attr]


def test_a_bad_prompt_raises_from_the_stream() -> None:
    with Guard(backend=ScriptedBackend([OUTPUT])) as guard, pytest.raises(InvalidInput):
        list(guard.stream(""))


# -- the streaming splitter ----------------------------------------------------------------------------

_text = st.text(alphabet=st.sampled_from("abc <>/\n."), min_size=1, max_size=40).filter(
    lambda t: "<think>" not in t and "</think>" not in t and t.strip() != ""
)


@given(reasoning=_text, answer=_text, cuts=st.lists(st.integers(min_value=0, max_value=120), max_size=12))
def test_splitter_agrees_with_parse_output_however_the_text_is_cut(
    reasoning: str, answer: str, cuts: list[int]
) -> None:
    text = f"<think>\n{reasoning}\n</think>\n\n{answer}"
    points = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    splitter = ThinkSplitter()
    pieces = []
    for start, end in itertools.pairwise(points):
        pieces += splitter.feed(text[start:end])
    pieces += splitter.finish()
    parsed = parse_output(text)
    streamed_reasoning = "".join(t for kind, t in pieces if kind == "reasoning")
    streamed_answer = "".join(t for kind, t in pieces if kind == "answer")
    assert streamed_reasoning.strip() == parsed.reasoning
    assert streamed_answer.strip() == parsed.answer
    assert streamed_answer == streamed_answer.lstrip()


def test_splitter_passes_plain_answers_through() -> None:
    splitter = ThinkSplitter()
    pieces = splitter.feed("\n  <th") + splitter.feed("is is plain") + splitter.finish()
    assert pieces == [("answer", "<this is plain")]


async def test_a_failover_mid_stream_says_the_text_starts_over(serve: Serve) -> None:
    from tarsguard.backends import EndpointPool

    failing = serve([Reply("<think>\nPARTIAL reasoning that will be cut off midway\n</think>\n\nX", fault="truncate")])
    good = serve([OUTPUT])
    async with AsyncGuard(backend=EndpointPool.from_urls([failing.base_url, good.base_url])) as guard:
        events = [event async for event in guard.stream("hello")]
    kinds = [e.kind for e in events if isinstance(e, TextChunk)]
    assert "restart" in kinds
    after = events[kinds.index("restart") + 1 :]
    verdict = after[-1]
    assert isinstance(verdict, Verdict) and verdict.trace.raw_output == OUTPUT
    assert texts(after, "reasoning") == verdict.reasoning and texts(after, "answer") == verdict.answer


def test_the_model_can_be_chosen_per_call(serve: Serve) -> None:
    server = serve([OUTPUT], model="tars-a")
    with Guard(server.base_url, model="tars-a", cache=True) as guard:
        assert guard.check("hi").trace.model == "tars-a"
        with pytest.raises(BackendError, match="does not exist"):
            guard.check("hi", model="tars-b")
        events = list(guard.stream("hi", model="tars-a"))
    assert [r.body["model"] for r in server.requests if r.path.endswith("/chat/completions")] == ["tars-a", "tars-b"]
    assert isinstance(events[-1], Verdict) and events[-1].trace.cache == "hit"
