"""The proxy answers every error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tarsguard import AsyncGuard
from tarsguard.proxy import ProxyConfig, ProxyServer
from tarsguard.testing import PhraseDetector, ScriptedServer

TARS = "<think>\nA normal request.\n</think>\n\nSure, here you go."


@pytest.fixture(scope="module")
def proxy() -> Iterator[ProxyServer]:
    with ScriptedServer([TARS], model="scripted-tars") as tars, ScriptedServer(["Hello!"], model="chatbot") as bot:
        guard = AsyncGuard(tars.base_url, detector=PhraseDetector(), max_retries=0, timeout=10)
        server = ProxyServer(ProxyConfig(upstream=bot.base_url, port=0), guard=guard).start()
        try:
            yield server
        finally:
            server.stop()


def openai_error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body  # never FastAPI's {"detail": ...}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"], error
    return dict(error)


def test_a_body_without_a_json_content_type_is_a_415(proxy: ProxyServer) -> None:
    body = json.dumps({"model": "chatbot", "messages": [{"role": "user", "content": "hi"}]})
    for headers in ({}, {"content-type": "text/plain"}):
        response = httpx.post(f"{proxy.base_url}/chat/completions", content=body, headers=headers)
        assert response.status_code == 415
        assert openai_error(response)["code"] == "unsupported_media_type"
    fine = httpx.post(
        f"{proxy.base_url}/chat/completions", content=body, headers={"content-type": "application/json; charset=utf-8"}
    )
    assert fine.status_code == 200, fine.text


def test_unknown_paths_and_methods_answer_in_openais_shape(proxy: ProxyServer) -> None:
    missing = httpx.get(f"{proxy.base_url}/no-such-thing")
    assert missing.status_code == 404 and openai_error(missing)["type"] == "not_found_error"
    wrong = httpx.get(f"{proxy.base_url}/chat/completions")
    assert wrong.status_code == 405
    error = openai_error(wrong)
    assert error["code"] == "method_not_allowed" and "GET" in error["message"]
    assert "POST" in wrong.headers.get("allow", "")


def test_an_image_part_is_named_as_such(proxy: ProxyServer) -> None:
    content = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    response = httpx.post(
        f"{proxy.base_url}/chat/completions",
        json={"model": "chatbot", "messages": [{"role": "user", "content": content}]},
    )
    assert response.status_code == 400
    error = openai_error(response)
    assert error["message"].startswith("image content is not supported: messages[0].content[1] is an image_url part")
    assert "list[" not in error["message"] and error["param"] == "messages"
