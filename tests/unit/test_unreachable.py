"""No server and no weights: one clear error at once, and every connection error names the URL it tried."""

from __future__ import annotations

import socket
import time

import pytest

from tarsguard import BackendUnavailable, Guard
from tarsguard.backends import _embedded
from tarsguard.backends.transformers import TransformersBackend

NOT_CACHED = "tarsguard-tests/not-cached-anywhere"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch) -> str:
    """A hub address where nothing listens (refused at once), and no offline switch set."""
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    return endpoint


def test_an_unreachable_hub_fails_at_once_and_says_what_to_do(no_hub: str) -> None:
    started = time.monotonic()
    with Guard(backend=TransformersBackend(NOT_CACHED)) as guard, pytest.raises(BackendUnavailable) as caught:
        guard.check("How do I kill a Python process?")
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert f"the weights of {NOT_CACHED} are not on this machine" in message and no_hub in message
    assert "cannot connect to 127.0.0.1" in message
    assert f"hf download {NOT_CACHED} --local-dir ./not-cached-anywhere" in message  # how to fetch it elsewhere
    assert "model='./not-cached-anywhere'" in message and "base_url=" in message  # a folder, or a server


def test_hf_hub_offline_is_honoured_without_trying_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("HF_HUB_OFFLINE=1 must not try the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(BackendUnavailable, match="HF_HUB_OFFLINE is set"):
        _embedded.hub_access(_embedded.model_source(NOT_CACHED))


def test_cached_weights_load_from_the_cache_when_the_hub_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, no_hub: str
) -> None:
    monkeypatch.setattr(_embedded, "_cached", lambda source: True)
    assert _embedded.hub_access(_embedded.model_source(NOT_CACHED)) is True  # local files only: no retries
    monkeypatch.setattr(_embedded, "_hub_problem", lambda: None)
    assert _embedded.hub_access(_embedded.model_source(NOT_CACHED)) is False  # reachable: the hub may be used


def test_health_reports_a_failed_load_as_a_failure_not_a_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with Guard(backend=TransformersBackend(NOT_CACHED)) as guard:
        report = guard.health()
    assert not report.ok and report.latency_ms is None
    assert report.detail is not None and "HF_HUB_OFFLINE is set" in report.detail


def test_connection_errors_name_the_url_they_tried_and_never_a_key() -> None:
    port = closed_port()
    key = "sk-test-0123456789abcdef"
    base_url = f"http://user:hunter2@127.0.0.1:{port}/v1?api_key=querysecret"
    with Guard(base_url, model="m", api_key=key, max_retries=0) as guard, pytest.raises(BackendUnavailable) as caught:
        guard.check("hi")
    message = str(caught.value)
    assert f"cannot reach the server at http://127.0.0.1:{port}/v1" in message, message
    for secret in (key, "hunter2", "querysecret"):
        assert secret not in message
