"""Input validation (before any request) and configuration resolution (argument > environment > default)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tarsguard import (
    AsyncGuard,
    ConfigurationError,
    Guard,
    InvalidInput,
    Message,
    SamplingParams,
    Timeout,
)
from tarsguard._input import to_messages
from tarsguard.backends.scripted import ScriptedBackend, ScriptedOutput

# -- input validation ------------------------------------------------------------------------------------

BAD_PROMPTS: list[tuple[str, Any]] = [
    ("empty-string", ""),
    ("whitespace", "  \n\t "),
    ("empty-list", []),
    ("empty-tuple", ()),
    ("role-tool", [{"role": "tool", "content": "x"}]),
    ("role-none", [{"role": None, "content": "x"}]),
    ("role-missing", [{"content": "x"}]),
    ("role-developer", [{"role": "developer", "content": "x"}]),
    (
        "image-part",
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            }
        ],
    ),
    ("part-not-mapping", [{"role": "user", "content": ["plain string part"]}]),
    ("part-text-not-str", [{"role": "user", "content": [{"type": "text", "text": 5}]}]),
    ("content-none", [{"role": "user", "content": None}]),
    ("content-missing", [{"role": "user"}]),
    ("content-bytes", [{"role": "user", "content": b"hi"}]),
    ("ends-with-assistant", [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]),
    ("ends-with-system", [{"role": "system", "content": "be nice"}]),
    ("last-user-empty", [{"role": "system", "content": "s"}, {"role": "user", "content": "   "}]),
    ("last-user-empty-parts", [{"role": "user", "content": []}]),
    ("bytes", b"how do I kill a process?"),
    ("bytearray", bytearray(b"hi")),
    ("int", 42),
    ("none", None),
    ("dict-not-list", {"role": "user", "content": "hi"}),
    ("list-of-str", ["hi"]),
    ("set", {"hi"}),
]


@pytest.mark.parametrize("prompt", [p for _, p in BAD_PROMPTS], ids=[n for n, _ in BAD_PROMPTS])
def test_to_messages_rejects(prompt: Any) -> None:
    with pytest.raises(InvalidInput):
        to_messages(prompt)


@pytest.mark.parametrize("policy", ["raise", "decline", "allow"])
@pytest.mark.parametrize("prompt", [p for _, p in BAD_PROMPTS], ids=[n for n, _ in BAD_PROMPTS])
def test_invalid_input_raises_before_any_request_under_every_policy(prompt: Any, policy: Any) -> None:
    backend = ScriptedBackend()
    with Guard(backend=backend, on_error=policy) as guard, pytest.raises(InvalidInput):
        guard.check(prompt)
    assert backend.requests == []


@pytest.mark.parametrize("policy", ["raise", "decline", "allow"])
async def test_invalid_input_raises_before_any_request_async(policy: Any) -> None:
    backend = ScriptedBackend()
    async with AsyncGuard(backend=backend, on_error=policy) as guard:
        for _, prompt in BAD_PROMPTS:
            with pytest.raises(InvalidInput):
                await guard.check(prompt)
    assert backend.requests == []


def test_invalid_input_is_a_value_error() -> None:
    # Callers that catch ValueError for bad input keep working.
    with pytest.raises(ValueError):
        to_messages("")


def test_a_string_becomes_one_user_message() -> None:
    assert to_messages("  hi  ") == [{"role": "user", "content": "  hi  "}]


def test_text_content_parts_are_joined() -> None:
    messages = to_messages(
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "first part"}, {"type": "text", "text": "second part"}],
            }
        ]
    )
    assert messages == [{"role": "user", "content": "first part\nsecond part"}]


def test_message_objects_and_dicts_are_accepted_and_mixed() -> None:
    convo = (
        Message(role="system", content="You are helpful."),
        {"role": "user", "content": "hi", "name": "ignored extra key"},
        Message(role="assistant", content="Hello!"),
        {"role": "user", "content": [{"type": "text", "text": "How do I kill a process?"}]},
    )
    assert to_messages(convo) == [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How do I kill a process?"},
    ]


def test_conversation_reaches_the_backend_as_validated_dicts() -> None:
    backend = ScriptedBackend()
    with Guard(backend=backend) as guard:
        guard.check(
            [
                Message(role="user", content="hi"),
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            ]
        )
    assert [dict(m) for m in backend.requests[0].messages] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "a\nb"},
    ]


# -- configuration: base_url ------------------------------------------------------------------------------


@pytest.fixture
def nothing_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine where neither vLLM nor transformers can run the embedded default."""
    monkeypatch.setattr("tarsguard.backends._embedded.transformers_importable", lambda: False)
    monkeypatch.setattr("tarsguard.backends._embedded.vllm_importable", lambda: False)
    monkeypatch.setattr("tarsguard.backends._embedded.cuda_available", lambda: False)


