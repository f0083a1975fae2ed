"""Shared fixtures: every test starts with no TARSGUARD_* variables from the developer's environment."""

from __future__ import annotations

import pytest

_ENV = ("TARSGUARD_BASE_URL", "TARSGUARD_MODEL", "TARSGUARD_API_KEY", "TARSGUARD_TIMEOUT", "TARSGUARD_TRACE")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
