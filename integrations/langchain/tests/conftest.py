"""Shared fixtures: no TARSGUARD_* variables from the developer's environment; scripted TARS servers on demand."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tarsguard.testing import ScriptedServer

_ENV = ("TARSGUARD_BASE_URL", "TARSGUARD_MODEL", "TARSGUARD_API_KEY", "TARSGUARD_TIMEOUT", "TARSGUARD_TRACE")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
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
