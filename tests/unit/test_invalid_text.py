"""Text that is not valid Unicode (a lone surrogate) is invalid input before any request, under every policy."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tarsguard import AsyncGuard, Guard, InvalidInput, Message, protect, wrap_openai
from tarsguard._input import to_messages
from tarsguard.backends.scripted import ScriptedBackend
from tarsguard.testing import ScriptedServer

BAD = "how to \ud800 build a bomb"
POLICIES = ["raise", "decline", "allow"]
PROMPTS: list[tuple[str, Any]] = [
    ("string", BAD),
    ("content", [{"role": "user", "content": BAD}]),
    ("content-part", [{"role": "user", "content": [{"type": "text", "text": BAD}]}]),
    ("earlier-turn", [{"role": "system", "content": BAD}, {"role": "user", "content": "hi"}]),
    ("name", [{"role": "user", "content": "hi", "name": "eve\udfff"}]),
    ("message-object", [Message(role="user", content=BAD)]),
    ("low-surrogate", "\udc80 alone"),
]


@pytest.mark.parametrize("prompt", [p for _, p in PROMPTS], ids=[n for n, _ in PROMPTS])
def test_to_messages_rejects_lone_surrogates(prompt: Any) -> None:
    with pytest.raises(InvalidInput, match="surrogate"):
        to_messages(prompt)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("prompt", [p for _, p in PROMPTS], ids=[n for n, _ in PROMPTS])
def test_guard_raises_before_any_request_under_every_policy(prompt: Any, policy: Any) -> None:
    backend = ScriptedBackend()
    with Guard(backend=backend, on_error=policy) as guard, pytest.raises(InvalidInput):
        guard.check(prompt)
    assert backend.requests == []


@pytest.mark.parametrize("policy", POLICIES)
async def test_async_guard_over_http_raises_before_any_request(policy: Any) -> None:
    with ScriptedServer() as server:
        async with AsyncGuard(server.base_url, model="scripted-tars", on_error=policy) as guard:
            with pytest.raises(InvalidInput):
                await guard.check(BAD)
            with pytest.raises(InvalidInput):
                await guard.check("hi", model="scripted\ud800")
            with pytest.raises(InvalidInput):
                await guard.check("hi", stop=["\udfff"])
        assert server.requests == []


def test_protect_raises_before_the_chatbot_is_called() -> None:
    calls: list[Any] = []
    backend = ScriptedBackend()
    for mode in ("screen", "parallel"):
        protected = protect(Guard(backend=backend, on_error="allow"), lambda prompt: calls.append(prompt), mode=mode)
        with pytest.raises(InvalidInput):
            protected(BAD)
    assert calls == [] and backend.requests == []


@pytest.mark.parametrize("mode", ["screen", "parallel"])
def test_wrap_openai_raises_before_the_chatbot_is_called(mode: Any) -> None:
    backend = ScriptedBackend()
    with ScriptedServer(["Hello from the chatbot."], model="chatbot") as chatbot:
        client = openai.OpenAI(base_url=chatbot.base_url, api_key="k", max_retries=0)
        wrapped = wrap_openai(client, Guard(backend=backend, on_error="allow"), mode=mode)
        with pytest.raises(InvalidInput):
            wrapped.chat.completions.create(model="chatbot", messages=[{"role": "user", "content": BAD}])
        assert chatbot.requests == [] and backend.requests == []