@pytest.mark.usefixtures("nothing_in_process")
def test_no_base_url_and_no_env_is_a_helpful_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        Guard()
    message = str(info.value)
    assert "base_url" in message and "TARSGUARD_BASE_URL" in message and "backend=" in message
    with pytest.raises(ConfigurationError):
        AsyncGuard()


def test_empty_base_url_env_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TARSGUARD_BASE_URL", "")
    with Guard() as guard:  # no URL at all: the embedded default, not an HTTP backend for ""
        assert guard.backend.kind in ("transformers", "vllm")


def test_base_url_argument_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TARSGUARD_BASE_URL", "http://env-host:1/v1")
    with Guard(base_url="http://arg-host:2/v1") as guard:
        assert guard.backend.endpoint == "http://arg-host:2/v1"
    with Guard() as guard:
        assert guard.backend.endpoint == "http://env-host:1/v1"


@pytest.mark.parametrize("url", ["ftp://host/v1", "localhost:8000", "not a url", "http:///v1"])
def test_bad_base_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError):
        Guard(base_url=url)


def test_backend_and_base_url_together_is_an_error() -> None:
    with pytest.raises(ConfigurationError):
        Guard(backend=ScriptedBackend(), base_url="http://h:1/v1")
    with pytest.raises(ConfigurationError):
        Guard(backend=ScriptedBackend(), api_key="k")


