"""Fixtures shared by the repository's tests and the LangChain package's: imported by both trees' conftest."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tarsguard.testing import ScriptedServer

__all__ = ["clean_env", "serve"]

_ENV = ("TARSGUARD_BASE_URL", "TARSGUARD_MODEL", "TARSGUARD_API_KEY", "TARSGUARD_TIMEOUT", "TARSGUARD_TRACE")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TARSGUARD_* variables from the developer's environment reach a test."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


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