def test_bad_options_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        Guard(backend=ScriptedBackend(), on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Guard(base_url="http://h:1/v1", max_retries=-1)


# -- configuration: model ---------------------------------------------------------------------------------


def _requested_model(**kwargs: Any) -> tuple[str | None, str | None]:
    backend = ScriptedBackend()
    with Guard(backend=backend, **kwargs) as guard:
        verdict = guard.check("hi")
    return backend.requests[0].model, verdict.trace.model


def test_model_argument_beats_env_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _requested_model() == (None, "scripted-tars")
    monkeypatch.setenv("TARSGUARD_MODEL", "env-model")
    assert _requested_model() == ("env-model", "env-model")
    assert _requested_model(model="arg-model") == ("arg-model", "arg-model")


# -- configuration: timeout -------------------------------------------------------------------------------


def _request_timeout(guard_timeout: Any = None, call_timeout: Any = None) -> Timeout:
    backend = ScriptedBackend()
    with Guard(backend=backend, timeout=guard_timeout) as guard:
        guard.check("hi", timeout=call_timeout)
    return backend.requests[0].timeout


def test_timeout_argument_beats_env_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _request_timeout() == Timeout()
    monkeypatch.setenv("TARSGUARD_TIMEOUT", "12.5")
    assert _request_timeout() == Timeout(total=12.5, connect=5.0, read=12.5)
    assert _request_timeout(guard_timeout=3) == Timeout(total=3.0, connect=3.0, read=3.0)
    custom = Timeout(total=None, connect=1.0, read=2.0)
    assert _request_timeout(guard_timeout=custom) == custom
    # A per-call timeout beats the guard's.
    assert _request_timeout(guard_timeout=3, call_timeout=7) == Timeout(total=7.0, connect=5.0, read=7.0)


def test_env_timeout_is_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    # The whole check must end within TARSGUARD_TIMEOUT; the scripted generation takes >= 1 s.
    slow = ScriptedOutput(content="<think>\nok\n</think>\n\nSure, here it is.", seconds_per_token=0.2)
    monkeypatch.setenv("TARSGUARD_TIMEOUT", "0.1")
    with Guard(backend=ScriptedBackend([slow]), on_error="decline") as guard:
        verdict = guard.check("hi")
    assert verdict.trace.error is not None
    assert verdict.trace.error.type == "timeout"


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf", " "])
def test_bad_env_timeout_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("TARSGUARD_TIMEOUT", value)
    with pytest.raises(ConfigurationError, match=r"TARSGUARD_TIMEOUT|timeout"):
        Guard(backend=ScriptedBackend())


@pytest.mark.parametrize("value", [0, -1, -0.5, float("nan"), float("inf"), "abc", "", [1]])
def test_bad_timeout_argument_is_a_configuration_error(value: Any) -> None:
    with pytest.raises(ConfigurationError):
        Guard(backend=ScriptedBackend(), timeout=value)
    backend = ScriptedBackend()
    with Guard(backend=backend, on_error="allow") as guard, pytest.raises(ConfigurationError):
        guard.check("hi", timeout=value)
    assert backend.requests == []


# -- configuration: sampling ------------------------------------------------------------------------------


def test_sampling_defaults_follow_the_tars_authors() -> None:
    backend = ScriptedBackend()
    with Guard(backend=backend) as guard:
        assert guard.sampling == SamplingParams(temperature=0.6, top_p=1.0, max_tokens=4096)
        verdict = guard.check("hi")
    sent = backend.requests[0].sampling
    assert (sent.temperature, sent.top_p, sent.max_tokens, sent.seed, sent.stop) == (0.6, 1.0, 4096, None, None)
    assert verdict.trace.sampling == sent


def test_guard_and_call_sampling_overrides_reach_the_request() -> None:
    backend = ScriptedBackend()
    with Guard(backend=backend, temperature=0.0, max_tokens=512, seed=1, stop="###") as guard:
        guard.check("a")
        guard.check("b", temperature=0.9, top_p=0.5, seed=2, stop=["x", "y"])
        guard.check("c")
    first, second, third = (r.sampling for r in backend.requests)
    assert first == SamplingParams(temperature=0.0, top_p=1.0, max_tokens=512, seed=1, stop=("###",))
    assert second == SamplingParams(temperature=0.9, top_p=0.5, max_tokens=512, seed=2, stop=("x", "y"))
    assert third == first  # a per-call override does not stick


async def test_async_call_sampling_overrides_reach_the_request() -> None:
    backend = ScriptedBackend()
    async with AsyncGuard(backend=backend, top_p=0.9) as guard:
        verdict = await guard.check("a", max_tokens=64)
    assert backend.requests[0].sampling == SamplingParams(top_p=0.9, max_tokens=64)
    assert verdict.trace.sampling.max_tokens == 64


BAD_SAMPLING: list[dict[str, Any]] = [
    {"temperature": -0.1},
    {"temperature": 2.5},
    {"top_p": 0.0},
    {"top_p": 1.5},
    {"max_tokens": 0},
    {"temprature": 0.1},  # a typo must not pass silently
    {"seed": "abc"},
]


@pytest.mark.parametrize("overrides", BAD_SAMPLING, ids=lambda d: ",".join(d))
def test_bad_sampling_is_a_configuration_error(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        Guard(backend=ScriptedBackend(), **overrides)
    backend = ScriptedBackend()
    with Guard(backend=backend, on_error="decline") as guard, pytest.raises(ConfigurationError):
        guard.check("hi", **overrides)
    assert backend.requests == []


def test_configuration_error_is_a_value_error() -> None:
    make: Callable[[], object] = lambda: Guard(on_error="bogus")  # type: ignore[arg-type]  # noqa: E731
    with pytest.raises(ValueError):
        make()
